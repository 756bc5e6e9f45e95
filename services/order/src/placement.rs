//! Taking in a new order (`POST /orders`): run its phase 1, then record it with the outcome
//! (presumed abort), or find the customer's order with the same idempotency key (before phase 1,
//! so that a replay holds nothing; and at the record, for two first requests that race); drive
//! it to its end; answer with the order as recorded when it became final, or when the response
//! budget ran out.
//!
//! Nothing is written before phase 1 ends: the order is recorded once, at its commit decision
//! (`assigning`) or as `not_placed` (a phase 1 that outlasts most of the response budget is
//! recorded as `reserving` first, so that `202 pending` is said of a recorded order). Nothing is
//! answered before that record commits, neither
//! `201`, `409` nor `202 pending`. A coordinator that dies in phase 1 leaves reservations that
//! nobody records: they lapse with their expiry (the reservation TTL), and its client, told
//! nothing, retries. A record that fails, or finds the idempotency key taken, releases what
//! phase 1 holds.

use std::sync::Arc;
use std::time::Duration;

use protocol::command::{PacketLine, ReleaseReason};
use protocol::ids::{HubId, OrderId, TxnId};
use protocol::sides::Sides;
use protocol::trace::TraceContext;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::coordinator::{Coordinator, Stop};
use crate::machine::rules::Driving;
use crate::machine::{self, Event, Order, OrderState, Writer};
use crate::phase1::{Phase1, Started, Unrecorded};
use crate::repo::{self, LeaseToken, NewOrder, Recorded, RepoError};

/// At most how long before the response budget ends an order still in phase 1 is recorded.
const RECORD_MARGIN: Duration = Duration::from_millis(500);

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
    /// The order was not recorded within the response budget (the database is slow, down or
    /// failing over). It may be recorded after all (a commit whose answer was lost, or a retry
    /// that succeeds after the budget): the caller is told its id.
    #[error("order {0} was not recorded in time")]
    NotRecordedInTime(OrderId),
    /// The coordinator stopped before the order was recorded.
    #[error("the coordinator is stopping")]
    Stopping,
    /// Not taken on now (too many orders in flight, or from this customer).
    #[error(transparent)]
    Refused(#[from] crate::admission::Refused),
}

