//! The outbox relay: publishes order events written with final states.
//!
//! Every final transition writes its event to the `outbox` table in the same transaction
//! (`repo::transition`), so there is no final order without its event. The relay locks a batch
//! of unsent events (`FOR UPDATE SKIP LOCKED`, so relays in several coordinators share the work),
//! publishes them with publisher confirms to the `order.events` topic exchange, and marks them
//! sent in the same database transaction, after the confirms. A crash between the publish and
//! the commit, or a confirm that does not come in time, publishes those events again: duplicates
//! are possible then, and carry the same event id.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use messaging::{Backoff, Outgoing, Publisher};
use protocol::ids::MessageId;
use protocol::topology::Topology;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::repo;

/// Events published per database transaction.
const BATCH: i64 = 200;
/// How often the relay looks for events without being woken (events left by a coordinator that
/// crashed, or by another one).
const POLL: Duration = Duration::from_secs(1);
/// How long the relay waits for a batch's confirms. Shorter than the database's
/// `idle_in_transaction_session_timeout`, which would end the transaction holding the batch.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// After a wake-up, how long the relay waits for more events before publishing.
const GATHER: Duration = Duration::from_millis(20);
/// How long sent events are kept.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often sent events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Runs the relay until `shutdown`. `wake` is notified after every final transition.
pub async fn relay(
    pool: PgPool,
    publisher: Publisher,
    topology: Topology,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let exchange = topology.events_exchange();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut next_prune = Instant::now();
    loop {
        match publish_batch(&pool, &publisher, &exchange).await {
            Ok(n) => {
                backoff.reset();
                if n > 0 {
                    debug!(published = n, "order events published");
                }
                if i64::try_from(n).unwrap_or(i64::MAX) == BATCH {
                    continue;
                }
            }
            Err(err) => {
                warn!(error = %err, "order events not published; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        }
        if Instant::now() >= next_prune {
            next_prune = Instant::now() + PRUNE_EVERY;
            match repo::prune_sent(&pool, RETENTION, 10_000).await {
                Ok(0) => {}
                Ok(n) => info!(pruned = n, "old order events pruned from the outbox"),
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

/// Publishes one batch; returns how many events were published and marked sent.
async fn publish_batch(
    pool: &PgPool,
    publisher: &Publisher,
    exchange: &str,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let events = repo::lock_unsent(&mut tx, BATCH).await?;
    if events.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let publishing = join_all(events.iter().map(|event| async move {
        let body = serde_json::to_vec(&event.payload.0).map_err(messaging::BrokerError::from)?;
        let message = Outgoing::raw(body, exchange, event.routing_key.clone())
            .message_id(MessageId(event.event_id.0))
            .kind("order_event")
            .header(protocol::headers::ORDER_ID, event.order_id.to_string())
            // Nobody may be listening: an event without a bound queue is not an error.
            .mandatory(false);
        tokio::time::timeout(PUBLISH_TIMEOUT, publisher.publish(&message))
            .await
            .map_err(|_| messaging::BrokerError::ConfirmTimeout(PUBLISH_TIMEOUT))?
    }));
    let results = publishing.await;
    let sent: Vec<i64> = events
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(e, _)| e.id)
        .collect();
    if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
        warn!(error = %err, failed = events.len() - sent.len(), "some order events not published");
    }
    repo::mark_sent(&mut tx, &sent).await?;
    tx.commit().await?;
    Ok(sent.len())
}
