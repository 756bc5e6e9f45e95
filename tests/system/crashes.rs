//! Processes killed at the worst moments: every order still finishes, nothing is held, the audit
//! is clean.

use std::time::Duration;

use crate::helpers::load::Load;
use crate::helpers::{self, Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_store_killed_during_a_stream_of_orders_loses_nothing() {
    let mut system = TestSystem::start_with(Options::fast()).await;
    let food = system.create_food("Masala Dosa", 5_000).await;
    system.create_agents(5_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(30, FINISH).await;

    system.store.kill().await;
    // Orders go on arriving while the store is dead (they wait, then time out).
    load.wait_answered(10, FINISH).await;
    system.store.start().await;
    load.wait_placed(30, FINISH).await;
    let outcomes = load.stop().await;

    assert!(
        outcomes.iter().all(|o| o.order_id().is_some()),
        "every request got an order id"
    );
    let finals = system.wait_final(&system.order, &outcomes).await;
    assert!(
        finals
            .iter()
            .all(|b| b["status"] == "placed" || b["status"] == "not_placed")
    );
    system.assert_all_orders_final(FINISH).await;
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    system.assert_checked(&outcomes).await;
}

/// The coordinator aborts at `point`, is restarted without it, and finishes the order alone.
/// With `recorded_in_phase1`, phase 1 is held up (delivery paused) past the response budget, so
/// that the order is recorded undecided and answered `202` before the coordinator dies.
async fn coordinator_dies_at(point: &str, recorded_in_phase1: bool) -> serde_json::Value {
    // Reservations that outlast the restart and the lease by far: the order must be finished by
    // the restarted coordinator, not by the participants' expiry racing it.
    let options = Options::fast()
        .order("FAULT_POINTS", point)
        .order("ORDER_DEADLINE", "5s")
        .order(
            "RESPONSE_BUDGET",
            if recorded_in_phase1 { "1s" } else { "6s" },
        )
        .all("RESERVATION_TTL", "60s");
    let mut system = TestSystem::start_with(options).await;
    let food = system.create_food("Pongal", 3).await;
    system.create_agents(3).await;

    if recorded_in_phase1 {
        system.delivery.signal("STOP").await;
    }
    let placing = system
        .http()
        .post(system.order.url("/orders"))
        .json(&serde_json::json!({ "food_id": food, "customer_id": "c-1" }))
        .send()
        .await;
    if recorded_in_phase1 {
        let placing = placing.expect("an answer within the budget");
        assert_eq!(placing.status(), 202, "pending, as recorded in phase 1");
        let body: serde_json::Value = placing.json().await.expect("a JSON body");
        assert_eq!(body["status"], "pending", "{body}");
        assert_eq!(body["stage"], "reserving", "{body}");
        system.delivery.signal("CONT").await;
    } else {
        assert!(placing.is_err(), "the coordinator died before answering");
    }
    system.order.wait_exit(Duration::from_secs(10)).await;

    // Both items are held by the dead coordinator's transaction (or being assigned to it).
    let (packets, agents) = system.infra.reserved_counts().await;
    let stock = system.food(food).await;
    assert_eq!(packets + stock["assigned"].as_i64().unwrap(), 1, "{stock}");
    assert!(agents <= 1);

    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    system.assert_all_orders_final(FINISH).await;
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_one(system.infra.order_db().await)
        .await
        .unwrap();
    system.get(&system.order, &format!("/orders/{id}")).await.1
}

#[tokio::test]
async fn a_coordinator_killed_after_the_commit_decision_places_the_order_after_restart() {
    let order = coordinator_dies_at("coordinator.after_commit_decision", false).await;
    assert_eq!(order["status"], "placed", "{order}");
}

/// An order recorded undecided (its phase 1 outlasted the response budget) whose coordinator
/// dies before the commit decision: the restarted coordinator takes it over and aborts it.
#[tokio::test]
async fn a_coordinator_killed_before_the_commit_decision_releases_everything_after_restart() {
    let order = coordinator_dies_at("coordinator.before_commit_decision", true).await;
    assert_eq!(order["status"], "not_placed", "{order}");
    assert_eq!(order["reason"], "timeout", "{order}");
}

/// A system with one packet and one agent whose coordinator dies in phase 1 of the first order,
/// with both items reserved for it and nothing recorded (the client is told nothing). Returns
/// the system, its coordinator stopped, and the food.
async fn killed_in_phase_1(options: Options) -> (TestSystem, i64) {
    let options = options.order("FAULT_POINTS", "coordinator.reserved_before_record");
    let mut system = TestSystem::start_with(options).await;
    let food = system.create_food("Upma", 1).await;
    system.create_agents(1).await;
    let order = serde_json::json!({ "food_id": food, "customer_id": "c-1" });
    let placing = system
        .http()
        .post(system.order.url("/orders"))
        .json(&order)
        .send()
        .await;
    assert!(placing.is_err(), "the coordinator died before answering");
    system.order.wait_exit(Duration::from_secs(10)).await;
    // Both items are held for a transaction that nobody recorded.
    assert_eq!(system.infra.reserved_counts().await, (1, 1));
    (system, food)
}

/// A new order is recorded only once its phase 1 ends (presumed abort). A coordinator that dies
/// with both reserves answered and the order not yet recorded leaves nothing recorded and tells
/// its client nothing; the reservations lapse with their expiry, and the items go to the next
/// order.
#[tokio::test]
async fn a_coordinator_killed_before_recording_leaves_reservations_that_lapse_with_their_expiry() {
    let (mut system, food) = killed_in_phase_1(Options::fast()).await;
    let order = serde_json::json!({ "food_id": food, "customer_id": "c-1" });
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(system.infra.order_db().await)
        .await
        .unwrap();
    assert_eq!(recorded, 0, "nothing was recorded");

    // No coordinator runs: the participants' expiry alone frees them.
    system.assert_nothing_reserved(FINISH).await;
    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    let (status, body) = system.post(&system.order, "/orders", order).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "placed", "{body}");
    system.assert_audit_clean(FINISH).await;
}

/// The same crash with reservations that last a minute: the next order for the last packet and
/// agent does not wait for their expiry. Told `busy`, with the orphan named and older than a
/// whole phase 1, its driver finds the orphan's order unrecorded, releases it, and places the
/// order. Before, every order for those items was refused `timeout` until the expiry.
#[tokio::test]
async fn an_order_after_a_coordinator_killed_in_phase_1_is_placed_without_waiting_for_the_expiry() {
    let (mut system, food) = killed_in_phase_1(Options::fast().all("RESERVATION_TTL", "60s")).await;
    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;

    // Once the orphan is older than a whole phase 1 (ORDER_DEADLINE 2s, plus a margin of 2s),
    // by the participants' clocks:
    eventually(
        "the orphaned reservations older than a phase 1",
        FINISH,
        || async { system.infra.youngest_reservation_held_for(60).await > Duration::from_secs(5) },
    )
    .await;
    let second = serde_json::json!({ "food_id": food, "customer_id": "c-2" });
    let (status, body) = system.post(&system.order, "/orders", second).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "placed", "{body}");
    assert!(
        system
            .order
            .logged("releasing a reservation whose order can never be placed")
    );
    system.assert_audit_clean(FINISH).await;
}

