//! The system on PostgreSQL with a synchronous standby and automatic failover, of each test's
//! own (`scripts/local-pg-ha`: pg_auto_failover, apart from the machine's server; every
//! service's database on it, the services given both servers in `DATABASE_HOSTS`): the primary
//! killed under load, a switchover under load, the standby lost under load, each followed by
//! the audit and the client-answer checker. Three servers are heavy for this machine, so these
//! tests have their own binary and run one at a time.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test binary exports nothing; `pub` marks what the test modules share.
#![allow(unreachable_pub)]

#[path = "../system/helpers/mod.rs"]
mod helpers;

use std::time::Duration;

use tokio::time::Instant;

use helpers::load::Load;
use helpers::pg_ha::PgHa;
use helpers::{Options, TestSystem, eventually_explained};

/// How long everything may take to settle at the end.
const FINISH: Duration = Duration::from_secs(90);
/// The bound after a fault within which orders are being placed again (docs/failure-handling.md
/// gives the times measured).
const RECOVERY: Duration = Duration::from_secs(60);
/// Clients placing orders throughout.
const CLIENTS: usize = 8;

/// The system on `ha`, with stock and agents for every order the tests place.
async fn system_on(ha: &PgHa) -> (TestSystem, i64) {
    let system = TestSystem::start_on_database(ha.target(), Options::fast()).await;
    let food = system.create_food("Thali", 20_000).await;
    system.create_agents(20_000).await;
    (system, food)
}

/// Waits until `more` orders are placed after `fault`, and says how long that took.
async fn placed_again(load: &Load, fault: &str, since: Instant) {
    load.wait_placed(10, RECOVERY).await;
    println!(
        "{fault}: 10 more orders placed {:?} after it",
        since.elapsed()
    );
}

/// Stops the load and holds every answer against the databases.
async fn finish_and_check(system: &TestSystem, load: Load) {
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    let checked = system.finish_and_check(load, FINISH).await;
    assert!(checked.placed > 0, "{checked}");
}

#[tokio::test]
async fn the_primary_killed_under_load_then_a_switchover_lose_nothing() {
    let ha = PgHa::start().await;
    let (system, food) = system_on(&ha).await;
    let load = Load::start(vec![system.order.url("")], food, CLIENTS);
    load.wait_placed(20, RECOVERY).await;

    let primary = ha.primary().await;
    let killed = Instant::now();
    ha.kill(primary).await;
    placed_again(
        &load,
        &format!("kill -9 of the primary (node {primary})"),
        killed,
    )
    .await;
    assert_ne!(ha.primary().await, primary, "the standby was promoted");

    // The old primary comes back as the standby, and the two swap places under load.
    ha.start_node(primary).await;
    ha.wait_standby().await;
    load.wait_placed(10, RECOVERY).await;
    let switched = Instant::now();
    ha.switchover().await;
    placed_again(&load, "a switchover", switched).await;
    assert_eq!(
        ha.primary().await,
        primary,
        "the switchover swapped the nodes"
    );
    println!("{}", ha.state().await);

    finish_and_check(&system, load).await;
}

#[tokio::test]
async fn the_standby_lost_under_load_loses_nothing() {
    let ha = PgHa::start().await;
    let (system, food) = system_on(&ha).await;
    let load = Load::start(vec![system.order.url("")], food, CLIENTS);
    load.wait_placed(20, RECOVERY).await;

    // Commits wait for the standby until the monitor sees it gone and lets the primary go on
    // alone.
    let standby = ha.standby().await;
    let killed = Instant::now();
    ha.kill(standby).await;
    placed_again(
        &load,
        &format!("kill -9 of the standby (node {standby})"),
        killed,
    )
    .await;

    ha.start_node(standby).await;
    ha.wait_standby().await;
    load.wait_placed(10, RECOVERY).await;
    println!("{}", ha.state().await);

    finish_and_check(&system, load).await;
}
