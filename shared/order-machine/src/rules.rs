//! The coordinator's decisions, each a pure function of the order, the answers so far and the
//! time: what to do next with an order ([`next_step`]: new orders, take-overs and fired timers
//! alike), and what the answers of each phase come to ([`after_reserve`], [`after_assign`],
//! [`after_release`]). The driver carries them out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::command::{AssignRefusal, Holder, Shortage};
use protocol::ids::{AgentId, ItemId, PacketId, TxnId};
use protocol::sides::Sides;
use protocol::topology::Participant;

use super::{AssignFailure, Event, NotPlacedReason, Order, OrderState};

/// Who drives an order, which decides what an undecided order may still do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Driving {
    /// The coordinator that took the request, which waits: phase 1 runs, and its end is the
    /// order's first record.
    Fresh,
    /// Taken over from a driver that stopped (its lease ran out): an undecided order (recorded
    /// in phase 1 by an earlier version) is aborted, since its first driver may have sent
    /// reserves we know nothing about; a decided one is driven to its end.
    TakenOver,
    /// Taken by an operator's abort (the previous driver fenced off): an undecided order is
    /// aborted as `aborted`; the operator API takes only undecided orders this way.
    OperatorAbort,
}

/// What the driver does next with an order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Phase 1: ask both sides to reserve, then [`after_reserve`].
    Reserve,
    /// Release the sides that may hold something (without waiting for the replies), then record
    /// `Aborted { reason }`.
    Abort {
        /// Why.
        reason: NotPlacedReason,
        /// Which sides to release.
        release: Sides<bool>,
    },
    /// Phase 2: ask both sides to assign until `until`, then [`after_assign`].
    Assign {
        /// The packets to assign.
        packets: Vec<PacketId>,
        /// The agent to assign.
        agent: AgentId,
        /// When to stop asking (a side that has not answered then counts as failed).
        until: DateTime<Utc>,
    },
    /// Ask both sides to release until both confirm, then [`after_release`].
    Compensate,
    /// Ask delivery to cancel until it answers; if it freed the agent, ask the store until it
    /// answers; then [`after_cancel`].
    Cancel,
    /// Final: nothing left to do.
    Done,
    /// A decided order without its items: a row the machine never writes. Left alone (and to the
    /// audit).
    Inconsistent,
}

/// What to do next with `order`.
pub fn next_step(order: &Order, driving: Driving) -> Step {
    match (order.state, driving) {
        (OrderState::Reserving, Driving::Fresh) => Step::Reserve,
        (OrderState::Reserving, Driving::TakenOver) => Step::Abort {
            reason: NotPlacedReason::Timeout,
            release: Sides::both(true),
        },
        (OrderState::Reserving, Driving::OperatorAbort) => Step::Abort {
            reason: NotPlacedReason::Aborted,
            release: Sides::both(true),
        },
        (OrderState::Assigning, _) => match (order.packet_ids.is_empty(), order.agent_id) {
            (false, Some(agent)) => Step::Assign {
                packets: order.packet_ids.clone(),
                agent,
                until: order.deadline,
            },
            _ => Step::Inconsistent,
        },
        (OrderState::Compensating, _) => Step::Compensate,
        (OrderState::Cancelling, _) => Step::Cancel,
        (
            OrderState::Placed
            | OrderState::NotPlaced
            | OrderState::PickedUp
            | OrderState::Delivered
            | OrderState::Cancelled,
            _,
        ) => Step::Done,
    }
}

/// What a participant answered to a reserve.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reservation {
    /// Held for the transaction until `expires_at`.
    Held {
        /// The items held, one per requested line.
        items: Vec<ItemId>,
        /// When the reservation lapses.
        expires_at: DateTime<Utc>,
    },
    /// Every item is held by other unfinished transactions for now; `holders` names the oldest
    /// reservations in the way.
    Busy {
        /// The reservations in the way, as the participant named them.
        holders: Vec<Holder>,
    },
    /// Nothing can be had.
    Unavailable(Shortage),
    /// The transaction was released before the reserve arrived (by another driver).
    Aborted,
    /// No answer in time, or the request could not be sent: it may or may not hold items.
    NoAnswer,
}

impl Reservation {
    /// Whether the side may hold items for the transaction, so must be released on abort.
    pub fn may_hold(&self) -> bool {
        matches!(self, Reservation::Held { .. } | Reservation::NoAnswer)
    }
}

/// The reservations named by busy answers that have held their items for longer than
/// `orphaned_after`, each with the side that named it. An order's phase 1 lasts at most its
/// deadline, so such a reservation's order is recorded by now, or its coordinator died before
/// recording it: [`is_orphan`] tells, from the order's record.
pub fn stale_holders(
    answers: &Sides<Reservation>,
    orphaned_after: Duration,
) -> Vec<(Participant, &Holder)> {
    let older = |held_ms: u64| Duration::from_millis(held_ms) > orphaned_after;
    answers
        .iter()
        .flat_map(|(side, answer)| {
            match answer {
                Reservation::Busy { holders } => holders.as_slice(),
                _ => &[],
            }
            .iter()
            .filter(move |holder| older(holder.held_ms))
            .map(move |holder| (side, holder))
        })
        .collect()
}

/// Whether a reservation by transaction `txn`, of an order recorded as `record` (`None`: never
/// recorded), will never be assigned, so that another order's driver may release it (a
/// `release(abort)`, which frees only what is reserved). So it is when the order was never
/// recorded (its coordinator died in phase 1: presumed abort, as recovery presumes it), when it
/// moved on to another transaction (a retry whose release was lost), or when it ended not placed
/// (its release was lost). Safe even for a coordinator that is only slow: a release refuses the
/// transaction's later assign, so that order ends not placed, never half assigned.
pub fn is_orphan(txn: TxnId, record: Option<&Order>) -> bool {
    match record {
        None => true,
        Some(order) => order.txn_id != txn || order.state == OrderState::NotPlaced,
    }
}

