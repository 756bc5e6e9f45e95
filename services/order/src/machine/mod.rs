//! The order machine: the order as a value, the events that move it, and one exhaustive
//! function, [`apply`], that computes the order after an event. The rules that decide which
//! event comes next are in [`rules`]. Nothing here does I/O or reads a clock: the driver
//! (`crate::driver`) sends commands and waits, the repository (`crate::repo`) stores the order
//! that `apply` computed, and both feed what they learn back through these functions.
//!
//! ```text
//! reserving ──Decided──> assigning ──Assigned──> placed
//!   │    ^                   │
//!   │    └──Retried          └──AssignFailed──> compensating ──Compensated──> not_placed
//!   └──Aborted──────────────────────────────────────────────────────────────> not_placed
//! ```

pub(crate) mod names;
#[cfg(test)]
mod properties;
pub mod rules;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use protocol::command::{AssignRefusal, Shortage};
use protocol::ids::{AgentId, FoodId, OrderId, PacketId, TxnId};
use protocol::topology::Participant;

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
        /// Final: a packet and an agent are assigned to the order.
        Placed = "placed",
        /// Final: the order will not be fulfilled, and nothing is (or will stay) held for it.
        NotPlaced = "not_placed",
    }
}

impl OrderState {
    /// Placed or not placed.
    pub fn is_final(self) -> bool {
        matches!(self, OrderState::Placed | OrderState::NotPlaced)
    }
}

named! {
    /// Why an order is (being) not placed.
    pub enum NotPlacedReason ("reason") {
        /// Every packet of the food is assigned to other orders.
        FoodUnavailable = "food_unavailable",
        /// No such food.
        UnknownFood = "unknown_food",
        /// Every agent is assigned to other orders.
        AgentUnavailable = "agent_unavailable",
        /// Phase 1 did not finish by the order's deadline (a participant did not answer, or
        /// items stayed held by others).
        Timeout = "timeout",
        /// Phase 2 failed: a reservation expired before it could be assigned.
        AssignFailed = "assign_failed",
    }
}

impl From<Shortage> for NotPlacedReason {
    fn from(shortage: Shortage) -> Self {
        match shortage {
            Shortage::FoodUnavailable => NotPlacedReason::FoodUnavailable,
            Shortage::UnknownFood => NotPlacedReason::UnknownFood,
            Shortage::AgentUnavailable => NotPlacedReason::AgentUnavailable,
        }
    }
}

/// An order: everything the coordinator knows of it, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Order {
    /// The order.
    pub id: OrderId,
    /// Who ordered.
    pub customer_id: String,
    /// What.
    pub food_id: FoodId,
    /// Where it is.
    pub state: OrderState,
    /// Why it is (being) not placed.
    pub reason: Option<NotPlacedReason>,
    /// The current transaction attempt.
    pub txn_id: TxnId,
    /// Attempts so far.
    pub attempt: i32,
    /// The packet (from the commit decision on).
    pub packet_id: Option<PacketId>,
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

/// What happened to an order, with what the order learns from it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Both reservations held: the commit decision.
    Decided {
        /// The packet the store holds.
        packet: PacketId,
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
}

/// How an assignment failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
                packet,
                agent,
                reserved_until,
                assign_until,
            },
        ) => {
            next.state = S::Assigning;
            next.packet_id = Some(*packet);
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
        (
            S::Reserving | S::Assigning | S::Compensating | S::Placed | S::NotPlaced,
            E::Decided { .. }
            | E::Retried { .. }
            | E::Aborted { .. }
            | E::Assigned
            | E::AssignFailed { .. }
            | E::Compensated,
        ) => {
            return Err(IllegalTransition {
                state: order.state,
                event,
            });
        }
    }
    Ok(next)
}
