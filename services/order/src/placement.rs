//! Taking in a new order (`POST /orders`): record it while its first reserves are out, or find
//! the customer's order with the same idempotency key; drive it; answer with the order as
//! recorded when it became final, or when the response budget ran out.
//!
//! Recording and the first reserves run at once, so the insert costs an order no time of its
//! own. Nothing is answered before the order is recorded. A coordinator that dies between the
//! two leaves reservations that nobody records: they lapse with their expiry (the reservation
//! TTL), and its client, told nothing, retries. An insert that fails or finds the idempotency
//! key taken releases the reserves it raced.

use std::sync::Arc;

use protocol::command::{PacketLine, ReleaseReason};
use protocol::ids::{HubId, OrderId, TxnId};
use protocol::sides::Sides;
use protocol::trace::TraceContext;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use crate::coordinator::Coordinator;
use crate::driver::Phase1;
use crate::machine::Order;
use crate::machine::rules::Driving;
use crate::repo::{Inserted, LeaseToken, NewOrder, RepoError};

/// What `POST /orders` came to.
#[derive(Clone, Debug)]
pub enum Placement {
    /// A new order, as recorded when it became final or when the response budget ran out.
    New(Order),
    /// The customer's earlier order with the same idempotency key, as recorded now (its own
    /// driver goes on with it).
    Replayed(Order),
}

/// Why a new order got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// The order table failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The order was not recorded within the response budget (the database is slow or down).
    #[error("the order was not recorded in time")]
    NotRecordedInTime,
    /// The coordinator stopped before the order was recorded.
    #[error("the coordinator is stopping")]
    Stopping,
}

/// What the task that records a new order reports to the request that asked for it.
enum Started {
    /// Recorded; the driver sends each recorded state here.
    New(watch::Receiver<Order>),
    /// The customer's order with the same idempotency key.
    Existing(Box<Order>),
}

impl Coordinator {
    /// Records a new order and drives it. Returns the order as recorded when it became final,
    /// or as recorded when the response budget ran out (the driver goes on in the background).
    /// If the customer already has an order with `idempotency_key`, returns that one instead.
    pub async fn place(
        self: &Arc<Self>,
        customer_id: String,
        hub_id: HubId,
        lines: Vec<PacketLine>,
        idempotency_key: Option<String>,
        trace: TraceContext,
    ) -> Result<Placement, PlaceError> {
        let token = LeaseToken::new();
        let new = NewOrder {
            id: OrderId::new(),
            customer_id,
            hub_id,
            lines,
            txn_id: TxnId::new(),
            traceparent: trace.to_string(),
            idempotency_key,
        };
        let answer_by = Instant::now() + self.settings.response_budget;
        // Phase 1 ends on this process's monotonic clock, measured from before the insert, so
        // never after the deadline the database records (its own `now()` plus the same time).
        let phase1_ends = Instant::now() + self.settings.order_deadline;
        // In the trace of the request (the current span, when spans are exported).
        let span = info_span!("order", order_id = %new.id, trace_id = %trace.trace_id());
        messaging::trace::set_parent(&span, trace);
        let (started, mut recorded) = oneshot::channel();
        let this = Arc::clone(self);
        // Recording and driving run in a task of their own, so that neither the response budget
        // nor a client hanging up cancels them halfway. An insert that lands after the request
        // was answered `503` (or abandoned) is driven if the order carries an idempotency key,
        // since a retry with that key finds it; without one, nobody can find it, so both sides
        // are released and it is ended `not_placed` at once.
        let keyed = new.idempotency_key.is_some();
        self.tracker.spawn(
            async move {
                // The first reserves go out at once, addressed from the order as it will be
                // recorded; their answers wait for the driver.
                let draft = new.draft(this.settings.order_deadline);
                let sent = {
                    let (this, draft) = (Arc::clone(&this), draft.clone());
                    let wait = phase1_ends.saturating_duration_since(Instant::now());
                    this.tracker.clone().spawn(
                        async move {
                            let answers = this.participants.reserve(&draft, wait).await;
                            // A process that dies with the reserves answered and the order not
                            // recorded (tests only; with `coordinator.before_record` paused).
                            service_kit::fault::point("coordinator.reserved_before_record");
                            answers
                        }
                        .in_current_span(),
                    )
                };
                service_kit::fault::pause("coordinator.before_record").await;
                let inserted = this
                    .orders
                    .insert(&new, this.settings.order_deadline, token, this.settings.lease)
                    .await;
                let order = match inserted {
                    Ok(Inserted::New(order)) => order,
                    Ok(Inserted::Existing(order)) => {
                        info!(existing = %order.id, state = %order.state, "idempotency key seen before: answering with its order");
                        let _ = started.send(Ok(Started::Existing(Box::new(order))));
                        this.release_unrecorded(&draft).await;
                        return;
                    }
                    Err(err) => {
                        warn!(error = %err, "order not recorded");
                        let _ = started.send(Err(err));
                        this.release_unrecorded(&draft).await;
                        return;
                    }
                };
                this.deadlines.push(order.id);
                let (progress, latest) = watch::channel(order.clone());
                let driving = if started.send(Ok(Started::New(latest))).is_err() && !keyed {
                    info!("recorded after its request was answered: not placed");
                    Driving::Unwanted
                } else {
                    info!(hub_id = %order.hub_id, lines = order.lines.len(), "order received");
                    Driving::Fresh
                };
                let phase1 = Phase1 {
                    ends: phase1_ends,
                    sent: Some(sent),
                };
                this.drive(order, token, driving, phase1, Some(progress))
                    .await;
            }
            .instrument(span),
        );
        // Even recording the order must not hold the client past the budget (a database that is
        // down makes the pool wait). Closing the channel when giving up settles the race with
        // the task: either it reported in time, or it learns that nobody waits.
        let started = match tokio::time::timeout_at(answer_by, &mut recorded).await {
            Ok(report) => report.map_err(|_| PlaceError::Stopping)??,
            Err(_) => {
                recorded.close();
                recorded
                    .try_recv()
                    .map_err(|_| PlaceError::NotRecordedInTime)??
            }
        };
        let mut latest = match started {
            Started::New(latest) => latest,
            Started::Existing(order) => return Ok(Placement::Replayed(*order)),
        };
        // The answer is the order as last recorded: final if it became final in time, else the
        // stage it was recorded in (never a guess, and no extra read past the budget).
        let _ = tokio::time::timeout_at(answer_by, latest.wait_for(|o| o.state.is_final())).await;
        let recorded = latest.borrow().clone();
        Ok(Placement::New(recorded))
    }

    /// Releases both sides for a draft that was not recorded (its first reserves are out, or on
    /// their way: a release that arrives first makes them hold nothing).
    async fn release_unrecorded(&self, draft: &Order) {
        self.participants
            .release_now(draft, Sides::both(true), ReleaseReason::Abort)
            .await;
    }
}
