//! A whole delivery day: baskets, hubs, agents cycling through pick-up and delivery, duty, and
//! cancellation, each ending with the audit.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Options, TestSystem};

const SETTLE: Duration = Duration::from_secs(20);

fn id_of(body: &serde_json::Value) -> String {
    body["order_id"].as_str().expect("order id").to_owned()
}

#[tokio::test]
async fn an_agent_is_free_again_after_delivery_and_takes_the_next_order() {
    let system = TestSystem::start().await;
    let food = system.create_food("Idli", 10).await;
    let agent = system.create_agents(1).await[0];

    let (status, first) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first_id = id_of(&first);
    let (status, second) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CONFLICT, "{second}");
    assert_eq!(second["reason"], "agent_unavailable");

    // Delivered before it was picked up: refused, nothing changes.
    let (status, body) = system.rider(&first_id, "delivered").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = system.rider(&first_id, "picked-up").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent_id"], agent);
    let (status, again) = system.rider(&first_id, "picked-up").await;
    assert_eq!(
        (status, &again),
        (StatusCode::OK, &body),
        "a repeat is the same"
    );
    system.order_reaches(&first_id, "picked_up", SETTLE).await;
    let (_, agent_view) = system
        .get(&system.delivery, &format!("/agents/{agent}"))
        .await;
    assert_eq!(agent_view["state"], "delivering");

    let (status, body) = system.rider(&first_id, "delivered").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["delivered_at"].is_string(), "{body}");
    let delivered = system.order_reaches(&first_id, "delivered", SETTLE).await;
    assert_eq!(delivered["agent_id"], agent);

    let (status, third) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    assert_eq!(third["agent_id"], agent, "the same agent, free again");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn a_basket_gets_every_packet_of_every_line_or_none() {
    let system = TestSystem::start().await;
    let dosa = system.create_food("Dosa", 3).await;
    let lassi = system.create_food("Lassi", 1).await;
    system.create_agents(3).await;

    let (status, placed) = system.place_basket(1, &[(dosa, 2), (lassi, 1)]).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let packets = placed["packet_ids"].as_array().expect("packets");
    assert_eq!(packets.len(), 3, "{placed}");
    assert_eq!(
        placed["lines"],
        json!([{"food_id": dosa, "quantity": 2}, {"food_id": lassi, "quantity": 1}])
    );
    assert!(
        placed.get("food_id").is_none(),
        "a basket has no single food: {placed}"
    );
    for packet in packets {
        let (_, view) = system
            .get(&system.store, &format!("/packets/{packet}"))
            .await;
        assert_eq!(view["state"], "assigned");
        assert_eq!(view["order_id"], placed["order_id"]);
    }

    // Lassi is short: nothing of the basket is held, and the reason names it.
    let (status, refused) = system.place_basket(1, &[(dosa, 1), (lassi, 1)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["reason"], "food_unavailable");
    system.assert_nothing_reserved(SETTLE).await;
    let stock = system.food(dosa).await;
    assert_eq!(
        (&stock["available"], &stock["assigned"]),
        (&json!(1), &json!(2))
    );
    // The last dosa is still there to be had.
    let (status, body) = system.place_basket(1, &[(dosa, 1)]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn two_baskets_racing_for_the_last_packets_of_two_foods_never_get_half() {
    let system = TestSystem::start().await;
    system.create_agents(40).await;
    for round in 0..10 {
        let chai = system.create_food(&format!("Chai {round}"), 1).await;
        let vada = system.create_food(&format!("Vada {round}"), 1).await;
        let (one, other) = ([(chai, 1), (vada, 1)], [(vada, 1), (chai, 1)]);
        let (a, b) = tokio::join!(system.place_basket(1, &one), system.place_basket(1, &other));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "exactly one basket wins round {round}: {} / {}",
            a.1,
            b.1
        );
        let loser = if a.0 == StatusCode::CONFLICT {
            &a.1
        } else {
            &b.1
        };
        assert_eq!(loser["reason"], "food_unavailable", "{loser}");
        for food in [chai, vada] {
            let stock = system.food(food).await;
            assert_eq!(stock["assigned"], 1, "round {round}: {stock}");
        }
    }
    system.assert_nothing_reserved(SETTLE).await;
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn hubs_are_kept_apart() {
    let system = TestSystem::start().await;
    let koramangala = system.create_hub("Koramangala").await;
    let food = system.create_food("Biryani", 0).await;
    system.add_packets(food, koramangala, 2).await;
    system.create_agents_at(1, 5).await;

    // Its packets are at Koramangala, which has no agent yet; the default hub has no packets.
    let (status, body) = system.place_basket(koramangala, &[(food, 1)]).await;
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::CONFLICT, &json!("agent_unavailable")),
        "{body}"
    );
    let (status, body) = system.place_basket(1, &[(food, 1)]).await;
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::CONFLICT, &json!("food_unavailable")),
        "{body}"
    );
    let (status, body) = system.place_basket(99, &[(food, 1)]).await;
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::CONFLICT, &json!("unknown_hub")),
        "{body}"
    );

    let local = system.create_agents_at(koramangala, 1).await[0];
    let (status, body) = system.place_basket(koramangala, &[(food, 1)]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["agent_id"], local);
    assert_eq!(body["hub_id"], koramangala);
    let packet = &body["packet_ids"][0];
    let (_, view) = system
        .get(&system.store, &format!("/packets/{packet}"))
        .await;
    assert_eq!(view["hub_id"], koramangala);
    let (_, hub) = system
        .get(&system.store, &format!("/hubs/{koramangala}"))
        .await;
    assert_eq!(
        hub["foods"],
        json!([{"food_id": food, "available": 1, "reserved": 0, "assigned": 1}])
    );
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn an_off_duty_agent_is_never_reserved_and_only_a_free_agent_goes_off_duty() {
    let system = TestSystem::start().await;
    let food = system.create_food("Poha", 5).await;
    let agent = system.create_agents(1).await[0];

    let (status, body) = system
        .post(
            &system.delivery,
            &format!("/agents/{agent}/off-duty"),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, &body["state"]),
        (StatusCode::OK, &json!("off_duty")),
        "{body}"
    );
    let (status, body) = system.place_order(food).await;
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::CONFLICT, &json!("agent_unavailable")),
        "{body}"
    );

    // On duty, and the same again: a repeat (a retry whose first answer was lost) says so.
    for _ in 0..2 {
        let (status, body) = system
            .post(
                &system.delivery,
                &format!("/agents/{agent}/on-duty"),
                json!({}),
            )
            .await;
        assert_eq!(
            (status, &body["state"]),
            (StatusCode::OK, &json!("available")),
            "{body}"
        );
    }
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = system
        .post(
            &system.delivery,
            &format!("/agents/{agent}/off-duty"),
            json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an agent with an order stays on duty: {body}"
    );
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn a_cancel_returns_the_packets_and_frees_the_agent_and_a_second_cancel_gets_the_same_answer()
{
    let system = TestSystem::start().await;
    let food = system.create_food("Upma", 2).await;
    let agent = system.create_agents(1).await[0];
    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = id_of(&placed);

    let (status, body) = system.cancel(&id, "someone-else").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, cancelled) = system.cancel(&id, "c-42").await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, again) = system.cancel(&id, "c-42").await;
    assert_eq!((status, &again), (StatusCode::OK, &cancelled));

    let stock = system.food(food).await;
    assert_eq!(
        (&stock["available"], &stock["assigned"]),
        (&json!(2), &json!(0))
    );
    let (_, agent_view) = system
        .get(&system.delivery, &format!("/agents/{agent}"))
        .await;
    assert_eq!(agent_view["state"], "available");
    // Nothing left for the rider.
    let (status, _) = system.rider(&id, "picked-up").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn a_cancel_after_pick_up_is_refused_and_changes_nothing() {
    let system = TestSystem::start().await;
    let food = system.create_food("Khichdi", 2).await;
    system.create_agents(1).await;
    let (_, placed) = system.place_order(food).await;
    let id = id_of(&placed);
    let (status, _) = system.rider(&id, "picked-up").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = system.cancel(&id, "c-42").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "already_picked_up");
    assert_eq!(system.food(food).await["assigned"], 1);
    let (status, _) = system.rider(&id, "delivered").await;
    assert_eq!(status, StatusCode::OK);
    system.order_reaches(&id, "delivered", SETTLE).await;
    let (status, body) = system.cancel(&id, "c-42").await;
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::CONFLICT, &json!("already_picked_up"))
    );
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn cancels_racing_pick_ups_each_end_exactly_one_way() {
    let system = TestSystem::start().await;
    let food = system.create_food("Samosa", 30).await;
    system.create_agents(30).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        let (status, body) = system.place_order(food).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(id_of(&body));
    }
    let races = join_all(ids.iter().map(|id| async {
        let (cancel, pick_up) =
            tokio::join!(system.cancel(id, "c-42"), system.rider(id, "picked-up"));
        (id.clone(), cancel, pick_up)
    }))
    .await;
    let (mut cancelled, mut picked) = (0, 0);
    for (id, (cancel_status, cancel), (pick_status, pick)) in races {
        match (cancel_status, pick_status) {
            (StatusCode::OK, StatusCode::NOT_FOUND) => {
                cancelled += 1;
                system.order_reaches(&id, "cancelled", SETTLE).await;
            }
            (StatusCode::CONFLICT, StatusCode::OK) => {
                assert_eq!(cancel["reason"], "already_picked_up", "{cancel}");
                picked += 1;
                system.order_reaches(&id, "picked_up", SETTLE).await;
            }
            other => panic!("order {id} ended both ways or neither: {other:?} {cancel} {pick}"),
        }
    }
    assert_eq!(cancelled + picked, 30);
    let stock = system.food(food).await;
    assert_eq!(stock["assigned"], picked, "{stock}");
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn a_coordinator_killed_during_a_cancel_finishes_it_after_restart() {
    let options = Options::fast().order("FAULT_POINTS", "coordinator.cancel_after_delivery");
    let mut system = TestSystem::start_with(options).await;
    let food = system.create_food("Halwa", 1).await;
    let agent = system.create_agents(1).await[0];
    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = id_of(&placed);

    let cancelling = system
        .http()
        .post(system.order.url(&format!("/orders/{id}/cancel")))
        .json(&json!({ "customer_id": "c-42" }))
        .send()
        .await;
    assert!(cancelling.is_err(), "the coordinator died before answering");
    system.order.wait_exit(Duration::from_secs(10)).await;
    // Delivery freed the agent; the packet is still the order's.
    let (_, agent_view) = system
        .get(&system.delivery, &format!("/agents/{agent}"))
        .await;
    assert_eq!(agent_view["state"], "available");
    assert_eq!(system.food(food).await["assigned"], 1);

    system.order.remove_env("FAULT_POINTS");
    system.order.start().await;
    system.order_reaches(&id, "cancelled", SETTLE).await;
    assert_eq!(system.food(food).await["available"], 1);
    let (status, body) = system.cancel(&id, "c-42").await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    system.assert_audit_clean(SETTLE).await;
}

