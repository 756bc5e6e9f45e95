//! Checks the order transaction's model at a size given on the command line, and prints the
//! number of states, the time it took and every counterexample found (with its path).
//!
//! ```sh
//! cargo run -p model --release -- --orders 3 --packets 2 --agents 2
//! ```

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use model::state::Faults;
use model::{Config, OrderModel};
use stateright::report::WriteReporter;
use stateright::{Checker, Model};

/// Model-checks the order transaction (both sides' machines, a lossy and duplicating network,
/// crashes, take-overs, riders, cancels and operators).
#[derive(Debug, Parser)]
struct Args {
    /// Orders sent.
    #[arg(long, default_value_t = 2)]
    orders: usize,
    /// The store's packets.
    #[arg(long, default_value_t = 1)]
    packets: i64,
    /// Delivery's agents.
    #[arg(long, default_value_t = 1)]
    agents: i64,
    /// Packets per order.
    #[arg(long, default_value_t = 1)]
    packets_per_order: u32,
    /// Phase 1's attempts per order.
    #[arg(long, default_value_t = 2)]
    attempts: i32,
    /// Coordinator crashes.
    #[arg(long, default_value_t = 1)]
    crashes: u8,
    /// Lost replies.
    #[arg(long, default_value_t = 1)]
    lost_replies: u8,
    /// Messages delivered twice.
    #[arg(long, default_value_t = 1)]
    duplicates: u8,
    /// Drivers that stall past their lease.
    #[arg(long, default_value_t = 1)]
    stalls: u8,
    /// Writes whose acknowledgement is lost.
    #[arg(long, default_value_t = 1)]
    lost_acks: u8,
    /// Commands lost on their way (transient messages).
    #[arg(long, default_value_t = 1)]
    lost_commands: u8,
    /// No riders (no pick-ups or deliveries).
    #[arg(long)]
    no_riders: bool,
    /// No cancels.
    #[arg(long)]
    no_cancels: bool,
    /// No operator, and phase 1 never outlasts the response budget.
    #[arg(long)]
    no_operator: bool,
    /// Stop exploring at this depth (0: no bound).
    #[arg(long, default_value_t = 0)]
    depth: usize,
    /// Deadlines never pass (participants always answer in time).
    #[arg(long)]
    no_deadlines: bool,
    /// Drivers never release orphaned reservations in their way.
    #[arg(long)]
    no_orphans: bool,
    /// Customers told nothing send their order again with its idempotency key.
    #[arg(long)]
    replays: bool,
    /// A replayed request runs its phase 1 before it finds its key taken (hole 5).
    #[arg(long)]
    no_key_lookup: bool,
    /// Checker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        orders: args.orders,
        packets: args.packets,
        agents: args.agents,
        packets_per_order: args.packets_per_order,
        max_attempts: args.attempts,
        faults: Faults {
            crashes: args.crashes,
            lost_replies: args.lost_replies,
            duplicates: args.duplicates,
            stalls: args.stalls,
            lost_acks: args.lost_acks,
            lost_commands: args.lost_commands,
        },
        riders: !args.no_riders,
        cancels: !args.no_cancels,
        operator: !args.no_operator,
        deadlines: !args.no_deadlines,
        orphans: !args.no_orphans,
        replays: args.replays,
        key_lookup: !args.no_key_lookup,
    };
    println!("checking {config:?}");
    let started = Instant::now();
    let mut builder = OrderModel::new(config).checker().threads(args.threads);
    if args.depth > 0 {
        builder = builder.target_max_depth(args.depth);
    }
    let checker = builder
        .spawn_dfs()
        .join_and_report(&mut WriteReporter::new(&mut std::io::stderr()));
    let took = started.elapsed();
    println!(
        "{} states ({} unique), depth {}, in {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        took.as_secs_f64()
    );
    let mut failed = false;
    for property in checker.model().properties() {
        let found = checker.discovery(property.name);
        let failure = match property.expectation {
            stateright::Expectation::Sometimes => found.is_none(),
            stateright::Expectation::Always | stateright::Expectation::Eventually => {
                found.is_some()
            }
        };
        let verdict = if failure { "FAILED" } else { "ok" };
        println!("{verdict:>6}  {}", property.name);
        if let (true, Some(path)) = (failure, found) {
            for (state, action) in path.into_vec() {
                if let Some(action) = action {
                    println!("          {action:?}");
                } else {
                    println!("          => {state:#?}");
                }
            }
        }
        failed |= failure;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
