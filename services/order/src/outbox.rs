//! Order events: the event that each transition of an order's life publishes, written to the
//! `outbox` table with the transition (`repo::Orders::record`), so there is no such order without
//! its event; [`service_kit::outbox`] publishes them to the `order.events` topic exchange.

use std::sync::Arc;

use messaging::Publisher;
use protocol::event::{EVENT_SCHEMA_VERSION, OrderEvent, OrderEventKind};
use protocol::ids::EventId;
use protocol::topology::Topology;
use service_kit::outbox::Destination;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::machine::Transition;

/// An order event to write to the outbox with the transition that it reports.
#[derive(Clone, Debug)]
pub struct OutboxEvent {
    /// The event's id.
    pub event_id: EventId,
    /// `order.placed`, `order.not_placed`, `order.picked_up`, ...
    pub routing_key: &'static str,
    /// The event, as published.
    pub payload: serde_json::Value,
}

/// The order event that transition `t` publishes (the machine says which:
/// [`Transition::publish`]), as written to the outbox with its record.
pub fn event_of(t: &Transition) -> Option<OutboxEvent> {
    let kind = t.publish?;
    let (order, at) = (&t.after, t.at);
    let placed = kind != OrderEventKind::NotPlaced;
    let packet_ids = if placed {
        order.packet_ids.clone()
    } else {
        Vec::new()
    };
    let event = OrderEvent {
        event_id: EventId::new(),
        schema_version: EVENT_SCHEMA_VERSION,
        kind,
        order_id: order.id,
        customer_id: order.customer_id.clone(),
        hub_id: order.hub_id,
        lines: order.lines.clone(),
        food_id: order.first_food()?,
        packet_id: packet_ids.first().copied(),
        packet_ids,
        agent_id: order.agent_id.filter(|_| placed),
        reason: order.reason.map(|r| r.as_str().to_owned()),
        created_at: order.created_at,
        finished_at: order.finished_at?,
        at: if matches!(kind, OrderEventKind::Placed | OrderEventKind::NotPlaced) {
            order.finished_at?
        } else {
            at
        },
    };
    let payload = serde_json::to_value(&event).ok()?;
    Some(OutboxEvent {
        event_id: event.event_id,
        routing_key: kind.routing_key(),
        payload,
    })
}

/// Runs the relay of order events until `shutdown`. `wake` is notified after every transition
/// that writes an event.
pub async fn relay(
    pool: PgPool,
    publisher: Publisher,
    topology: Topology,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let destination = Destination {
        exchange: topology.events_exchange(),
        kind: "order_event",
        // Nobody may be listening: an event without a bound queue is not an error.
        mandatory: false,
    };
    service_kit::outbox::relay(pool, publisher, destination, wake, shutdown).await;
}
