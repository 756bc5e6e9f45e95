//! Properties of the machine: any sequence of events keeps the invariants, and a driver that
//! takes over any recorded order finishes it by the same rules.

use proptest::prelude::*;
use protocol::command::AssignRefusal;
use protocol::ids::{AgentId, PacketId, TxnId};
use protocol::sides::Sides;
use protocol::topology::Participant;

use super::rules::{
    AssignAnswer, CancelAnswer, Driving, Step, after_assign, after_cancel, after_release, next_step,
};
use super::tests::{new_order, t};
use super::*;

fn any_reason() -> impl Strategy<Value = NotPlacedReason> {
    prop::sample::select(NotPlacedReason::ALL)
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (1..100i64, 1..100i64, 0..60i64, 0..60i64).prop_map(|(p, a, r, g)| Event::Decided {
            packets: vec![PacketId(p)],
            agent: AgentId(a),
            reserved_until: t(r),
            assign_until: t(r + g),
        }),
        Just(()).prop_map(|()| Event::Retried { txn: TxnId::new() }),
        any_reason().prop_map(|reason| Event::Aborted { reason }),
        Just(Event::Assigned),
        prop::bool::ANY.prop_map(|store| Event::AssignFailed {
            side: if store {
                Participant::Store
            } else {
                Participant::Delivery
            },
            failure: AssignFailure::NoAnswer,
        }),
        Just(Event::Compensated),
        Just(Event::PickedUp),
        Just(Event::Delivered),
        Just(Event::CancelAsked),
        Just(Event::Cancelled),
        Just(Event::CancelRefused),
    ]
}

/// What must hold of every order the machine computes.
fn check_invariants(order: &Order) -> Result<(), TestCaseError> {
    let decided = !order.packet_ids.is_empty() && order.agent_id.is_some();
    let has_items = decided && order.reserved_until.is_some();
    let placing = matches!(
        order.state,
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating
    );
    prop_assert_eq!(order.finished_at.is_some(), !placing);
    match order.state {
        OrderState::Reserving => {
            prop_assert!(order.decided_at.is_none() && order.reason.is_none());
        }
        OrderState::Assigning => prop_assert!(has_items && order.reason.is_none()),
        OrderState::Placed
        | OrderState::PickedUp
        | OrderState::Delivered
        | OrderState::Cancelling
        | OrderState::Cancelled => {
            prop_assert!(has_items, "placed without both items: {:?}", order);
            prop_assert!(order.reason.is_none());
        }
        OrderState::Compensating => {
            prop_assert!(has_items);
            prop_assert_eq!(order.reason, Some(NotPlacedReason::AssignFailed));
        }
        OrderState::NotPlaced => {
            prop_assert!(order.reason.is_some());
            // A decided order that is not placed went through compensation: both sides
            // confirmed their release, so nothing is assigned to it.
            prop_assert_eq!(
                order.decided_at.is_some(),
                order.reason == Some(NotPlacedReason::AssignFailed)
            );
        }
    }
    Ok(())
}

/// An order reached by any sequence of events (illegal ones refused and skipped).
fn any_recorded_order() -> impl Strategy<Value = Order> {
    prop::collection::vec(any_event(), 0..8).prop_map(|events| {
        let mut order = new_order();
        for (i, event) in events.into_iter().enumerate() {
            if let Ok(next) = apply(&order, event, t(i as i64)) {
                order = next;
            }
        }
        order
    })
}

