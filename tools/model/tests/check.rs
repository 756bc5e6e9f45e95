//! The model checked exhaustively at the sizes that fit in CI (each in well under a minute on
//! two cores). Deeper runs, with their state counts and times, are in
//! `docs/failure-handling.md` ("The model").

use model::state::Faults;
use model::{Config, OrderModel};
use stateright::{Checker, Model};

/// Explores every state of `config` depth first (breadth first would hold a whole level of
/// states in memory) and fails on a counterexample to any property, or on a `sometimes` that
/// never happened.
fn check(config: Config) {
    let checker = OrderModel::new(config)
        .checker()
        .threads(2)
        .spawn_dfs()
        .join();
    println!(
        "{} states ({} unique), depth {}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth()
    );
    checker.assert_properties();
}

/// One order through every fault the model has, each once: a coordinator crash, a lost reply,
/// a duplicated message, a driver that stalls past its lease (two drivers at once), and a first
/// record whose acknowledgement is lost; with riders, a customer's cancel and an operator's
/// abort.
#[test]
fn one_order_keeps_the_promise_through_every_fault() {
    check(Config {
        orders: 1,
        faults: Faults::each_once(),
        riders: true,
        cancels: true,
        operator: true,
        ..Config::plain(1)
    });
}

/// Two orders for the last packet and the last agent, with riders, cancels and an operator.
#[test]
fn two_orders_for_the_last_packet_and_agent_keep_the_promise() {
    check(Config {
        riders: true,
        cancels: true,
        operator: true,
        ..Config::plain(2)
    });
}

/// Without deadlines (participants always answer in time), every order still ends through a
/// lost reply, a crash, a duplicate, a stall and a lost acknowledgement: nothing waits for an
/// answer that will never come.
#[test]
fn without_deadlines_every_order_ends_through_every_fault() {
    check(Config {
        orders: 1,
        faults: Faults::each_once(),
        deadlines: false,
        ..Config::plain(1)
    });
}

/// Two orders for the last packet and agent while the coordinator of either dies at any step and
/// another takes the order over.
#[test]
fn two_orders_keep_the_promise_through_a_coordinator_crash() {
    check(Config {
        faults: Faults {
            crashes: 1,
            ..Faults::default()
        },
        ..Config::plain(2)
    });
}

/// One order whose customer, told nothing final (its coordinator died, or its first record's
/// acknowledgement was lost), sends it again with its idempotency key, through a crash, a lost
/// reply and a lost acknowledgement, with riders, cancels and an operator.
#[test]
fn a_replayed_key_keeps_the_promise_and_holds_nothing() {
    check(Config {
        orders: 1,
        faults: Faults {
            crashes: 1,
            lost_replies: 1,
            lost_acks: 1,
            ..Faults::default()
        },
        riders: true,
        cancels: true,
        operator: true,
        replays: true,
        ..Config::plain(1)
    });
}
