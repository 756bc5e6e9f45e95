//! What the services keep, and for how long: old rows are pruned faster than orders make them,
//! and timers of an old TTL stop going to the old wait queue.

use std::time::Duration;

use protocol::topology::Topology;

use crate::helpers::client::CommandClient;
use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(15);

/// More rows than one pruning statement deletes.
const BACKLOG: i64 = 25_000;

#[tokio::test]
async fn a_backlog_of_sent_events_is_pruned_in_one_turn() {
    let mut system = TestSystem::start().await;
    system.order.terminate().await;
    let db = system.infra.order_db().await;
    sqlx::query(
        "INSERT INTO outbox (event_id, order_id, routing_key, payload, created_at, sent_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'order.placed', '{}',
                now() - interval '2 days', now() - interval '2 days'
         FROM generate_series(1, $1)",
    )
    .bind(BACKLOG)
    .execute(db)
    .await
    .unwrap();
    // The relay prunes once at start and then once a minute: the whole backlog must go in the
    // first turn, not 10,000 rows a minute.
    system.order.start().await;
    eventually("the outbox is pruned", FINISH, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
            .fetch_one(db)
            .await
            .unwrap()
            == 0
    })
    .await;
}

#[tokio::test]
async fn a_backlog_of_old_barrier_rows_is_pruned_in_one_sweep() {
    let mut system = TestSystem::start_with(Options::default().store("SWEEP_INTERVAL", "1m")).await;
    system.store.terminate().await;
    let db = system.infra.store_db().await;
    sqlx::query(
        "INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, created_at)
         SELECT gen_random_uuid(), 'reserve', gen_random_uuid(), 'busy', now() - interval '2 days'
         FROM generate_series(1, $1)",
    )
    .bind(BACKLOG)
    .execute(db)
    .await
    .unwrap();
    // The sweep runs at start and then once a minute here.
    system.store.start().await;
    eventually("the barrier is pruned", FINISH, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM txn_barrier")
            .fetch_one(db)
            .await
            .unwrap()
            == 0
    })
    .await;
}

/// The deadline-timer wait queues of the test's vhost.
async fn wait_queues(system: &TestSystem) -> Vec<String> {
    let mut names: Vec<String> = system
        .infra
        .management
        .queues(&system.infra.vhost)
        .await
        .iter()
        .filter_map(|q| q["name"].as_str().map(str::to_owned))
        .filter(|name| name.starts_with("order.timeouts.wait."))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn after_a_change_of_deadline_timers_go_only_to_the_new_wait_queue() {
    let mut system = TestSystem::start_with(Options::default().order("ORDER_DEADLINE", "5s")).await;
    let old = wait_queues(&system).await;
    assert_eq!(old.len(), 1, "{old:?}");
    system.order.terminate().await;
    system.order.set_env("ORDER_DEADLINE", "7s");
    system.order.start().await;
    let new: Vec<String> = wait_queues(&system)
        .await
        .into_iter()
        .filter(|q| !old.contains(q))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    let (old, new) = (&old[0], &new[0]);

    // The coordinator's own timer lands in the new queue.
    let food = system.create_food("Idli", 1).await;
    system.create_agents(1).await;
    system.place_order(food).await;
    let (management, vhost) = (&system.infra.management, &system.infra.vhost);
    eventually(
        "the new wait queue holds the order's timer",
        FINISH,
        || async { management.count_messages(vhost, new).await == 1 },
    )
    .await;
    // A confirmed message with the key timers are published with now reaches every queue bound
    // to it before the confirm: the old queue must not be one of them.
    let ttl_ms: u64 = new
        .trim_start_matches("order.timeouts.wait.")
        .trim_end_matches("ms")
        .parse()
        .unwrap();
    let client = CommandClient::connect(&system.infra).await;
    let key = Topology::timer_wait_routing_key(Duration::from_millis(ttl_ms));
    client
        .publish_raw(&client.topology().timers_exchange("order"), &key, b"marker")
        .await;
    assert!(management.count_messages(vhost, new).await >= 1);
    assert_eq!(management.count_messages(vhost, old).await, 0);
}
