//! The machine without a broker or a database: every (state, event) pair, and each rule.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use protocol::command::{AssignRefusal, Holder, PacketLine, Shortage};
use protocol::ids::{AgentId, FoodId, HubId, ItemId, OrderId, PacketId, TxnId};
use protocol::sides::Sides;
use protocol::topology::Participant;

use super::rules::{
    AfterReserve, AssignAnswer, CancelAnswer, Driving, Report, Reservation, Step, after_assign,
    after_cancel, after_release, after_report, after_reserve, is_orphan, next_step, stale_holders,
};
use super::*;

pub(super) fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0)
        .single()
        .unwrap()
}

pub(super) fn new_order() -> Order {
    Order {
        id: OrderId::new(),
        customer_id: "c-1".into(),
        hub_id: HubId::DEFAULT,
        lines: vec![PacketLine::one(FoodId(1))],
        state: OrderState::Reserving,
        reason: None,
        txn_id: TxnId::new(),
        attempt: 1,
        packet_ids: Vec::new(),
        agent_id: None,
        reserved_until: None,
        deadline: t(10),
        created_at: t(0),
        decided_at: None,
        finished_at: None,
        traceparent: None,
    }
}

fn decided() -> Event {
    Event::Decided {
        packets: vec![PacketId(7)],
        agent: AgentId(8),
        reserved_until: t(30),
        assign_until: t(40),
    }
}

/// One event of each kind (and each abort reason), for an order whose transaction is `txn`.
fn every_event(txn: TxnId) -> Vec<Event> {
    let mut events = vec![
        decided(),
        Event::Retried { txn: TxnId::new() },
        Event::Retried { txn },
        Event::Assigned,
        Event::AssignFailed {
            side: Participant::Delivery,
            failure: AssignFailure::NoAnswer,
        },
        Event::Compensated,
        Event::PickedUp,
        Event::Delivered,
        Event::CancelAsked,
        Event::Cancelled,
        Event::CancelRefused,
    ];
    events.extend(
        NotPlacedReason::ALL
            .iter()
            .map(|&reason| Event::Aborted { reason }),
    );
    events
}

/// An order in `state`, reached by legal events.
fn order_in(state: OrderState) -> Order {
    let fresh = new_order();
    let step = |o: &Order, e| apply(o, e, t(5)).unwrap();
    match state {
        OrderState::Reserving => fresh,
        OrderState::Assigning => step(&fresh, decided()),
        OrderState::Compensating => step(
            &step(&fresh, decided()),
            Event::AssignFailed {
                side: Participant::Store,
                failure: AssignFailure::Refused(AssignRefusal::Expired),
            },
        ),
        OrderState::Placed => step(&step(&fresh, decided()), Event::Assigned),
        OrderState::PickedUp => step(&order_in(OrderState::Placed), Event::PickedUp),
        OrderState::Delivered => step(&order_in(OrderState::PickedUp), Event::Delivered),
        OrderState::Cancelling => step(&order_in(OrderState::Placed), Event::CancelAsked),
        OrderState::Cancelled => step(&order_in(OrderState::Cancelling), Event::Cancelled),
        OrderState::NotPlaced => step(
            &fresh,
            Event::Aborted {
                reason: NotPlacedReason::Timeout,
            },
        ),
    }
}

/// The state after `event` in `state`, or `None` where the event is illegal: the table the
/// machine must follow, written out pair by pair.
fn expected(state: OrderState, event: &Event, txn: TxnId) -> Option<OrderState> {
    use OrderState as S;
    match (state, event) {
        (S::Reserving, Event::Decided { .. }) => Some(S::Assigning),
        (S::Reserving, Event::Retried { txn: new }) if *new != txn => Some(S::Reserving),
        (S::Reserving, Event::Aborted { reason }) if *reason != NotPlacedReason::AssignFailed => {
            Some(S::NotPlaced)
        }
        (S::Assigning, Event::Assigned) => Some(S::Placed),
        (S::Assigning, Event::AssignFailed { .. }) => Some(S::Compensating),
        (S::Compensating, Event::Compensated) => Some(S::NotPlaced),
        (S::Placed, Event::CancelAsked) => Some(S::Cancelling),
        (S::Placed | S::Cancelling, Event::PickedUp) => Some(S::PickedUp),
        (S::Cancelling, Event::CancelRefused) => Some(S::PickedUp),
        (S::Cancelling, Event::Cancelled) => Some(S::Cancelled),
        (S::PickedUp, Event::Delivered) => Some(S::Delivered),
        _ => None,
    }
}