impl Coordinator {
    /// Runs a new order's phase 1, records the order with its outcome, and drives it to its end.
    /// Returns the order as recorded when it became final,
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
        let order_id = OrderId::new();
        let new = NewOrder {
            id: order_id,
            customer_id,
            hub_id,
            lines,
            txn_id: TxnId::new(),
            traceparent: trace.to_string(),
            idempotency_key,
        };
        let answer_by = Instant::now() + self.settings.response_budget;
        // A replay is answered with the recorded order before any phase 1 runs: it holds nothing
        // (the insert still settles two first requests with one key that race each other). A
        // lookup that outlasts the budget settles nothing: the order goes on as if the key were
        // new, its first record settles the key, and the client is answered `503` below.
        if let Some(key) = new.idempotency_key.as_deref() {
            let found = repo::load_by_key(self.orders.pool(), &new.customer_id, key);
            match tokio::time::timeout_at(answer_by, found).await {
                Ok(found) => {
                    if let Some(existing) = found? {
                        info!(existing = %existing.id, state = %existing.state, "idempotency key seen before: answering with its order");
                        return Ok(Placement::Replayed(existing));
                    }
                }
                Err(_) => debug!("the key's lookup outlasted the response budget"),
            }
        }
        // A new order: the customer's rate, then a slot for it while it is driven (given back
        // when its driver ends). Refused, nothing is recorded or reserved.
        self.admission.customer(&new.customer_id)?;
        let slot = self.admission.slot()?;
        // A phase 1 that outlasts most of the budget is recorded (`reserving`) before the
        // budget ends, leaving the record time to commit.
        let margin = (self.settings.response_budget / 2).min(RECORD_MARGIN);
        let record_by = answer_by.checked_sub(margin).unwrap_or(answer_by);
        // Phase 1 ends on this process's monotonic clock (the wall clocks of this process and of
        // the database may differ).
        let phase1_ends = Instant::now() + self.settings.order_deadline;
        // In the trace of the request (the current span, when spans are exported).
        let span = info_span!("order", order_id = %new.id, trace_id = %trace.trace_id());
        messaging::trace::set_parent(&span, trace);
        let (started, mut recorded) = oneshot::channel();
        let this = Arc::clone(self);
        // Phase 1, recording and driving run in a task of their own, so that neither the
        // response budget nor a client hanging up cancels them halfway. An order recorded after
        // its request was answered `503` (or abandoned) is driven if it carries an idempotency
        // key, since a retry with that key finds it; without one, nobody can find it, so phase 1
        // ends it `not_placed` rather than decide.
        self.tracker.spawn(
            async move {
                let draft = new.draft(this.settings.order_deadline);
                let (progress, _) = watch::channel(draft.clone());
                info!(hub_id = %draft.hub_id, lines = draft.lines.len(), "order received");
                let phase1 = Phase1 {
                    ends: phase1_ends,
                    unrecorded: Some(Unrecorded {
                        idempotency_key: new.idempotency_key,
                        started,
                        record_by,
                    }),
                    unwanted: false,
                };
                this.drive(draft, token, Driving::Fresh, phase1, Some(progress))
                    .await;
                drop(slot);
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
                    .map_err(|_| PlaceError::NotRecordedInTime(order_id))??
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

    /// Records a new order for the first time, as `event` (the end of its phase 1) leaves it,
    /// or as it is (`None`: phase 1 goes on), retrying database failures for a while; then
    /// sends it to `progress` and tells the request. If the customer's order with the same
    /// idempotency key was recorded first, or the record fails, releases both sides (phase 1
    /// may hold items), tells the request, and stops.
    pub(crate) async fn record_first(
        &self,
        order: &Order,
        event: Option<Event>,
        token: LeaseToken,
        phase1: &mut Phase1,
        progress: Option<&watch::Sender<Order>>,
    ) -> Result<Order, Stop> {
        let at = service_kit::fault::now();
        let t = match machine::transition(order, event, Writer::First, at) {
            Ok(t) => t,
            Err(err) => {
                warn!(error = %err, "illegal transition; releasing the order");
                return Err(self.not_recorded(order, phase1, None).await);
            }
        };
        let key = phase1
            .unrecorded
            .as_ref()
            .and_then(|u| u.idempotency_key.clone());
        // Still in phase 1: leased until its end, like any driven order.
        let lease = match t.after.state {
            OrderState::Reserving => {
                phase1.ends.saturating_duration_since(Instant::now()) + self.settings.lease
            }
            _ => self.settings.lease,
        };
        // A process that dies with phase 1 done and the order not recorded (tests only).
        service_kit::fault::point("coordinator.reserved_before_record");
        let written = self
            .writing(t.after.state, || {
                self.orders.record(&t, token, lease, key.as_deref())
            })
            .await;
        let Ok(written) = written else {
            return Err(self.not_recorded(order, phase1, None).await);
        };
        let recorded = match written {
            Ok(Recorded::Written(recorded)) => recorded,
            Ok(Recorded::KeyTaken(existing)) => {
                info!(existing = %existing.id, state = %existing.state, "idempotency key seen before: answering with its order");
                let answer = Ok(Started::Existing(Box::new(existing)));
                return Err(self.not_recorded(order, phase1, Some(answer)).await);
            }
            // A first record is never `Changed` (a row with its id is its own, found written).
            Ok(Recorded::Changed(_)) => {
                let err = RepoError::NotRecorded(order.id);
                return Err(self.not_recorded(order, phase1, Some(Err(err))).await);
            }
            Err(err) => {
                warn!(error = %err, "order not recorded");
                return Err(self.not_recorded(order, phase1, Some(Err(err))).await);
            }
        };
        if t.timer.is_some() {
            self.deadlines.push(recorded.id);
        }
        self.finished(order, &recorded);
        if let (Some(unrecorded), Some(progress)) = (phase1.unrecorded.take(), progress) {
            progress.send_replace(recorded.clone());
            let told = unrecorded
                .started
                .send(Ok(Started::New(progress.subscribe())));
            if told.is_err() && unrecorded.idempotency_key.is_none() {
                // Its request answered `503` meanwhile, and nobody can ask for it again.
                phase1.unwanted = true;
            }
        }
        Ok(recorded)
    }

    /// Releases both sides for an order that was not recorded (a release that arrives before
    /// its reserve makes the reserve hold nothing), and tells its request `answer` (none: the
    /// request learns that the coordinator stops).
    async fn not_recorded(
        &self,
        order: &Order,
        phase1: &mut Phase1,
        answer: Option<Result<Started, RepoError>>,
    ) -> Stop {
        self.participants
            .release_now(order, Sides::both(true), ReleaseReason::Abort)
            .await;
        let Some(unrecorded) = phase1.unrecorded.take() else {
            return Stop::Interrupted;
        };
        match answer {
            Some(Ok(Started::Existing(existing))) => {
                let _ = unrecorded
                    .started
                    .send(Ok(Started::Existing(existing.clone())));
                Stop::Lost(existing)
            }
            Some(answer) => {
                let _ = unrecorded.started.send(answer);
                Stop::Interrupted
            }
            None => Stop::Interrupted,
        }
    }
}
