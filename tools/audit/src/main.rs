//! `audit`: reads the order, store and delivery databases and reports every violation of the
//! transaction's invariants. Exits 1 if there is any, 0 if none, 2 if it could not run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Checks the invariants of the order transaction across the three databases.
#[derive(Parser, Debug)]
#[command(name = "audit", version, about)]
struct Args {
    /// The order service's database.
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/order_service"
    )]
    order_database_url: String,

    /// The store's database.
    #[arg(
        long,
        env = "STORE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/store_service"
    )]
    store_database_url: String,

    /// Delivery's database.
    #[arg(
        long,
        env = "DELIVERY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/delivery_service"
    )]
    delivery_database_url: String,

    /// How long past an expiry or deadline something may still be pending.
    #[arg(long, env = "AUDIT_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("audit could not run: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<bool> {
    let db = audit::Databases::connect(
        &args.order_database_url,
        &args.store_database_url,
        &args.delivery_database_url,
    )
    .await?;
    let report = audit::audit(&db, args.grace).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("orders:   {:?}", report.orders);
        println!("packets:  {:?}", report.packets);
        println!("agents:   {:?}", report.agents);
        if report.is_clean() {
            println!("no violations");
        } else {
            println!("{} violation(s):", report.violations.len());
            for v in &report.violations {
                println!("  {v}");
            }
        }
    }
    Ok(report.is_clean())
}
