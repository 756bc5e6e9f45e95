//! The coordinator: drives one order through the two-phase reservation.
//!
//! Phase 1 asks the store and delivery to reserve at once. Both held: the commit decision is
//! recorded (`assigning`) before any assign is sent. A final refusal (`food_unavailable`,
//! `unknown_food`, `agent_unavailable`): whatever was reserved is released, then `not_placed`.
//! Items only held by other unfinished transactions: release, back off with jitter, and try again
//! with a new transaction until the order's deadline. Releasing before retrying means two orders
//! never wait on each other (each holding what the other needs).
//!
//! Phase 2 asks both to assign, retrying sides that did not answer with backoff until the
//! reservations' expiry plus a grace. Both assigned: `placed`. One refused (its reservation
//! expired), or no answer by then: `compensating`, which releases both sides (a release undoes an
//! assignment) until both confirm, then `not_placed`.
//!
//! Every state change presents the driver's lease token, so a driver that lost its lease (another
//! coordinator took the order over) can change nothing; it stops and reports what is recorded.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use messaging::{Backoff, Batcher, Outgoing, RpcClient, RpcError};
use protocol::command::{
    AgentRequest, Assign, AssignReply, Command, PacketLine, PacketRequest, Release, ReleaseReason,
    ReleaseReply, Reply, ReserveReply, Shortage,
};
use protocol::envelope::{Envelope, TxnEnvelope, TxnMessage};
use protocol::event::{EVENT_SCHEMA_VERSION, OrderEvent, OrderEventKind};
use protocol::headers;
use protocol::ids::{EventId, FoodId, ItemId, OrderId, TxnId};
use protocol::topology::{Participant, Topology};
use protocol::trace::TraceContext;
use serde::Serialize;
use service_kit::db::is_transient;
use service_kit::fault;
use sqlx::PgPool;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::repo::{self, Changes, Inserted, LeaseToken, NewOrder, Order, Orders, TransitionError};
use crate::state::{Event, NotPlacedReason, OrderState};

/// Tunables of the coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    /// Phase 1 must decide within this time, or the order is not placed (`timeout`).
    pub order_deadline: Duration,
    /// How long `POST /orders` waits for a final answer before answering `pending`.
    pub response_budget: Duration,
    /// How long a phase-2 or compensation request waits for its reply before it is sent again.
    pub reply_timeout: Duration,
    /// How long a driver's lease lasts beyond the point it was last renewed. After it, another
    /// coordinator may take the order over.
    pub lease: Duration,
    /// How long after the reservations expire phase 2 keeps asking before compensating.
    pub phase2_grace: Duration,
}

/// What `POST /orders` came to.
#[derive(Clone, Debug)]
pub enum Placement {
    /// A new order, as recorded when it became final or when the response budget ran out.
    New(Order),
    /// The customer's earlier order with the same idempotency key, as recorded now (its own
    /// driver goes on with it).
    Replayed(Order),
}

/// What the task that records a new order reports to the request that asked for it.
enum Started {
    /// Recorded; the driver sends each recorded state here.
    New(watch::Receiver<Order>),
    /// The customer's order with the same idempotency key.
    Existing(Order),
}

/// How a driver starts on an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new order from `POST /orders`: phase 1 runs.
    Fresh,
    /// An order taken over from a coordinator that stopped driving it: an undecided order is
    /// aborted (its first driver may have sent reserves we know nothing about), a decided one
    /// is driven to its end.
    Recovered,
}

/// The coordinator, shared by the HTTP handlers, the timeout consumer and recovery.
pub struct Coordinator {
    /// The order database.
    pub(crate) orders: Orders,
    /// Commands and replies.
    pub(crate) rpc: Arc<RpcClient>,
    /// Names.
    pub(crate) topology: Topology,
    /// Tunables.
    pub(crate) settings: CoordinatorSettings,
    /// Deadline timers.
    pub(crate) deadlines: Batcher<OrderId>,
    /// Notified after each final transition, for the outbox relay.
    pub(crate) events: Arc<Notify>,
    /// Where drivers run (drained at shutdown while the consumers still run).
    pub(crate) tracker: TaskTracker,
    /// Cancelled at shutdown: drivers stop waiting.
    pub(crate) shutdown: CancellationToken,
}

