//! `bench`: a load generator for a running system that checks correctness, and the same orders as
//! single-database transactions (the baseline), measured in the same run.
//!
//! ```sh
//! bench run --scenario uniform --clients 16 --duration 30s      # closed loop
//! bench run --scenario uniform --rate 400 --duration 30s        # open loop, 400 orders/s
//! bench run --scenario hot --orders 10000 --packets 1000        # exactly 1000 placed
//! bench sweep --clients 1,4,16,32 --plot bench.svg              # throughput and p99 vs clients
//! bench run --scenario day --hubs 3 --agents-per-hub 3 --duration 30s   # a delivery day
//! bench run --scenario soak --duration 10m --fault-log faults.txt       # the day under faults
//! bench targets --stock 400000                                  # the four speed targets
//! ```
//!
//! Every run ends by checking the invariants (the audit, and the scenario's own expectations); a
//! run with a violation exits non-zero, whatever its speed. See BENCHMARKS.md.
//!
//! # Layout
//! - [`scenario`]: what is seeded and ordered.
//! - [`load`]: closed- and open-loop drivers and their latency histograms.
//! - [`distributed`]: runs a scenario against the services, then checks it.
//! - [`day`]: the `day` scenario: hubs, baskets, riders and cancellations, then its checks;
//!   [`day_stats`]: what a day came to.
//! - [`soak`]: the `soak` scenario: the day under faults injected from outside, and the checker
//!   of every answer against the record; [`soak_stats`]: what it came to.
//! - [`baseline`]: the same orders as one PostgreSQL transaction each, in one database.
//! - [`breakdown`]: the services' own histograms over a run: time per phase and per command.
//! - [`cpu`]: CPU time per process over a run, when the system runs on this machine.
//! - [`targets`]: the speed targets, each a ratio to the baseline of the same invocation.
//! - [`report`]: text, JSON and the SVG plot.

mod baseline;
mod breakdown;
mod cpu;
mod day;
mod day_stats;
mod distributed;
mod load;
mod report;
mod scenario;
mod soak;
mod soak_stats;
mod targets;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::report::{RunReport, SweepPoint};
use crate::scenario::Scenario;

/// Load generator and baseline for the order system.
#[derive(Parser, Debug)]
#[command(name = "bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One scenario at one load: the distributed system, then the single-database baseline.
    Run(RunArgs),
    /// The same scenario at several client counts, with a plot of throughput and p99.
    Sweep {
        #[command(flatten)]
        run: RunArgs,
        /// Client counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
        clients_list: Vec<usize>,
        /// Where to write the plot (SVG).
        #[arg(long, default_value = "bench.svg")]
        plot: String,
    },
    /// The speed targets in one invocation: a sweep over clients (distributed and baseline),
    /// then a search for the highest open-loop rate whose p99 stays within a limit; prints each
    /// target's ratio to this invocation's baseline and whether it is met.
    Targets {
        #[command(flatten)]
        run: RunArgs,
        /// Client counts of the sweep (1 and 16 are always measured).
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,512")]
        clients_list: Vec<usize>,
        /// The p99 an open-loop rate must keep, milliseconds.
        #[arg(long, default_value_t = 50.0)]
        p99_limit_ms: f64,
        /// How many rates the search tries at most.
        #[arg(long, default_value_t = 7)]
        search_steps: usize,
        /// How long each rate of the search runs.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
        search_duration: Duration,
        /// Also write the sweep's plot (SVG) here.
        #[arg(long)]
        plot: Option<String>,
    },
}

