//! Order events, published to the topic exchange `order.events`: one when placement ends (placed
//! or not placed), then one per step of a placed order's life (picked up, delivered, cancelled).
//!
//! See `docs/events.md` for the schema with examples.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command::PacketLine;
use crate::ids::{AgentId, EventId, FoodId, HubId, OrderId, PacketId};

/// The schema version of [`OrderEvent`]. Consumers should ignore fields they do not know.
pub const EVENT_SCHEMA_VERSION: u16 = 1;

/// What happened to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEventKind {
    /// The order is placed: the packets of its lines and an agent are assigned to it.
    Placed,
    /// The order is not placed, for `reason`.
    NotPlaced,
    /// The agent picked the order up.
    PickedUp,
    /// The order is delivered.
    Delivered,
    /// The customer cancelled the order: its packets are back in stock, its agent free.
    Cancelled,
}

impl OrderEventKind {
    /// The routing key on `order.events`.
    pub fn routing_key(self) -> &'static str {
        match self {
            OrderEventKind::Placed => "order.placed",
            OrderEventKind::NotPlaced => "order.not_placed",
            OrderEventKind::PickedUp => "order.picked_up",
            OrderEventKind::Delivered => "order.delivered",
            OrderEventKind::Cancelled => "order.cancelled",
        }
    }
}

/// An order event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// Unique per event; a redelivered event carries the same id.
    pub event_id: EventId,
    /// [`EVENT_SCHEMA_VERSION`].
    pub schema_version: u16,
    /// `placed`, `not_placed`, `picked_up`, `delivered` or `cancelled`.
    pub kind: OrderEventKind,
    /// The order.
    pub order_id: OrderId,
    /// The customer who placed it.
    pub customer_id: String,
    /// The hub that fulfils it.
    pub hub_id: HubId,
    /// What was ordered.
    pub lines: Vec<PacketLine>,
    /// The food of the first line (the one food of an order of the one-item API).
    pub food_id: FoodId,
    /// The packets assigned (every event but `not_placed`; empty there).
    pub packet_ids: Vec<PacketId>,
    /// The first of them (the one packet of an order of the one-item API).
    pub packet_id: Option<PacketId>,
    /// The agent assigned (every event but `not_placed`).
    pub agent_id: Option<AgentId>,
    /// Why the order was not placed (not placed orders only).
    pub reason: Option<String>,
    /// When the order was received.
    pub created_at: DateTime<Utc>,
    /// When placement ended (placed or not placed).
    pub finished_at: DateTime<Utc>,
    /// When what the event reports happened (`finished_at` for `placed` and `not_placed`).
    pub at: DateTime<Utc>,
}
