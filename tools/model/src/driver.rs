//! The coordinator in the model: what a driver does at each step, as `services/order`'s driver
//! does it, with the order machine's own rules ([`next_step`], [`after_reserve`],
//! [`after_assign`], [`after_release`], [`after_cancel`], [`after_report`]) and transitions
//! ([`transition`]), written by [`table::write`] under the same guards as the order table: an
//! insert for a new order's first record, then saves that present the lease token and the state
//! they were computed from.

use std::time::Duration;

use order_machine::rules::{
    AfterReserve, AssignAnswer, CancelAnswer, Reservation, Step, after_assign, after_cancel,
    after_release, after_reserve, next_step,
};
use order_machine::{Event, Order, OrderState, Writer, transition};
use participant_machine::Command;
use protocol::command::ReleaseReason;
use protocol::ids::{ItemId, TxnId};
use protocol::sides::Sides;
use protocol::topology::Participant;

use crate::Config;
use crate::state::{AT, Answer, Client, Msg, Phase, State, order_id, txn_id};
use crate::table;

/// Phase 2's grace (the model has no clock; any value serves).
const GRACE: Duration = Duration::from_secs(1);

/// The driver of order `o` with lease token `token`: its place in the order's drivers.
pub(crate) fn find(state: &State, o: usize, token: u8) -> Option<usize> {
    state.orders[o]
        .drivers
        .iter()
        .position(|d| d.token == token)
}

/// Whether the driver has what its next step needs.
pub(crate) fn ready(state: &State, o: usize, d: usize) -> bool {
    let driver = &state.orders[o].drivers[d];
    match &driver.phase {
        Phase::Start => true,
        Phase::Reserving(answers) => {
            driver.deadline_passed || (answers.store.is_some() && answers.delivery.is_some())
        }
        Phase::Assigning { answers, gave_up } => {
            *gave_up || (answers.store.is_some() && answers.delivery.is_some())
        }
        Phase::Compensating(released) => released.store && released.delivery,
        Phase::Cancelling { delivery, store } => {
            *store || *delivery == Some(CancelAnswer::PickedUp)
        }
    }
}

/// Steps every driver that has what its next step needs, until none has: a driver acts as soon
/// as it can (what else happens between an answer's arrival and the driver's step may as well
/// happen before the answer arrives, with the same outcome).
pub(crate) fn settle(state: &mut State, config: &Config) {
    while let Some((o, d)) = (0..state.orders.len())
        .flat_map(|o| (0..state.orders[o].drivers.len()).map(move |d| (o, d)))
        .find(|(o, d)| ready(state, *o, *d))
    {
        step(state, config, o, d);
    }
}

/// The driver's next step.
fn step(state: &mut State, config: &Config, o: usize, d: usize) {
    let driver = state.orders[o].drivers[d].clone();
    let order = &driver.order;
    match driver.phase {
        Phase::Start => match next_step(order, driver.driving) {
            Step::Done | Step::Inconsistent => stop(state, o, d),
            Step::Reserve => reserve(state, config, o, d, order.txn_id),
            Step::Abort { reason, release } => abort(state, o, d, release, reason),
            Step::Assign { packets, agent, .. } => {
                let items = Sides::new(
                    packets.iter().map(|p| ItemId(p.0)).collect(),
                    vec![ItemId(agent.0)],
                );
                assign(state, o, d, items);
            }
            Step::Compensate => compensate(state, o, d),
            Step::Cancel => {
                send(
                    state,
                    o,
                    Participant::Delivery,
                    Command::Cancel { txn: order.txn_id },
                );
                state.orders[o].drivers[d].phase = Phase::Cancelling {
                    delivery: None,
                    store: false,
                };
            }
        },
        Phase::Reserving(answers) => {
            let answers = answers.map(|_, a| a.unwrap_or(Reservation::NoAnswer));
            let time_left = !driver.deadline_passed && order.attempt + 1 < config.max_attempts;
            let wanted = order.packets_wanted();
            match after_reserve(&answers, wanted, time_left, GRACE) {
                AfterReserve::Commit(decided) if driver.unrecorded && driver.ack_lost => {
                    // The insert commits; the driver sees an error, releases both sides (abort)
                    // and stops, telling its request nothing: the record stays, for recovery.
                    if let Ok(t) = transition(order, Some(decided), Writer::First, AT) {
                        table::write(state, o, &t, driver.token);
                    }
                    release(
                        state,
                        o,
                        order.txn_id,
                        Sides::both(true),
                        ReleaseReason::Abort,
                    );
                    tell_nothing(state, o);
                    stop(state, o, d);
                }
                AfterReserve::Commit(decided) => record(state, o, d, decided),
                AfterReserve::Abort { reason, release } => abort(state, o, d, release, reason),
                AfterReserve::Retry { release: which } => {
                    release(state, o, order.txn_id, which, ReleaseReason::Retry);
                    let slot = &mut state.orders[o];
                    slot.txns += 1;
                    let txn = txn_id(o, slot.txns);
                    record(state, o, d, Event::Retried { txn });
                }
            }
        }
        Phase::Assigning { answers, .. } => {
            let answers = answers.map(|_, a| a.unwrap_or(AssignAnswer::NoAnswer));
            record(state, o, d, after_assign(&answers));
        }
        Phase::Compensating(released) => {
            if let Some(compensated) = after_release(&released) {
                record(state, o, d, compensated);
            }
        }
        Phase::Cancelling { delivery, store } => {
            if let Some(event) = delivery.and_then(|answer| after_cancel(answer, store)) {
                record(state, o, d, event);
            }
        }
    }
}

