//! The consumer of the coordinator's `order.placed` events (queue `delivery.placed`): a rider
//! may pick an order up only once delivery has seen it placed.
//!
//! Delivery assigns its agent in phase 2 before the coordinator knows whether the store's
//! packets are assigned too; the store's assign may still fail, and then compensation takes the
//! agent back. A pick-up taken in that window would leave a rider out with an order that is never
//! placed. So the pick-up statement ([`repo::pick_up`]) requires the agent's mark, which this
//! consumer sets ([`repo::mark_placed`]). Events come at least once and in any order; marking is
//! idempotent, and an event for an order whose agent was freed since (a cancel) marks nothing.

use messaging::{Disposition, Handler, Incoming};
use protocol::event::{OrderEvent, OrderEventKind};
use service_kit::db::retry_transient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::repo;

/// Marks the agents of placed orders.
pub struct Placed {
    pool: PgPool,
    shutdown: CancellationToken,
}

impl Placed {
    /// A handler writing to `pool`; database outages are waited out until `shutdown`.
    pub fn new(pool: PgPool, shutdown: CancellationToken) -> Self {
        Self { pool, shutdown }
    }
}

impl Handler for Placed {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let event: OrderEvent = match serde_json::from_slice(message.data()) {
            Ok(event) => event,
            Err(err) => return Disposition::DeadLetter(format!("not an order event: {err}")),
        };
        if event.kind != OrderEventKind::Placed {
            return Disposition::DeadLetter(format!(
                "a `{}` event in the queue of placed orders",
                event.kind.routing_key()
            ));
        }
        let order = event.order_id;
        match retry_transient(&self.shutdown, || repo::mark_placed(&self.pool, order)).await {
            Ok(marked) => {
                debug!(order_id = %order, marked, "order placed: its agent may leave with it");
                Disposition::Ack
            }
            Err(err) => {
                warn!(order_id = %order, error = %err, "placement not marked; returning it to the queue");
                Disposition::Retry
            }
        }
    }
}