/// What a participant answered to a reserve.
#[derive(Clone, Debug, PartialEq)]
enum Reservation {
    Held {
        items: Vec<ItemId>,
        expires_at: DateTime<Utc>,
    },
    Busy,
    Unavailable(Shortage),
    /// The transaction was released before the reserve arrived (by another driver).
    Aborted,
    /// No answer in time, or the request could not be sent: it may or may not hold items.
    NoAnswer,
}

impl Reservation {
    /// Whether the side may hold items for the transaction, so must be released on abort.
    fn may_hold(&self) -> bool {
        matches!(self, Reservation::Held { .. } | Reservation::NoAnswer)
    }
}

/// What phase 1 concludes from the two answers.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Commit {
        packet: ItemId,
        agent: ItemId,
        reserved_until: DateTime<Utc>,
    },
    Abort(NotPlacedReason),
    Retry,
}

/// Phase 1's rule. A final shortage on either side ends the order; both held commits; anything
/// else (held by others, no answer) is worth another attempt while time is left.
fn judge(store: &Reservation, delivery: &Reservation, time_left: bool) -> Verdict {
    use Reservation as R;
    match (store, delivery) {
        (
            R::Held {
                items: packets,
                expires_at: store_expiry,
            },
            R::Held {
                items: agents,
                expires_at: delivery_expiry,
            },
        ) => match (packets.as_slice(), agents.as_slice()) {
            ([packet], [agent]) => Verdict::Commit {
                packet: *packet,
                agent: *agent,
                reserved_until: (*store_expiry).min(*delivery_expiry),
            },
            // A participant that answers with the wrong number of items is broken: give up on
            // this order rather than assign something unexpected.
            _ => Verdict::Abort(NotPlacedReason::Timeout),
        },
        (R::Unavailable(shortage), _) | (_, R::Unavailable(shortage)) => {
            Verdict::Abort((*shortage).into())
        }
        (R::Aborted, _) | (_, R::Aborted) => Verdict::Abort(NotPlacedReason::Timeout),
        _ if time_left => Verdict::Retry,
        _ => Verdict::Abort(NotPlacedReason::Timeout),
    }
}

/// How long a call waits for its reply.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// One message, one wait (phase 1: a reserve that goes unanswered is released instead).
    Once(Duration),
    /// Until then, sending the message again now and then (phase 2 and compensation, which
    /// need an answer however long the participant takes).
    Resending(Instant),
}

/// Why a driver stopped before the order was final.
#[derive(Debug)]
enum Stop {
    /// Another driver holds the order now; this is how it is.
    Lost(Box<Order>),
    /// The database failed (after retries) or shutdown: the lease will expire and recovery will
    /// finish the order.
    Interrupted,
}

impl From<TransitionError> for Stop {
    fn from(err: TransitionError) -> Self {
        match err {
            TransitionError::Lost(order) => Stop::Lost(order),
            TransitionError::Illegal(err) => {
                warn!(error = %err, "illegal transition; leaving the order to recovery");
                Stop::Interrupted
            }
            TransitionError::Db(err) => {
                warn!(error = %err, "database error; leaving the order to recovery");
                Stop::Interrupted
            }
        }
    }
}

