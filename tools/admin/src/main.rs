//! `tenminute-admin`: the operator's command line, over the order service's operator API
//! (`/admin/...`) and the broker's dead-letter queues.
//!
//! ```sh
//! tenminute-admin orders stuck --older-than 30s          # unfinished orders, oldest first
//! tenminute-admin orders stuck --state assigning --json
//! tenminute-admin orders retry 0193…                     # drive a stuck decided order now
//! tenminute-admin orders abort 0193…                     # end an undecided order (not placed)
//! tenminute-admin dlq list                               # every dead-letter queue and its depth
//! tenminute-admin dlq show store.assign.dlq              # its messages, with the reason
//! tenminute-admin dlq replay store.assign.dlq --dry-run  # what would be moved back
//! tenminute-admin dlq replay store.assign.dlq            # move them back to store.assign
//! tenminute-admin token --customer c-42                  # a development token (see below)
//! ```
//!
//! The operator API takes an operator's token: `TENMINUTE_TOKEN` (or a file named by
//! `TENMINUTE_TOKEN_FILE`), from the identity provider. With a development signing key
//! (`AUTH_SIGNING_KEY_FILE`, made by `scripts/run`) and no token, an operator token is minted
//! for each call, and `token` mints one for any role.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use messaging::{Broker, Health, Publisher, dlq};
use protocol::topology::Topology;
use serde_json::Value;
use service_kit::config::BrokerArgs;

/// Stuck orders and parked messages of a tenminute deployment.
#[derive(Parser, Debug)]
#[command(name = "tenminute-admin", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Unfinished orders: list them, drive one now, abort an undecided one.
    Orders {
        #[command(flatten)]
        api: Api,
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Mint a token with the development signing key (`AUTH_SIGNING_KEY_FILE`), for one role.
    Token {
        #[command(flatten)]
        signing: Signing,
        #[command(flatten)]
        role: TokenRole,
        /// How long the token is valid.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
    /// Dead-letter queues: list them, show their messages, move them back after a fix.
    Dlq {
        #[command(flatten)]
        broker: BrokerArgs,
        #[command(subcommand)]
        command: DlqCommand,
    },
}

/// Where the order service's operator API is.
#[derive(clap::Args, Debug)]
struct Api {
    /// The order service.
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8080")]
    order_url: String,
    /// A file holding an operator's token (else `TENMINUTE_TOKEN`, else one minted with the
    /// development signing key).
    #[arg(long, env = "TENMINUTE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(flatten)]
    signing: Signing,
}

/// The development signing key and the claims it signs with.
#[derive(clap::Args, Debug)]
struct Signing {
    /// The private key (PEM) that signs development tokens; `scripts/run` makes one.
    #[arg(long, env = "AUTH_SIGNING_KEY_FILE")]
    signing_key_file: Option<PathBuf>,
    /// The issuer the services expect.
    #[arg(long, env = "AUTH_ISSUER", default_value = "tenminute-dev")]
    issuer: String,
    /// The audience the services expect.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "tenminute")]
    audience: String,
}

impl Signing {
    fn issuer(&self) -> anyhow::Result<identity::Issuer> {
        let Some(path) = &self.signing_key_file else {
            bail!("no signing key: set AUTH_SIGNING_KEY_FILE (scripts/run prints it)");
        };
        Ok(identity::Issuer::from_pem_file(
            path,
            &self.issuer,
            &self.audience,
        )?)
    }
}

/// The role a minted token is for: exactly one.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct TokenRole {
    /// A customer, by customer id.
    #[arg(long)]
    customer: Option<String>,
    /// A rider, by the id of their agent.
    #[arg(long)]
    rider: Option<i64>,
    /// An operator, by name.
    #[arg(long)]
    operator: Option<String>,
}

