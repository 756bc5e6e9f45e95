//! The coordinator's client of the store and delivery: one call per command, each bound to the
//! answer it expects (decoded by the messaging layer), both sides asked at once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use messaging::{Backoff, BrokerError, Outgoing, RpcClient, RpcError, Wait};
use protocol::command::{
    AgentRequest, Answer, Assign, AssignReply, Cancel, CancelReply, Command, Holder, Operation,
    PacketRequest, Release, ReleaseReason, ReleaseReply, ReserveReply,
};
use protocol::envelope::TxnEnvelope;
use protocol::headers;
use protocol::ids::{AgentId, ItemId, OrderId, PacketId, TxnId};
use protocol::sides::Sides;
use protocol::topology::{Participant, Topology};
use protocol::trace::TraceContext;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{Instrument, Span, debug, info_span, warn};

use crate::machine::Order;
use crate::machine::rules::{AssignAnswer, Reservation};

/// Sends commands to the participants and reads their answers.
#[derive(Debug)]
pub struct RpcParticipants {
    rpc: Arc<RpcClient>,
    topology: Topology,
    /// How long a phase-2 or compensation request waits for its reply before it is sent again.
    reply_timeout: Duration,
}

/// What a command asks for, before it is addressed to one participant.
#[derive(Clone, Debug)]
enum Op {
    Reserve,
    Assign(Vec<ItemId>),
    Release(ReleaseReason),
    Cancel,
}

/// What a driver asks of the store and delivery. [`RpcParticipants`] asks them over RabbitMQ;
/// the driver's tests answer in process, from the participant machine.
pub trait Participants: Send + Sync + 'static {
    /// Phase 1: asks both sides to reserve for the order's transaction, waiting up to `wait` for
    /// each answer and asking again after each reply timeout (a lost reply is answered again from
    /// the participant's barrier). A reserve still unanswered at the end is released.
    fn reserve<'a>(&'a self, order: &'a Order, wait: Duration)
    -> BoxFuture<'a, Sides<Reservation>>;

    /// Phase 2: asks the store to assign `packets` and delivery `agent`, asking again until
    /// `until` while a side does not answer.
    fn assign<'a>(
        &'a self,
        order: &'a Order,
        packets: &'a [PacketId],
        agent: AgentId,
        until: Instant,
    ) -> BoxFuture<'a, Sides<AssignAnswer>>;

    /// Compensation: asks both sides to release (which undoes an assignment) until `until`;
    /// true for each side that confirmed.
    fn release<'a>(&'a self, order: &'a Order, until: Instant) -> BoxFuture<'a, Sides<bool>>;

    /// Cancellation: asks `side` to cancel the order's assignment, asking again until `until`
    /// while it does not answer.
    fn cancel<'a>(
        &'a self,
        side: Participant,
        order: &'a Order,
        until: Instant,
    ) -> BoxFuture<'a, Option<CancelReply>>;

    /// Sends releases to the sides in `which`, without waiting for replies: once the broker
    /// confirms, the release will be applied. A release that the broker does not take (it is
    /// down, or blocking) is sent again in the background until it does: the order's answer does
    /// not wait for it, and its items are not held until their expiry.
    fn release_now<'a>(
        &'a self,
        order: &'a Order,
        which: Sides<bool>,
        reason: ReleaseReason,
    ) -> BoxFuture<'a, ()>;

    /// Sends `side` a `release(abort)` for the reservation of `holder`, an order that can never
    /// assign it ([`crate::orphans`]), without waiting for the reply. Whether it was sent.
    fn release_orphan<'a>(&'a self, side: Participant, holder: &'a Holder) -> BoxFuture<'a, bool>;
}

/// How long a release that the broker would not take is sent again in the background: far past
/// any reservation's expiry, after which nothing is left to release.
const RESEND_RELEASE_FOR: Duration = Duration::from_secs(3600);