#[tokio::test]
async fn with_two_coordinators_one_killed_mid_load_every_order_finishes_once() {
    let system = TestSystem::start_with(Options::fast()).await;
    let mut second = system.another_order_service();
    second.start().await;
    let food = system.create_food("Thali", 5_000).await;
    system.create_agents(5_000).await;

    let load = Load::start(vec![system.order.url(""), second.url("")], food, 8);
    load.wait_placed(40, FINISH).await;
    second.kill().await;
    load.set_targets(vec![system.order.url("")]);
    load.wait_placed(40, FINISH).await;
    let outcomes = load.stop().await;

    // Orders the dead coordinator had started are finished by the survivor.
    system.wait_final(&system.order, &outcomes).await;
    system.assert_all_orders_final(FINISH).await;
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    system.assert_checked(&outcomes).await;
    // Finished once: each order has exactly one final state, and each placed order exactly one
    // packet and one agent (the audit); no order was placed twice under two ids either.
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT unnest(packet_ids) AS packet FROM orders
                               WHERE state = 'placed' GROUP BY packet HAVING count(*) > 1) d",
    )
    .fetch_one(system.infra.order_db().await)
    .await
    .unwrap();
    assert_eq!(duplicates, 0);
    eventually("survivor ready", FINISH, || system.order.is_ready()).await;
}