/// Sends reserves for `txn` to both sides.
fn reserve(state: &mut State, config: &Config, o: usize, d: usize, txn: TxnId) {
    if state.orders[o].drivers[d].replays_recorded {
        state.orders[o].replay_reserved = true;
    }
    let order = order_id(o);
    send(
        state,
        o,
        Participant::Store,
        Command::Reserve {
            txn,
            order,
            wanted: config.packets_per_order as usize,
        },
    );
    send(
        state,
        o,
        Participant::Delivery,
        Command::Reserve {
            txn,
            order,
            wanted: 1,
        },
    );
    state.orders[o].drivers[d].phase = Phase::Reserving(Sides::default());
}

fn assign(state: &mut State, o: usize, d: usize, items: Sides<Vec<ItemId>>) {
    let txn = state.orders[o].drivers[d].order.txn_id;
    let order = order_id(o);
    for (side, items) in items.iter() {
        let items = items.clone();
        send(state, o, side, Command::Assign { txn, order, items });
    }
    state.orders[o].drivers[d].phase = Phase::Assigning {
        answers: Sides::default(),
        gave_up: false,
    };
}

fn compensate(state: &mut State, o: usize, d: usize) {
    let txn = state.orders[o].drivers[d].order.txn_id;
    release(state, o, txn, Sides::both(true), ReleaseReason::Compensate);
    state.orders[o].drivers[d].phase = Phase::Compensating(Sides::default());
}

/// Releases the sides in `which` (not waiting for replies), then records `Aborted`.
fn abort(
    state: &mut State,
    o: usize,
    d: usize,
    which: Sides<bool>,
    reason: order_machine::NotPlacedReason,
) {
    let txn = state.orders[o].drivers[d].order.txn_id;
    release(state, o, txn, which, ReleaseReason::Abort);
    record(state, o, d, Event::Aborted { reason });
}

fn release(state: &mut State, o: usize, txn: TxnId, which: Sides<bool>, reason: ReleaseReason) {
    for (side, wanted) in which.iter() {
        if *wanted {
            send(state, o, side, Command::Release { txn, reason });
        }
    }
}

pub(crate) fn send(state: &mut State, o: usize, to: Participant, command: Command) {
    state.send(Msg::Command {
        to,
        order: o,
        command,
    });
}

/// Records `event` for driver `d`: the transition that the machine computes, written as the
/// first record of a new order or as a save of the driver ([`table::write`]); then the driver
/// asks the machine for its next step (as the driver's loop does). A write that finds the order
/// changed, or an event the machine refuses, stops the driver.
fn record(state: &mut State, o: usize, d: usize, event: Event) {
    let driver = state.orders[o].drivers[d].clone();
    let writer = if driver.unrecorded {
        Writer::First
    } else {
        Writer::Driver
    };
    let Ok(t) = transition(&driver.order, Some(event), writer, AT) else {
        stop(state, o, d);
        return;
    };
    // Phase 1 goes on in memory: a new order is recorded only at its end.
    let in_memory = driver.unrecorded && t.after.state == OrderState::Reserving;
    if !in_memory && !table::write(state, o, &t, driver.token) {
        if writer == Writer::First {
            key_taken(state, o, d);
        } else {
            stop(state, o, d);
        }
        return;
    }
    let after = t.after;
    let slot = &mut state.orders[o];
    slot.drivers[d].order = after.clone();
    slot.drivers[d].unrecorded = in_memory;
    slot.drivers[d].phase = Phase::Start;
    if driver.request
        && slot.client == Client::Waiting
        && let Some(answer) = answer_of(&after)
    {
        slot.client = Client::Answered(answer);
    }
    if after.state.is_final() {
        stop(state, o, d);
    }
}

/// A first record that finds the order's idempotency key taken (the customer's other request
/// recorded it first): both sides are released, since phase 1 may hold items, and the request
/// is answered with the order recorded under the key.
fn key_taken(state: &mut State, o: usize, d: usize) {
    let driver = state.orders[o].drivers[d].clone();
    let txn = driver.order.txn_id;
    release(state, o, txn, Sides::both(true), ReleaseReason::Abort);
    let slot = &mut state.orders[o];
    if driver.request
        && slot.client == Client::Waiting
        && let Some(answer) = slot.record.as_ref().and_then(|r| answer_of(&r.order))
    {
        slot.client = Client::Answered(answer);
    }
    stop(state, o, d);
}

/// The final answer a request gives for `order` as recorded: `placed` or `not placed`, or
/// none yet (`202 pending`). (A placed order stays `placed` to its customer whatever follows.)
pub(crate) fn answer_of(order: &Order) -> Option<Answer> {
    match order.state {
        OrderState::Placed
        | OrderState::PickedUp
        | OrderState::Delivered
        | OrderState::Cancelling
        | OrderState::Cancelled => Some(Answer::Placed),
        OrderState::NotPlaced => order.reason.map(Answer::NotPlaced),
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => None,
    }
}

/// The driver stops (its order is final, or another driver has it).
fn stop(state: &mut State, o: usize, d: usize) {
    state.orders[o].drivers.remove(d);
}

/// The request gives up without a final answer (`503`, or the coordinator died).
pub(crate) fn tell_nothing(state: &mut State, o: usize) {
    let slot = &mut state.orders[o];
    if slot.client == Client::Waiting {
        slot.client = Client::Unanswered;
    }
}