impl Coordinator {
    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        self.orders.pool()
    }

    /// The settings.
    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// Records a new order and drives it. Returns the order as recorded when it became final,
    /// or as recorded when the response budget ran out (the driver goes on in the background).
    /// If the customer already has an order with `idempotency_key`, returns that one instead.
    pub async fn place(
        self: &Arc<Self>,
        customer_id: String,
        food_id: FoodId,
        idempotency_key: Option<String>,
        trace: TraceContext,
    ) -> Result<Placement, sqlx::Error> {
        let token = LeaseToken::new();
        let new = NewOrder {
            id: OrderId::new(),
            customer_id,
            food_id,
            txn_id: TxnId::new(),
            traceparent: trace.to_string(),
            idempotency_key,
        };
        let answer_by = Instant::now() + self.settings.response_budget;
        let span = info_span!("order", order_id = %new.id, trace_id = %trace.trace_id());
        let (started, mut recorded) = oneshot::channel();
        let this = Arc::clone(self);
        // Recording and driving run in a task of their own, so that neither the response budget
        // nor a client hanging up cancels them halfway. An insert that lands after the request
        // was answered `503` (or abandoned) is driven if the order carries an idempotency key,
        // since a retry with that key finds it; without one, nobody can find it, so it is ended
        // `not_placed` at once (nothing was sent for it yet).
        let keyed = new.idempotency_key.is_some();
        self.tracker.spawn(
            async move {
                let inserted = this
                    .orders
                    .insert(&new, this.settings.order_deadline, token, this.settings.lease)
                    .await;
                let order = match inserted {
                    Ok(Inserted::New(order)) => order,
                    Ok(Inserted::Existing(order)) => {
                        info!(existing = %order.id, state = %order.state, "idempotency key seen before: answering with its order");
                        let _ = started.send(Ok(Started::Existing(order)));
                        return;
                    }
                    Err(err) => {
                        warn!(error = %err, "order not recorded");
                        let _ = started.send(Err(err));
                        return;
                    }
                };
                this.deadlines.push(order.id);
                let (progress, latest) = watch::channel(order.clone());
                if started.send(Ok(Started::New(latest))).is_err() && !keyed {
                    info!("recorded after its request was answered: not placed");
                    let changes = Changes {
                        reason: Some(NotPlacedReason::Timeout),
                        ..Changes::default()
                    };
                    let event = Event::Aborted(NotPlacedReason::Timeout);
                    let _ = this.record(&order, event, changes, token).await;
                    return;
                }
                info!(food_id = %order.food_id, "order received");
                this.drive(order, token, Mode::Fresh, Some(progress)).await;
            }
            .instrument(span),
        );
        // Even recording the order must not hold the client past the budget (a database that is
        // down makes the pool wait). Closing the channel when giving up settles the race with
        // the task: either it reported in time, or it learns that nobody waits.
        let started = match tokio::time::timeout_at(answer_by, &mut recorded).await {
            Ok(report) => report.map_err(|_| sqlx::Error::PoolClosed)??,
            Err(_) => {
                recorded.close();
                recorded
                    .try_recv()
                    .map_err(|_| sqlx::Error::PoolTimedOut)??
            }
        };
        let mut latest = match started {
            Started::New(latest) => latest,
            Started::Existing(order) => return Ok(Placement::Replayed(order)),
        };
        // The answer is the order as last recorded: final if it became final in time, else the
        // stage it was recorded in (never a guess, and no extra read past the budget).
        let _ = tokio::time::timeout_at(answer_by, latest.wait_for(|o| o.state.is_final())).await;
        let recorded = latest.borrow().clone();
        Ok(Placement::New(recorded))
    }

    /// Drives an order taken over from another driver, in the background.
    pub fn resume(self: &Arc<Self>, order: Order, token: LeaseToken) {
        let span =
            info_span!("order", order_id = %order.id, trace_id = %trace_of(&order).trace_id());
        let this = Arc::clone(self);
        self.tracker.spawn(
            async move {
                info!(state = %order.state, attempt = order.attempt, "taking the order over");
                this.drive(order, token, Mode::Recovered, None).await;
            }
            .instrument(span),
        );
    }

    /// Moves `order` on until it is final, another driver takes it, or a wait is cut short by
    /// shutdown (an order being driven when the signal comes is finished if its replies come;
    /// only waits stop). Each recorded state is sent to `progress`.
    async fn drive(
        &self,
        order: Order,
        token: LeaseToken,
        mode: Mode,
        progress: Option<watch::Sender<Order>>,
    ) -> Order {
        metrics::gauge!("orders_in_flight").increment(1.0);
        let order = self.drive_steps(order, token, mode, progress).await;
        metrics::gauge!("orders_in_flight").decrement(1.0);
        order
    }

    async fn drive_steps(
        &self,
        mut order: Order,
        token: LeaseToken,
        mode: Mode,
        progress: Option<watch::Sender<Order>>,
    ) -> Order {
        if mode == Mode::Recovered && self.shutdown.is_cancelled() {
            // Stopping: leave it to the next coordinator rather than start now.
            return order;
        }
        loop {
            if order.state.is_final() {
                return order;
            }
            let phase_started = Instant::now();
            let phase = order.state;
            let step = match (order.state, mode) {
                (OrderState::Reserving, Mode::Fresh) => self.reserve(&order, token).await,
                (OrderState::Reserving, Mode::Recovered) => {
                    let both = [Reservation::NoAnswer, Reservation::NoAnswer];
                    self.abort(&order, token, &both, NotPlacedReason::Timeout)
                        .await
                }
                (OrderState::Assigning, _) => self.assign(&order, token).await,
                (OrderState::Compensating, _) => self.compensate(&order, token).await,
                (OrderState::Placed | OrderState::NotPlaced, _) => return order,
            };
            metrics::histogram!("order_phase_seconds", "phase" => phase.as_str())
                .record(phase_started.elapsed().as_secs_f64());
            match step {
                Ok(next) => {
                    if next.state.is_final() {
                        info!(
                            state = %next.state,
                            reason = next.reason.map_or("", |r| r.as_str()),
                            "order finished"
                        );
                    }
                    order = next;
                    if let Some(progress) = &progress {
                        progress.send_replace(order.clone());
                    }
                }
                Err(Stop::Lost(current)) => {
                    debug!(state = %current.state, "another driver has the order");
                    return *current;
                }
                Err(Stop::Interrupted) => return order,
            }
        }
    }

    // ----- phase 1 -----

    async fn reserve(&self, order: &Order, token: LeaseToken) -> Result<Order, Stop> {
        let mut order = order.clone();
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
        loop {
            let left = time_until(order.deadline);
            let (store, delivery) = if left.is_zero() {
                (Reservation::NoAnswer, Reservation::NoAnswer)
            } else {
                tokio::join!(
                    self.ask_reserve(Participant::Store, &order, left),
                    self.ask_reserve(Participant::Delivery, &order, left),
                )
            };
            let sides = [store, delivery];
            let time_left = !time_until(order.deadline).is_zero();
            match judge(&sides[0], &sides[1], time_left) {
                Verdict::Commit {
                    packet,
                    agent,
                    reserved_until,
                } => {
                    return self
                        .decide(&order, token, packet, agent, reserved_until)
                        .await;
                }
                Verdict::Abort(reason) => return self.abort(&order, token, &sides, reason).await,
                Verdict::Retry => {
                    metrics::counter!("order_retries_total", "phase" => "reserve").increment(1);
                    debug!(attempt = order.attempt, store = ?sides[0], delivery = ?sides[1], "held by others for now; retrying");
                    self.release_now(&order, &sides, ReleaseReason::Retry).await;
                    let pause = backoff.next_delay().min(time_until(order.deadline));
                    self.pause(pause).await?;
                    let changes = Changes {
                        txn_id: Some(TxnId::new()),
                        ..Changes::default()
                    };
                    order = self.record(&order, Event::Retried, changes, token).await?;
                }
            }
        }
    }

    async fn decide(
        &self,
        order: &Order,
        token: LeaseToken,
        packet: ItemId,
        agent: ItemId,
        reserved_until: DateTime<Utc>,
    ) -> Result<Order, Stop> {
        fault::point("coordinator.before_commit_decision");
        let deadline = reserved_until + chrono_duration(self.settings.phase2_grace);
        let changes = Changes {
            packet_id: Some(protocol::ids::PacketId(packet.0)),
            agent_id: Some(protocol::ids::AgentId(agent.0)),
            reserved_until: Some(reserved_until),
            deadline: Some(deadline),
            ..Changes::default()
        };
        let decided = self.record(order, Event::Decided, changes, token).await?;
        info!(packet_id = packet.0, agent_id = agent.0, %reserved_until, "both reserved: commit decided");
        fault::point("coordinator.after_commit_decision");
        Ok(decided)
    }

    /// Releases the sides that may hold something (the release is durable in the participant's
    /// queue once confirmed; its reply is not awaited), then records `not_placed`. Releasing
    /// first means a crash in between leaves an order that recovery aborts again. A release that
    /// cannot be published (broker down) is left to the reservation's expiry.
    async fn abort(
        &self,
        order: &Order,
        token: LeaseToken,
        sides: &[Reservation; 2],
        reason: NotPlacedReason,
    ) -> Result<Order, Stop> {
        self.release_now(order, sides, ReleaseReason::Abort).await;
        let changes = Changes {
            reason: Some(reason),
            ..Changes::default()
        };
        self.record(order, Event::Aborted(reason), changes, token)
            .await
    }

    // ----- phase 2 -----

    async fn assign(&self, order: &Order, token: LeaseToken) -> Result<Order, Stop> {
        let (Some(packet), Some(agent), Some(reserved_until)) =
            (order.packet_id, order.agent_id, order.reserved_until)
        else {
            warn!("decided order without its items; leaving it to recovery");
            return Err(Stop::Interrupted);
        };
        // After the reservations expire an assign can only be refused, so stop asking a little
        // after that: a side that never answered is then compensated like a refusal.
        // A driver that takes the order over late (all coordinators were down) still asks for a
        // few reply timeouts: the assigns may have been applied, and their recorded replies say
        // so.
        let give_up_at = deadline_at(reserved_until + chrono_duration(self.settings.phase2_grace))
            .max(Instant::now() + self.settings.reply_timeout * 3);
        let (store, delivery) = self
            .keeping_lease(order, token, async {
                tokio::join!(
                    self.ask_assign(Participant::Store, order, packet.into(), give_up_at),
                    self.ask_assign(Participant::Delivery, order, agent.into(), give_up_at),
                )
            })
            .await?;
        if store == Some(true) && delivery == Some(true) {
            return self
                .record(order, Event::Assigned, Changes::default(), token)
                .await;
        }
        warn!(?store, ?delivery, "assign failed: compensating");
        let changes = Changes {
            reason: Some(NotPlacedReason::AssignFailed),
            ..Changes::default()
        };
        self.record(order, Event::AssignFailed, changes, token)
            .await
    }

    /// Releases both sides (undoing any assignment) until both confirm, then `not_placed`.
    async fn compensate(&self, order: &Order, token: LeaseToken) -> Result<Order, Stop> {
        // No deadline: "not placed" may only be said once nothing is assigned to the order.
        let forever = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let (store, delivery) = self
            .keeping_lease(order, token, async {
                tokio::join!(
                    self.ask_release(Participant::Store, order, forever),
                    self.ask_release(Participant::Delivery, order, forever),
                )
            })
            .await?;
        if !(store && delivery) {
            return Err(Stop::Interrupted);
        }
        self.record(order, Event::Compensated, Changes::default(), token)
            .await
    }

    /// Runs `work` while renewing the driver's lease in the background, so that a long phase 2
    /// (a participant that is down) keeps the order with its driver. Stops if the lease is lost
    /// or at shutdown.
    async fn keeping_lease<T>(
        &self,
        order: &Order,
        token: LeaseToken,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Stop> {
        tokio::pin!(work);
        let mut renew = tokio::time::interval(self.settings.lease / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = renew.tick() => self.keep_lease(order, token).await?,
                () = self.shutdown.cancelled() => return Err(Stop::Interrupted),
            }
        }
    }

    // ----- talking to participants -----

    async fn ask_reserve(&self, to: Participant, order: &Order, wait: Duration) -> Reservation {
        let reply = match to {
            Participant::Store => {
                let request = PacketRequest {
                    lines: vec![PacketLine {
                        food_id: order.food_id,
                    }],
                };
                self.call(to, order, Command::Reserve(request), Wait::Once(wait))
                    .await
            }
            Participant::Delivery => {
                self.call(
                    to,
                    order,
                    Command::Reserve(AgentRequest {}),
                    Wait::Once(wait),
                )
                .await
            }
        };
        match reply {
            Some(Reply::ReserveReply(ReserveReply::Reserved { items, expires_at })) => {
                Reservation::Held { items, expires_at }
            }
            Some(Reply::ReserveReply(ReserveReply::Busy)) => Reservation::Busy,
            Some(Reply::ReserveReply(ReserveReply::Unavailable { reason })) => {
                Reservation::Unavailable(reason)
            }
            Some(Reply::ReserveReply(ReserveReply::Aborted)) => Reservation::Aborted,
            Some(other) => {
                warn!(participant = %to, reply = ?other, "unexpected reply to reserve");
                Reservation::NoAnswer
            }
            None => Reservation::NoAnswer,
        }
    }

    /// `Some(true)` assigned, `Some(false)` refused for good, `None` no answer by `until`.
    async fn ask_assign(
        &self,
        to: Participant,
        order: &Order,
        item: ItemId,
        until: Instant,
    ) -> Option<bool> {
        let command: Command<AgentRequest> = Command::Assign(Assign { items: vec![item] });
        match self
            .call(to, order, command, Wait::Resending(until))
            .await?
        {
            Reply::AssignReply(AssignReply::Assigned { .. }) => Some(true),
            Reply::AssignReply(AssignReply::Refused { reason }) => {
                warn!(participant = %to, ?reason, "assign refused");
                Some(false)
            }
            other => {
                warn!(participant = %to, reply = ?other, "unexpected reply to assign");
                None
            }
        }
    }

    /// True once the participant confirms the release (asked until `until`).
    async fn ask_release(&self, to: Participant, order: &Order, until: Instant) -> bool {
        let command: Command<AgentRequest> = Command::Release(Release {
            reason: ReleaseReason::Compensate,
        });
        matches!(
            self.call(to, order, command, Wait::Resending(until)).await,
            Some(Reply::ReleaseReply(ReleaseReply::Released { .. }))
        )
    }

    /// Sends releases to the sides that may hold something, without waiting for replies: once the
    /// broker confirms, the release will be applied. A release that cannot be published is left
    /// to the reservation's expiry.
    async fn release_now(&self, order: &Order, sides: &[Reservation; 2], reason: ReleaseReason) {
        let publish = |to: Participant| async move {
            let command: Command<AgentRequest> = Command::Release(Release { reason });
            let result = match self.outgoing(to, order, &command) {
                Ok(message) => self.rpc.send(message).await.map_err(RpcError::from),
                Err(err) => Err(RpcError::from(err)),
            };
            if let Err(err) = result {
                warn!(participant = %to, error = %err, "release not sent; the reservation will expire");
            }
        };
        let store = sides[0].may_hold().then(|| publish(Participant::Store));
        let delivery = sides[1].may_hold().then(|| publish(Participant::Delivery));
        tokio::join!(
            async {
                if let Some(f) = store {
                    f.await;
                }
            },
            async {
                if let Some(f) = delivery {
                    f.await;
                }
            },
        );
    }

    fn outgoing<R: Serialize>(
        &self,
        to: Participant,
        order: &Order,
        command: &Command<R>,
    ) -> Result<Outgoing, messaging::BrokerError> {
        let envelope = TxnEnvelope::txn(order.id, order.txn_id, command);
        Ok(Outgoing::txn(
            &envelope,
            self.topology.commands_exchange(to),
            Topology::command_routing_key(command.operation()),
        )?
        .header(headers::TRACEPARENT, trace_of(order).child().to_string()))
    }

    /// Sends a command and waits for its reply. `None` if there was none in time (or it could not
    /// be read): the caller decides whether to ask again.
    async fn call<R: Serialize>(
        &self,
        to: Participant,
        order: &Order,
        command: Command<R>,
        wait: Wait,
    ) -> Option<Reply> {
        let operation = command.operation();
        let message = match self.outgoing(to, order, &command) {
            Ok(message) => message,
            Err(err) => {
                warn!(participant = %to, %operation, error = %err, "cannot encode command");
                return None;
            }
        };
        let reply = match wait {
            Wait::Once(timeout) => self.rpc.call(message, timeout).await,
            // Sent again (the same message) after `REPLY_TIMEOUT`, then with growing pauses.
            Wait::Resending(until) => {
                let resend = Backoff::new(
                    self.settings.reply_timeout,
                    self.settings.reply_timeout * 10,
                );
                self.rpc.call_until(message, resend, until).await
            }
        };
        match reply {
            Ok(bytes) => match Envelope::<TxnMessage<Reply>>::decode(&bytes) {
                Ok(envelope) => Some(envelope.payload.message),
                Err(err) => {
                    warn!(participant = %to, %operation, error = %err, "unreadable reply");
                    None
                }
            },
            Err(err) => {
                debug!(participant = %to, %operation, error = %err, "no reply");
                None
            }
        }
    }

    // ----- recording -----

    /// Records a transition, retrying database failures for a while. A lost lease stops the
    /// driver.
    async fn record(
        &self,
        order: &Order,
        event: Event,
        changes: Changes,
        token: LeaseToken,
    ) -> Result<Order, Stop> {
        let outbox = order_event(order, event, &changes);
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let recorded = loop {
            match self
                .orders
                .transition(
                    order,
                    event,
                    changes.clone(),
                    token,
                    self.settings.lease,
                    outbox.as_ref(),
                )
                .await
            {
                Ok(next) => break next,
                Err(TransitionError::Db(err)) if is_transient(&err) && backoff.attempts() < 10 => {
                    warn!(error = %err, ?event, "database unavailable; retrying");
                    self.pause(backoff.next_delay()).await?;
                }
                // The update may have been applied before the connection failed: then the order
                // is already as we wanted, with our token.
                Err(TransitionError::Lost(current))
                    if current.lease_token == Some(token)
                        || is_ours_and_final(&current, order, event) =>
                {
                    break *current;
                }
                Err(err) => return Err(err.into()),
            }
        };
        if recorded.state.is_final() {
            metrics::counter!(
                "orders_total",
                "outcome" => recorded.state.as_str(),
                "reason" => recorded.reason.map_or("", NotPlacedReason::as_str),
            )
            .increment(1);
            if let Some(finished) = recorded.finished_at {
                let took = (finished - recorded.created_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("order_duration_seconds").record(took.as_secs_f64());
            }
            fault::point("coordinator.after_final_state");
            self.events.notify_one();
        }
        Ok(recorded)
    }

    async fn keep_lease(&self, order: &Order, token: LeaseToken) -> Result<(), Stop> {
        match repo::renew_lease(self.orders.pool(), order.id, token, self.settings.lease).await {
            Ok(true) => Ok(()),
            Ok(false) => match repo::load(self.orders.pool(), order.id).await {
                Ok(Some(current)) => Err(Stop::Lost(Box::new(current))),
                _ => Err(Stop::Interrupted),
            },
            // Keep going: the next renewal may work, and the lease has some time left.
            Err(err) => {
                warn!(error = %err, "could not renew the lease");
                Ok(())
            }
        }
    }

    async fn pause(&self, duration: Duration) -> Result<(), Stop> {
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = self.shutdown.cancelled() => Err(Stop::Interrupted),
        }
    }
}

