//! The consumer of delivery's progress reports (queue `order.progress`): a placed order is
//! picked up, then delivered.
//!
//! Reports are applied idempotently: the machine's rule ([`rules::after_report`]) says what the
//! report comes to for the order as recorded, one event at a time (a delivery reported before
//! its pick-up is recorded as both, in order), and nothing once the order is there or past it (a
//! report may come twice, and out of order). Each save is guarded by the state it was computed
//! from, with the order event written in the same statement. A report for an order that cannot have one (no such order, or one that was never
//! placed) is parked in the dead-letter queue with the reason.

use std::sync::Arc;

use messaging::{Disposition, Handler, Incoming};
use protocol::envelope::TxnEnvelope;
use protocol::progress::DeliveryProgress;
use service_kit::db::retry_transient;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::coordinator::Coordinator;
use crate::machine::{self, Writer, rules};
use crate::repo::{self, LeaseToken, Recorded, RepoError};

/// How many saves a report may take (an order that changed under it, or a delivery recorded as
/// pick-up then delivery) before it goes back to the queue.
const RACES: usize = 6;

/// Handles delivery's progress reports.
pub struct Progress {
    coordinator: Arc<Coordinator>,
    shutdown: CancellationToken,
}

impl Progress {
    /// A handler that records reports in `coordinator`'s order table; database outages are
    /// waited out until `shutdown`.
    pub fn new(coordinator: Arc<Coordinator>, shutdown: CancellationToken) -> Self {
        Self {
            coordinator,
            shutdown,
        }
    }
}

/// What one save of a report came to.
enum Applied {
    /// An event recorded; there may be another.
    Recorded,
    /// Nothing (more) to record.
    Seen,
    Refused(String),
    Raced,
}

impl Handler for Progress {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let envelope: TxnEnvelope<DeliveryProgress> = match message.decode() {
            Ok(envelope) => envelope,
            Err(err) => return Disposition::DeadLetter(err.to_string()),
        };
        let report = match envelope.message() {
            DeliveryProgress::PickedUp { .. } => rules::Report::PickedUp,
            DeliveryProgress::Delivered { .. } => rules::Report::Delivered,
        };
        let mut recorded = false;
        for _ in 0..RACES {
            let applied = retry_transient(&self.shutdown, || self.apply(&envelope, report)).await;
            match applied {
                Ok(Applied::Recorded) => {
                    info!(order_id = %envelope.order_id(), ?report, "delivery progress recorded");
                    self.coordinator.events.notify_one();
                    recorded = true;
                }
                Ok(Applied::Seen) => {
                    if !recorded {
                        debug!(order_id = %envelope.order_id(), ?report, "report seen before");
                    }
                    return Disposition::Ack;
                }
                Ok(Applied::Refused(reason)) => return Disposition::DeadLetter(reason),
                Ok(Applied::Raced) => continue,
                Err(err) => {
                    warn!(error = %err, "report not recorded; returning it to the queue");
                    return Disposition::Retry;
                }
            }
        }
        Disposition::Retry
    }
}

impl Progress {
    async fn apply(
        &self,
        envelope: &TxnEnvelope<DeliveryProgress>,
        report: rules::Report,
    ) -> Result<Applied, RepoError> {
        let pool = self.coordinator.pool();
        let Some(order) = repo::load(pool, envelope.order_id()).await? else {
            return Ok(Applied::Refused(format!(
                "a report for order {}, which does not exist",
                envelope.order_id()
            )));
        };
        if order.txn_id != envelope.txn_id() {
            return Ok(Applied::Refused(format!(
                "a report for transaction {} of order {}, whose transaction is {}",
                envelope.txn_id(),
                order.id,
                order.txn_id
            )));
        }
        let Some(event) = rules::after_report(&order, report) else {
            return Ok(Applied::Seen);
        };
        let at = match envelope.message() {
            DeliveryProgress::PickedUp { at, .. } | DeliveryProgress::Delivered { at, .. } => *at,
        };
        let t = match machine::transition(&order, Some(event), Writer::Report, at) {
            Ok(t) => t,
            Err(err) => return Ok(Applied::Refused(err.to_string())),
        };
        // A report holds no lease (and ends any): the token is not used.
        let (token, lease) = (LeaseToken::new(), std::time::Duration::ZERO);
        match self
            .coordinator
            .orders
            .record(&t, token, lease, None)
            .await?
        {
            Recorded::Written(_) => {
                metrics::counter!(crate::metrics::ORDERS, "outcome" => t.after.state.as_str(), "reason" => "")
                    .increment(1);
                Ok(Applied::Recorded)
            }
            Recorded::KeyTaken(_) | Recorded::Changed(_) => Ok(Applied::Raced),
        }
    }
}
