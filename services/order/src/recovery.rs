//! Finishing orders whose driver stopped: the deadline timers and the recovery sweep.
//!
//! The database is the truth. A coordinator that crashes leaves its unfinished orders with a
//! lease that runs out; any coordinator may then claim them (a fresh lease token each) and drive
//! them from their recorded state: an undecided order is aborted, a decided one is driven to its
//! end. Two paths lead there:
//!
//! - **Deadline timers**: every new order's id goes into a timer message that waits in the
//!   `order.timeouts.wait.*` queue for the phase-1 deadline plus the lease, then fires into
//!   `order.timeouts`. A fired timer claims those of its orders that are unfinished with an
//!   expired lease. Finished orders (nearly all) are skipped.
//! - **The sweep**: every `RECOVERY_INTERVAL`, each coordinator claims rounds of unfinished
//!   orders with expired leases (`FOR UPDATE SKIP LOCKED`, so coordinators never claim the same
//!   order). It finds what lost or purged timers missed, and orders of a coordinator that crashed
//!   before it published their timers.

use std::sync::Arc;
use std::time::Duration;

use messaging::{Disposition, Handler, Incoming};
use protocol::timer::OrderTimer;
use service_kit::db::retry_transient;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::coordinator::Coordinator;
use crate::repo;

/// Orders claimed per round of the sweep, at most.
const CLAIMS_PER_ROUND: usize = 200;

/// Handles fired deadline timers (`order.timeouts`).
pub struct Timeouts {
    coordinator: Arc<Coordinator>,
    shutdown: CancellationToken,
}

impl Timeouts {
    /// A handler that hands claimed orders to `coordinator`; database outages are waited out
    /// until `shutdown`.
    pub fn new(coordinator: Arc<Coordinator>, shutdown: CancellationToken) -> Self {
        Self {
            coordinator,
            shutdown,
        }
    }
}

impl Handler for Timeouts {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let timer = match message.decode::<OrderTimer>() {
            Ok(envelope) => envelope.payload,
            Err(err) => return Disposition::DeadLetter(err.to_string()),
        };
        let OrderTimer::Deadlines { order_ids } = timer;
        metrics::counter!(crate::metrics::DEADLINE_TIMERS).increment(1);
        let coordinator = &self.coordinator;
        let lease = coordinator.settings().lease;
        // No room: the sweep takes them over once drivers are free.
        let Some((mut room, limit)) = coordinator.recovery_room(order_ids.len()) else {
            return Disposition::Ack;
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let claim = retry_transient(&self.shutdown, || {
            repo::claim(coordinator.pool(), &order_ids, lease, limit)
        });
        let claimed = match claim.await {
            Ok(claimed) => claimed,
            Err(err) => {
                // The sweep finds these orders if the timer never gets through.
                warn!(error = %err, "deadline timer not applied; returning it to the queue");
                return Disposition::Retry;
            }
        };
        if !claimed.is_empty() {
            let n = u64::try_from(claimed.len()).unwrap_or(u64::MAX);
            metrics::counter!(crate::metrics::ORDERS_RECOVERED, "via" => "timer").increment(n);
            info!(claimed = n, "deadline passed: took over unfinished orders");
        }
        for (order, token) in claimed {
            if let Some(slot) = room.split(1) {
                coordinator.resume(order, token, slot);
            }
        }
        Disposition::Ack
    }
}

/// Every `interval` (and once at start): claims unfinished orders whose lease ran out and drives
/// them. Runs in every coordinator.
pub async fn sweep_loop(
    coordinator: Arc<Coordinator>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let lease = coordinator.settings().lease;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if !coordinator.reaches_broker() {
            // Nothing could be driven from here: leave the orders to a coordinator that can.
            continue;
        }
        loop {
            // Claim only what can be driven now: the rest keeps its expired lease for the next
            // round, rather than a fresh one that would run out while it waits.
            let Some((mut room, limit)) = coordinator.recovery_room(CLAIMS_PER_ROUND) else {
                break;
            };
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            match repo::claim_expired(coordinator.pool(), lease, limit).await {
                Ok(claimed) => {
                    let n = claimed.len();
                    if n > 0 {
                        metrics::counter!(crate::metrics::ORDERS_RECOVERED, "via" => "sweep")
                            .increment(u64::try_from(n).unwrap_or(u64::MAX));
                        info!(
                            claimed = n,
                            "recovery: took over orders whose driver stopped"
                        );
                    }
                    for (order, token) in claimed {
                        if let Some(slot) = room.split(1) {
                            coordinator.resume(order, token, slot);
                        }
                    }
                    if i64::try_from(n).unwrap_or(i64::MAX) < limit {
                        break;
                    }
                }
                Err(err) => {
                    warn!(error = %err, "recovery sweep failed; next round will retry");
                    break;
                }
            }
        }
    }
}
