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

/// The idempotency key of the order whose coordinator dies in phase 1.
const FIRST_KEY: &str = "first-try";

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
        .header("Idempotency-Key", FIRST_KEY)
        .json(&order)
        .send()
        .await;
    assert!(placing.is_err(), "the coordinator died before answering");
    system.order.wait_exit(Duration::from_secs(10)).await;
    // Both items are held for a transaction that nobody recorded.
    assert_eq!(system.infra.reserved_counts().await, (1, 1));
    (system, food)
}

/// [`killed_in_phase_1`] with reservations of a minute, the coordinator started again, and the
/// orphaned reservations older than a whole phase 1 (ORDER_DEADLINE 2s, plus a margin of 2s) by
/// the participants' clocks: the first driver told `busy` by them releases them.
async fn orphaned_for_a_whole_phase_1() -> (TestSystem, i64) {
    let (mut system, food) = killed_in_phase_1(Options::fast().all("RESERVATION_TTL", "60s")).await;
    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    eventually(
        "the orphaned reservations older than a phase 1",
        FINISH,
        || async { system.infra.youngest_reservation_held_for(60).await > Duration::from_secs(5) },
    )
    .await;
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
    let (system, food) = orphaned_for_a_whole_phase_1().await;
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

/// The same crash, then the customer's app retries the order with its key while another
/// customer orders the last packet and agent: both wait for the orphan to be released, exactly
/// one is placed, the other is refused for want of the items (never `timeout`), the key has one
/// order at most, and nothing stays held.
#[tokio::test]
async fn after_a_coordinator_killed_in_phase_1_a_keyed_retry_and_a_competing_order_get_the_last_items_once()
 {
    let (system, food) = orphaned_for_a_whole_phase_1().await;

    let post = |customer: &str, key: Option<&str>| {
        let mut request = system
            .http()
            .post(system.order.url("/orders"))
            .json(&serde_json::json!({ "food_id": food, "customer_id": customer }));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        async move {
            let response = request.send().await.expect("an answer");
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    // Sent at once: both find the orphan in their way; one releases it, and they race for the
    // items.
    let (retry, other) = tokio::join!(post("c-1", Some(FIRST_KEY)), post("c-2", None));
    let answers = [&retry, &other];
    let placed = answers.iter().filter(|(status, _)| *status == 201).count();
    assert_eq!(placed, 1, "exactly one placed: {answers:?}");
    for (status, body) in answers {
        if *status != 201 {
            assert_eq!(*status, 409, "{body}");
            assert!(
                matches!(
                    body["reason"].as_str(),
                    Some("food_unavailable" | "agent_unavailable")
                ),
                "refused for want of the items, not {body}"
            );
        }
    }
    let keyed: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE idempotency_key = $1")
        .bind(FIRST_KEY)
        .fetch_one(system.infra.order_db().await)
        .await
        .unwrap();
    assert_eq!(keyed, 1, "the retry recorded one order for its key");
    system.assert_all_orders_final(FINISH).await;
    system.assert_nothing_reserved(FINISH).await;
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

/// The coordinator dies during compensation: the store's assign stalls past its reservation's
/// expiry and is refused, delivery's agent is assigned, and the coordinator dies once both
/// sides have answered its releases, before it records `not_placed`. The restarted coordinator
/// takes the `compensating` order over and releases again (answered from the barriers): the order
/// ends `not_placed` (`assign_failed`) and nothing stays held.
#[tokio::test]
async fn a_coordinator_killed_during_compensation_finishes_it_after_restart() {
    let options = Options::fast()
        .all("RESERVATION_TTL", "1s")
        .store("FAULT_POINTS", "participant.before_assign=3s")
        .order("FAULT_POINTS", "coordinator.compensated_before_record");
    let mut system = TestSystem::start_with(options).await;
    let food = system.create_food("Jalebi", 1).await;
    system.create_agents(1).await;

    let placing = system
        .http()
        .post(system.order.url("/orders"))
        .json(&serde_json::json!({ "food_id": food, "customer_id": "c-1" }))
        .send();
    let (_, exit) = tokio::join!(placing, system.order.wait_exit(FINISH));
    assert!(!exit.success(), "the coordinator died at its fault point");
    let state: String = sqlx::query_scalar("SELECT state FROM orders")
        .fetch_one(system.infra.order_db().await)
        .await
        .unwrap();
    assert_eq!(state, "compensating", "it died during compensation");

    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    system.assert_all_orders_final(FINISH).await;
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM orders")
        .fetch_one(system.infra.order_db().await)
        .await
        .unwrap();
    let (_, order) = system.get(&system.order, &format!("/orders/{id}")).await;
    assert_eq!(order["status"], "not_placed", "{order}");
    assert_eq!(order["reason"], "assign_failed", "{order}");
    system.assert_nothing_reserved(FINISH).await;
    assert_eq!(system.food(food).await["assigned"], 0);
    assert_eq!(system.agents_summary().await["assigned"], 0);
    system.assert_audit_clean(FINISH).await;
}

/// `SIGTERM` of each service in turn under load (two coordinators, clients retrying with their
/// keys): each stops taking work, finishes what it holds, exits 0 within its drain time, and
/// serves again once started; the checker and the audit find nothing lost, duplicated or
/// falsely placed, and every order finishes.
#[tokio::test]
async fn each_service_stopped_with_sigterm_under_load_drains_exits_0_and_loses_nothing() {
    let mut system = TestSystem::start_with(Options::fast()).await;
    let mut second = system.another_order_service();
    second.start().await;
    let food = system.create_food("Rasgulla", 20_000).await;
    system.create_agents(20_000).await;
    let load = Load::start(vec![system.order.url(""), second.url("")], food, 8);
    load.wait_placed(20, FINISH).await;

    for which in ["store", "delivery", "order"] {
        let service = match which {
            "store" => &mut system.store,
            "delivery" => &mut system.delivery,
            _ => &mut system.order,
        };
        let exit = service.terminate().await;
        assert!(
            exit.success(),
            "{which} drains and exits 0 on SIGTERM: {exit}; {}",
            service.tail(30)
        );
        service.start().await;
        load.set_targets(vec![system.order.url(""), second.url("")]);
        load.wait_placed(20, FINISH).await;
    }
    let checked = system.finish_and_check(load, FINISH).await;
    assert!(checked.placed > 0, "{checked}");
}

/// Two coordinators, with compensation under way: the one that takes the orders is armed to die
/// during compensation (`coordinator.compensated_before_record`), and delivery's assigns stall
/// past the reservation TTL, so that they are refused and the orders compensate. The other takes
/// the dead one's orders over once delivery is well again, and the clients, sent to it, then run
/// the stock out. Every order finishes once, each packet goes to one order, and nothing stays
/// held (the checker and the audit).
#[tokio::test]
async fn with_two_coordinators_one_dying_during_compensation_the_last_packets_go_once() {
    let long = Duration::from_secs(120);
    let options = Options::fast()
        .all("RESERVATION_TTL", "2s")
        .delivery("FAULT_POINTS", "participant.before_assign=3s");
    let mut system = TestSystem::start_with(options).await;
    let mut second = system.another_order_service();
    second.set_env("FAULT_POINTS", "coordinator.compensated_before_record");
    second.start().await;
    let food = system.create_food("Ladoo", 600).await;
    system.create_agents(2_000).await;
    // The armed coordinator takes the orders, so that the orders compensating when it dies are
    // its own; every assign it sends stalls past the TTL.
    let load = Load::start(vec![second.url("")], food, 8);
    let exit = second.wait_exit(FINISH).await;
    assert!(!exit.success(), "the armed coordinator died: {exit}");
    assert!(
        second.logged("fault point reached"),
        "it died at its fault point"
    );
    let compensating: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE state = 'compensating'")
            .fetch_one(system.infra.order_db().await)
            .await
            .unwrap();
    assert!(compensating > 0, "it died during compensation");

    // Delivery is well again; the survivor finishes the dead one's orders, and the clients
    // fight over the last packets through it.
    system.delivery.remove_env("FAULT_POINTS");
    let drained = system.delivery.terminate().await;
    assert!(drained.success(), "delivery drains: {drained}");
    system.delivery.start().await;
    load.set_targets(vec![system.order.url("")]);
    eventually("the stock sold out", long, || async {
        system.food(food).await["available"] == 0
    })
    .await;
    load.wait_answered(20, FINISH).await;
    let checked = system.finish_and_check(load, long).await;
    assert!(checked.placed > 0, "{checked}");
}