#[test]
fn every_state_and_event_pair_is_accepted_or_refused_as_the_table_says() {
    let mut accepted = 0;
    for &state in OrderState::ALL {
        let order = order_in(state);
        assert_eq!(order.state, state);
        for event in every_event(order.txn_id) {
            let got = apply(&order, event.clone(), t(6)).map(|o| o.state);
            match expected(state, &event, order.txn_id) {
                Some(to) => {
                    assert_eq!(got, Ok(to), "{state} + {event:?}");
                    accepted += 1;
                }
                None => assert_eq!(
                    got,
                    Err(IllegalTransition {
                        state,
                        event: event.clone()
                    }),
                    "{state} + {event:?}"
                ),
            }
        }
    }
    // decided, a new txn, six abort reasons; assigned, assign failed; compensated; from
    // placed: cancel asked, picked up; from cancelling: picked up, refused, cancelled; from
    // picked up: delivered.
    assert_eq!(accepted, 17);
}

#[test]
fn a_decision_records_the_items_and_the_phase_2_window() {
    let order = apply(&new_order(), decided(), t(5)).unwrap();
    assert_eq!(order.packet_ids, vec![PacketId(7)]);
    assert_eq!(order.agent_id, Some(AgentId(8)));
    assert_eq!(order.reserved_until, Some(t(30)));
    assert_eq!(order.deadline, t(40));
    assert_eq!(order.decided_at, Some(t(5)));
    assert_eq!(order.finished_at, None);
}

#[test]
fn a_retry_moves_to_a_new_transaction() {
    let order = new_order();
    let txn = TxnId::new();
    let retried = apply(&order, Event::Retried { txn }, t(1)).unwrap();
    assert_eq!((retried.txn_id, retried.attempt), (txn, 2));
}

#[test]
fn names_round_trip_and_shortages_keep_their_names() {
    for &state in OrderState::ALL {
        assert_eq!(state.as_str().parse::<OrderState>(), Ok(state));
    }
    for &reason in NotPlacedReason::ALL {
        assert_eq!(reason.as_str().parse::<NotPlacedReason>(), Ok(reason));
    }
    for shortage in [
        Shortage::FoodUnavailable,
        Shortage::UnknownFood,
        Shortage::AgentUnavailable,
        Shortage::UnknownHub,
    ] {
        assert_eq!(NotPlacedReason::from(shortage).as_str(), shortage.as_str());
    }
    assert!("shipped".parse::<OrderState>().is_err());
}

fn held(id: i64, expires: i64) -> Reservation {
    Reservation::Held {
        items: vec![ItemId(id)],
        expires_at: t(expires),
    }
}

#[test]
fn phase_1_commits_both_held_until_the_earlier_expiry() {
    let answers = Sides::new(held(1, 30), held(2, 25));
    assert_eq!(
        after_reserve(&answers, 1, true, Duration::from_secs(5)),
        AfterReserve::Commit(Event::Decided {
            packets: vec![PacketId(1)],
            agent: AgentId(2),
            reserved_until: t(25),
            assign_until: t(30),
        })
    );
}

#[test]
fn only_holders_older_than_a_phase_1_are_stale() {
    let (old, young) = (
        (TxnId::new(), OrderId::new()),
        (TxnId::new(), OrderId::new()),
    );
    let holder = |n: u8, held_ms| {
        let (txn_id, order_id) = if n == 1 { old } else { young };
        Holder {
            txn_id,
            order_id,
            held_ms,
        }
    };
    let answers = Sides::new(
        Reservation::Busy {
            holders: vec![holder(1, 7_001), holder(2, 6_999)],
        },
        Reservation::Busy {
            holders: vec![holder(1, 8_000)],
        },
    );
    let stale = stale_holders(&answers, Duration::from_secs(7));
    assert_eq!(
        stale,
        [
            (Participant::Store, &holder(1, 7_001)),
            (Participant::Delivery, &holder(1, 8_000))
        ]
    );
    let held = Sides::new(held(1, 30), held(2, 30));
    assert!(stale_holders(&held, Duration::ZERO).is_empty());
}

