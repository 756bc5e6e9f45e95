//! The operator's side: the live picture, abort and retry, and dead-letter replay with its
//! dry run. Every route needs an operator's token.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use messaging::dlq;
use protocol::topology::Topology;
use serde_json::{Value, json};
use service_kit::auth::Caller;
use service_kit::http::{ApiError, AppPath};
use uuid::Uuid;

use super::Console;
use super::forward::forward;
use crate::services::Service;
use crate::snapshot::Snapshot;

/// Messages looked at in one dry run or replay.
const REPLAY_LIMIT: usize = 100;
/// Messages parked longer ago than this stay parked (as `tenminute-admin dlq replay`).
const REPLAY_MAX_AGE: Duration = Duration::from_secs(12 * 3_600);
/// How often an idle live stream sends a comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) async fn snapshot(
    State(console): State<Arc<Console>>,
    caller: Caller,
) -> Result<Json<Arc<Snapshot>>, ApiError> {
    caller.require_operator()?;
    Ok(Json(console.snapshots.borrow().clone()))
}

pub(super) async fn live(
    State(console): State<Arc<Console>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    let mut snapshots = console.snapshots.clone();
    snapshots.mark_changed();
    let shutdown = console.shutdown.clone();
    let stream = futures::stream::unfold(snapshots, move |mut snapshots| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled() => return None,
                changed = snapshots.changed() => changed.ok()?,
            }
            let data = serde_json::to_string(&*snapshots.borrow_and_update()).ok()?;
            let event = Event::default().event("snapshot").data(data);
            Some((Ok::<_, Infallible>(event), snapshots))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `POST /api/orders/{id}/abort` or `.../retry`: the order service's operator API, called with
/// the operator's own token (the order service decides, and logs who).
pub(super) async fn act(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath((id, action)): AppPath<(Uuid, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_operator()?;
    if !matches!(action.as_str(), "abort" | "retry") {
        return Err(ApiError::NotFound(format!(
            "no action {action:?} on orders: abort or retry"
        )));
    }
    let path = format!("/admin/orders/{id}/{action}");
    forward(
        &console,
        Service::Order,
        "POST",
        &path,
        &headers,
        Bytes::new(),
    )
    .await
}

/// `queue` if it is a dead-letter queue of the topology, else `422`.
fn dead_letter_queue(console: &Console, queue: &str) -> Result<(String, String), ApiError> {
    if !console.dead_letter_queues.iter().any(|q| q == queue) {
        return Err(ApiError::Unprocessable(format!(
            "{queue} is not a dead-letter queue of this deployment"
        )));
    }
    let target = Topology::source_of_dead_letter_queue(queue).unwrap_or(queue);
    Ok((queue.to_owned(), target.to_owned()))
}

fn limits() -> dlq::ReplayLimits {
    dlq::ReplayLimits {
        limit: REPLAY_LIMIT,
        max_age: REPLAY_MAX_AGE,
        force: false,
    }
}

fn parked(message: &dlq::Parked, left: Option<String>) -> Value {
    json!({
        "reason": message.reason,
        "kind": message.kind,
        "order_id": message.order_id,
        "message_id": message.message_id,
        "age_seconds": message.age.map(|a| a.as_secs()),
        "preview": message.preview,
        "left": left,
    })
}

pub(super) async fn dry_run(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath(queue): AppPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_operator()?;
    let (queue, target) = dead_letter_queue(&console, &queue)?;
    let found = dlq::peek(&console.broker, &queue, REPLAY_LIMIT)
        .await
        .map_err(|err| ApiError::Unavailable(format!("the broker: {err}")))?;
    let limits = limits();
    let messages: Vec<Value> = found.iter().map(|m| parked(m, limits.refuses(m))).collect();
    let moving = messages.iter().filter(|m| m["left"].is_null()).count();
    Ok(Json(json!({
        "queue": queue,
        "target": target,
        "would_move": moving,
        "would_leave": messages.len() - moving,
        "messages": messages,
    })))
}

pub(super) async fn replay(
    State(console): State<Arc<Console>>,
    caller: Caller,
    AppPath(queue): AppPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_operator()?;
    let (queue, target) = dead_letter_queue(&console, &queue)?;
    let replayed = dlq::replay(
        &console.broker,
        &console.publisher,
        &queue,
        &target,
        limits(),
    )
    .await
    .map_err(|err| ApiError::Unavailable(format!("the broker: {err}")))?;
    tracing::info!(%queue, %target, moved = replayed.moved.len(), left = replayed.left.len(),
        "dead letters moved back from the console");
    Ok(Json(json!({
        "queue": queue,
        "target": target,
        "moved": replayed.moved.len(),
        "left": replayed.left.iter().map(|(m, why)| parked(m, Some(why.clone()))).collect::<Vec<_>>(),
    })))
}
