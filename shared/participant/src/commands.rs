//! Consuming reserve, assign and release commands: apply once, reply, ack after the commit.

use std::sync::Arc;

use futures::future::join_all;
use messaging::{BrokerError, Disposition, Handler, Incoming, Outgoing};
use protocol::batch::{self, Batch, BatchedReply};
use protocol::command::{
    AssignReply, CancelReply, Command, Holder, ReleaseReply, Reply, ReserveReply,
};
use protocol::envelope::TxnEnvelope;
use protocol::headers;
use protocol::trace::TraceContext;
use serde_json::value::RawValue;
use service_kit::db::retry_transient;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::attempts;
use crate::barrier;
use crate::context::{CommandWrite, Reserve, Shared};
use crate::holders::Holders;
use crate::inventory::{Inventory, ReserveError, item_ids};

/// Handles the reserve, assign and release queues of a participant.
pub struct CommandHandler<I: Inventory> {
    shared: Arc<Shared<I>>,
    holders: Holders,
}

impl<I: Inventory> CommandHandler<I> {
    pub(crate) fn new(shared: Arc<Shared<I>>) -> Self {
        Self {
            shared,
            holders: Holders::default(),
        }
    }
}

enum ApplyError {
    Invalid(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for ApplyError {
    fn from(err: sqlx::Error) -> Self {
        ApplyError::Db(err)
    }
}

impl From<ReserveError> for ApplyError {
    fn from(err: ReserveError) -> Self {
        match err {
            ReserveError::Invalid(reason) => ApplyError::Invalid(reason),
            ReserveError::Db(err) => ApplyError::Db(err),
        }
    }
}

/// Attempts, alone, at a message delivered before without being settled, before it is parked as
/// the one that ends the process: it ended it this many times while handled alone (and once
/// more when it first came, with others).
const MAX_ATTEMPTS_ALONE: i32 = 2;

impl<I: Inventory> Handler for CommandHandler<I> {
    async fn handle(&self, message: &Incoming) -> Disposition {
        if message.delivery_count() == 0 {
            let _shared = self.shared.suspects.read().await;
            return self.handle_message(message).await;
        }
        // Delivered before and never settled: the process that had it died, perhaps because of
        // it. Handled alone, with the attempt counted first, so that only a message that keeps
        // ending the process is parked, not the innocent ones that were unacked beside it.
        let _alone = self.shared.suspects.write().await;
        let Some(id) = message.message_id() else {
            return self.handle_message(message).await;
        };
        let pool = &self.shared.pool;
        match retry_transient(&self.shared.shutdown, || attempts::start(pool, id)).await {
            Ok(attempts) if attempts > MAX_ATTEMPTS_ALONE => {
                if let Err(err) = attempts::forget(pool, id).await {
                    warn!(error = %err, "attempts not forgotten");
                }
                return Disposition::DeadLetter(format!(
                    "the process ended each time it handled this message ({attempts} times alone)"
                ));
            }
            Ok(_) => {}
            Err(err) => {
                warn!(error = %err, "attempt not counted; returning the message to its queue");
                return Disposition::Retry;
            }
        }
        let disposition = self.handle_message(message).await;
        if let Err(err) = attempts::forget(pool, id).await {
            warn!(error = %err, "attempts not forgotten");
        }
        disposition
    }
}

impl<I: Inventory> CommandHandler<I> {
    async fn handle_message(&self, message: &Incoming) -> Disposition {
        if message.kind() == Some(batch::COMMAND_BATCH) {
            return self.handle_batch(message).await;
        }
        let envelope: TxnEnvelope<Command<I::Request>> = match message.decode() {
            Ok(envelope) => envelope,
            Err(err) => return Disposition::DeadLetter(err.to_string()),
        };
        // The enclosing "message" span already carries the order id (from the headers).
        let span = info_span!(
            "command",
            txn_id = %envelope.txn_id(),
            operation = %envelope.message().operation(),
        );
        let reply = match self.process(&envelope).instrument(span.clone()).await {
            Ok(reply) => reply,
            Err(disposition) => return disposition,
        };
        if reply_lost(&envelope) {
            return Disposition::Ack;
        }
        let trace = reply_trace(&span, message.trace());
        let Some(reply_to) = message.reply_to() else {
            warn!("command without reply_to: applied, but nobody to tell");
            return Disposition::Ack;
        };
        let mut reply = TxnEnvelope::txn(envelope.order_id(), envelope.txn_id(), reply);
        if let Some(trace) = trace {
            reply = reply.with_trace(trace);
        }
        let outgoing = Outgoing::txn(&reply, self.shared.topology.replies_exchange(), reply_to)
            .map(|out| out.correlation_id(envelope.message_id));
        self.send(outgoing, trace).await
    }

    /// A batch: every command applied on its own (their writes share group-committed
    /// transactions), the replies sent together. An unreadable or invalid command parks the
    /// whole message, after the others were applied and answered.
    async fn handle_batch(&self, message: &Incoming) -> Disposition {
        let batch = match Batch::<Box<RawValue>>::decode(message.data(), batch::COMMAND_BATCH) {
            Ok(batch) => batch,
            Err(err) => return Disposition::DeadLetter(err.to_string()),
        };
        let mut commands = Vec::with_capacity(batch.items.len());
        let mut failed = None;
        for (i, item) in batch.items.iter().enumerate() {
            match TxnEnvelope::<Command<I::Request>>::decode(item.get().as_bytes()) {
                Ok(envelope) => commands.push(envelope),
                Err(err) => {
                    failed = Some(Disposition::DeadLetter(format!(
                        "command {i} of the batch: {err}"
                    )));
                }
            }
        }
        // Each command continues its own order's trace (from its envelope: the batch message
        // has no one sender).
        let spans: Vec<Span> = commands
            .iter()
            .map(|envelope| {
                let span = info_span!(
                    "command",
                    order_id = %envelope.order_id(),
                    txn_id = %envelope.txn_id(),
                    operation = %envelope.message().operation(),
                );
                if let Some(trace) = envelope.trace() {
                    messaging::trace::set_parent(&span, trace);
                }
                span
            })
            .collect();
        let results = join_all(
            commands
                .iter()
                .zip(&spans)
                .map(|(envelope, span)| self.process(envelope).instrument(span.clone())),
        )
        .await;
        let mut replies = Vec::with_capacity(commands.len());
        for ((envelope, result), span) in commands.iter().zip(results).zip(&spans) {
            match result {
                Ok(_) if reply_lost(envelope) => {}
                Ok(reply) => {
                    let mut reply = TxnEnvelope::txn(envelope.order_id(), envelope.txn_id(), reply);
                    if let Some(trace) = reply_trace(span, envelope.trace()) {
                        reply = reply.with_trace(trace);
                    }
                    match reply.to_bytes().map(batch::raw) {
                        Ok(Ok(raw)) => replies.push(BatchedReply {
                            in_reply_to: envelope.message_id,
                            reply: raw,
                        }),
                        Ok(Err(err)) | Err(err) => {
                            warn!(error = %err, "reply not encodable");
                            if !matches!(failed, Some(Disposition::DeadLetter(_))) {
                                failed = Some(Disposition::Retry);
                            }
                        }
                    }
                }
                Err(disposition) => {
                    failed = Some(match (failed, disposition) {
                        (Some(Disposition::DeadLetter(reason)), _)
                        | (_, Disposition::DeadLetter(reason)) => Disposition::DeadLetter(reason),
                        _ => Disposition::Retry,
                    });
                }
            }
        }
        let sent = match message.reply_to() {
            Some(reply_to) if !replies.is_empty() => {
                let batch = Batch::new(batch::REPLY_BATCH, replies);
                let outgoing = batch.to_bytes().map_err(BrokerError::from).map(|bytes| {
                    Outgoing::raw(bytes, self.shared.topology.replies_exchange(), reply_to)
                        .message_id(batch.message_id)
                        .kind(batch::REPLY_BATCH)
                        .transient()
                });
                // A reply batch has no one trace: each reply carries its own.
                self.send(outgoing, None).await
            }
            _ => Disposition::Ack,
        };
        failed.unwrap_or(sent)
    }

    /// Applies one command (waiting out database outages), schedules its expiry if it reserved
    /// something, and counts it. `Err` is what to do with the message instead of replying.
    async fn process(
        &self,
        envelope: &TxnEnvelope<Command<I::Request>>,
    ) -> Result<Reply, Disposition> {
        if let Command::Assign(_) = envelope.message() {
            // A worker that stalls between phase 1 and phase 2 (tests only).
            service_kit::fault::pause("participant.before_assign").await;
        }
        // A command that crashes the process (tests only: `participant.before_apply@<order id>`).
        let fault_key = envelope.order_id().to_string();
        service_kit::fault::point_for("participant.before_apply", &fault_key);
        let started = std::time::Instant::now();
        let operation = envelope.message().operation();
        let mut reply = match self.apply_with_retry(envelope).await {
            Ok(reply) => reply,
            Err(ApplyError::Invalid(reason)) => return Err(Disposition::DeadLetter(reason)),
            Err(ApplyError::Db(err)) => {
                warn!(error = %err, "command failed; returning it to the queue");
                return Err(Disposition::Retry);
            }
        };
        // A process that dies after its commit, before it replies and acks (tests only).
        service_kit::fault::point_for("participant.after_commit", &fault_key);
        match (&mut reply, envelope.message()) {
            (Reply::ReserveReply(ReserveReply::Reserved { .. }), _) => {
                self.shared.expiries.push(envelope.txn_id());
            }
            (Reply::ReserveReply(ReserveReply::Busy { holders }), Command::Reserve(request)) => {
                *holders = self.holders(request).await;
            }
            _ => {}
        }
        log_outcome(&reply);
        let participant = I::PARTICIPANT.as_str();
        metrics::counter!(
            crate::metrics::COMMANDS,
            "participant" => participant,
            "operation" => operation.as_str(),
            "outcome" => crate::metrics::outcome(&reply),
        )
        .increment(1);
        metrics::histogram!(
            crate::metrics::COMMAND_SECONDS,
            "participant" => participant,
            "operation" => operation.as_str(),
        )
        .record(started.elapsed().as_secs_f64());
        Ok(reply)
    }

    /// Who holds what a busy `request` needs, for the coordinator to release the reservations
    /// of orders that can no longer be placed ([`crate::holders`]). Best effort: a busy reply
    /// without holders only leaves them to their expiry.
    async fn holders(&self, request: &I::Request) -> Vec<Holder> {
        match self.shared.inventory.key(request) {
            Ok(key) => self.holders.of(&self.shared, key).await,
            Err(_) => Vec::new(),
        }
    }

    /// Sends a reply (or a reply batch) and says what to do with the command message.
    async fn send(
        &self,
        reply: Result<Outgoing, BrokerError>,
        trace: Option<TraceContext>,
    ) -> Disposition {
        let mut reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                warn!(error = %err, "reply not encodable");
                return Disposition::Retry;
            }
        };
        if let Some(trace) = trace {
            reply = reply.header(headers::TRACEPARENT, trace.to_string());
        }
        match self.shared.replies.publish(&reply).await {
            Ok(()) => Disposition::Ack,
            Err(BrokerError::Unroutable { .. }) => {
                // The coordinator that asked is gone (its reply queue with it). Whoever takes
                // the order over asks again and gets the recorded reply.
                debug!("reply unroutable: the coordinator that asked is gone");
                Disposition::Ack
            }
            Err(err) => {
                // Applied and recorded; the redelivery will send the recorded reply.
                warn!(error = %err, "reply not sent; returning the command to the queue");
                Disposition::Retry
            }
        }
    }

