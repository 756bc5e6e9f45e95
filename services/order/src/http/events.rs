//! `GET /orders/{id}/events`: an order's states as they happen, as server-sent events.
//!
//! An order's public life is a path: `pending`, then `not_placed`, or `placed`, then `picked_up`
//! and `delivered`, or `cancelling` and `cancelled` (see [`path`]). Its current status says
//! which path it is on and how far along, so the stream needs no history: each event's `id` is
//! its status, and a client that comes back with `Last-Event-ID` gets the steps after that one
//! (or, if it names none of them, the current one). The stream starts with the current status
//! and ends after a final one (`not_placed`, `delivered`, `cancelled`); coming back after a
//! final event is answered `204 No Content`, which tells an `EventSource` to stop.
//!
//! Each event carries the order as `GET /orders/{id}` shows it now; the event of a step the
//! order has already gone past (on a resumed stream) has that step's `status`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use protocol::ids::OrderId;
use service_kit::auth::Caller;
use service_kit::http::{ApiError, AppPath, ErrorBody};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::view::{Status, view};
use super::{no_order, whose_orders};
use crate::coordinator::Coordinator;
use crate::live::RECHECK;
use crate::machine::Order;
use crate::repo;

/// How often an idle stream sends a comment, so that proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The steps of an order's public life up to `status`, in order.
pub(super) fn path(status: Status) -> &'static [Status] {
    use Status::*;
    match status {
        Pending => &[Pending],
        NotPlaced => &[Pending, NotPlaced],
        Placed => &[Pending, Placed],
        PickedUp => &[Pending, Placed, PickedUp],
        Delivered => &[Pending, Placed, PickedUp, Delivered],
        Cancelling => &[Pending, Placed, Cancelling],
        Cancelled => &[Pending, Placed, Cancelling, Cancelled],
    }
}

/// Whether nothing follows `status`.
fn is_final(status: Status) -> bool {
    matches!(
        status,
        Status::NotPlaced | Status::Delivered | Status::Cancelled
    )
}

/// One event of an order's stream, as a client reads it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(super) struct StreamEvent {
    /// The status the order reached.
    event: Status,
    /// The same status: send it back as `Last-Event-ID` to resume after this event.
    id: Status,
    /// The order as `GET /orders/{id}` shows it now (an `OrderView`, as JSON text), with the
    /// `status` of this event.
    data: String,
}

/// An order's states as they happen.
#[utoipa::path(
    get,
    path = "/orders/{id}/events",
    tag = "orders",
    params(
        ("id" = Uuid, Path, description = "The order"),
        ("Last-Event-ID" = Option<String>, Header,
            description = "The last event received (its `id`, a status): the stream resumes \
                           after it")
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`text/event-stream`: one event per status the order \
                                      reaches (`event` and `id` are the status: `pending`, \
                                      `placed`, `not_placed`, `picked_up`, `delivered`, \
                                      `cancelling`, `cancelled`), starting with the current one \
                                      (or the one after `Last-Event-ID`) and ending after a \
                                      final one. Each event's data is the order as \
                                      `GET /orders/{id}` shows it now, with the `status` of its \
                                      step",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 204, description = "`Last-Event-ID` names the order's final status: nothing \
                                      more will come"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No token, or one that does not verify", body = ErrorBody),
        (status = 404, description = "No such order of the caller's (any order for an \
                                      operator)", body = ErrorBody),
        (status = 503, description = "The database is unavailable; try again", body = ErrorBody)
    )
)]
pub(super) async fn order_events(
    State(coordinator): State<Arc<Coordinator>>,
    caller: Caller,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let whose = whose_orders(&caller, None, id)?;
    // Subscribed before the read, so that no change after it goes unnoticed.
    let wake = coordinator.live().subscribe();
    let order = repo::load(coordinator.pool(), OrderId(id))
        .await?
        .filter(|order| whose.as_ref().is_none_or(|c| *c == order.customer_id))
        .ok_or_else(|| no_order(id))?;
    let current = view(&order).status;
    let steps = path(current);
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|last| steps.iter().position(|s| s.as_str() == last.trim()));
    let sent = match last {
        Some(i) if i + 1 == steps.len() && is_final(current) => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(i) => i + 1,
        // From the current status on.
        None => steps.len() - 1,
    };
    let follow = Follow {
        coordinator,
        id: OrderId(id),
        wake,
        order,
        sent,
    };
    Ok(Sse::new(follow.stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// The data of the event of `step`: the order as `GET /orders/{id}` shows it now, with the
/// status of that step (and no `stage` or `reason` that belong to another one).
fn at_step(order: &Order, step: Status) -> serde_json::Value {
    let mut shown = view(order);
    if shown.status != step {
        shown.status = step;
        shown.stage = None;
        shown.reason = None;
    }
    serde_json::to_value(&shown).unwrap_or_default()
}

/// One stream: the order as last read, and how many steps of its path were sent.
struct Follow {
    coordinator: Arc<Coordinator>,
    id: OrderId,
    wake: tokio::sync::broadcast::Receiver<OrderId>,
    order: Order,
    sent: usize,
}

impl Follow {
    fn stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(Some(self), |follow| async move {
            let mut follow = follow?;
            loop {
                let current = view(&follow.order);
                let steps = path(current.status);
                if let Some(&step) = steps.get(follow.sent) {
                    follow.sent += 1;
                    let event = Event::default()
                        .event(step.as_str())
                        .id(step.as_str())
                        .data(at_step(&follow.order, step).to_string());
                    // After a final step, the stream ends.
                    let next = (!is_final(step)).then_some(follow);
                    return Some((Ok(event), next));
                }
                if !follow.changed().await {
                    return None;
                }
            }
        })
    }

    /// Waits until the order may have changed and reads it again: false at shutdown (the
    /// client comes back, with `Last-Event-ID`, to another coordinator).
    async fn changed(&mut self) -> bool {
        let shutdown = self.coordinator.shutdown.clone();
        loop {
            let woken = tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(RECHECK) => true,
                woken = self.wake.recv() => match woken {
                    Ok(id) => id == self.id,
                    // Fell behind: read once, to be sure.
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return false,
                },
            };
            if !woken {
                continue;
            }
            // A failed read is tried again at the next wake or recheck.
            if let Ok(Some(order)) = repo::load(self.coordinator.pool(), self.id).await {
                self.order = order;
                return true;
            }
        }
    }
}
