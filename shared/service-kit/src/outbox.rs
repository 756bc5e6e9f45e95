//! The transactional outbox's relay, shared by every service that publishes what it records.
//!
//! A service writes each message to its `outbox` table (`event_id`, `order_id`, `routing_key`,
//! `payload`, `created_at`, `sent_at`) in the same database transaction as the change it
//! reports, so there is no change without its message. The relay locks a round of unsent rows
//! (`FOR UPDATE SKIP LOCKED`, so relays in several copies of a service share the work),
//! publishes them with publisher confirms, and marks them sent in the same database
//! transaction, after the confirms. A crash between the publish and the commit, or a confirm that
//! does not come in time, publishes those messages again: duplicates are possible then, and
//! carry the same message id (the row's `event_id`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use messaging::{Backoff, Outgoing, Publisher};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Messages published per round (one database transaction).
const EVENTS_PER_ROUND: i64 = 200;
/// How often the relay looks for events without being woken (events left by a coordinator that
/// crashed, or by another one).
const POLL: Duration = Duration::from_secs(1);
/// How long the relay waits for a round's confirms. Shorter than the database's
/// `idle_in_transaction_session_timeout`, which would end the transaction holding the round.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a wake-up, how long the relay waits for more events before publishing.
const GATHER: Duration = Duration::from_millis(20);
/// How long sent events are kept.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often sent events are pruned, once the outbox has caught up.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Events deleted per pruning statement.
const PRUNE_ROUND: i64 = 10_000;
/// How long one turn of pruning may hold the relay from publishing; a turn that did not catch up
/// is followed by another right after the next publishing round, so pruning keeps up with any
/// order rate.
const PRUNE_TURN: Duration = Duration::from_secs(1);

/// Where a relay publishes.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The exchange.
    pub exchange: String,
    /// The `kind` header of every message (e.g. `order_event`).
    pub kind: &'static str,
    /// Whether a message that no queue takes is an error (kept and published again) rather than
    /// dropped: on for messages that a consumer must get, off for events that nobody may be
    /// listening to.
    pub mandatory: bool,
}

/// Runs the relay until `shutdown`. `wake` is notified after every write to the outbox.
pub async fn relay(
    pool: PgPool,
    publisher: Publisher,
    destination: Destination,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut next_prune = Instant::now();
    loop {
        match publish_round(&pool, &publisher, &destination).await {
            Ok(n) => {
                backoff.reset();
                if n > 0 {
                    debug!(published = n, exchange = %destination.exchange, "outbox published");
                }
                if i64::try_from(n).unwrap_or(i64::MAX) == EVENTS_PER_ROUND {
                    continue;
                }
            }
            Err(err) => {
                warn!(error = %err, "outbox not published; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            match prune_turn(&pool).await {
                Ok((pruned, caught_up)) => {
                    if pruned > 0 {
                        info!(pruned, "old messages pruned from the outbox");
                    }
                    if !caught_up {
                        next_prune = Instant::now();
                        continue;
                    }
                }
                Err(err) => warn!(error = %err, "outbox prune failed"),
            }
        }
        tokio::select! {
            () = wake.notified() => {
                // Let a few more final states land, so that one transaction publishes them all
                // (under load, a relay that woke for every event would add a commit per order).
                tokio::time::sleep(GATHER).await;
            }
            () = tokio::time::sleep(POLL) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Publishes one round; returns how many events were published and marked sent.
async fn publish_round(
    pool: &PgPool,
    publisher: &Publisher,
    destination: &Destination,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let events = lock_unsent(&mut tx, EVENTS_PER_ROUND).await?;
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    // One order's messages go out one after another, each after the previous one's confirm, so
    // that they arrive in the order they were written; different orders' go out together.
    let publishing = join_all(by_order(&events).into_iter().map(|group| async move {
        let mut sent = Vec::with_capacity(group.len());
        for event in group {
            match publish_one(publisher, destination, event).await {
                Ok(()) => sent.push(event.id),
                // The rest of this order's messages wait for the next round, behind this one.
                Err(err) => return (sent, Some(err)),
            }
        }
        (sent, None)
    }));
    let mut sent = Vec::with_capacity(events.len());
    let mut failure = None;
    for (group_sent, err) in publishing.await {
        sent.extend(group_sent);
        failure = failure.or(err);
    }
    if let Some(err) = failure {
        warn!(error = %err, failed = events.len() - sent.len(), "some outbox messages not published");
    }
    mark_sent(&mut tx, &sent).await?;
    tx.commit().await?;
    Ok(sent.len())
}

/// Publishes one message and waits for its confirm.
async fn publish_one(
    publisher: &Publisher,
    destination: &Destination,
    event: &PendingEvent,
) -> Result<(), messaging::BrokerError> {
    let body = serde_json::to_vec(&event.payload.0)?;
    let message = Outgoing::raw(body, &destination.exchange, event.routing_key.clone())
        .message_id(protocol::ids::MessageId(event.event_id))
        .kind(destination.kind)
        .header(protocol::headers::ORDER_ID, event.order_id.to_string())
        .mandatory(destination.mandatory);
    tokio::time::timeout(PUBLISH_TIMEOUT, publisher.publish(&message))
        .await
        .map_err(|_| messaging::BrokerError::ConfirmTimeout(PUBLISH_TIMEOUT))?
}

/// Splits a round into its orders' messages, each in outbox order; the orders in the order of
/// their first message.
fn by_order(events: &[PendingEvent]) -> Vec<Vec<&PendingEvent>> {
    let mut groups: Vec<Vec<&PendingEvent>> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for event in events {
        let at = *index.entry(event.order_id).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(event);
    }
    groups
}

/// A message waiting in the outbox.
#[derive(Debug, sqlx::FromRow)]
struct PendingEvent {
    id: i64,
    event_id: Uuid,
    order_id: Uuid,
    routing_key: String,
    payload: sqlx::types::Json<serde_json::Value>,
}

/// Locks up to `limit` unsent events, oldest first, skipping those another relay holds.
async fn lock_unsent(
    tx: &mut sqlx::PgConnection,
    limit: i64,
) -> Result<Vec<PendingEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, order_id, routing_key, payload FROM outbox
         WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// Marks events sent.
async fn mark_sent(tx: &mut sqlx::PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Deletes events sent more than `RETENTION` ago, a round at a time, for up to `PRUNE_TURN`.
/// Returns how many, and whether none are left.
async fn prune_turn(pool: &PgPool) -> Result<(u64, bool), sqlx::Error> {
    let started = Instant::now();
    let mut pruned = 0;
    loop {
        let n = prune_sent(pool, RETENTION, PRUNE_ROUND).await?;
        pruned += n;
        if n < PRUNE_ROUND.unsigned_abs() {
            return Ok((pruned, true));
        }
        if started.elapsed() >= PRUNE_TURN {
            return Ok((pruned, false));
        }
    }
}

/// Deletes up to `limit` events sent more than `retention` ago.
async fn prune_sent(pool: &PgPool, retention: Duration, limit: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM outbox WHERE id = ANY (ARRAY(
             SELECT id FROM outbox WHERE sent_at < now() - $1 ORDER BY sent_at LIMIT $2))",
    )
    .bind(retention)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}
