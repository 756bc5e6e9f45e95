//! `rabbitmq-setup`: creates the vhost and one user per service with least privilege, through
//! the management API. Run once per deployment (compose runs it before the services), and again
//! to change passwords. `--print` shows the permissions without touching the broker.

use clap::Parser;
use protocol::topology::Topology;
use rabbitmq_setup::{Management, ServiceUser};

/// Creates the vhost and the services' broker users.
#[derive(Parser, Debug)]
#[command(name = "rabbitmq-setup", version, about)]
struct Args {
    /// Management API with administrator credentials.
    #[arg(
        long,
        env = "RABBITMQ_MANAGEMENT_URL",
        default_value = "http://guest:guest@127.0.0.1:15672",
        hide_env_values = true
    )]
    management_url: String,

    /// The vhost the services use.
    #[arg(long, env = "AMQP_VHOST", default_value = "/")]
    vhost: String,

    /// The services' `AMQP_PREFIX`.
    #[arg(long, env = "AMQP_PREFIX", default_value = "")]
    amqp_prefix: String,

    /// The order service's user.
    #[arg(long, env = "ORDER_AMQP_USER", default_value = "order-service")]
    order_user: String,
    /// Its password.
    #[arg(long, env = "ORDER_AMQP_PASSWORD", hide_env_values = true)]
    order_password: Option<String>,

    /// The store's user.
    #[arg(long, env = "STORE_AMQP_USER", default_value = "store-service")]
    store_user: String,
    /// Its password.
    #[arg(long, env = "STORE_AMQP_PASSWORD", hide_env_values = true)]
    store_password: Option<String>,

    /// Delivery's user.
    #[arg(long, env = "DELIVERY_AMQP_USER", default_value = "delivery-service")]
    delivery_user: String,
    /// Its password.
    #[arg(long, env = "DELIVERY_AMQP_PASSWORD", hide_env_values = true)]
    delivery_password: Option<String>,

    /// Print the permissions and exit.
    #[arg(long)]
    print: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topology = Topology::new(args.amqp_prefix.clone());
    if args.print {
        println!("| user | configure | write | read |\n|---|---|---|---|");
        for (service, user) in [
            ("order", &args.order_user),
            ("store", &args.store_user),
            ("delivery", &args.delivery_user),
        ] {
            let p = topology.permissions(service);
            println!(
                "| `{user}` | `{}` | `{}` | `{}` |",
                p.configure, p.write, p.read
            );
        }
        return Ok(());
    }
    let password = |p: &Option<String>, var: &str| {
        p.clone()
            .ok_or_else(|| anyhow::anyhow!("{var} is required"))
    };
    let users = [
        ServiceUser {
            service: "order",
            user: args.order_user.clone(),
            password: password(&args.order_password, "ORDER_AMQP_PASSWORD")?,
        },
        ServiceUser {
            service: "store",
            user: args.store_user.clone(),
            password: password(&args.store_password, "STORE_AMQP_PASSWORD")?,
        },
        ServiceUser {
            service: "delivery",
            user: args.delivery_user.clone(),
            password: password(&args.delivery_password, "DELIVERY_AMQP_PASSWORD")?,
        },
    ];
    let management = Management::new(&args.management_url)?;
    management.create_vhost(&args.vhost).await?;
    management
        .create_users(&args.vhost, &topology, &users)
        .await?;
    for user in &users {
        println!(
            "{}: user {} ready on vhost {}",
            user.service, user.user, args.vhost
        );
    }
    Ok(())
}
