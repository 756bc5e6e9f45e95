//! The order's state machine: one exhaustive transition function. The coordinator, the timeout
//! consumer and recovery all move orders through it, so an illegal move is caught in one place.
//!
//! ```text
//! reserving ──Decided──> assigning ──Assigned──> placed
//!   │    ^                   │
//!   │    └──Retried          └──AssignFailed──> compensating ──Compensated──> not_placed
//!   └──Aborted──────────────────────────────────────────────────────────────> not_placed
//! ```

use std::fmt;
use std::str::FromStr;

use protocol::command::Shortage;
use serde::Serialize;

/// Where an order is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    /// Phase 1: reservations asked for.
    Reserving,
    /// The commit decision is recorded; phase 2: assignments asked for.
    Assigning,
    /// An assignment failed for good; releasing both sides before saying "not placed".
    Compensating,
    /// Final: a packet and an agent are assigned to the order.
    Placed,
    /// Final: the order will not be fulfilled, and nothing is (or will stay) held for it.
    NotPlaced,
}

impl OrderState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Reserving => "reserving",
            OrderState::Assigning => "assigning",
            OrderState::Compensating => "compensating",
            OrderState::Placed => "placed",
            OrderState::NotPlaced => "not_placed",
        }
    }

    /// Placed or not placed.
    pub fn is_final(self) -> bool {
        matches!(self, OrderState::Placed | OrderState::NotPlaced)
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not a state.
#[derive(Debug, thiserror::Error)]
#[error("unknown order state {0:?}")]
pub struct UnknownState(String);

impl FromStr for OrderState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "reserving" => OrderState::Reserving,
            "assigning" => OrderState::Assigning,
            "compensating" => OrderState::Compensating,
            "placed" => OrderState::Placed,
            "not_placed" => OrderState::NotPlaced,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

/// Why an order is not placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotPlacedReason {
    /// Every packet of the food is assigned to other orders.
    FoodUnavailable,
    /// No such food.
    UnknownFood,
    /// Every agent is assigned to other orders.
    AgentUnavailable,
    /// Phase 1 did not finish by the order's deadline (a participant did not answer, or items
    /// stayed held by others).
    Timeout,
    /// Phase 2 failed: a reservation expired before it could be assigned.
    AssignFailed,
}

impl NotPlacedReason {
    /// The name stored in the database and answered by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NotPlacedReason::FoodUnavailable => "food_unavailable",
            NotPlacedReason::UnknownFood => "unknown_food",
            NotPlacedReason::AgentUnavailable => "agent_unavailable",
            NotPlacedReason::Timeout => "timeout",
            NotPlacedReason::AssignFailed => "assign_failed",
        }
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

impl FromStr for NotPlacedReason {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "food_unavailable" => NotPlacedReason::FoodUnavailable,
            "unknown_food" => NotPlacedReason::UnknownFood,
            "agent_unavailable" => NotPlacedReason::AgentUnavailable,
            "timeout" => NotPlacedReason::Timeout,
            "assign_failed" => NotPlacedReason::AssignFailed,
            other => return Err(UnknownState(other.to_owned())),
        })
    }
}

/// What happened to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Both reservations held: the commit decision.
    Decided,
    /// Items were only held by others for now: released, trying again with a new transaction.
    Retried,
    /// Phase 1 failed; released.
    Aborted(NotPlacedReason),
    /// Both assignments done.
    Assigned,
    /// An assignment failed for good.
    AssignFailed,
    /// Both sides released after a failed phase 2.
    Compensated,
}

/// An event that cannot happen in a state: a bug, or a second actor that lost a race and must
/// re-read the order.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("illegal event {event:?} for an order that is {state}")]
pub struct IllegalEvent {
    /// The state.
    pub state: OrderState,
    /// The event.
    pub event: Event,
}

/// The state after `event` in `state`.
pub fn next(state: OrderState, event: Event) -> Result<OrderState, IllegalEvent> {
    use Event as E;
    use OrderState as S;
    match (state, event) {
        (S::Reserving, E::Decided) => Ok(S::Assigning),
        (S::Reserving, E::Retried) => Ok(S::Reserving),
        (S::Reserving, E::Aborted(_)) => Ok(S::NotPlaced),
        (S::Assigning, E::Assigned) => Ok(S::Placed),
        (S::Assigning, E::AssignFailed) => Ok(S::Compensating),
        (S::Compensating, E::Compensated) => Ok(S::NotPlaced),
        (
            S::Reserving | S::Assigning | S::Compensating | S::Placed | S::NotPlaced,
            E::Decided
            | E::Retried
            | E::Aborted(_)
            | E::Assigned
            | E::AssignFailed
            | E::Compensated,
        ) => Err(IllegalEvent { state, event }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_happy_path() {
        let s = next(OrderState::Reserving, Event::Decided).unwrap();
        assert_eq!(next(s, Event::Assigned), Ok(OrderState::Placed));
    }

    #[test]
    fn final_states_accept_nothing() {
        for state in [OrderState::Placed, OrderState::NotPlaced] {
            for event in [
                Event::Decided,
                Event::Retried,
                Event::Aborted(NotPlacedReason::Timeout),
                Event::Assigned,
                Event::AssignFailed,
                Event::Compensated,
            ] {
                assert!(next(state, event).is_err(), "{state} accepted {event:?}");
            }
        }
    }

    #[test]
    fn no_placing_without_a_decision() {
        assert!(next(OrderState::Reserving, Event::Assigned).is_err());
        assert!(next(OrderState::Compensating, Event::Assigned).is_err());
        assert!(
            next(
                OrderState::Assigning,
                Event::Aborted(NotPlacedReason::Timeout)
            )
            .is_err()
        );
    }

    #[test]
    fn names_round_trip() {
        for s in [
            OrderState::Reserving,
            OrderState::Assigning,
            OrderState::Compensating,
            OrderState::Placed,
            OrderState::NotPlaced,
        ] {
            assert_eq!(s.as_str().parse::<OrderState>().unwrap(), s);
        }
    }
}
