//! The counterexamples the checker found, each kept as the path it printed and replayed through
//! today's machines: the interleaving either can no longer happen, or no longer breaks the
//! promise.

use model::properties::names;
use model::replay::{Replayed, replay};
use model::state::{Faults, Msg, order_id, txn_id};
use model::{Action, Config, OrderModel};
use participant_machine::{Command, ItemState};
use protocol::command::ReleaseReason;
use protocol::ids::ItemId;
use protocol::topology::Participant;

fn one_order(faults: Faults) -> OrderModel {
    OrderModel::new(Config {
        orders: 1,
        faults,
        riders: true,
        ..Config::plain(1)
    })
}

fn command(to: Participant, command: Command) -> Action {
    Action::Receive(Msg::Command {
        to,
        order: 0,
        command,
    })
}

fn reserve(to: Participant) -> Action {
    command(
        to,
        Command::Reserve {
            txn: txn_id(0, 0),
            order: order_id(0),
            wanted: 1,
        },
    )
}

fn assign(to: Participant) -> Action {
    command(
        to,
        Command::Assign {
            txn: txn_id(0, 0),
            order: order_id(0),
            items: vec![ItemId(1)],
        },
    )
}

fn release(to: Participant, reason: ReleaseReason) -> Action {
    command(
        to,
        Command::Release {
            txn: txn_id(0, 0),
            reason,
        },
    )
}

/// Hole 3: the first record of the commit decision commits but its acknowledgement is lost, so
/// the driver releases both sides (abort); recovery takes the recorded `assigning` order over
/// and assigns; the abort release, applied after the assign, freed the packet of an order that
/// ends `placed`. An abort now frees only what is reserved.
#[test]
fn an_abort_release_applied_after_a_recovered_assign_frees_nothing() {
    let model = one_order(Faults {
        lost_acks: 1,
        ..Faults::default()
    });
    let path = [
        Action::Submit {
            order: 0,
            ack_lost: true,
        },
        reserve(Participant::Delivery),
        reserve(Participant::Store),
        Action::TakeOver(0),
        assign(Participant::Delivery),
        assign(Participant::Store),
        release(Participant::Store, ReleaseReason::Abort),
    ];
    let Replayed::Done { state, broken } = replay(&model, &path) else {
        panic!("the interleaving can still happen, and should replay to its end");
    };
    assert_eq!(broken, Vec::<&str>::new());
    assert!(matches!(
        state.store.state(ItemId(1)),
        Some(ItemState::Assigned { order, .. }) if order == order_id(0)
    ));
    let record = state.orders[0].record.as_ref().map(|r| r.order.state);
    assert_eq!(record, Some(order_machine::OrderState::Placed));
}

/// Hole 2: delivery assigns the agent, the rider reports the pick-up while the order is not
/// placed yet, the store's assign is refused (its reservation expired; here, phase 2 gave up
/// first), and compensation cannot take the agent back from the rider: the order ended
/// `not_placed` while the rider was out with it. Delivery now takes a pick-up only once it has
/// consumed the order's `order.placed` event, so the path stops at the pick-up.
#[test]
fn a_pick_up_before_placement_is_refused() {
    let model = one_order(Faults::default());
    let path = [
        Action::Submit {
            order: 0,
            ack_lost: false,
        },
        reserve(Participant::Delivery),
        reserve(Participant::Store),
        assign(Participant::Delivery),
        Action::PickUp(0),
        Action::GiveUp { order: 0, token: 1 },
        release(Participant::Delivery, ReleaseReason::Compensate),
        assign(Participant::Store),
        release(Participant::Store, ReleaseReason::Compensate),
    ];
    let Replayed::Refused { at, action, broken } = replay(&model, &path) else {
        panic!("the pick-up before placement should be refused");
    };
    assert_eq!((at, action), (4, Action::PickUp(0)));
    assert!(broken.is_empty(), "{broken:?}");

    // The same order, placed: the rider may pick it up once delivery has seen the event.
    let placed = [
        Action::Submit {
            order: 0,
            ack_lost: false,
        },
        reserve(Participant::Delivery),
        reserve(Participant::Store),
        assign(Participant::Delivery),
        assign(Participant::Store),
        Action::Receive(Msg::Placed { order: 0 }),
        Action::PickUp(0),
        Action::Deliver(0),
    ];
    let Replayed::Done { state, broken } = replay(&model, &placed) else {
        panic!("a placed order should be picked up and delivered");
    };
    assert!(broken.is_empty(), "{broken:?}");
    assert!(state.delivery.was_delivered(order_id(0)));
}

