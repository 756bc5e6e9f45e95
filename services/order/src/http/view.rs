//! An order as the API shows it: recorded facts only, with the status, stage and reason the API
//! names for the machine's states.

use protocol::command::PacketLine;
use protocol::ids::{AgentId, FoodId, HubId, OrderId, PacketId};
use serde::Serialize;
use utoipa::ToSchema;

use crate::machine::{NotPlacedReason, Order, OrderState};

/// An order as the API shows it: recorded facts only.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct OrderView {
    /// The order.
    pub(super) order_id: OrderId,
    /// Where it is.
    pub(super) status: Status,
    /// Its hub.
    pub(super) hub_id: HubId,
    /// What was ordered.
    pub(super) lines: Vec<PacketLine>,
    /// Why it is not placed (`not_placed`); in the answer of a refused cancel, why the cancel
    /// was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<Reason>,
    /// How far placing it has come (`pending` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) stage: Option<Stage>,
    /// The packets of every line (from `placed` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) packet_ids: Option<Vec<PacketId>>,
    /// Its agent (from `placed` on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) agent_id: Option<AgentId>,
    /// The food of an order of one packet of one food (the one-item API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) food_id: Option<FoodId>,
    /// The packet of an order of one packet of one food, once it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) packet_id: Option<PacketId>,
}

/// Where an order is, as the API says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Status {
    /// Being placed: see `stage`.
    Pending,
    /// The packets of every line and an agent are assigned to it.
    Placed,
    /// Final: it will not be fulfilled; nothing is held for it (see `reason`).
    NotPlaced,
    /// The agent has it; it can no longer be cancelled.
    PickedUp,
    /// Final: delivered.
    Delivered,
    /// The customer cancelled it; being undone.
    Cancelling,
    /// Final: cancelled; the packets are back in stock and the agent is free.
    Cancelled,
}

impl Status {
    /// As the API spells it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Placed => "placed",
            Status::NotPlaced => "not_placed",
            Status::PickedUp => "picked_up",
            Status::Delivered => "delivered",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
        }
    }
}

/// How far placing a `pending` order has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Stage {
    /// Phase 1: reservations asked for.
    Reserving,
    /// The commit decision is recorded; assignments asked for.
    Assigning,
    /// An assignment failed; releasing both sides before saying `not_placed`.
    Compensating,
}

/// Why an order is not placed, or why a cancel was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum Reason {
    /// Not placed: too few packets of a food at the hub.
    FoodUnavailable,
    /// Not placed: no such food.
    UnknownFood,
    /// Not placed: every agent of the hub is busy or off duty.
    AgentUnavailable,
    /// Not placed: no decision by the order's deadline.
    Timeout,
    /// Not placed: a reservation expired before it could be assigned.
    AssignFailed,
    /// Not placed: no such hub.
    UnknownHub,
    /// Not placed: an operator aborted it before its commit decision.
    Aborted,
    /// Cancel refused: the agent has picked the order up.
    AlreadyPickedUp,
    /// Cancel refused: the order was not placed.
    NotPlaced,
    /// Cancel refused: the order is still being placed; ask again once placed.
    NotPlacedYet,
}

impl From<NotPlacedReason> for Reason {
    fn from(reason: NotPlacedReason) -> Self {
        match reason {
            NotPlacedReason::FoodUnavailable => Reason::FoodUnavailable,
            NotPlacedReason::UnknownFood => Reason::UnknownFood,
            NotPlacedReason::AgentUnavailable => Reason::AgentUnavailable,
            NotPlacedReason::Timeout => Reason::Timeout,
            NotPlacedReason::AssignFailed => Reason::AssignFailed,
            NotPlacedReason::UnknownHub => Reason::UnknownHub,
            NotPlacedReason::Aborted => Reason::Aborted,
        }
    }
}

/// The status and stage the API shows for `state`.
fn status_of(state: OrderState) -> (Status, Option<Stage>) {
    match state {
        OrderState::Reserving => (Status::Pending, Some(Stage::Reserving)),
        OrderState::Assigning => (Status::Pending, Some(Stage::Assigning)),
        OrderState::Compensating => (Status::Pending, Some(Stage::Compensating)),
        OrderState::Placed => (Status::Placed, None),
        OrderState::NotPlaced => (Status::NotPlaced, None),
        OrderState::PickedUp => (Status::PickedUp, None),
        OrderState::Delivered => (Status::Delivered, None),
        OrderState::Cancelling => (Status::Cancelling, None),
        OrderState::Cancelled => (Status::Cancelled, None),
    }
}

/// The public view of an order: recorded facts only.
pub(super) fn view(order: &Order) -> OrderView {
    let (status, stage) = status_of(order.state);
    let assigned = match order.state {
        OrderState::NotPlaced
        | OrderState::Reserving
        | OrderState::Assigning
        | OrderState::Compensating => false,
        OrderState::Placed
        | OrderState::PickedUp
        | OrderState::Delivered
        | OrderState::Cancelling
        | OrderState::Cancelled => true,
    };
    let mut view = OrderView {
        order_id: order.id,
        status,
        hub_id: order.hub_id,
        lines: order.lines.clone(),
        reason: None,
        stage,
        packet_ids: assigned.then(|| order.packet_ids.clone()),
        agent_id: if assigned { order.agent_id } else { None },
        food_id: None,
        packet_id: None,
    };
    if order.state == OrderState::NotPlaced {
        view.reason = order.reason.map(Reason::from);
    }
    // The fields of the one-item API, for an order of one packet of one food.
    if let [line] = order.lines.as_slice()
        && line.quantity == 1
    {
        view.food_id = Some(line.food_id);
        if let [packet] = order.packet_ids.as_slice() {
            view.packet_id = Some(*packet);
        }
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_spells_states_and_reasons_as_the_database_does() {
        for &state in OrderState::ALL {
            let (status, stage) = status_of(state);
            let shown = match stage {
                Some(stage) => serde_json::to_value(stage),
                None => serde_json::to_value(status),
            };
            assert_eq!(shown.ok(), Some(serde_json::json!(state.as_str())));
            assert_eq!(
                serde_json::to_value(status).ok(),
                Some(serde_json::json!(status.as_str()))
            );
        }
        for &reason in NotPlacedReason::ALL {
            assert_eq!(
                serde_json::to_value(Reason::from(reason)).ok(),
                Some(serde_json::json!(reason.as_str()))
            );
        }
    }
}
