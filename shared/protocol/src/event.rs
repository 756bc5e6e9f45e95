//! Order events, published to the topic exchange `order.events` once per finished order.
//!
//! See `docs/events.md` for the schema with examples.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, EventId, FoodId, OrderId, PacketId};

/// The schema version of [`OrderEvent`]. Consumers should ignore fields they do not know.
pub const EVENT_SCHEMA_VERSION: u16 = 1;

/// What happened to an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEventKind {
    /// The order is placed: a packet and an agent are assigned to it.
    Placed,
    /// The order is not placed, for `reason`.
    NotPlaced,
}

impl OrderEventKind {
    /// The routing key on `order.events`.
    pub fn routing_key(self) -> &'static str {
        match self {
            OrderEventKind::Placed => "order.placed",
            OrderEventKind::NotPlaced => "order.not_placed",
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
    /// `placed` or `not_placed`.
    pub kind: OrderEventKind,
    /// The order.
    pub order_id: OrderId,
    /// The customer who placed it.
    pub customer_id: String,
    /// The food ordered.
    pub food_id: FoodId,
    /// The packet assigned (placed orders only).
    pub packet_id: Option<PacketId>,
    /// The agent assigned (placed orders only).
    pub agent_id: Option<AgentId>,
    /// Why the order was not placed (not placed orders only).
    pub reason: Option<String>,
    /// When the order was received.
    pub created_at: DateTime<Utc>,
    /// When it reached its final state.
    pub finished_at: DateTime<Utc>,
}
