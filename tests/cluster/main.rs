//! The system on a three-node RabbitMQ cluster of each test's own (`scripts/local-cluster`, nodes
//! apart from the machine's own): losing any one node, a rolling restart, and one node's memory
//! alarm, each under load, with the audit and the client-answer checker at the end. A cluster
//! is heavy for this machine, so these tests have their own binary and run one at a time.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test binary exports nothing; `pub` marks what the test modules share.
#![allow(unreachable_pub)]

#[path = "../system/helpers/mod.rs"]
mod helpers;

use std::time::Duration;

use tokio::time::Instant;

use protocol::command::Operation;
use protocol::topology::{Participant, Topology};

use helpers::cluster::{Cluster, NODES, Node};
use helpers::load::Load;
use helpers::{Options, TestSystem, eventually_explained};

/// How long everything may take to settle at the end.
const FINISH: Duration = Duration::from_secs(90);
/// The bound after a fault within which orders are being placed again.
const RECOVERY: Duration = Duration::from_secs(45);
/// Clients placing orders throughout.
const CLIENTS: usize = 8;

/// The system on `cluster`, with stock and agents for every order the tests place.
async fn system_on(cluster: &Cluster) -> (TestSystem, i64) {
    let system = TestSystem::start_on_cluster(cluster, Options::default()).await;
    let food = system.create_food("Vada pav", 20_000).await;
    system.create_agents(20_000).await;
    (system, food)
}

/// Stops the load and holds every answer against the databases.
async fn finish_and_check(system: &TestSystem, load: Load) {
    let checked = system.finish_and_check(load, FINISH).await;
    assert!(checked.placed > 0, "{checked}");
}

/// Every quorum queue has three members, and their leaders are spread over the nodes.
async fn assert_leaders_spread(cluster: &Cluster, system: &TestSystem) {
    let (led, members) = cluster.leaders(1, &system.infra.vhost).await;
    println!("leaders per node: {led:?}; members per queue: {members:?}");
    assert!(!members.is_empty());
    assert!(members.iter().all(|m| *m == 3), "members: {members:?}");
    // `x-queue-leader-locator: balanced`: each queue's leader went to the node with the fewest,
    // whichever node its declaring connection was on.
    let counts: Vec<usize> = led.iter().map(|(_, n)| *n).collect();
    let (most, fewest) = (counts.iter().max(), counts.iter().min());
    assert!(
        most.zip(fewest)
            .is_some_and(|(most, fewest)| most - fewest <= 2),
        "leaders per node: {led:?}"
    );
}

fn store_reserve_queue() -> String {
    Topology::new("").command_queue(Participant::Store, Operation::Reserve)
}

/// A node other than `not`, alive, to ask the management API.
fn other_than(not: Node) -> Node {
    NODES.into_iter().find(|n| *n != not).expect("three nodes")
}

#[tokio::test]
async fn losing_a_follower_the_command_queues_leader_or_the_services_node_loses_nothing() {
    let cluster = Cluster::start().await;
    let (system, food) = system_on(&cluster).await;
    let vhost = system.infra.vhost.clone();
    let queue = store_reserve_queue();
    let load = Load::start(vec![system.order.url("")], food, CLIENTS);
    load.wait_placed(20, RECOVERY).await;

    for fault in ["a follower", "the leader", "the services' node"] {
        let leader = cluster.leader(1, &vhost, &queue).await;
        let busiest = cluster.busiest_node(1, &vhost).await;
        let victim = match fault {
            "a follower" => NODES
                .into_iter()
                .filter(|n| *n != leader)
                .min_by_key(|n| *n == busiest)
                .expect("a follower"),
            "the leader" => leader,
            _ => busiest,
        };
        println!("kill -9 of {fault}: node {victim} (leader {leader}, busiest {busiest})");
        cluster.kill(victim).await;
        let killed = Instant::now();
        // Two nodes of three carry on: orders are placed again within the bound.
        load.wait_placed(20, RECOVERY).await;
        println!(
            "20 more orders placed {:?} after the kill",
            killed.elapsed()
        );
        if fault == "the leader" {
            let new_leader = cluster.leader(other_than(victim), &vhost, &queue).await;
            assert_ne!(new_leader, victim, "a new leader was elected");
        }
        cluster.start_node(victim).await;
        load.wait_placed(10, RECOVERY).await;
    }
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    finish_and_check(&system, load).await;
}

#[tokio::test]
async fn queues_spread_their_leaders_and_a_rolling_restart_under_load_loses_nothing() {
    let cluster = Cluster::start().await;
    let (system, food) = system_on(&cluster).await;
    assert_leaders_spread(&cluster, &system).await;
    let load = Load::start(vec![system.order.url("")], food, CLIENTS);
    load.wait_placed(20, RECOVERY).await;
    for node in NODES {
        println!("restarting node {node}");
        cluster.stop_node(node).await;
        load.wait_placed(10, RECOVERY).await;
        cluster.start_node(node).await;
        load.wait_placed(10, RECOVERY).await;
    }
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    finish_and_check(&system, load).await;
}

#[tokio::test]
async fn one_nodes_memory_alarm_holds_publishing_everywhere_and_placing_resumes_after_it() {
    let cluster = Cluster::start().await;
    let (system, food) = system_on(&cluster).await;
    let load = Load::start(vec![system.order.url("")], food, CLIENTS);
    load.wait_placed(20, RECOVERY).await;

    // An alarm on one node blocks publishing connections on every node of the cluster.
    let watermark = cluster
        .ctl(
            2,
            &["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."],
        )
        .await;
    let watermark = watermark.trim().to_owned();
    assert!(watermark.parse::<f64>().is_ok(), "watermark {watermark:?}");
    cluster
        .ctl(2, &["set_vm_memory_high_watermark", "0.000001"])
        .await;
    // The clients keep getting answers (not placed, pending or unavailable), not silence.
    load.wait_answered(2 * CLIENTS, RECOVERY).await;
    cluster
        .ctl(2, &["set_vm_memory_high_watermark", &watermark])
        .await;

    load.wait_placed(20, RECOVERY).await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    finish_and_check(&system, load).await;
}
