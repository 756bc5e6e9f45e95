//! The order machine: the order as a value, the events that move it, and one exhaustive
//! function, [`apply`], that computes the order after an event. The rules that decide which
//! event comes next are in [`rules`]; what recording an event comes with (the event published,
//! the lease, the timer) is one [`Transition`], computed by [`transition`]. Nothing here does I/O or reads a clock: the driver
//! (`services/order`'s `driver`) sends commands and waits, its repository (`repo`) stores the order
//! that `apply` computed, and both feed what they learn back through these functions.
//!
//! ```text
//! reserving ──Decided──> assigning ──Assigned──> placed ──PickedUp──> picked_up ──Delivered──> delivered
//!   │    ^                   │                     │  ^                 ^
//!   │    └──Retried          │          CancelAsked│  │                 │ CancelRefused (or PickedUp)
//!   │                        │                     v                    │
//!   │                        │                  cancelling ─────────────┘
//!   │                        │                     └──Cancelled──> cancelled
//!   │                        └──AssignFailed──> compensating ──Compensated──> not_placed
//!   └──Aborted──────────────────────────────────────────────────────────────> not_placed
//! ```
//!
//! (A delivery reported before its pick-up is recorded as the pick-up, then the delivery:
//! `rules::after_report`.)

pub mod effects;
pub(crate) mod names;
#[cfg(test)]
mod properties;
pub mod rules;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use protocol::command::PacketLine;
use protocol::command::{AssignRefusal, Shortage};
use protocol::ids::{AgentId, FoodId, HubId, OrderId, PacketId, TxnId};
use protocol::topology::Participant;

pub use effects::{Lease, Transition, Writer, transition};
pub use names::UnknownName;
use names::named;

named! {
    /// Where an order is.
    pub enum OrderState ("order state") {
        /// Phase 1: reservations asked for.
        Reserving = "reserving",
        /// The commit decision is recorded; phase 2: assignments asked for.
        Assigning = "assigning",
        /// An assignment failed for good; releasing both sides before saying "not placed".
        Compensating = "compensating",
        /// The packets of every line and an agent are assigned to the order.
        Placed = "placed",
        /// Final: the order will not be fulfilled, and nothing is (or will stay) held for it.
        NotPlaced = "not_placed",
        /// The agent has the order; it can no longer be cancelled.
        PickedUp = "picked_up",
        /// Final: delivered; the agent is free for other orders.
        Delivered = "delivered",
        /// The customer cancelled a placed order; freeing the agent (unless it has picked the
        /// order up), then the packets.
        Cancelling = "cancelling",
        /// Final: cancelled; the packets are back in stock and the agent is free.
        Cancelled = "cancelled",
    }
}

impl OrderState {
    /// Whether the order needs no driver: placement has its answer, and no transaction of the
    /// coordinator is under way (what happens next is reported by delivery, or asked for by the
    /// customer). The others are driven, and taken over after a crash.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            OrderState::Reserving
                | OrderState::Assigning
                | OrderState::Compensating
                | OrderState::Cancelling
        )
    }
}

named! {
    /// Why an order is (being) not placed.
    pub enum NotPlacedReason ("reason") {
        /// Too few packets of a food at the hub: the rest are assigned to other orders.
        FoodUnavailable = "food_unavailable",
        /// No such food.
        UnknownFood = "unknown_food",
        /// Every agent of the hub is assigned to other orders, out on a delivery or off duty.
        AgentUnavailable = "agent_unavailable",
        /// Phase 1 did not finish by the order's deadline (a participant did not answer, or
        /// items stayed held by others).
        Timeout = "timeout",
        /// Phase 2 failed: a reservation expired before it could be assigned.
        AssignFailed = "assign_failed",
        /// No such hub.
        UnknownHub = "unknown_hub",
        /// An operator aborted it before the commit decision (`POST /admin/orders/{id}/abort`).
        Aborted = "aborted",
    }
}

impl From<Shortage> for NotPlacedReason {
    fn from(shortage: Shortage) -> Self {
        match shortage {
            Shortage::FoodUnavailable => NotPlacedReason::FoodUnavailable,
            Shortage::UnknownFood => NotPlacedReason::UnknownFood,
            Shortage::AgentUnavailable => NotPlacedReason::AgentUnavailable,
            Shortage::UnknownHub => NotPlacedReason::UnknownHub,
        }
    }
}

/// An order: everything the coordinator knows of it, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Order {
    /// The order.
    pub id: OrderId,
    /// Who ordered.
    pub customer_id: String,
    /// The dark store that fulfils it.
    pub hub_id: HubId,
    /// What: each food at most once.
    pub lines: Vec<PacketLine>,
    /// Where it is.
    pub state: OrderState,
    /// Why it is (being) not placed.
    pub reason: Option<NotPlacedReason>,
    /// The current transaction attempt.
    pub txn_id: TxnId,
    /// Attempts so far.
    pub attempt: i32,
    /// The packets of every line (from the commit decision on; empty before).
    pub packet_ids: Vec<PacketId>,
    /// The agent (from the commit decision on).
    pub agent_id: Option<AgentId>,
    /// The earlier reservation expiry (from the commit decision on).
    pub reserved_until: Option<DateTime<Utc>>,
    /// When it should be final at the latest: the phase-1 deadline, then (from the commit
    /// decision) the end of phase 2's retry window.
    pub deadline: DateTime<Utc>,
    /// When received.
    pub created_at: DateTime<Utc>,
    /// When the commit decision was recorded.
    pub decided_at: Option<DateTime<Utc>>,
    /// When it became final.
    pub finished_at: Option<DateTime<Utc>>,
    /// The W3C trace it belongs to.
    pub traceparent: Option<String>,
}