/// The store aborts at `point` while it applies the first reserve, is restarted without it, and
/// the order is placed all the same: the reserve was neither lost nor applied twice.
async fn store_dies_at(point: &str) {
    let mut system = TestSystem::start_with(Options::patient().store("FAULT_POINTS", point)).await;
    let food = system.create_food("Bhel", 3).await;
    system.create_agents(3).await;

    let (http, url) = (system.http().clone(), system.order.url("/orders"));
    let placing = tokio::spawn(async move {
        let response = http
            .post(url)
            .json(&serde_json::json!({ "food_id": food, "customer_id": "c-1" }))
            .send()
            .await
            .expect("the coordinator answers");
        let status = response.status();
        (
            status,
            response.json::<serde_json::Value>().await.expect("JSON"),
        )
    });
    system.store.wait_exit(Duration::from_secs(20)).await;
    // It died at the point, applying the reserve (the only write it had).
    assert!(
        system.store.logged("fault point reached"),
        "{}",
        system.store.tail(20)
    );
    system.store.remove_env("FAULT_POINTS");
    system.store.start().await;

    let (status, body) = placing.await.expect("the request ran");
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    assert_eq!(system.food(food).await["assigned"], 1);
}

#[tokio::test]
async fn a_participant_killed_before_its_commit_applies_the_command_after_restart() {
    store_dies_at("group_commit.before_commit").await;
}

#[tokio::test]
async fn a_participant_killed_after_its_commit_answers_the_redelivery_from_its_barrier() {
    store_dies_at("participant.after_commit").await;
}

#[tokio::test]
async fn delivery_killed_after_recording_a_pick_up_publishes_it_after_restart() {
    let mut system = TestSystem::start_with(
        Options::fast().delivery("FAULT_POINTS", "delivery.after_progress_commit"),
    )
    .await;
    let food = system.create_food("Pav", 2).await;
    system.create_agents(1).await;
    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{placed}");
    let id = placed["order_id"].as_str().expect("order id").to_owned();

    // Asked again while delivery has not seen the order placed (409), until the fault point
    // kills delivery after it recorded the pick-up.
    let url = system.delivery.url(&format!("/deliveries/{id}/picked-up"));
    let deadline = tokio::time::Instant::now() + helpers::PLACED_SEEN;
    loop {
        match system.http().post(url.clone()).send().await {
            Err(_) => break,
            Ok(answer) if answer.status() == reqwest::StatusCode::CONFLICT => {
                assert!(tokio::time::Instant::now() < deadline, "never seen placed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(answer) => panic!("delivery answered {} instead of dying", answer.status()),
        }
    }
    system.delivery.wait_exit(Duration::from_secs(10)).await;
    system.delivery.remove_env("FAULT_POINTS");
    system.delivery.start().await;

    // The pick-up was recorded with its report, and the report reaches the coordinator.
    system.order_reaches(&id, "picked_up", FINISH).await;
    let (status, again) = system.rider(&id, "picked-up").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{again}");
    system.assert_audit_clean(FINISH).await;
}