proptest! {
    #[test]
    fn any_sequence_of_events_keeps_the_invariants(events in prop::collection::vec(any_event(), 0..24)) {
        let mut order = new_order();
        check_invariants(&order)?;
        for (i, event) in events.into_iter().enumerate() {
            let before = order.clone();
            match apply(&order, event.clone(), t(100 + i as i64)) {
                Ok(next) => {
                    let ended = matches!(
                        before.state,
                        OrderState::NotPlaced | OrderState::Delivered | OrderState::Cancelled
                    );
                    prop_assert!(!ended, "an ended order accepted {:?}", event);
                    prop_assert_eq!(next.id, before.id);
                    prop_assert_eq!(
                        next.attempt,
                        before.attempt + i32::from(matches!(event, Event::Retried { .. }))
                    );
                    if before.decided_at.is_some() {
                        prop_assert_eq!(&next.packet_ids, &before.packet_ids);
                        prop_assert_eq!(next.agent_id, before.agent_id);
                    }
                    check_invariants(&next)?;
                    order = next;
                }
                Err(err) => {
                    prop_assert_eq!(err.state, before.state);
                }
            }
        }
    }

    #[test]
    fn the_events_recorded_with_any_sequence_of_transitions_agree_with_the_state(
        events in prop::collection::vec((any_event(), 0..4u8), 0..24),
    ) {
        // Each event recorded by a writer drawn at random (the first record once, at the
        // start); the outbox gets what each transition publishes.
        let mut order = new_order();
        let mut outbox = Vec::new();
        let mut first = true;
        for (i, (event, writer)) in events.into_iter().enumerate() {
            let writer = match (first, writer) {
                (true, _) => effects::Writer::First,
                (false, 0 | 1) => effects::Writer::Driver,
                (false, 2) => effects::Writer::Report,
                (false, _) => effects::Writer::Customer,
            };
            let Ok(recorded) = transition(&order, Some(event), writer, t(i as i64)) else {
                continue;
            };
            first = false;
            prop_assert_eq!(recorded.timer.is_some(), writer == effects::Writer::First && !recorded.after.state.is_final());
            prop_assert_eq!(recorded.lease == effects::Lease::End, recorded.after.state.is_final() || writer == effects::Writer::Report);
            outbox.extend(recorded.publish);
            order = recorded.after;
        }
        prop_assert_eq!(outbox.as_slice(), effects::events_until(order.state));
    }

    #[test]
    fn a_driver_that_takes_over_any_recorded_order_finishes_it_by_the_same_rules(
        order in any_recorded_order(),
        answers in prop::collection::vec((0..3u8, 0..3u8), 8),
        picked_up in prop::bool::ANY,
    ) {
        // The participants answer as drawn; compensation is asked again until both confirm,
        // as the driver does, and each round here confirms one more side at least.
        let mut order = order;
        let mut answers = answers.into_iter();
        let mut released = Sides::both(false);
        for round in 0..16 {
            let event = match next_step(&order, Driving::TakenOver) {
                Step::Done => break,
                Step::Reserve | Step::Inconsistent => {
                    return Err(TestCaseError::fail(format!("a taken-over order in {}", order.state)));
                }
                Step::Abort { reason, release } => {
                    prop_assert!(release.all(|r| *r), "a take-over releases both sides");
                    Event::Aborted { reason }
                }
                Step::Assign { .. } => {
                    let (store, delivery) = answers.next().unwrap_or((0, 0));
                    let answer = |n| match n {
                        0 => AssignAnswer::Assigned,
                        1 => AssignAnswer::Refused(AssignRefusal::Expired),
                        _ => AssignAnswer::NoAnswer,
                    };
                    after_assign(&Sides::new(answer(store), answer(delivery)))
                }
                Step::Cancel => {
                    let delivery = if picked_up { CancelAnswer::PickedUp } else { CancelAnswer::Cancelled };
                    match after_cancel(delivery, false) {
                        Some(event) => event,
                        // The store is asked until it answers.
                        None => after_cancel(delivery, true)
                            .ok_or_else(|| TestCaseError::fail("a cancel that never ends"))?,
                    }
                }
                Step::Compensate => {
                    if released.store { released.delivery = true } else { released.store = true }
                    match after_release(&released) {
                        Some(event) => event,
                        None => continue,
                    }
                }
            };
            order = apply(&order, event, t(200 + round)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            check_invariants(&order)?;
        }
        prop_assert!(order.state.is_final(), "not finished: {:?}", order);
    }
}