/// Where the system under test is.
#[derive(Args, Debug, Clone)]
pub(crate) struct Target {
    /// The order service (a comma-separated list for several copies: each request goes to one at
    /// random).
    #[arg(
        long,
        env = "ORDER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) order_url: String,
    /// The private key (PEM) that signs the bench's tokens, when the services verify them (the
    /// development key of `scripts/run`, `.dev/signing-key.pem`): an operator's to seed, each
    /// customer's to order and cancel, each agent's rider's to report. Unset: no tokens (the
    /// services run with `AUTH_DISABLED=true`).
    #[arg(long, env = "AUTH_SIGNING_KEY_FILE", global = true)]
    pub(crate) signing_key_file: Option<std::path::PathBuf>,
    /// The issuer of the bench's tokens.
    #[arg(
        long,
        env = "AUTH_ISSUER",
        default_value = "tenminute-dev",
        global = true
    )]
    pub(crate) auth_issuer: String,
    /// The audience of the bench's tokens.
    #[arg(
        long,
        env = "AUTH_AUDIENCE",
        default_value = "tenminute",
        global = true
    )]
    pub(crate) auth_audience: String,
    /// The store service (a comma-separated list for several copies: each request goes to one at
    /// random).
    #[arg(
        long,
        env = "STORE_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub(crate) store_url: String,
    /// The delivery service (a comma-separated list for several copies: each request goes to one at
    /// random).
    #[arg(
        long,
        env = "DELIVERY_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    pub(crate) delivery_url: String,
    /// The order database (for the invariant check).
    #[arg(
        long,
        env = "ORDER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/order_service",
        global = true
    )]
    pub(crate) order_database_url: String,
    /// The store database (for the invariant check).
    #[arg(
        long,
        env = "STORE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/store_service",
        global = true
    )]
    pub(crate) store_database_url: String,
    /// The delivery database (for the invariant check).
    #[arg(
        long,
        env = "DELIVERY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/delivery_service",
        global = true
    )]
    pub(crate) delivery_database_url: String,
    /// The database the baseline runs in (created if missing; its tables are re-created per run).
    #[arg(
        long,
        env = "BASELINE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bench_baseline",
        global = true
    )]
    pub(crate) baseline_database_url: String,
}

/// One measurement.
#[derive(Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// What to order: `uniform` (many foods, plenty of stock), `hot` (one food, scarce packets),
    /// `scarce-agents` (plenty of packets, few agents), `day` (a delivery day: baskets at several
    /// hubs, riders who pick up and deliver, cancellations; no baseline).
    #[arg(long, value_enum, default_value = "uniform")]
    pub(crate) scenario: Scenario,
    /// Concurrent clients (closed loop: each sends its next order when the last is answered).
    #[arg(long, default_value_t = 16)]
    pub(crate) clients: usize,
    /// Open loop instead: orders per second, sent on schedule whatever the answers (latency is
    /// measured from the scheduled time, so a slow system cannot hide its queueing).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Run for this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Or send this many orders (default for `hot` and `scarce-agents`: 10000; `uniform` runs
    /// for 20s by default, `day` for 30s).
    #[arg(long)]
    pub(crate) orders: Option<u64>,
    /// Packets in stock in total (`uniform`, `scarce-agents`: spread over 50 foods; `day`: over
    /// 50 foods at each hub).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) stock: i64,
    /// Packets of the one food (`hot`).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) packets: i64,
    /// Agents to add (`scarce-agents`; other scenarios add as many as orders can need).
    #[arg(long, default_value_t = 1_000)]
    pub(crate) agents: i64,
    /// Hubs to create (`day`).
    #[arg(long, default_value_t = 3)]
    pub(crate) hubs: usize,
    /// Agents of each hub (`day`): few, so that the orders placed depend on agents coming back.
    #[arg(long, default_value_t = 3)]
    pub(crate) agents_per_hub: i64,
    /// How long a rider takes from an order's placement to its pick-up (`day`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    pub(crate) pickup_delay: Duration,
    /// How long a rider takes from the pick-up to the delivery (`day`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300ms")]
    pub(crate) deliver_delay: Duration,
    /// The fraction of placed orders their customer cancels, at a random moment between the
    /// placement and 1.5 times the pick-up delay after it, racing the pick-up (`day`).
    #[arg(long, default_value_t = 0.2)]
    pub(crate) cancel_rate: f64,
    /// Foods of the soak, each with packets at every hub (`--stock` shared out over them):
    /// few, so that orders fight over the last packets (`soak`).
    #[arg(long, default_value_t = 4)]
    pub(crate) soak_foods: i64,
    /// How long a request that may be repeated is tried again when a service does not answer
    /// (`soak`; the day tries for 1.5 s).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub(crate) patience: Duration,
    /// The nemesis's log of the faults it injected, a line `<start> <end> <name>` each (Unix
    /// milliseconds), read when the soak ends (`soak`).
    #[arg(long)]
    pub(crate) fault_log: Option<String>,
    /// How long after a fault ends a `timeout` refusal is still the fault's (`soak`).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub(crate) fault_window: Duration,
    /// Skip the single-database baseline (`day` and `soak` have none).
    #[arg(long)]
    pub(crate) no_baseline: bool,
    /// Do not vacuum the services' tables before the run. (The run starts with vacuumed tables by
    /// default, like the baseline's fresh ones, so that dead rows left by earlier runs on a
    /// server without autovacuum do not weigh on this one.)
    #[arg(long)]
    pub(crate) no_vacuum: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Report the CPU time each process spent per order while the orders ran (PostgreSQL,
    /// RabbitMQ, each service, `bench`), from Linux's `/proc`. Meaningful only when the whole
    /// system runs on this machine.
    #[arg(long)]
    pub(crate) cpu: bool,
    /// Report where the orders' time went, from the services' own histograms (`GET /metrics`
    /// before and after the run): the coordinator's time per phase, each participant's time per
    /// command, and the mean sizes of command batches and group commits.
    #[arg(long)]
    pub(crate) breakdown: bool,
}

