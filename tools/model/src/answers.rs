//! What reaches a driver, and what it asks again: participants' replies (matched to the driver
//! that waits for them, as a correlation id is), delivery's reports (applied by the progress
//! consumer to the order as recorded), and the commands a driver sends again after its reply
//! timeout.

use order_machine::rules::{AssignAnswer, CancelAnswer, Reservation, after_report};
use order_machine::{Writer, transition};
use participant_machine::{Command, ItemState, Items, Outcome};
use protocol::command::{CancelRefusal, ReleaseReason};
use protocol::ids::ItemId;
use protocol::sides::Sides;
use protocol::topology::Participant;

use crate::Config;
use crate::driver::send;
use crate::state::{AT, Phase, State};
use crate::table;

/// Whether `outcome`, the reply `items` decided just now for `command`, is not a refusal for a
/// shortage, or is one while the items are truly short: too few are free or only reserved (the
/// rest are assigned to orders, or out with their riders). Said here from the items alone, not
/// by the participant machine's rule.
pub(crate) fn truly_short(items: &Items, command: &Command, outcome: &Outcome) -> bool {
    let (Command::Reserve { wanted, .. }, Outcome::Unavailable(_)) = (command, outcome) else {
        return true;
    };
    let could_be_had = items
        .items()
        .filter(|(_, item)| matches!(item, ItemState::Available | ItemState::Reserved { .. }))
        .count();
    could_be_had < *wanted
}

/// A reply reaches the driver waiting for it, if one is (a reply nobody waits for is dropped,
/// as an unknown correlation id is).
pub(crate) fn on_reply(
    state: &mut State,
    o: usize,
    from: Participant,
    command: &Command,
    outcome: &Outcome,
) {
    let txn = command.txn();
    let Some(d) = state.orders[o]
        .drivers
        .iter()
        .position(|d| d.order.txn_id == txn && awaits(&d.phase, from, command))
    else {
        return;
    };
    let mut cancel_store = false;
    let phase = &mut state.orders[o].drivers[d].phase;
    match phase {
        Phase::Reserving(answers) => *side(answers, from) = Some(reservation(outcome)),
        Phase::Assigning { answers, .. } => {
            *side(answers, from) = Some(match outcome {
                Outcome::AssignRefused(refusal) => AssignAnswer::Refused(*refusal),
                _ => AssignAnswer::Assigned,
            });
        }
        Phase::Compensating(released) => {
            *side(released, from) = matches!(outcome, Outcome::Released(_));
        }
        Phase::Cancelling { delivery, store } => match from {
            Participant::Delivery => {
                let answer = match outcome {
                    Outcome::CancelRefused(CancelRefusal::PickedUp) => CancelAnswer::PickedUp,
                    _ => CancelAnswer::Cancelled,
                };
                *delivery = Some(answer);
                cancel_store = answer == CancelAnswer::Cancelled;
            }
            Participant::Store => *store = true,
        },
        Phase::Start => {}
    }
    if cancel_store {
        send(state, o, Participant::Store, Command::Cancel { txn });
    }
}

/// Whether a driver in `phase` waits for `from`'s reply to `command` (of its transaction).
fn awaits(phase: &Phase, from: Participant, command: &Command) -> bool {
    match (phase, command) {
        (Phase::Reserving(answers), Command::Reserve { .. }) => side_of(answers, from).is_none(),
        (Phase::Assigning { answers, gave_up }, Command::Assign { .. }) => {
            !gave_up && side_of(answers, from).is_none()
        }
        (
            Phase::Compensating(released),
            Command::Release {
                reason: ReleaseReason::Compensate,
                ..
            },
        ) => !side_of(released, from),
        (Phase::Cancelling { delivery, store }, Command::Cancel { .. }) => match from {
            Participant::Delivery => delivery.is_none(),
            Participant::Store => *delivery == Some(CancelAnswer::Cancelled) && !store,
        },
        _ => false,
    }
}

/// The commands a driver waits on an answer to, which it sends again after its reply timeout
/// (the participant answers a repeat from its barrier).
pub(crate) fn unanswered(
    state: &State,
    config: &Config,
    o: usize,
    d: usize,
) -> Vec<(Participant, Command)> {
    let driver = &state.orders[o].drivers[d];
    let txn = driver.order.txn_id;
    let order = driver.order.id;
    let mut out = Vec::new();
    match &driver.phase {
        Phase::Reserving(answers) if !driver.deadline_passed => {
            for (side, answer) in answers.iter() {
                if answer.is_none() {
                    let wanted = match side {
                        Participant::Store => config.packets_per_order as usize,
                        Participant::Delivery => 1,
                    };
                    out.push((side, Command::Reserve { txn, order, wanted }));
                }
            }
        }
        Phase::Assigning {
            answers,
            gave_up: false,
        } => {
            let items: Sides<Vec<ItemId>> = Sides::new(
                driver
                    .order
                    .packet_ids
                    .iter()
                    .map(|p| ItemId(p.0))
                    .collect(),
                driver
                    .order
                    .agent_id
                    .map(|a| ItemId(a.0))
                    .into_iter()
                    .collect(),
            );
            for (side, answer) in answers.iter() {
                if answer.is_none() {
                    let items = side_of(&items, side).clone();
                    out.push((side, Command::Assign { txn, order, items }));
                }
            }
        }
        Phase::Compensating(released) => {
            for (side, done) in released.iter() {
                if !done {
                    let reason = ReleaseReason::Compensate;
                    out.push((side, Command::Release { txn, reason }));
                }
            }
        }
        Phase::Cancelling { delivery, store } => match delivery {
            None => out.push((Participant::Delivery, Command::Cancel { txn })),
            Some(CancelAnswer::Cancelled) if !store => {
                out.push((Participant::Store, Command::Cancel { txn }));
            }
            Some(_) => {}
        },
        Phase::Start | Phase::Reserving(_) | Phase::Assigning { .. } => {}
    }
    out
}

/// A report from delivery reaches the progress consumer: applied to the order as recorded, one
/// event at a time, each save guarded by the state it was computed from. A report for an order
/// that cannot have one is parked (nothing recorded).
pub(crate) fn on_report(state: &mut State, o: usize, report: order_machine::rules::Report) {
    while let Some(record) = &state.orders[o].record {
        let Some(event) = after_report(&record.order, report) else {
            return;
        };
        let Ok(t) = transition(&record.order, Some(event), Writer::Report, AT) else {
            return;
        };
        // A report holds no lease: its token is never presented.
        if !table::write(state, o, &t, 0) {
            return;
        }
    }
}

fn reservation(outcome: &Outcome) -> Reservation {
    match outcome {
        Outcome::Reserved(items) => Reservation::Held {
            items: items.clone(),
            expires_at: AT,
        },
        // The holders are not named: the model releases orphans by an action of its own.
        Outcome::Busy => Reservation::Busy { holders: vec![] },
        Outcome::Unavailable(shortage) => Reservation::Unavailable(*shortage),
        Outcome::Aborted => Reservation::Aborted,
        _ => Reservation::NoAnswer,
    }
}

fn side<T>(sides: &mut Sides<T>, which: Participant) -> &mut T {
    match which {
        Participant::Store => &mut sides.store,
        Participant::Delivery => &mut sides.delivery,
    }
}

fn side_of<T>(sides: &Sides<T>, which: Participant) -> &T {
    match which {
        Participant::Store => &sides.store,
        Participant::Delivery => &sides.delivery,
    }
}