/// The trace an order belongs to (a new one for orders recorded without).
fn trace_of(order: &Order) -> TraceContext {
    order
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::root)
}

/// The event a final transition publishes (through the outbox), `None` for other transitions.
fn order_event(order: &Order, event: Event, changes: &Changes) -> Option<repo::OutboxEvent> {
    let to = crate::state::next(order.state, event).ok()?;
    let kind = match to {
        OrderState::Placed => OrderEventKind::Placed,
        OrderState::NotPlaced => OrderEventKind::NotPlaced,
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => return None,
    };
    let placed = kind == OrderEventKind::Placed;
    let finished_at = Utc::now();
    let event = OrderEvent {
        event_id: EventId::new(),
        schema_version: EVENT_SCHEMA_VERSION,
        kind,
        order_id: order.id,
        customer_id: order.customer_id.clone(),
        food_id: order.food_id,
        packet_id: order.packet_id.filter(|_| placed),
        agent_id: order.agent_id.filter(|_| placed),
        reason: changes
            .reason
            .or(order.reason)
            .map(|r| r.as_str().to_owned()),
        created_at: order.created_at,
        finished_at,
    };
    let payload = serde_json::to_value(&event).ok()?;
    Some(repo::OutboxEvent {
        event_id: event.event_id,
        routing_key: kind.routing_key(),
        payload,
        finished_at,
    })
}