impl RunArgs {
    /// How much work a run does.
    pub(crate) fn amount(&self) -> load::Amount {
        match (self.orders, self.duration) {
            (Some(n), _) => load::Amount::Orders(n),
            (None, Some(d)) => load::Amount::Duration(d),
            (None, None) => match self.scenario {
                Scenario::Uniform => load::Amount::Duration(Duration::from_secs(20)),
                Scenario::Day => load::Amount::Duration(Duration::from_secs(30)),
                Scenario::Soak => load::Amount::Duration(Duration::from_secs(60)),
                Scenario::Hot | Scenario::ScarceAgents => load::Amount::Orders(10_000),
            },
        }
    }
}

async fn run(target: &Target, args: &RunArgs) -> anyhow::Result<RunReport> {
    // The baseline knows neither hubs nor baskets nor riders: the day and the soak have none.
    match args.scenario {
        Scenario::Day => return Ok(RunReport::new(args, day::run(target, args).await?, None)),
        Scenario::Soak => return Ok(RunReport::new(args, soak::run(target, args).await?, None)),
        Scenario::Uniform | Scenario::Hot | Scenario::ScarceAgents => {}
    }
    let distributed = distributed::run(target, args).await?;
    let baseline = if args.no_baseline {
        None
    } else {
        Some(baseline::run(&target.baseline_database_url, args).await?)
    };
    Ok(RunReport::new(args, distributed, baseline))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run(&cli.target, args).await.map(|report| {
            report.print(args.json);
            report.is_correct()
        }),
        Command::Sweep {
            run: args,
            clients_list,
            plot,
        } => sweep(&cli.target, args, clients_list, plot).await,
        Command::Targets {
            run: args,
            clients_list,
            p99_limit_ms,
            search_steps,
            search_duration,
            plot,
        } => {
            let search = targets::Search {
                p99_limit_ms: *p99_limit_ms,
                steps: *search_steps,
                duration: *search_duration,
            };
            targets::run(&cli.target, args, clients_list, search, plot.as_deref()).await
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("FAILED: the run broke an invariant (see the violations above)");
            ExitCode::from(1)
        }
        Err(err) => {
            eprintln!("bench could not run: {err:#}");
            ExitCode::from(2)
        }
    }
}

async fn sweep(
    target: &Target,
    args: &RunArgs,
    clients: &[usize],
    plot: &str,
) -> anyhow::Result<bool> {
    let mut points = Vec::new();
    let mut correct = true;
    for &n in clients {
        let args = RunArgs {
            clients: n,
            ..args.clone()
        };
        let report = run(target, &args).await?;
        report.print(args.json);
        correct &= report.is_correct();
        points.push(SweepPoint::from(&report));
    }
    report::plot(&points, plot)?;
    eprintln!("plot written to {plot}");
    Ok(correct)
}
