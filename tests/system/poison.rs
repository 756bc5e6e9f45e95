//! Unreadable messages and messages whose handling keeps failing are parked in dead-letter
//! queues with the reason; the consumers go on.

use std::time::Duration;

use protocol::command::Operation;
use protocol::command::{
    AgentRequest, Assign, Command, PacketLine, PacketRequest, Reply, ReserveReply,
};
use protocol::envelope::TxnEnvelope;
use protocol::ids::{FoodId, HubId, OrderId, TxnId};
use protocol::topology::{Participant, Topology};
use reqwest::StatusCode;

use crate::helpers::client::CommandClient;
use crate::helpers::load::Load;
use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(30);

#[tokio::test]
async fn poison_messages_land_in_the_dead_letter_queues_and_orders_go_on() {
    let system = TestSystem::start_with(Options::fast()).await;
    let food = system.create_food("Samosa", 5).await;
    system.create_agents(5).await;
    let client = CommandClient::connect(&system.infra).await;
    let topology = client.topology().clone();

    let poisons: [&[u8]; 3] = [
        b"\x00\x01 not json",
        br#"{"v": 99, "kind": "reserve"}"#,
        br#"{"v": 1, "message_id": "nope"}"#,
    ];
    let mut queues = Vec::new();
    for participant in Participant::ALL {
        for op in protocol::command::Operation::ALL {
            for poison in poisons {
                client
                    .publish_raw(
                        &topology.commands_exchange(participant),
                        Topology::command_routing_key(op),
                        poison,
                    )
                    .await;
            }
            queues.push(topology.command_queue(participant, op));
        }
        for poison in poisons {
            client
                .publish_raw(
                    &topology.timers_exchange(participant.as_str()),
                    "fired",
                    poison,
                )
                .await;
        }
        queues.push(topology.expiry_queue(participant));
    }
    for poison in poisons {
        client
            .publish_raw(&topology.timers_exchange("order"), "fired", poison)
            .await;
    }
    queues.push(topology.order_timeouts());

    let management = &system.infra.management;
    let vhost = &system.infra.vhost;
    for queue in &queues {
        let dlq = Topology::dead_letter_queue(queue);
        eventually(&format!("{dlq} holds the poison"), FINISH, || async {
            management.count_messages(vhost, &dlq).await == 3
        })
        .await;
        for message in management.peek(vhost, &dlq, 3).await {
            let reason = &message["properties"]["headers"]["x-dead-letter-reason"];
            assert!(
                reason.as_str().is_some_and(|r| !r.is_empty()),
                "{dlq}: {message}"
            );
            assert_eq!(
                message["properties"]["headers"]["x-dead-letter-queue"],
                queue.as_str()
            );
        }
    }

    // The consumers went on: an order is placed.
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_command_that_keeps_failing_is_parked_after_the_delivery_limit() {
    let system = TestSystem::start().await;
    system.create_agents(5).await;
    let client = CommandClient::connect(&system.infra).await;
    let lines = AgentRequest::default();

    // One order, two transactions that both reserve an agent (a coordinator bug): the second
    // assign would give the order a second agent, which the database refuses every time.
    let order = OrderId::new();
    let mut items = Vec::new();
    for txn in [TxnId::new(), TxnId::new()] {
        let reply = client
            .call(
                Participant::Delivery,
                &TxnEnvelope::txn(order, txn, Command::Reserve(lines.clone())),
            )
            .await;
        let Reply::ReserveReply(ReserveReply::Reserved { items: held, .. }) = reply else {
            panic!("{reply:?}");
        };
        items.push((txn, held));
    }
    let (first_txn, first_items) = items[0].clone();
    let assign: Command<AgentRequest> = Command::Assign(Assign { items: first_items });
    client
        .call(
            Participant::Delivery,
            &TxnEnvelope::txn(order, first_txn, assign),
        )
        .await;
    let (second_txn, second_items) = items[1].clone();
    let assign: Command<AgentRequest> = Command::Assign(Assign {
        items: second_items,
    });
    let topology = client.topology().clone();
    client
        .publish_raw(
            &topology.commands_exchange(Participant::Delivery),
            "assign",
            &TxnEnvelope::txn(order, second_txn, assign)
                .to_bytes()
                .unwrap(),
        )
        .await;

    let dlq = Topology::dead_letter_queue(
        &topology.command_queue(Participant::Delivery, protocol::command::Operation::Assign),
    );
    let management = &system.infra.management;
    eventually("the failing assign is parked", FINISH, || async {
        management.count_messages(&system.infra.vhost, &dlq).await == 1
    })
    .await;
    let parked = management.peek(&system.infra.vhost, &dlq, 1).await;
    let death = &parked[0]["properties"]["headers"]["x-death"][0];
    assert_eq!(death["reason"], "delivery_limit", "{}", parked[0]);
    // The order still has exactly one agent.
    assert_eq!(system.agents_summary().await["assigned"], 1);
}

#[tokio::test]
async fn a_command_whose_handler_panics_is_parked_with_the_reason_and_the_service_goes_on() {
    // Every assign makes the store's handler panic (a bug that one kind of message triggers).
    let system = TestSystem::start_with(
        Options::fast().store("FAULT_POINTS", "participant.before_assign=panic"),
    )
    .await;
    let food = system.create_food("Vada", 2).await;
    system.create_agents(2).await;

    let (_, body) = system.place_order(food).await;
    let id = body["order_id"].as_str().expect("an order id").to_owned();
    let topology = Topology::new("");
    let dlq = Topology::dead_letter_queue(
        &topology.command_queue(Participant::Store, protocol::command::Operation::Assign),
    );
    let management = &system.infra.management;
    eventually("the assign that panicked is parked", FINISH, || async {
        management.count_messages(&system.infra.vhost, &dlq).await >= 1
    })
    .await;
    let parked = management.peek(&system.infra.vhost, &dlq, 1).await;
    let reason = &parked[0]["properties"]["headers"]["x-dead-letter-reason"];
    assert!(
        reason.as_str().is_some_and(|r| r.contains("panicked")),
        "{}",
        parked[0]
    );
    // The store is still up and its other queues go on: the order ends, with nothing held.
    let order = system.order_when_final(&system.order, &id).await;
    assert_eq!(order["status"], "not_placed", "{order}");
    assert!(system.store.is_ready().await);
    system.assert_nothing_reserved(FINISH).await;
}

#[tokio::test]
async fn a_command_that_crashes_its_participant_is_the_only_one_parked() {
    // The store's process ends whenever it applies a command of this order (a bug one message
    // triggers), while other orders keep coming.
    let poison = OrderId::new();
    let mut system = TestSystem::start_with(Options::fast().store(
        "FAULT_POINTS",
        &format!("participant.before_apply@{poison}"),
    ))
    .await;
    let food = system.create_food("Jalebi", 100_000).await;
    system.create_agents(100_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(20, FINISH).await;

    let client = CommandClient::connect(&system.infra).await;
    let reserve = Command::Reserve(PacketRequest {
        hub_id: HubId::DEFAULT,
        lines: vec![PacketLine::one(FoodId(food))],
    });
    client
        .send(
            Participant::Store,
            &TxnEnvelope::txn(poison, TxnId::new(), reserve),
        )
        .await;

    // Restart the store whenever it dies, as a process manager would, until the poison is
    // parked.
    let topology = client.topology().clone();
    let queue = |op| topology.command_queue(Participant::Store, op);
    let reserve_dlq = Topology::dead_letter_queue(&queue(Operation::Reserve));
    let (management, vhost) = (&system.infra.management, &system.infra.vhost);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut restarts = 0;
    while management.count_messages(vhost, &reserve_dlq).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison was not parked ({restarts} restarts)"
        );
        if system.store.has_exited() {
            restarts += 1;
            system.store.try_spawn().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(restarts >= 1, "the store never crashed");
    system.store.wait_ready(FINISH).await;
    load.wait_placed(20, FINISH).await;
    let outcomes = load.stop().await;

    // Only the poison is parked, by the store itself and with the reason: no innocent command
    // that was unacked beside it at each crash reached the delivery limit.
    let parked = management.peek(vhost, &reserve_dlq, 10).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let headers = &parked[0]["properties"]["headers"];
    assert_eq!(headers["order-id"], poison.to_string(), "{}", parked[0]);
    assert!(
        headers["x-dead-letter-reason"]
            .as_str()
            .is_some_and(|r| r.contains("the process ended")),
        "{}",
        parked[0]
    );
    for op in [Operation::Assign, Operation::Release] {
        let dlq = Topology::dead_letter_queue(&queue(op));
        assert_eq!(management.count_messages(vhost, &dlq).await, 0, "{dlq}");
    }
    system.wait_final(&system.order, &outcomes).await;
    system.assert_all_orders_final(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    system.assert_checked(&outcomes).await;
}