impl Order {
    /// The food of the first line (the one food of an order of the one-item API).
    pub fn first_food(&self) -> Option<FoodId> {
        self.lines.first().map(|line| line.food_id)
    }

    /// How many packets the order's lines ask for.
    pub fn packets_wanted(&self) -> usize {
        self.lines
            .iter()
            .map(|line| usize::try_from(line.quantity).unwrap_or(usize::MAX))
            .sum()
    }
}

/// What happened to an order, with what the order learns from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Both reservations held: the commit decision.
    Decided {
        /// The packets the store holds.
        packets: Vec<PacketId>,
        /// The agent delivery holds.
        agent: AgentId,
        /// The earlier of the two reservations' expiry.
        reserved_until: DateTime<Utc>,
        /// Until when phase 2 may go on asking (the reservations' expiry plus a grace).
        assign_until: DateTime<Utc>,
    },
    /// Items were only held by others for now: released, trying again with a new transaction.
    Retried {
        /// The new transaction.
        txn: TxnId,
    },
    /// Phase 1 ended without a commit decision; whatever may be held was released.
    Aborted {
        /// Why (any reason but `assign_failed`, which only phase 2 gives).
        reason: NotPlacedReason,
    },
    /// Both assignments done.
    Assigned,
    /// An assignment failed for good.
    AssignFailed {
        /// The first side that failed.
        side: Participant,
        /// How.
        failure: AssignFailure,
    },
    /// Both sides released after a failed phase 2.
    Compensated,
    /// Delivery reports that the agent picked the order up.
    PickedUp,
    /// Delivery reports that the order is delivered.
    Delivered,
    /// The customer asked to cancel the placed order.
    CancelAsked,
    /// Both sides freed the order's items.
    Cancelled,
    /// Delivery refused the cancel: the agent has picked the order up.
    CancelRefused,
}

/// How an assignment failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssignFailure {
    /// The participant refused: the reservation is gone.
    Refused(AssignRefusal),
    /// No answer until the reservations' expiry plus the grace.
    NoAnswer,
}

/// An event that cannot happen in the order's state: a bug, or a second driver that lost a race
/// and must read the order again. Nothing is recorded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("illegal event {event:?} for an order that is {state}")]
pub struct IllegalTransition {
    /// The order's state.
    pub state: OrderState,
    /// The event.
    pub event: Event,
}

/// The order after `event`, which happened `at`; or why `event` cannot happen to `order`.
/// Exhaustive over (state, event): a new state or event does not compile until every pair is
/// decided here.
pub fn apply(order: &Order, event: Event, at: DateTime<Utc>) -> Result<Order, IllegalTransition> {
    use Event as E;
    use OrderState as S;
    let mut next = order.clone();
    match (order.state, &event) {
        (
            S::Reserving,
            E::Decided {
                packets,
                agent,
                reserved_until,
                assign_until,
            },
        ) if !packets.is_empty() => {
            next.state = S::Assigning;
            next.packet_ids.clone_from(packets);
            next.agent_id = Some(*agent);
            next.reserved_until = Some(*reserved_until);
            next.deadline = *assign_until;
            next.decided_at = Some(at);
        }
        (S::Reserving, E::Retried { txn }) if *txn != order.txn_id => {
            next.txn_id = *txn;
            next.attempt += 1;
        }
        (S::Reserving, E::Aborted { reason }) if *reason != NotPlacedReason::AssignFailed => {
            next.state = S::NotPlaced;
            next.reason = Some(*reason);
            next.finished_at = Some(at);
        }
        (S::Assigning, E::Assigned) => {
            next.state = S::Placed;
            next.finished_at = Some(at);
        }
        (S::Assigning, E::AssignFailed { .. }) => {
            next.state = S::Compensating;
            next.reason = Some(NotPlacedReason::AssignFailed);
        }
        (S::Compensating, E::Compensated) => {
            next.state = S::NotPlaced;
            next.finished_at = Some(at);
        }
        (S::Placed, E::CancelAsked) => next.state = S::Cancelling,
        (S::Cancelling, E::Cancelled) => next.state = S::Cancelled,
        (S::Cancelling, E::CancelRefused) | (S::Placed | S::Cancelling, E::PickedUp) => {
            next.state = S::PickedUp;
        }
        (S::PickedUp, E::Delivered) => next.state = S::Delivered,
        (
            S::Reserving
            | S::Assigning
            | S::Compensating
            | S::Placed
            | S::NotPlaced
            | S::PickedUp
            | S::Delivered
            | S::Cancelling
            | S::Cancelled,
            E::Decided { .. }
            | E::Retried { .. }
            | E::Aborted { .. }
            | E::Assigned
            | E::AssignFailed { .. }
            | E::Compensated
            | E::PickedUp
            | E::Delivered
            | E::CancelAsked
            | E::Cancelled
            | E::CancelRefused,
        ) => {
            return Err(IllegalTransition {
                state: order.state,
                event,
            });
        }
    }
    Ok(next)
}