/// What phase 1 comes to.
#[derive(Clone, Debug, PartialEq)]
pub enum AfterReserve {
    /// Record this event (`Decided`), then phase 2.
    Commit(Event),
    /// [`Step::Abort`]: release what may be held, then record `Aborted { reason }`.
    Abort {
        /// Why.
        reason: NotPlacedReason,
        /// Which sides to release.
        release: Sides<bool>,
    },
    /// Release what may be held, pause, and try again with a new transaction (`Retried`).
    Retry {
        /// Which sides to release.
        release: Sides<bool>,
    },
}

/// Phase 1's rule. A final shortage on either side ends the order; both held commits (with
/// phase 2 allowed until the earlier expiry plus `phase2_grace`); anything else (held by
/// others, no answer) is worth another attempt while `time_left`. The store must hold
/// `packets_wanted` packets and delivery one agent.
pub fn after_reserve(
    answers: &Sides<Reservation>,
    packets_wanted: usize,
    time_left: bool,
    phase2_grace: Duration,
) -> AfterReserve {
    use Reservation as R;
    let release = answers.as_ref().map(|_, answer| answer.may_hold());
    let abort = |reason| AfterReserve::Abort { reason, release };
    match (&answers.store, &answers.delivery) {
        (
            R::Held {
                items: packets,
                expires_at: store_expiry,
            },
            R::Held {
                items: agents,
                expires_at: delivery_expiry,
            },
        ) => match (packets.len() == packets_wanted, agents.as_slice()) {
            (true, [agent]) => {
                let reserved_until = (*store_expiry).min(*delivery_expiry);
                AfterReserve::Commit(Event::Decided {
                    packets: packets.iter().map(|p| PacketId(p.0)).collect(),
                    agent: AgentId(agent.0),
                    reserved_until,
                    assign_until: later_by(reserved_until, phase2_grace),
                })
            }
            // A participant that answers with the wrong number of items is broken: give up on
            // this order rather than assign something unexpected.
            _ => abort(NotPlacedReason::Timeout),
        },
        (R::Unavailable(shortage), _) | (_, R::Unavailable(shortage)) => abort((*shortage).into()),
        (R::Aborted, _) | (_, R::Aborted) => abort(NotPlacedReason::Timeout),
        _ if time_left => AfterReserve::Retry { release },
        _ => abort(NotPlacedReason::Timeout),
    }
}

/// What a participant answered to an assign, by the time phase 2 stopped asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssignAnswer {
    /// Assigned to the order.
    Assigned,
    /// Refused for good.
    Refused(AssignRefusal),
    /// No answer.
    NoAnswer,
}

/// Phase 2's rule: both assigned places the order; anything else compensates (a side that never
/// answered is treated like a refusal: it is released with the other).
pub fn after_assign(answers: &Sides<AssignAnswer>) -> Event {
    match answers.find(|answer| *answer != AssignAnswer::Assigned) {
        None => Event::Assigned,
        Some((side, answer)) => Event::AssignFailed {
            side,
            failure: match answer {
                AssignAnswer::Refused(refusal) => AssignFailure::Refused(*refusal),
                AssignAnswer::Assigned | AssignAnswer::NoAnswer => AssignFailure::NoAnswer,
            },
        },
    }
}

/// Compensation's rule: "not placed" may only be said once both sides confirmed their release
/// (nothing is assigned to the order any more). `None`: ask again.
pub fn after_release(released: &Sides<bool>) -> Option<Event> {
    released.all(|done| *done).then_some(Event::Compensated)
}

/// What delivery answered to a cancel, by the time the driver has an answer (it asks until it
/// gets one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelAnswer {
    /// The agent is free again.
    Cancelled,
    /// The agent has picked the order up.
    PickedUp,
}

/// Cancellation's rule: delivery decides, since only it knows whether the agent has picked the
/// order up. Freed: the store is asked to return the packets, then `Cancelled`. Refused:
/// nothing changes, the order is picked up (`CancelRefused`). `None`: ask the store next.
pub fn after_cancel(delivery: CancelAnswer, store_done: bool) -> Option<Event> {
    match (delivery, store_done) {
        (CancelAnswer::PickedUp, _) => Some(Event::CancelRefused),
        (CancelAnswer::Cancelled, true) => Some(Event::Cancelled),
        (CancelAnswer::Cancelled, false) => None,
    }
}

/// A report of delivery's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Report {
    /// The agent picked the order up.
    PickedUp,
    /// The order is delivered.
    Delivered,
}

/// What a report comes to for the order as recorded: the next event to record, or `None` if
/// the order is there already or past it (a report may come twice, and out of order). A delivery
/// reported before its pick-up records the pick-up first (it happened), so the order goes
/// through every state and publishes every event, in order; the caller applies events until
/// there is none.
pub fn after_report(order: &Order, report: Report) -> Option<Event> {
    match (report, order.state) {
        (Report::PickedUp, OrderState::PickedUp | OrderState::Delivered)
        | (Report::Delivered, OrderState::Delivered) => None,
        (Report::PickedUp | Report::Delivered, OrderState::Placed | OrderState::Cancelling) => {
            Some(Event::PickedUp)
        }
        (Report::Delivered, OrderState::PickedUp) => Some(Event::Delivered),
        // Not an order that can have been picked up: the machine refuses the event.
        (Report::PickedUp, _) => Some(Event::PickedUp),
        (Report::Delivered, _) => Some(Event::Delivered),
    }
}

/// `at` plus `d`, saturating at the end of time.
fn later_by(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
