//! Reservation expiry: timers through the TTL wait queue, and a sweep for lost timers.

use std::sync::Arc;
use std::time::Duration;

use messaging::{Disposition, Handler, Incoming};
use protocol::timer::ParticipantTimer;
use service_kit::db::retry_transient;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::barrier;
use crate::context::Shared;
use crate::inventory::Inventory;

/// Handles fired expiry timers: frees the reservations that are still only reserved and past
/// their expiry. A timer that fires a little early (clock skew) frees nothing; the sweep gets
/// those.
pub struct ExpiryHandler<I: Inventory> {
    shared: Arc<Shared<I>>,
}

impl<I: Inventory> ExpiryHandler<I> {
    pub(crate) fn new(shared: Arc<Shared<I>>) -> Self {
        Self { shared }
    }
}

impl<I: Inventory> Handler for ExpiryHandler<I> {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let timer = match message.decode::<ParticipantTimer>() {
            Ok(envelope) => envelope.payload,
            Err(err) => return Disposition::DeadLetter(err.to_string()),
        };
        let ParticipantTimer::Expiries { txn_ids } = timer;
        let result = retry_transient(&self.shared.shutdown, || async {
            let mut conn = self.shared.pool.acquire().await?;
            I::TABLE.expire(&mut conn, &txn_ids).await
        })
        .await;
        match result {
            Ok(0) => Disposition::Ack,
            Ok(freed) => {
                metrics::counter!(
                    crate::metrics::RESERVATIONS_EXPIRED,
                    "participant" => I::PARTICIPANT.as_str(),
                    "via" => "timer",
                )
                .increment(freed);
                info!(
                    freed,
                    timers = txn_ids.len(),
                    "expired reservations released"
                );
                Disposition::Ack
            }
            Err(err) => {
                warn!(error = %err, "expiry timer failed");
                Disposition::Retry
            }
        }
    }
}

/// Rows handled per sweep statement.
const SWEEP_BATCH: i64 = 1_000;
/// Barrier rows deleted per pruning statement.
const PRUNE_ROUND: i64 = 10_000;

/// Every `interval`: frees reservations expired for longer than `grace` (their timer was lost or
/// is late) and prunes old barrier rows. Runs in every replica; `SKIP LOCKED` keeps them apart.
pub(crate) async fn sweep_loop<I: Inventory>(
    shared: Arc<Shared<I>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let grace_ms = i64::try_from(shared.settings.expiry_grace.as_millis()).unwrap_or(i64::MAX);
    let retention = i64::try_from(shared.settings.barrier_retention.as_secs()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let result = async {
            let mut conn = shared.pool.acquire().await?;
            let mut freed = 0;
            loop {
                let n = I::TABLE.sweep(&mut conn, grace_ms, SWEEP_BATCH).await?;
                freed += n;
                if n < SWEEP_BATCH.unsigned_abs() {
                    break;
                }
            }
            // Prune until caught up, for at most half an interval (the next sweep goes on), so
            // that pruning keeps up with any command rate.
            let started = tokio::time::Instant::now();
            let mut pruned = 0;
            loop {
                let n = barrier::prune(&mut conn, retention, PRUNE_ROUND).await?;
                pruned += n;
                if n < PRUNE_ROUND.unsigned_abs() || started.elapsed() >= interval / 2 {
                    break;
                }
            }
            // The operators' idempotency keys are kept as long (a few rows).
            service_kit::idempotency::prune(&mut conn, retention).await?;
            Ok::<_, sqlx::Error>((freed, pruned))
        }
        .await;
        match result {
            Ok((0, _)) => {}
            Ok((freed, _)) => {
                metrics::counter!(crate::metrics::RESERVATIONS_EXPIRED, "participant" => I::PARTICIPANT.as_str(), "via" => "sweep")
                    .increment(freed);
                info!(freed, "sweep released expired reservations");
            }
            Err(err) => warn!(error = %err, "sweep failed; next round will retry"),
        }
    }
}