impl RpcParticipants {
    /// Publishes `release` again, after growing pauses, until the broker confirms it (or for
    /// [`RESEND_RELEASE_FOR`]). Applied once however often it arrives (the barrier), and safe
    /// however late: a release frees only what is still reserved and refuses a later reserve or
    /// assign of its transaction. A coordinator that dies meanwhile leaves the reservation to
    /// the next order in its way ([`crate::orphans`]) or to its expiry.
    fn resend_in_background(&self, release: Outgoing, span: Span) {
        let rpc = Arc::clone(&self.rpc);
        let mut backoff = Backoff::new(self.reply_timeout, self.reply_timeout * 10);
        let give_up_at = Instant::now() + RESEND_RELEASE_FOR;
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(backoff.next_delay()).await;
                    match rpc.send(release.clone()).await {
                        Ok(()) => {
                            debug!("release sent after all");
                            return;
                        }
                        Err(err) if Instant::now() >= give_up_at => {
                            warn!(error = %err, "release never sent; the reservation will expire");
                            return;
                        }
                        Err(_) => {}
                    }
                }
            }
            .instrument(span),
        );
    }

    /// A client over `rpc`.
    pub fn new(rpc: Arc<RpcClient>, topology: Topology, reply_timeout: Duration) -> Self {
        Self {
            rpc,
            topology,
            reply_timeout,
        }
    }

    /// Sent again (the same message) after the reply timeout, then with growing pauses.
    fn resending(&self, until: Instant) -> Wait {
        Wait::Resending {
            until,
            backoff: Backoff::new(self.reply_timeout, self.reply_timeout * 10),
        }
    }

    /// Sends `op` to `side` and waits for the answer `A`. `None` if there was none in time (or it
    /// was not one the command can have): the caller decides whether to ask again.
    async fn call<A: Answer>(
        &self,
        side: Participant,
        order: &Order,
        op: Op,
        wait: Wait,
    ) -> Option<A> {
        let operation = op.operation();
        // A span per command sent (with its resends), its reply a span within it.
        let span = info_span!("command", participant = %side, %operation);
        let message = match self.message(side, order, op, &span) {
            Ok(message) => message,
            Err(err) => {
                warn!(participant = %side, %operation, error = %err, "cannot encode command");
                return None;
            }
        };
        let answered = self
            .rpc
            .call::<A>(message, wait)
            .instrument(span.clone())
            .await;
        let _reply = answered
            .is_ok()
            .then(|| info_span!(parent: &span, "reply", participant = %side, %operation).entered());
        match answered {
            Ok(answer) => Some(answer),
            Err(err @ RpcError::Unreadable(_)) => {
                warn!(participant = %side, %operation, error = %err, "unusable reply");
                None
            }
            Err(err) => {
                debug!(participant = %side, %operation, error = %err, "no reply");
                None
            }
        }
    }

    /// The message that carries `op` for the order's transaction to `side`, sent from `span`.
    fn message(
        &self,
        side: Participant,
        order: &Order,
        op: Op,
        span: &Span,
    ) -> Result<Outgoing, BrokerError> {
        let trace = messaging::trace::outgoing(span, trace_of(order));
        match side {
            Participant::Store => {
                let request = || PacketRequest {
                    hub_id: order.hub_id,
                    lines: order.lines.clone(),
                };
                self.addressed(side, (order.id, order.txn_id), &op.command(request), trace)
            }
            Participant::Delivery => {
                let request = || AgentRequest {
                    hub_id: order.hub_id,
                };
                self.addressed(side, (order.id, order.txn_id), &op.command(request), trace)
            }
        }
    }

    /// `command` of transaction `txn` of order `order`, addressed to `side`, sent from `trace`.
    fn addressed<R: Serialize>(
        &self,
        side: Participant,
        (order, txn): (OrderId, TxnId),
        command: &Command<R>,
        trace: TraceContext,
    ) -> Result<Outgoing, BrokerError> {
        // In the envelope too, for a command that travels in a batch (one header for all).
        let envelope = TxnEnvelope::txn(order, txn, command).with_trace(trace);
        Ok(Outgoing::txn(
            &envelope,
            self.topology.commands_exchange(side),
            Topology::command_routing_key(command.operation()),
        )?
        .header(headers::TRACEPARENT, trace.to_string()))
    }
}