impl Api {
    /// The operator's token: from the file, the environment, or minted; none without any of
    /// them (a service with identity turned off takes that).
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            return Ok(Some(token.trim().to_owned()));
        }
        if let Ok(token) = std::env::var("TENMINUTE_TOKEN")
            && !token.trim().is_empty()
        {
            return Ok(Some(token.trim().to_owned()));
        }
        if self.signing.signing_key_file.is_some() {
            let issuer = self.signing.issuer()?;
            return Ok(Some(
                issuer.operator("tenminute-admin", Duration::from_secs(300))?,
            ));
        }
        Ok(None)
    }
}

#[derive(Subcommand, Debug)]
enum OrdersCommand {
    /// Unfinished orders received more than `--older-than` ago, oldest first.
    Stuck {
        /// Only orders at least this old (e.g. `30s`, `5m`).
        #[arg(long, default_value = "0s")]
        older_than: String,
        /// Only orders in this state (`reserving`, `assigning`, `compensating`, `cancelling`).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drive a decided, unfinished order now (taking it from whoever holds its lease).
    Retry {
        /// The order id.
        id: String,
    },
    /// Abort an undecided order (`reserving`): both sides released, `not_placed` (`aborted`).
    /// A decided order is refused.
    Abort {
        /// The order id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Every dead-letter queue of the topology, with how many messages it holds.
    List,
    /// The messages of one dead-letter queue, left in it.
    Show {
        /// The queue, e.g. `store.assign.dlq`.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Move the messages of one dead-letter queue back to the queues they were parked from.
    Replay {
        /// The queue, e.g. `store.assign.dlq`.
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
        /// Show what would be moved, and move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Leave in place the messages parked longer ago than this: a command replayed after
        /// the participants forgot its transaction (`BARRIER_RETENTION`, 24 h by default) could
        /// act again.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        max_age: Duration,
        /// Move old messages too (and those whose parking time is unknown).
        #[arg(long)]
        force: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Orders { api, command } => orders(&api, command).await,
        Command::Token { signing, role, ttl } => {
            let issuer = signing.issuer()?;
            let token = match (role.customer, role.rider, role.operator) {
                (Some(customer), _, _) => issuer.customer(&customer, ttl)?,
                (_, Some(agent), _) => issuer.rider(agent, ttl)?,
                (_, _, Some(operator)) => issuer.operator(&operator, ttl)?,
                (None, None, None) => bail!("give --customer, --rider or --operator"),
            };
            println!("{token}");
            Ok(())
        }
        Command::Dlq {
            mut broker,
            command,
        } => {
            if let Some(url) = service_kit::config::secret_from_file("AMQP_URL")? {
                broker.amqp_url = url;
            }
            dead_letters(&broker, command).await
        }
    }
}

async fn orders(api: &Api, command: OrdersCommand) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = api.order_url.trim_end_matches('/');
    let token = api.token()?;
    let with_token = |request: reqwest::RequestBuilder| match &token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    match command {
        OrdersCommand::Stuck {
            older_than,
            state,
            limit,
            json,
        } => {
            humantime::parse_duration(&older_than)
                .with_context(|| format!("--older-than {older_than:?}"))?;
            let mut query = vec![("older_than", older_than), ("limit", limit.to_string())];
            if let Some(state) = state {
                query.push(("state", state));
            }
            let url = reqwest::Url::parse_with_params(&format!("{base}/admin/orders"), &query)
                .with_context(|| format!("--order-url {base:?}"))?;
            let request = http.get(url);
            let body = send(with_token(request)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
                return Ok(());
            }
            let orders = body["orders"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<36}  {:<12}  {:>9}  {:>7}  {:<7}  lease holder",
                "order", "state", "age", "attempt", "lease"
            );
            for order in &orders {
                let lease = if order["lease_expired"] == true {
                    "expired"
                } else {
                    "held"
                };
                println!(
                    "{:<36}  {:<12}  {:>8.1}s  {:>7}  {:<7}  {}",
                    order["order_id"].as_str().unwrap_or("?"),
                    order["state"].as_str().unwrap_or("?"),
                    order["age_seconds"].as_f64().unwrap_or_default(),
                    order["attempt"],
                    lease,
                    order["lease_holder"].as_str().unwrap_or("-"),
                );
            }
            println!("{} unfinished", orders.len());
            Ok(())
        }
        OrdersCommand::Retry { id } => {
            let request = http.post(format!("{base}/admin/orders/{id}/retry"));
            let body = send(with_token(request)).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
        OrdersCommand::Abort { id } => {
            let request = http.post(format!("{base}/admin/orders/{id}/abort"));
            let body = send(with_token(request)).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
    }
}

/// Sends `request`; the JSON body of a 2xx answer, else an error with the API's message.
async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.context("the order service")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no message");
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "{status}: {message}: set TENMINUTE_TOKEN or TENMINUTE_TOKEN_FILE to an operator's \
                 token (or AUTH_SIGNING_KEY_FILE in development)"
            );
        }
        bail!("{status}: {message} {body}");
    }
    Ok(body)
}

