//! The progress of a delivery after its order is placed, reported by delivery to the
//! coordinator (exchange and queue `order.progress`).
//!
//! Delivery writes each report to its outbox in the database transaction that records the
//! progress, and a relay publishes it with confirms, so a report is never lost and may come
//! twice (with the same message id). The coordinator applies reports idempotently: a report of a
//! step the order is already past changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Kind;
use crate::ids::AgentId;

/// What an agent did with a placed order (in a [`TxnEnvelope`](crate::envelope::TxnEnvelope)
/// naming the order and the transaction that assigned the agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum DeliveryProgress {
    /// The agent has the order: from now on it cannot be cancelled.
    PickedUp {
        /// The agent.
        agent_id: AgentId,
        /// When.
        at: DateTime<Utc>,
    },
    /// The order is delivered, and the agent is free for other orders.
    Delivered {
        /// The agent.
        agent_id: AgentId,
        /// When.
        at: DateTime<Utc>,
    },
}

impl DeliveryProgress {
    /// The routing key on `order.progress`.
    pub fn routing_key(&self) -> &'static str {
        match self {
            DeliveryProgress::PickedUp { .. } => "delivery.picked_up",
            DeliveryProgress::Delivered { .. } => "delivery.delivered",
        }
    }
}

impl Kind for DeliveryProgress {
    fn kind(&self) -> &'static str {
        match self {
            DeliveryProgress::PickedUp { .. } => "picked_up",
            DeliveryProgress::Delivered { .. } => "delivered",
        }
    }
}