impl Participants for RpcParticipants {
    fn reserve<'a>(
        &'a self,
        order: &'a Order,
        wait: Duration,
    ) -> BoxFuture<'a, Sides<Reservation>> {
        Box::pin(async move {
            let until = Instant::now() + wait;
            let ask = |side| async move {
                match self
                    .call(side, order, Op::Reserve, self.resending(until))
                    .await
                {
                    Some(ReserveReply::Reserved { items, expires_at }) => {
                        Reservation::Held { items, expires_at }
                    }
                    Some(ReserveReply::Busy { holders }) => Reservation::Busy { holders },
                    Some(ReserveReply::Unavailable { reason, food_ids }) => {
                        if !food_ids.is_empty() {
                            debug!(participant = %side, ?food_ids, "short");
                        }
                        Reservation::Unavailable(reason)
                    }
                    Some(ReserveReply::Aborted) => Reservation::Aborted,
                    None => Reservation::NoAnswer,
                }
            };
            let (store, delivery) =
                tokio::join!(ask(Participant::Store), ask(Participant::Delivery));
            Sides::new(store, delivery)
        })
    }

    fn assign<'a>(
        &'a self,
        order: &'a Order,
        packets: &'a [PacketId],
        agent: AgentId,
        until: Instant,
    ) -> BoxFuture<'a, Sides<AssignAnswer>> {
        Box::pin(async move {
            let ask = |side, items| async move {
                let op = Op::Assign(items);
                match self.call(side, order, op, self.resending(until)).await {
                    Some(AssignReply::Assigned { .. }) => AssignAnswer::Assigned,
                    Some(AssignReply::Refused { reason }) => {
                        warn!(participant = %side, ?reason, "assign refused");
                        AssignAnswer::Refused(reason)
                    }
                    None => AssignAnswer::NoAnswer,
                }
            };
            let (store, delivery) = tokio::join!(
                ask(
                    Participant::Store,
                    packets.iter().map(|p| ItemId(p.0)).collect()
                ),
                ask(Participant::Delivery, vec![ItemId(agent.0)]),
            );
            Sides::new(store, delivery)
        })
    }

    fn release<'a>(&'a self, order: &'a Order, until: Instant) -> BoxFuture<'a, Sides<bool>> {
        Box::pin(async move {
            let ask = |side| async move {
                let op = Op::Release(ReleaseReason::Compensate);
                let answer: Option<ReleaseReply> =
                    self.call(side, order, op, self.resending(until)).await;
                matches!(answer, Some(ReleaseReply::Released { .. }))
            };
            let (store, delivery) =
                tokio::join!(ask(Participant::Store), ask(Participant::Delivery));
            Sides::new(store, delivery)
        })
    }

    fn cancel<'a>(
        &'a self,
        side: Participant,
        order: &'a Order,
        until: Instant,
    ) -> BoxFuture<'a, Option<CancelReply>> {
        Box::pin(async move {
            self.call(side, order, Op::Cancel, self.resending(until))
                .await
        })
    }

    fn release_now<'a>(
        &'a self,
        order: &'a Order,
        which: Sides<bool>,
        reason: ReleaseReason,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let send = |side: Participant, wanted: bool| async move {
                if !wanted {
                    return;
                }
                let span =
                    info_span!("command", participant = %side, operation = %Operation::Release);
                let message = match self.message(side, order, Op::Release(reason), &span) {
                    Ok(message) => message,
                    Err(err) => {
                        warn!(participant = %side, error = %err, "release not built; the reservation will expire");
                        return;
                    }
                };
                if let Err(err) = self
                    .rpc
                    .send(message.clone())
                    .instrument(span.clone())
                    .await
                {
                    warn!(participant = %side, error = %err, "release not sent yet; sending it again until the broker takes it");
                    self.resend_in_background(message, span);
                }
            };
            tokio::join!(
                send(Participant::Store, which.store),
                send(Participant::Delivery, which.delivery),
            );
        })
    }

    fn release_orphan<'a>(&'a self, side: Participant, holder: &'a Holder) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let command: Command<()> = Command::Release(Release {
                reason: ReleaseReason::Abort,
            });
            let span = info_span!("command", participant = %side, operation = %Operation::Release);
            let trace = messaging::trace::outgoing(&span, TraceContext::root());
            let holding = (holder.order_id, holder.txn_id);
            let sent = match self.addressed(side, holding, &command, trace) {
                Ok(message) => self.rpc.send(message).instrument(span).await,
                Err(err) => Err(err),
            };
            if let Err(err) = &sent {
                warn!(participant = %side, error = %err, "release of an orphan not sent; it will expire");
            }
            sent.is_ok()
        })
    }
}

impl Op {
    /// The command for a participant whose reservations ask for `R`.
    fn command<R>(self, reserve: impl FnOnce() -> R) -> Command<R> {
        match self {
            Op::Reserve => Command::Reserve(reserve()),
            Op::Assign(items) => Command::Assign(Assign { items }),
            Op::Release(reason) => Command::Release(Release { reason }),
            Op::Cancel => Command::Cancel(Cancel {}),
        }
    }

    fn operation(&self) -> Operation {
        match self {
            Op::Reserve => Operation::Reserve,
            Op::Assign(_) => Operation::Assign,
            Op::Release(_) => Operation::Release,
            Op::Cancel => Operation::Cancel,
        }
    }
}

/// The span of one driver of `order`, in the order's trace (its recorded `traceparent`, the
/// span of the request that placed it).
pub fn order_span(order: &Order) -> Span {
    let trace = trace_of(order);
    let span = info_span!("order", order_id = %order.id, trace_id = %trace.trace_id());
    messaging::trace::set_parent(&span, trace);
    span
}

/// The trace an order belongs to (a new one for orders recorded without).
pub fn trace_of(order: &Order) -> TraceContext {
    order
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .unwrap_or_else(TraceContext::root)
}
