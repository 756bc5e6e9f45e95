//! Live orders: what wakes the streams of `GET /orders/{id}/events`.
//!
//! Each coordinator binds one queue of its own (exclusive: it goes when the coordinator goes) to
//! the `order.events` exchange, whichever coordinator's relay publishes an event, and wakes the
//! streams that follow the order it names. A woken stream reads its order (one read by primary
//! key) and sends the steps it has not sent yet. Events only wake: what a stream sends is read
//! from the order table, so a lost, late or repeated event changes how soon a step is sent,
//! never which; a stream also reads its order every [`RECHECK`] in case the broker is away.

use std::sync::Arc;
use std::time::Duration;

use messaging::{Disposition, Handler, Incoming};
use protocol::ids::OrderId;
use protocol::topology::{Declarations, Topology};
use serde::Deserialize;
use tokio::sync::broadcast;

/// How often a stream reads its order even if no event woke it.
pub const RECHECK: Duration = Duration::from_secs(5);
/// Orders named by events that a slow stream may fall behind by before it reads its order
/// anyway (it then reads once and goes on).
const BACKLOG: usize = 4_096;

/// Wakes the streams of live orders.
#[derive(Clone)]
pub struct Live {
    wake: broadcast::Sender<OrderId>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// No stream yet.
    pub fn new() -> Self {
        Self {
            wake: broadcast::channel(BACKLOG).0,
        }
    }

    /// Subscribe before reading the order: an event that comes between the read and the
    /// subscription would otherwise be missed until [`RECHECK`].
    pub fn subscribe(&self) -> broadcast::Receiver<OrderId> {
        self.wake.subscribe()
    }

    /// The consumer of the events (see [`Live::tap`]).
    pub fn handler(&self) -> Arc<Wake> {
        Arc::new(Wake(self.wake.clone()))
    }

    /// This coordinator's queue of every order event, and what to declare for it.
    pub fn tap(topology: &Topology, instance: impl std::fmt::Display) -> (String, Declarations) {
        let queue = topology.live_queue(instance);
        let declarations = topology.events_tap(queue.clone(), "order.#");
        (queue, declarations)
    }
}

/// The one field of an event a stream needs.
#[derive(Deserialize)]
struct Named {
    order_id: OrderId,
}

/// Wakes the streams of the order an event names.
pub struct Wake(broadcast::Sender<OrderId>);

impl Handler for Wake {
    async fn handle(&self, message: &Incoming) -> Disposition {
        if let Ok(event) = serde_json::from_slice::<Named>(message.data()) {
            // No stream follows the order: nothing to wake.
            let _ = self.0.send(event.order_id);
        }
        // The queue takes automatic acks: an unreadable event is only skipped (the streams read
        // the table anyway).
        Disposition::Ack
    }
}