async fn dead_letters(args: &BrokerArgs, command: DlqCommand) -> anyhow::Result<()> {
    let topology = Topology::new(args.amqp_prefix.clone());
    let broker = Broker::new(args.config("tenminute-admin"), Health::default())?;
    match command {
        DlqCommand::List => {
            println!("{:<40}  {:>8}", "dead-letter queue", "messages");
            for queue in topology.dead_letter_queues() {
                let depth = match dlq::depth(&broker, &queue).await? {
                    Some(n) => n.to_string(),
                    None => "(absent)".to_owned(),
                };
                println!("{queue:<40}  {depth:>8}");
            }
        }
        DlqCommand::Show { queue, limit } => {
            let parked = dlq::peek(&broker, &queue, limit).await?;
            for message in &parked {
                print_parked(message, &message.queue);
            }
            println!("{} shown (left in {queue})", parked.len());
        }
        DlqCommand::Replay {
            queue,
            limit,
            dry_run,
            max_age,
            force,
        } => {
            // The target is the configuration's, not a header's: the queue whose dead letters
            // `queue` holds in this deployment's topology.
            if !topology.dead_letter_queues().contains(&queue) {
                bail!(
                    "{queue} is not a dead-letter queue of this topology (AMQP_PREFIX {:?}); \
                     `tenminute-admin dlq list` shows them",
                    args.amqp_prefix
                );
            }
            let target = queue.strip_suffix(".dlq").unwrap_or(&queue).to_owned();
            let limits = dlq::ReplayLimits {
                limit,
                max_age,
                force,
            };
            if dry_run {
                let parked = dlq::peek(&broker, &queue, limit).await?;
                let mut moving = 0;
                for message in &parked {
                    match limits.refuses(message) {
                        Some(why) => println!("left: {why}"),
                        None => moving += 1,
                    }
                    print_parked(message, &target);
                }
                println!(
                    "dry run: {moving} would be moved back to {target}, {} left; nothing moved",
                    parked.len() - moving
                );
            } else {
                let publisher = Publisher::new(broker.clone());
                let replayed = dlq::replay(&broker, &publisher, &queue, &target, limits).await?;
                for (message, why) in &replayed.left {
                    println!("left: {why}");
                    print_parked(message, &queue);
                }
                for message in &replayed.moved {
                    print_parked(message, &target);
                }
                println!(
                    "{} moved back to {target}, {} left in {queue}",
                    replayed.moved.len(),
                    replayed.left.len()
                );
            }
        }
    }
    broker.close();
    Ok(())
}

fn print_parked(message: &dlq::Parked, to: &str) {
    let age = message.age.map_or_else(
        || "?".to_owned(),
        |age| humantime::format_duration(Duration::from_secs(age.as_secs())).to_string(),
    );
    println!(
        "{} -> {to}  kind={} order={} parked {age} ago, reason={:?} ({} bytes) {}",
        message.message_id.as_deref().unwrap_or("?"),
        message.kind.as_deref().unwrap_or("?"),
        message.order_id.as_deref().unwrap_or("-"),
        message.reason,
        message.size,
        message.preview
    );
}