#[tokio::test]
async fn every_new_endpoint_answers_bad_input_with_a_clear_4xx() {
    let system = TestSystem::start().await;
    let food = system.create_food("Jalebi", 5).await;
    let order = &system.order;
    let many: Vec<serde_json::Value> = (1..=51).map(|f| json!({"food_id": f})).collect();
    for (body, why) in [
        (json!({"customer_id": "c", "lines": []}), "no lines"),
        (json!({"customer_id": "c", "lines": many}), "51 lines"),
        (
            json!({"customer_id": "c", "lines": [{"food_id": food, "quantity": 0}]}),
            "quantity 0",
        ),
        (
            json!({"customer_id": "c", "lines": [{"food_id": food, "quantity": 21}]}),
            "quantity 21",
        ),
        (
            json!({"customer_id": "c", "lines": [{"food_id": food}, {"food_id": food}]}),
            "a food twice",
        ),
        (
            json!({"customer_id": "c", "lines": [{"food_id": 0}]}),
            "food 0",
        ),
        (
            json!({"customer_id": "c", "food_id": food, "lines": [{"food_id": food}]}),
            "both forms",
        ),
        (
            json!({"customer_id": "c", "hub_id": 0, "food_id": food}),
            "hub 0",
        ),
        (
            json!({"customer_id": "c", "lines": [{"food_id": food, "quantity": "two"}]}),
            "text quantity",
        ),
    ] {
        let (status, answer) = system.post(order, "/orders", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {answer}");
        assert!(answer["error"].is_string(), "{why}: {answer}");
    }
    let unknown = uuid::Uuid::now_v7();
    for (path, body, expected) in [
        (
            format!("/orders/{unknown}/cancel"),
            json!({"customer_id": "c"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/orders/nope/cancel".to_owned(),
            json!({"customer_id": "c"}),
            StatusCode::BAD_REQUEST,
        ),
        // The body names no customer (the token does): an order that does not exist.
        (
            format!("/orders/{unknown}/cancel"),
            json!({}),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/orders/{unknown}/cancel"),
            json!({"customer_id": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, answer) = system.post(order, &path, body).await;
        assert_eq!(status, expected, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    for (path, expected) in [
        (
            format!("/deliveries/{unknown}/picked-up"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/deliveries/{unknown}/delivered"),
            StatusCode::CONFLICT,
        ),
        (
            "/deliveries/nope/picked-up".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        ("/agents/999999/off-duty".to_owned(), StatusCode::NOT_FOUND),
        ("/agents/999999/on-duty".to_owned(), StatusCode::NOT_FOUND),
    ] {
        let (status, answer) = system
            .request(&system.delivery, reqwest::Method::POST, &path, None)
            .await;
        assert_eq!(status, expected, "{path}: {answer}");
        assert!(answer["error"].is_string(), "{path}: {answer}");
    }
    for (status, answer) in [
        system
            .get(&system.delivery, "/agents/summary?hub_id=abc")
            .await,
        system
            .get(&system.delivery, &format!("/deliveries/{unknown}"))
            .await,
        system.get(&system.store, "/hubs/999").await,
        system
            .post(&system.store, "/hubs", json!({"name": ""}))
            .await,
        system
            .post(
                &system.store,
                &format!("/foods/{food}/packets"),
                json!({"count": 1, "hub_id": 999}),
            )
            .await,
        system
            .post(&system.store, "/foods", json!({"name": "x", "hub_id": -1}))
            .await,
        system
            .post(
                &system.delivery,
                "/agents",
                json!({"count": 1, "hub_id": 0}),
            )
            .await,
    ] {
        assert!(status.is_client_error(), "{status}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
}

#[tokio::test]
async fn reports_out_of_order_or_twice_are_applied_once_in_order_and_unknown_ones_are_parked() {
    use protocol::envelope::TxnEnvelope;
    use protocol::ids::{AgentId, OrderId, TxnId};
    use protocol::progress::DeliveryProgress;
    use protocol::topology::Topology;

    use crate::helpers::client::CommandClient;
    use crate::helpers::events::EventTap;
    use crate::helpers::eventually;

    let system = TestSystem::start().await;
    let food = system.create_food("Modak", 2).await;
    system.create_agents(1).await;
    let tap = EventTap::start(&system.infra).await;
    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(tap.next(SETTLE).await.expect("placed")["kind"], "placed");
    let order: OrderId = placed["order_id"].as_str().unwrap().parse().unwrap();
    let db = system.infra.order_db().await;
    let txn: uuid::Uuid = sqlx::query_scalar("SELECT txn_id FROM orders WHERE id = $1")
        .bind(order.0)
        .fetch_one(db)
        .await
        .unwrap();
    let agent = AgentId(placed["agent_id"].as_i64().unwrap());

    // The delivery's report overtakes the pick-up's, and comes twice.
    let client = CommandClient::connect(&system.infra).await;
    let topology = client.topology().clone();
    let report = |progress: DeliveryProgress, order: OrderId, txn: TxnId| {
        let key = progress.routing_key();
        (
            key,
            TxnEnvelope::txn(order, txn, progress).to_bytes().unwrap(),
        )
    };
    let at = chrono::Utc::now();
    let delivered = report(
        DeliveryProgress::Delivered {
            agent_id: agent,
            at,
        },
        order,
        TxnId(txn),
    );
    let picked = report(
        DeliveryProgress::PickedUp {
            agent_id: agent,
            at,
        },
        order,
        TxnId(txn),
    );
    for (key, body) in [&delivered, &delivered, &picked] {
        client
            .publish_raw(&topology.progress_exchange(), key, body)
            .await;
    }
    system
        .order_reaches(&order.to_string(), "delivered", SETTLE)
        .await;
    let kinds = [tap.next(SETTLE).await, tap.next(SETTLE).await];
    let kinds: Vec<_> = kinds
        .iter()
        .map(|e| e.as_ref().expect("an event")["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("picked_up"), json!("delivered")]);
    tap.assert_nothing_unread("each step publishes one event")
        .await;

    // A report for an order that does not exist is parked with the reason.
    let (key, body) = report(
        DeliveryProgress::PickedUp {
            agent_id: agent,
            at,
        },
        OrderId::new(),
        TxnId::new(),
    );
    client
        .publish_raw(&topology.progress_exchange(), key, &body)
        .await;
    let dlq = Topology::dead_letter_queue(&topology.progress_queue());
    let management = &system.infra.management;
    eventually("the report is parked", SETTLE, || async {
        management.count_messages(&system.infra.vhost, &dlq).await == 1
    })
    .await;
}

/// While an order is still being assigned (the store holds its assign for two seconds), its
/// rider reports the delivery and the pick-up and its customer cancels: each is refused (`409`:
/// not picked up, not placed yet, `not_placed_yet`) and changes nothing. Once it is placed, the
/// cancel races the pick-up and exactly one wins; each report or cancel sent again gets the
/// same answer, and the order ends as the winner says, with nothing held.
#[tokio::test]
async fn reports_and_a_cancel_while_assigning_change_nothing_then_a_cancel_races_the_pick_up() {
    let options = Options::fast()
        .order("RESPONSE_BUDGET", "8s")
        .all("RESERVATION_TTL", "60s")
        .store("FAULT_POINTS", "participant.before_assign=2s");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Chakli", 1).await;
    let agent = system.create_agents(1).await[0];

    let early = async {
        crate::helpers::eventually("the agent assigned", SETTLE, || async {
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
        let delivered = system.rider_once(&order, "delivered").await;
        let picked_up = system.rider_once(&order, "picked-up").await;
        let cancel = system.cancel(&order, "c-42").await;
        (order, delivered, picked_up, cancel)
    };
    let ((status, placed), (order, delivered, picked_up, cancel)) =
        tokio::join!(system.place_order(food), early);
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(id_of(&placed), order);
    assert_eq!(delivered.0, StatusCode::CONFLICT, "{}", delivered.1);
    assert_eq!(picked_up.0, StatusCode::CONFLICT, "{}", picked_up.1);
    assert_eq!(cancel.0, StatusCode::CONFLICT, "{}", cancel.1);
    assert_eq!(cancel.1["reason"], "not_placed_yet", "{}", cancel.1);
    let (_, now) = system.get(&system.order, &format!("/orders/{order}")).await;
    assert_eq!(
        now["status"], "placed",
        "the early requests changed nothing: {now}"
    );

    let ((pick_status, _), (cancel_status, cancel_body)) = tokio::join!(
        system.rider(&order, "picked-up"),
        system.cancel(&order, "c-42")
    );
    let end = if pick_status == StatusCode::OK {
        assert_eq!(cancel_status, StatusCode::CONFLICT, "{cancel_body}");
        assert_eq!(cancel_body["reason"], "already_picked_up", "{cancel_body}");
        assert_eq!(
            system.rider_once(&order, "picked-up").await.0,
            StatusCode::OK
        );
        for _ in 0..2 {
            let (status, body) = system.rider_once(&order, "delivered").await;
            assert_eq!(status, StatusCode::OK, "a delivery reported twice: {body}");
        }
        "delivered"
    } else {
        assert_eq!(pick_status, StatusCode::NOT_FOUND);
        assert!(
            cancel_status == StatusCode::OK || cancel_status == StatusCode::ACCEPTED,
            "the cancel won: {cancel_status} {cancel_body}"
        );
        system.order_reaches(&order, "cancelled", SETTLE).await;
        let (status, body) = system.cancel(&order, "c-42").await;
        assert_eq!(status, StatusCode::OK, "a cancel sent again: {body}");
        assert_eq!(body["status"], "cancelled", "{body}");
        assert_eq!(
            system.rider_once(&order, "picked-up").await.0,
            StatusCode::NOT_FOUND
        );
        "cancelled"
    };
    system.order_reaches(&order, end, SETTLE).await;
    crate::helpers::eventually("the agent free again", SETTLE, || async {
        system.agents_summary().await["available"] == 1
    })
    .await;
    system.assert_nothing_reserved(SETTLE).await;
    system.assert_audit_clean(SETTLE).await;
}