#[test]
fn a_holder_is_an_orphan_unless_its_order_may_still_assign_it() {
    let placing = order_in(OrderState::Assigning);
    let txn = placing.txn_id;
    assert!(is_orphan(txn, None), "never recorded: presumed abort");
    assert!(!is_orphan(txn, Some(&placing)));
    let reserving = order_in(OrderState::Reserving);
    assert!(
        !is_orphan(reserving.txn_id, Some(&reserving)),
        "recovery drives it"
    );
    assert!(
        is_orphan(TxnId::new(), Some(&placing)),
        "an earlier attempt"
    );
    let refused = order_in(OrderState::NotPlaced);
    assert!(
        is_orphan(refused.txn_id, Some(&refused)),
        "its release was lost"
    );
}

#[test]
fn phase_1_aborts_on_a_final_shortage_even_if_the_other_side_is_busy() {
    let none = Reservation::Unavailable(Shortage::AgentUnavailable);
    assert_eq!(
        after_reserve(
            &Sides::new(Reservation::Busy { holders: vec![] }, none),
            1,
            true,
            Duration::ZERO
        ),
        AfterReserve::Abort {
            reason: NotPlacedReason::AgentUnavailable,
            release: Sides::new(false, false),
        }
    );
    let unknown = Reservation::Unavailable(Shortage::UnknownFood);
    assert_eq!(
        after_reserve(&Sides::new(unknown, held(2, 9)), 1, true, Duration::ZERO),
        AfterReserve::Abort {
            reason: NotPlacedReason::UnknownFood,
            release: Sides::new(false, true),
        }
    );
}

#[test]
fn phase_1_retries_while_time_is_left_and_releases_what_may_be_held() {
    assert_eq!(
        after_reserve(
            &Sides::new(Reservation::Busy { holders: vec![] }, held(2, 9)),
            1,
            true,
            Duration::ZERO
        ),
        AfterReserve::Retry {
            release: Sides::new(false, true)
        }
    );
    assert_eq!(
        after_reserve(
            &Sides::new(held(1, 9), Reservation::NoAnswer),
            1,
            true,
            Duration::ZERO
        ),
        AfterReserve::Retry {
            release: Sides::new(true, true)
        }
    );
    assert_eq!(
        after_reserve(
            &Sides::new(Reservation::Busy { holders: vec![] }, held(2, 9)),
            1,
            false,
            Duration::ZERO
        ),
        AfterReserve::Abort {
            reason: NotPlacedReason::Timeout,
            release: Sides::new(false, true),
        }
    );
}

#[test]
fn phase_1_gives_up_on_a_participant_that_answers_with_the_wrong_items() {
    let two = Reservation::Held {
        items: vec![ItemId(1), ItemId(2)],
        expires_at: t(9),
    };
    assert!(matches!(
        after_reserve(
            &Sides::new(two.clone(), held(3, 9)),
            1,
            true,
            Duration::ZERO
        ),
        AfterReserve::Abort {
            reason: NotPlacedReason::Timeout,
            ..
        }
    ));
    let two_agents = Reservation::Held {
        items: vec![ItemId(4), ItemId(5)],
        expires_at: t(9),
    };
    assert!(matches!(
        after_reserve(
            &Sides::new(two.clone(), two_agents),
            2,
            true,
            Duration::ZERO
        ),
        AfterReserve::Abort {
            reason: NotPlacedReason::Timeout,
            ..
        }
    ));
    // A basket of two packets.
    assert!(matches!(
        after_reserve(&Sides::new(two, held(3, 9)), 2, true, Duration::ZERO),
        AfterReserve::Commit(Event::Decided { ref packets, .. }) if packets.len() == 2
    ));
}

