//! Taking orders over: a coordinator claims no more orders than it can drive at once.

use std::time::Duration;

use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_coordinator_claims_no_more_orders_than_it_can_drive() {
    // Each assign stalls, so taken-over orders stay with their drivers for a while.
    let system = TestSystem::start_with(
        Options::fast()
            .order("RECOVERY_CONCURRENCY", "5")
            .store("FAULT_POINTS", "participant.before_assign=2s"),
    )
    .await;
    // Twenty decided orders whose driver is gone (their lease ran out a second ago).
    let db = system.infra.order_db().await;
    sqlx::query(
        "INSERT INTO orders (id, customer_id, hub_id, lines, state, txn_id, packet_ids, agent_id,
                             reserved_until, deadline, lease_token, lease_until, decided_at)
         SELECT gen_random_uuid(), 'c-42', 1, '[{\"food_id\": 1, \"quantity\": 1}]',
                'assigning', gen_random_uuid(), ARRAY[1], 1,
                now() + interval '1 minute', now() + interval '1 minute', gen_random_uuid(),
                now() - interval '1 second', now()
         FROM generate_series(1, 20)",
    )
    .execute(db)
    .await
    .unwrap();
    let leased = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM orders WHERE state = 'assigning' AND lease_until > now()",
        )
        .fetch_one(db)
        .await
        .unwrap()
    };
    eventually("some orders are taken over", FINISH, || async {
        leased().await > 0
    })
    .await;
    // Claimed in one statement, the whole herd would be leased at once.
    let now_leased = leased().await;
    assert!(now_leased <= 5, "{now_leased} orders claimed at once");
    system.assert_all_orders_final(FINISH).await;
}