/// Hole 4: a reserve's reply is lost (replies go without confirms); the coordinator never asked
/// again, so the order waited for its deadline and was refused `timeout` with its items free.
/// Without deadlines it waited for ever. The driver now asks again after its reply timeout, and
/// the participant answers the repeat from its barrier.
#[test]
fn a_lost_reserve_reply_is_asked_again() {
    let model = OrderModel::new(Config {
        faults: Faults {
            lost_replies: 1,
            ..Faults::default()
        },
        deadlines: false,
        ..Config::plain(1)
    });
    let lost = Msg::Command {
        to: Participant::Store,
        order: 0,
        command: Command::Reserve {
            txn: txn_id(0, 0),
            order: order_id(0),
            wanted: 1,
        },
    };
    let path = [
        Action::Submit {
            order: 0,
            ack_lost: false,
        },
        reserve(Participant::Delivery),
        Action::LoseReply(lost),
        Action::Resend { order: 0, token: 1 },
        reserve(Participant::Store),
        assign(Participant::Delivery),
        assign(Participant::Store),
    ];
    let Replayed::Done { state, broken } = replay(&model, &path) else {
        panic!("the driver should ask again, and the order go on");
    };
    assert_eq!(broken, Vec::<&str>::new());
    let record = state.orders[0].record.as_ref().map(|r| r.order.state);
    assert_eq!(record, Some(order_machine::OrderState::Placed));
}

/// Hole 1: the coordinator of order 0 dies in phase 1, with both items reserved and the order
/// not recorded; order 1 is told `busy` on both sides until the reservations expire, and was
/// refused `timeout` at its deadline. Its driver now releases (abort) the reservations in its
/// way whose order can never be placed, and places order 1 without any expiry.
#[test]
fn an_orphaned_reservation_is_released_by_the_next_order() {
    let model = OrderModel::new(Config {
        faults: Faults {
            crashes: 1,
            ..Faults::default()
        },
        ..Config::plain(2)
    });
    let to = |side, order, command| {
        Action::Receive(Msg::Command {
            to: side,
            order,
            command,
        })
    };
    let reserve = |side, order, n| {
        to(
            side,
            order,
            Command::Reserve {
                txn: txn_id(order, n),
                order: order_id(order),
                wanted: 1,
            },
        )
    };
    let orphan = txn_id(0, 0);
    let release = |side| {
        to(
            side,
            0,
            Command::Release {
                txn: orphan,
                reason: ReleaseReason::Abort,
            },
        )
    };
    let assign = |side| {
        to(
            side,
            1,
            Command::Assign {
                txn: txn_id(1, 1),
                order: order_id(1),
                items: vec![ItemId(1)],
            },
        )
    };
    use Participant::{Delivery, Store};
    let path = [
        Action::Submit {
            order: 0,
            ack_lost: false,
        },
        reserve(Store, 0, 0),
        Action::Crash(0),
        reserve(Delivery, 0, 0),
        Action::Submit {
            order: 1,
            ack_lost: false,
        },
        reserve(Store, 1, 0),
        reserve(Delivery, 1, 0),
        Action::ReleaseOrphan {
            side: Store,
            order: 0,
            txn: orphan,
        },
        Action::ReleaseOrphan {
            side: Delivery,
            order: 0,
            txn: orphan,
        },
        release(Store),
        release(Delivery),
        reserve(Store, 1, 1),
        reserve(Delivery, 1, 1),
        assign(Store),
        assign(Delivery),
    ];
    let Replayed::Done { state, broken } = replay(&model, &path) else {
        panic!("the next order should release the orphan and be placed");
    };
    assert!(broken.is_empty(), "{broken:?}");
    let record = state.orders[1].record.as_ref().map(|r| r.order.state);
    assert_eq!(record, Some(order_machine::OrderState::Placed));
    assert!(
        state.orders[0].record.is_none(),
        "the orphan was never recorded"
    );

    // Without the release, order 1 is told `busy` again and refused at its last attempt.
    let without = OrderModel::new(Config {
        orphans: false,
        ..model.config.clone()
    });
    assert!(matches!(
        replay(&without, &path),
        Replayed::Refused { at: 7, .. }
    ));
}

/// Hole 5: the first record of the commit decision commits but its acknowledgement is lost, so
/// the customer is told nothing and sends the order again with its idempotency key. The replay
/// ran a whole phase 1 of its own, holding the last packet and agent, before its first record
/// found the key taken. It now looks the key up first: it is answered with the recorded order,
/// and sends nothing.
#[test]
fn a_replayed_key_whose_order_is_recorded_holds_nothing() {
    let model = |key_lookup| {
        OrderModel::new(Config {
            faults: Faults {
                lost_acks: 1,
                ..Faults::default()
            },
            replays: true,
            key_lookup,
            ..Config::plain(1)
        })
    };
    let path = [
        Action::Submit {
            order: 0,
            ack_lost: true,
        },
        reserve(Participant::Store),
        reserve(Participant::Delivery),
        Action::Replay(0),
    ];
    // As it was: the replay reserves again.
    match replay(&model(false), &path) {
        Replayed::Done { broken, .. } => {
            assert_eq!(broken, vec![names::REPLAY_HOLDS_NOTHING]);
        }
        refused => panic!("the old interleaving no longer happens: {refused:?}"),
    }
    // Now: no driver for the replay, and no reserve of another transaction on its way.
    match replay(&model(true), &path) {
        Replayed::Done { state, broken } => {
            assert_eq!(broken, Vec::<&str>::new());
            assert!(state.orders[0].drivers.is_empty());
            assert!(state.net.iter().all(|msg| !matches!(
                msg,
                Msg::Command {
                    command: Command::Reserve { .. },
                    ..
                }
            )));
        }
        refused => panic!("the replay was refused: {refused:?}"),
    }
}