#[test]
fn phase_2_places_only_with_both_assigned() {
    use AssignAnswer as A;
    assert_eq!(
        after_assign(&Sides::new(A::Assigned, A::Assigned)),
        Event::Assigned
    );
    assert_eq!(
        after_assign(&Sides::new(A::Assigned, A::Refused(AssignRefusal::Expired))),
        Event::AssignFailed {
            side: Participant::Delivery,
            failure: AssignFailure::Refused(AssignRefusal::Expired),
        }
    );
    assert_eq!(
        after_assign(&Sides::new(A::NoAnswer, A::Assigned)),
        Event::AssignFailed {
            side: Participant::Store,
            failure: AssignFailure::NoAnswer,
        }
    );
}

#[test]
fn compensation_ends_only_when_both_confirm() {
    assert_eq!(
        after_release(&Sides::new(true, true)),
        Some(Event::Compensated)
    );
    assert_eq!(after_release(&Sides::new(true, false)), None);
}

#[test]
fn what_a_driver_does_depends_on_who_drives() {
    let order = new_order();
    assert_eq!(next_step(&order, Driving::Fresh), Step::Reserve);
    assert_eq!(
        next_step(&order, Driving::TakenOver),
        Step::Abort {
            reason: NotPlacedReason::Timeout,
            release: Sides::both(true)
        }
    );
    // An operator's abort releases both sides, like a take-over, and says why.
    assert_eq!(
        next_step(&order, Driving::OperatorAbort),
        Step::Abort {
            reason: NotPlacedReason::Aborted,
            release: Sides::both(true)
        }
    );
    let decided = order_in(OrderState::Assigning);
    for driving in [Driving::Fresh, Driving::TakenOver, Driving::OperatorAbort] {
        assert_eq!(
            next_step(&decided, driving),
            Step::Assign {
                packets: vec![PacketId(7)],
                agent: AgentId(8),
                until: t(40)
            }
        );
    }
    assert_eq!(
        next_step(&order_in(OrderState::Compensating), Driving::TakenOver),
        Step::Compensate
    );
    let mut broken = decided;
    broken.agent_id = None;
    assert_eq!(next_step(&broken, Driving::TakenOver), Step::Inconsistent);
    assert_eq!(
        next_step(&order_in(OrderState::Cancelling), Driving::TakenOver),
        Step::Cancel
    );
    for state in [
        OrderState::Placed,
        OrderState::NotPlaced,
        OrderState::PickedUp,
        OrderState::Delivered,
        OrderState::Cancelled,
    ] {
        assert_eq!(next_step(&order_in(state), Driving::TakenOver), Step::Done);
    }
}

#[test]
fn delivery_decides_a_cancel_and_the_store_follows() {
    assert_eq!(
        after_cancel(CancelAnswer::PickedUp, false),
        Some(Event::CancelRefused)
    );
    assert_eq!(after_cancel(CancelAnswer::Cancelled, false), None);
    assert_eq!(
        after_cancel(CancelAnswer::Cancelled, true),
        Some(Event::Cancelled)
    );
}

#[test]
fn reports_are_applied_once_and_in_any_order() {
    let placed = order_in(OrderState::Placed);
    assert_eq!(
        after_report(&placed, Report::PickedUp),
        Some(Event::PickedUp)
    );
    // Delivered before the pick-up was reported: the pick-up first, then the delivery.
    assert_eq!(
        after_report(&placed, Report::Delivered),
        Some(Event::PickedUp)
    );
    let cancelling = order_in(OrderState::Cancelling);
    assert_eq!(
        after_report(&cancelling, Report::Delivered),
        Some(Event::PickedUp)
    );
    let picked = order_in(OrderState::PickedUp);
    assert_eq!(after_report(&picked, Report::PickedUp), None);
    assert_eq!(
        after_report(&picked, Report::Delivered),
        Some(Event::Delivered)
    );
    let delivered = order_in(OrderState::Delivered);
    assert_eq!(after_report(&delivered, Report::PickedUp), None);
    assert_eq!(after_report(&delivered, Report::Delivered), None);
    // A report for an order that cannot have one is passed on, and the machine refuses it.
    let not_placed = order_in(OrderState::NotPlaced);
    let event = after_report(&not_placed, Report::PickedUp).unwrap();
    assert!(apply(&not_placed, event, t(7)).is_err());
}