/// After a lost connection, whether the recorded order shows our own transition applied: it
/// moved on from `before` by `event` and its lease ended with it (final states drop the token).
fn is_ours_and_final(current: &Order, before: &Order, event: Event) -> bool {
    current.state.is_final()
        && current.txn_id == before.txn_id
        && crate::state::next(before.state, event).is_ok_and(|s| s == current.state)
}

/// The monotonic instant of a wall-clock time (now if it has passed).
fn deadline_at(instant: DateTime<Utc>) -> Instant {
    Instant::now() + time_until(instant)
}

fn time_until(instant: DateTime<Utc>) -> Duration {
    (instant - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(id: i64) -> Reservation {
        Reservation::Held {
            items: vec![ItemId(id)],
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn both_held_commits() {
        assert!(matches!(
            judge(&held(1), &held(2), true),
            Verdict::Commit {
                packet: ItemId(1),
                agent: ItemId(2),
                ..
            }
        ));
    }

    #[test]
    fn a_final_shortage_aborts_even_if_the_other_side_is_busy() {
        let none = Reservation::Unavailable(Shortage::AgentUnavailable);
        assert_eq!(
            judge(&Reservation::Busy, &none, true),
            Verdict::Abort(NotPlacedReason::AgentUnavailable)
        );
        let unknown = Reservation::Unavailable(Shortage::UnknownFood);
        assert_eq!(
            judge(&unknown, &held(2), true),
            Verdict::Abort(NotPlacedReason::UnknownFood)
        );
    }

    #[test]
    fn busy_retries_while_time_is_left() {
        assert_eq!(judge(&Reservation::Busy, &held(2), true), Verdict::Retry);
        assert_eq!(
            judge(&held(1), &Reservation::NoAnswer, true),
            Verdict::Retry
        );
        assert_eq!(
            judge(&Reservation::Busy, &held(2), false),
            Verdict::Abort(NotPlacedReason::Timeout)
        );
    }

    #[test]
    fn only_sides_that_may_hold_are_released() {
        assert!(held(1).may_hold());
        assert!(Reservation::NoAnswer.may_hold());
        assert!(!Reservation::Busy.may_hold());
        assert!(!Reservation::Unavailable(Shortage::FoodUnavailable).may_hold());
        assert!(!Reservation::Aborted.may_hold());
    }
}
