//! The driver against an in-process fake of the participants: the store and delivery are the
//! participant machine (`participant_machine::Items`, the rules the model checker holds to the
//! SQL), answering at once, with the faults a test scripts; the order table is a scratch
//! database of its own. Each test places (or cancels) an order through the coordinator's own
//! entry points and checks what was recorded, what the customer was told, and what each side
//! holds afterwards.

use std::sync::Arc;
use std::time::Duration;

use messaging::{Broker, BrokerConfig, Health, Outgoing, Publisher, TimerWindow};
use participant_machine::{Command, ItemState};
use protocol::command::PacketLine;
use protocol::envelope::Envelope;
use protocol::ids::{FoodId, HubId, OrderId, TxnId};
use protocol::timer::OrderTimer;
use protocol::topology::Participant;
use protocol::trace::TraceContext;
use service_kit::testing::ScratchDatabase;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::coordinator::{Coordinator, CoordinatorSettings};
use crate::machine::{NotPlacedReason, Order, OrderState};
use crate::placement::Placement;
use crate::repo::Orders;

mod fake;

use fake::{Fake, Script};

/// A coordinator over `fake`, with the order table in `database` and short timings.
async fn coordinator(database: &ScratchDatabase, fake: Arc<Fake>) -> Arc<Coordinator> {
    crate::MIGRATOR.run(database.pool()).await.unwrap();
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    // Deadline timers go nowhere: no broker listens there, and the driver does not wait for them.
    let broker = Broker::new(
        BrokerConfig {
            url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
            addresses: Vec::new(),
            connection_name: "driver-tests".into(),
            publisher_channels: 1,
            confirm_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(100),
            tls_ca_file: None,
        },
        Health::default(),
    )
    .unwrap();
    let deadlines = TimerWindow::spawn(
        Publisher::new(broker),
        Duration::from_millis(10),
        |order_ids: Vec<OrderId>| {
            let envelope = Envelope::new(OrderTimer::Deadlines { order_ids });
            Outgoing::new(&envelope, "nowhere", "nowhere")
        },
        shutdown.clone(),
        &tracker,
    );
    Arc::new(Coordinator {
        orders: Orders::new(database.pool().clone(), Duration::from_secs(5), &tracker),
        participants: fake,
        settings: CoordinatorSettings {
            order_deadline: Duration::from_secs(2),
            response_budget: Duration::from_secs(5),
            reply_timeout: Duration::from_millis(200),
            lease: Duration::from_secs(5),
            phase2_grace: Duration::from_secs(1),
        },
        deadlines,
        events: Arc::new(Notify::new()),
        tracker,
        shutdown,
        broker: Health::default(),
        recovery_slots: Arc::new(Semaphore::new(8)),
        admission: crate::admission::Admission::new(1024, 0.0, 1),
        live: crate::live::Live::new(),
    })
}

/// Places an order for `packets` packets of one food at the default hub; returns it as the
/// customer was told.
async fn place(coordinator: &Arc<Coordinator>, customer: &str, packets: u32) -> Order {
    let lines = vec![PacketLine {
        food_id: FoodId(1),
        quantity: packets,
    }];
    let placement = coordinator
        .place(
            customer.into(),
            HubId::DEFAULT,
            lines,
            None,
            TraceContext::root(),
        )
        .await
        .unwrap();
    match placement {
        Placement::New(order) => order,
        Placement::Replayed(order) => panic!("a new order was replayed: {order:?}"),
    }
}

async fn scratch(name: &str) -> ScratchDatabase {
    ScratchDatabase::create(name).await.unwrap()
}

