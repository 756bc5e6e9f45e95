//! Reservations that outlive their worker's attention, assigns racing expiry, and lost timers.

use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_worker_stalled_longer_than_the_reservation_ttl_changes_nothing_when_it_wakes() {
    // The answers wait for the final state (the budget only has to be long enough for it).
    let options = Options::fast()
        .all("RESERVATION_TTL", "2s")
        .order("RESPONSE_BUDGET", "20s");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Kheer", 10).await;
    system.create_agents(10).await;

    system.delivery.signal("STOP").await;
    let stalled_at = Utc::now();
    let answers = join_all((0..5).map(|_| system.place_order(food))).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["reason"], "timeout", "{body}");
    }
    // The store's reservations were released by the aborts.
    eventually("store released", FINISH, || async {
        system.infra.reserved_counts().await.0 == 0
    })
    .await;
    // Stay stalled past the reservation TTL: that is the fault being tested.
    eventually("stalled longer than the TTL", FINISH, || async {
        Utc::now() - stalled_at > chrono::Duration::seconds(3)
    })
    .await;

    system.delivery.signal("CONT").await;
    // The late reserves are refused (their transactions were released) or released, and their
    // late replies change no order.
    system.assert_nothing_reserved(FINISH).await;
    eventually("every agent available", FINISH, || async {
        system.agents_summary().await["available"] == 10
    })
    .await;
    for (_, body) in &answers {
        let id = body["order_id"].as_str().unwrap();
        let (_, now) = system.get(&system.order, &format!("/orders/{id}")).await;
        assert_eq!(now["status"], "not_placed", "{now}");
    }
    system.assert_audit_clean(FINISH).await;
}

/// The store stalls `pause` before applying an assign; reservations last `ttl`.
async fn assign_stalled(pause: &str, ttl: &str) -> (TestSystem, serde_json::Value, i64) {
    let options = Options::fast().all("RESERVATION_TTL", ttl).store(
        "FAULT_POINTS",
        &format!("participant.before_assign={pause}"),
    );
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Halwa", 2).await;
    system.create_agents(2).await;
    let (_, body) = system.place_order(food).await;
    let id = body["order_id"].as_str().unwrap().to_owned();
    let order = system.order_when_final(&system.order, &id).await;
    (system, order, food)
}

#[tokio::test]
async fn a_reservation_expiring_during_its_assign_ends_not_placed_with_both_sides_released() {
    let (system, order, food) = assign_stalled("3s", "1s").await;
    assert_eq!(order["status"], "not_placed", "{order}");
    assert_eq!(order["reason"], "assign_failed", "{order}");
    // Never half: the agent assigned by the other side was released again.
    system.assert_nothing_reserved(FINISH).await;
    assert_eq!(system.food(food).await["assigned"], 0);
    assert_eq!(system.agents_summary().await["assigned"], 0);
    system.assert_audit_clean(FINISH).await;
}

/// Delivery assigns its agent while the store's assign stalls past the reservation's expiry: a
/// rider reporting the pick-up then is refused (the order is not placed yet), the store refuses
/// its assign, and the agent is taken back. Before delivery waited for the `order.placed` event,
/// the pick-up was taken and the rider left with an order that ended `not_placed`.
#[tokio::test]
async fn a_pick_up_before_placement_is_refused_and_the_agent_taken_back() {
    let options = Options::fast()
        .all("RESERVATION_TTL", "1s")
        .store("FAULT_POINTS", "participant.before_assign=3s");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Kulfi", 1).await;
    let agent = system.create_agents(1).await[0];

    let rider = async {
        eventually("the agent assigned", FINISH, || async {
            system.agents_summary().await["assigned"] == 1
        })
        .await;
        let (_, view) = system
            .get(&system.delivery, &format!("/agents/{agent}"))
            .await;
        let order = view["order_id"]
            .as_str()
            .expect("the agent's order")
            .to_owned();
        let answer = system.rider_once(&order, "picked-up").await;
        (order, answer)
    };
    let (_, (order, (status, body))) = tokio::join!(system.place_order(food), rider);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not placed yet")),
        "{body}"
    );

    let order_now = system.order_when_final(&system.order, &order).await;
    assert_eq!(order_now["status"], "not_placed", "{order_now}");
    assert_eq!(order_now["reason"], "assign_failed", "{order_now}");
    // The agent was taken back: nothing is left for a rider to leave with.
    eventually("the agent free again", FINISH, || async {
        system.agents_summary().await["available"] == 1
    })
    .await;
    let (status, body) = system.rider_once(&order, "picked-up").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    system.assert_audit_clean(FINISH).await;
}

#[tokio::test]
async fn an_assign_that_beats_the_expiry_places_the_order_with_both_items() {
    let (system, order, food) = assign_stalled("1s", "6s").await;
    assert_eq!(order["status"], "placed", "{order}");
    assert_eq!(system.food(food).await["assigned"], 1);
    assert_eq!(system.agents_summary().await["assigned"], 1);
    system.assert_audit_clean(FINISH).await;
}

#[tokio::test]
async fn purged_timers_are_made_up_for_by_the_sweeps() {
    // Long enough for the test to find the expiry timers in their wait queue and purge them.
    let options = Options::fast()
        .all("RESERVATION_TTL", "15s")
        .order("FAULT_POINTS", "coordinator.before_commit_decision");
    let mut system = TestSystem::start_with(options).await;
    let food = system.create_food("Jalebi", 2).await;
    system.create_agents(2).await;

    // The coordinator dies holding both reservations.
    let _ = system
        .http()
        .post(system.order.url("/orders"))
        .json(&serde_json::json!({ "food_id": food, "customer_id": "c-1" }))
        .send()
        .await;
    system.order.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(system.infra.reserved_counts().await, (1, 1));

    // Every timer is lost: wait for the expiry timers to reach their wait queues, then purge
    // every wait queue.
    let management = &system.infra.management;
    let vhost = &system.infra.vhost;
    let waits = || async {
        management
            .queues(vhost)
            .await
            .into_iter()
            .filter_map(|q| q["name"].as_str().map(str::to_owned))
            .filter(|name| name.contains(".wait."))
            .collect::<Vec<_>>()
    };
    eventually("expiry timers published", FINISH, || async {
        let mut n = 0;
        for queue in waits().await.iter().filter(|q| q.contains("expiry")) {
            n += management.count_messages(vhost, queue).await;
        }
        n == 2
    })
    .await;
    for queue in waits().await {
        management.purge(vhost, &queue).await;
    }

    // The participants' sweeps free the reservations after their expiry.
    system.assert_nothing_reserved(FINISH).await;
    // The coordinator died in phase 1, before the order was recorded (presumed abort): a
    // restarted coordinator has nothing to finish, and nothing is assigned.
    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    system.assert_all_orders_final(FINISH).await;
    assert_eq!(system.infra.order_states().await, Default::default());
    assert_eq!(system.food(food).await["assigned"], 0);
    system.assert_audit_clean(FINISH).await;
}
