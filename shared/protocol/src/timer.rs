//! Messages that travel through the TTL wait queues.
//!
//! A sender publishes a timer to a wait queue that nobody consumes; when the queue's TTL runs
//! out, RabbitMQ dead-letters the message into the queue that the owner consumes. The TTL is set
//! per queue (every message waits the same time), because per-message TTLs only expire at the head
//! of a queue.
//!
//! Timers are batched: a sender collects the ids that start within a short window and publishes
//! them in one message, so the broker carries a handful of timer messages per second instead of
//! one per order. A timer is an accelerator, never the truth: the deadline and expiry columns in
//! the databases are, and a periodic sweep finds whatever a lost timer missed.

use serde::{Deserialize, Serialize};

use crate::envelope::Kind;
use crate::ids::{OrderId, TxnId};

/// Timers of the coordinator (queue `order.timeouts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum OrderTimer {
    /// The phase-1 deadline of these orders has passed: abort those still reserving, drive on
    /// those past their commit decision if their owner is gone, ignore finished ones.
    Deadlines {
        /// The orders.
        order_ids: Vec<OrderId>,
    },
}

impl Kind for OrderTimer {
    fn kind(&self) -> &'static str {
        match self {
            OrderTimer::Deadlines { .. } => "deadlines",
        }
    }
}

/// Timers of a participant (queues `store.expiry`, `delivery.expiry`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum ParticipantTimer {
    /// The reservations of these transactions have expired: free those still only reserved.
    Expiries {
        /// The transactions.
        txn_ids: Vec<TxnId>,
    },
}

impl Kind for ParticipantTimer {
    fn kind(&self) -> &'static str {
        match self {
            ParticipantTimer::Expiries { .. } => "expiries",
        }
    }
}