#[tokio::test]
async fn both_sides_reserved_and_assigned_place_the_order() {
    let database = scratch("driver_placed").await;
    let fake = Fake::new(2, 1, Script::default());
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;

    let order = place(&coordinator, "c-1", 2).await;
    assert_eq!(order.state, OrderState::Placed, "{order:?}");
    assert_eq!(order.packet_ids.len(), 2);
    assert!(
        fake.states(Participant::Store)
            .iter()
            .all(|s| matches!(s, ItemState::Assigned { .. }))
    );
    assert!(matches!(
        fake.states(Participant::Delivery)[..],
        [ItemState::Assigned { .. }]
    ));
    assert_eq!(
        fake.sent(),
        [
            "store Reserve",
            "delivery Reserve",
            "store Assign",
            "delivery Assign"
        ]
    );
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_shortage_refuses_the_order_and_releases_the_side_that_held() {
    let database = scratch("driver_short").await;
    let fake = Fake::new(1, 1, Script::default());
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;

    let order = place(&coordinator, "c-1", 2).await;
    assert_eq!(order.state, OrderState::NotPlaced);
    assert_eq!(order.reason, Some(NotPlacedReason::FoodUnavailable));
    // Delivery held its agent: it is released (abort); the store held nothing.
    assert_eq!(
        fake.sent(),
        ["store Reserve", "delivery Reserve", "delivery Release"]
    );
    assert!(
        fake.states(Participant::Delivery)
            .iter()
            .all(|s| *s == ItemState::Available)
    );
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_reserve_left_unanswered_is_released_and_tried_again() {
    let database = scratch("driver_unanswered").await;
    let fake = Fake::new(
        1,
        1,
        Script {
            silent_reserves: 1,
            ..Script::default()
        },
    );
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;

    let order = place(&coordinator, "c-1", 1).await;
    assert_eq!(order.state, OrderState::Placed, "{order:?}");
    assert_eq!(
        order.attempt, 2,
        "placed at its second attempt (counted from 1)"
    );
    // Both sides may have held for the unanswered attempt: both are released (retry) before
    // the second attempt, which takes the same items.
    assert_eq!(
        fake.sent()[..4],
        [
            "store Reserve",
            "delivery Reserve",
            "store Release",
            "delivery Release"
        ]
    );
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn an_assign_refused_compensates_both_sides_before_not_placed() {
    let database = scratch("driver_compensated").await;
    let fake = Fake::new(
        1,
        1,
        Script {
            store_expires_before_assign: true,
            ..Script::default()
        },
    );
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;

    let order = place(&coordinator, "c-1", 1).await;
    assert_eq!(order.state, OrderState::NotPlaced, "{order:?}");
    assert_eq!(order.reason, Some(NotPlacedReason::AssignFailed));
    // The agent delivery assigned is taken back: nothing stays held for the order.
    assert!(
        fake.states(Participant::Delivery)
            .iter()
            .all(|s| *s == ItemState::Available)
    );
    let sent = fake.sent();
    assert_eq!(
        sent[sent.len() - 2..],
        ["store Compensate", "delivery Compensate"],
        "{sent:?}"
    );
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn an_orphan_in_the_way_is_released_and_the_order_placed() {
    let database = scratch("driver_orphan").await;
    let fake = Fake::new(
        1,
        1,
        Script {
            holders_held_ms: 60_000,
            ..Script::default()
        },
    );
    // A coordinator died in phase 1: both items are reserved for an order nobody recorded.
    let orphan = (TxnId::new(), OrderId::new());
    for side in Participant::ALL {
        fake.apply(
            side,
            &Command::Reserve {
                txn: orphan.0,
                order: orphan.1,
                wanted: 1,
            },
        );
    }
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;

    let order = place(&coordinator, "c-1", 1).await;
    assert_eq!(order.state, OrderState::Placed, "{order:?}");
    let sent = fake.sent();
    assert!(sent.contains(&"store Release".to_owned()), "{sent:?}");
    assert!(sent.contains(&"delivery Release".to_owned()), "{sent:?}");
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_young_holder_is_left_alone_and_the_order_refused_at_its_deadline() {
    let database = scratch("driver_young_holder").await;
    let fake = Fake::new(
        1,
        1,
        Script {
            holders_held_ms: 10,
            ..Script::default()
        },
    );
    let other = (TxnId::new(), OrderId::new());
    fake.apply(
        Participant::Store,
        &Command::Reserve {
            txn: other.0,
            order: other.1,
            wanted: 1,
        },
    );
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;

    let order = place(&coordinator, "c-1", 1).await;
    assert_eq!(order.state, OrderState::NotPlaced, "{order:?}");
    assert_eq!(order.reason, Some(NotPlacedReason::Timeout));
    // The other order's reservation is still there: it may still be placed.
    assert!(matches!(
        fake.states(Participant::Store)[..],
        [ItemState::Reserved { txn, .. }] if txn == other.0
    ));
    database.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_cancel_frees_the_agent_then_the_packets() {
    let database = scratch("driver_cancel").await;
    let fake = Fake::new(1, 1, Script::default());
    let coordinator = coordinator(&database, Arc::clone(&fake)).await;
    let order = place(&coordinator, "c-1", 1).await;
    assert_eq!(order.state, OrderState::Placed);

    let cancelled = coordinator
        .cancel_order(order.id, Some("c-1"))
        .await
        .unwrap();
    assert_eq!(cancelled.state, OrderState::Cancelled, "{cancelled:?}");
    let sent = fake.sent();
    assert_eq!(sent[sent.len() - 2..], ["delivery Cancel", "store Cancel"]);
    for side in Participant::ALL {
        assert!(
            fake.states(side).iter().all(|s| *s == ItemState::Available),
            "{side}"
        );
    }
    // Once the rider has it, a cancel is refused and changes nothing.
    let again = place(&coordinator, "c-2", 1).await;
    fake.delivery.lock().unwrap().mark_placed(again.id);
    fake.delivery.lock().unwrap().pick_up(again.id).unwrap();
    let refused = coordinator
        .cancel_order(again.id, Some("c-2"))
        .await
        .unwrap();
    assert_eq!(refused.state, OrderState::PickedUp, "{refused:?}");
    database.drop_database().await.unwrap();
}