    /// Applies the command, waiting out database outages in place.
    async fn apply_with_retry(
        &self,
        envelope: &TxnEnvelope<Command<I::Request>>,
    ) -> Result<Reply, ApplyError> {
        let outcome = retry_transient(&self.shared.shutdown, || async {
            match self.apply(envelope).await {
                Ok(reply) => Ok(Ok(reply)),
                Err(ApplyError::Invalid(reason)) => Ok(Err(reason)),
                Err(ApplyError::Db(err)) => Err(err),
            }
        })
        .await;
        match outcome {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(reason)) => Err(ApplyError::Invalid(reason)),
            Err(err) => Err(ApplyError::Db(err)),
        }
    }

    /// Applies the command with its barrier row: reserve and assign in one statement each, a
    /// release in one short transaction.
    async fn apply(
        &self,
        envelope: &TxnEnvelope<Command<I::Request>>,
    ) -> Result<Reply, ApplyError> {
        let shared = &self.shared;
        let (txn_id, order_id) = (envelope.txn_id(), envelope.order_id());
        let operation = envelope.message().operation();
        let statements = &shared.statements;
        let write = match envelope.message() {
            Command::Reserve(request) => CommandWrite::reserve(
                statements.clone(),
                Reserve {
                    txn_id,
                    order_id,
                    ttl: shared.settings.reservation_ttl,
                    key: shared.inventory.key(request)?,
                },
            ),
            Command::Assign(assign) => CommandWrite::assign(
                statements.clone(),
                txn_id,
                order_id,
                item_ids(&assign.items),
            ),
            Command::Cancel(_) => CommandWrite::cancel(statements.clone(), txn_id, order_id),
            Command::Release(release) => {
                let reason = release.reason;
                return async {
                    let mut tx = shared.pool.begin().await?;
                    let reply =
                        barrier::release(&mut tx, statements, txn_id, order_id, reason).await?;
                    tx.commit().await?;
                    Ok(reply)
                }
                .instrument(info_span!("commit", %operation))
                .await;
            }
        };
        // The commit (group-committed with other commands' writes) as a span of its own.
        let applied = shared
            .writes
            .run(write)
            .instrument(info_span!("commit", %operation))
            .await;
        match applied {
            Ok(row) => Ok(row.into_reply(operation)?),
            Err(err) if barrier::is_recorded_already(&err, statements) => {
                debug!("applied before (or refused by a release); sending the recorded reply");
                let mut conn = shared.pool.acquire().await?;
                match barrier::recorded(&mut conn, txn_id, operation).await {
                    // The transaction still holds an item but its barrier row was pruned: the
                    // command is older than BARRIER_RETENTION, and its reply is gone with it.
                    Err(sqlx::Error::RowNotFound) => Err(ApplyError::Invalid(
                        "a repeat of a command older than BARRIER_RETENTION (its record was pruned)"
                            .to_owned(),
                    )),
                    other => Ok(other?),
                }
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// The trace context a reply is sent with: that of the span that handled its command, or (spans
/// not exported) a new span of the command's trace, for the logs.
/// A reply lost on its way (tests only: `participant.drop_reply@<order id>=drop` loses the first
/// reply to a command of that order; the command is applied and acked).
fn reply_lost<R>(envelope: &TxnEnvelope<Command<R>>) -> bool {
    service_kit::fault::drop_once("participant.drop_reply", &envelope.order_id().to_string())
}

fn reply_trace(span: &Span, command: Option<TraceContext>) -> Option<TraceContext> {
    messaging::trace::context_of(span).or_else(|| command.map(|trace| trace.child()))
}

fn log_outcome(reply: &Reply) {
    match reply {
        Reply::ReserveReply(ReserveReply::Reserved { items, expires_at }) => {
            info!(?items, %expires_at, "reserved");
        }
        Reply::ReserveReply(ReserveReply::Busy { holders }) => {
            info!(holders = holders.len(), "all held by others for now");
        }
        Reply::ReserveReply(ReserveReply::Unavailable { reason, food_ids }) => {
            info!(reason = reason.as_str(), ?food_ids, "unavailable");
        }
        Reply::ReserveReply(ReserveReply::Aborted) => {
            info!("refused: the transaction was released first");
        }
        Reply::AssignReply(AssignReply::Assigned { items }) => info!(?items, "assigned"),
        Reply::AssignReply(AssignReply::Refused { reason }) => info!(?reason, "assign refused"),
        Reply::ReleaseReply(ReleaseReply::Released { items }) => info!(?items, "released"),
        Reply::CancelReply(CancelReply::Cancelled { items }) => info!(?items, "cancelled"),
        Reply::CancelReply(CancelReply::Refused { reason }) => info!(?reason, "cancel refused"),
    }
}
