//! Consuming reserve, assign and release commands: apply once, reply, ack after the commit.

use std::sync::Arc;

use messaging::{BrokerError, Disposition, Handler, Incoming, Outgoing};
use protocol::command::{AssignReply, Command, ReleaseReply, Reply, ReserveReply};
use protocol::envelope::TxnEnvelope;
use protocol::headers;
use protocol::trace::TraceContext;
use service_kit::db::retry_transient;
use sqlx::AssertSqlSafe;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::barrier::{self, Recorded};
use crate::inventory::{Inventory, ReserveError, item_ids};
use crate::runtime::Shared;

/// Handles the reserve, assign and release queues of a participant.
pub struct CommandHandler<I: Inventory> {
    shared: Arc<Shared<I>>,
}

impl<I: Inventory> CommandHandler<I> {
    pub(crate) fn new(shared: Arc<Shared<I>>) -> Self {
        Self { shared }
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

impl<I: Inventory> Handler for CommandHandler<I> {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let envelope: TxnEnvelope<Command<I::Request>> = match message.decode() {
            Ok(envelope) => envelope,
            Err(err) => return Disposition::DeadLetter(err.to_string()),
        };
        let operation = envelope.message().operation();
        // The enclosing "message" span already carries the order id (from the headers).
        let span = info_span!("command", txn_id = %envelope.txn_id(), %operation);
        self.handle_command(message, envelope)
            .instrument(span)
            .await
    }
}

impl<I: Inventory> CommandHandler<I> {
    async fn handle_command(
        &self,
        message: &Incoming,
        envelope: TxnEnvelope<Command<I::Request>>,
    ) -> Disposition {
        if let Command::Assign(_) = envelope.message() {
            // A worker that stalls between phase 1 and phase 2 (tests only).
            service_kit::fault::pause("participant.before_assign").await;
        }
        let started = std::time::Instant::now();
        let operation = envelope.message().operation();
        let reply = match self.apply_with_retry(&envelope).await {
            Ok(reply) => reply,
            Err(ApplyError::Invalid(reason)) => return Disposition::DeadLetter(reason),
            Err(ApplyError::Db(err)) => {
                warn!(error = %err, "command failed; returning it to the queue");
                return Disposition::Retry;
            }
        };
        if let Reply::ReserveReply(ReserveReply::Reserved { .. }) = &reply {
            self.shared.expiries.push(envelope.txn_id());
        }
        log_outcome(&reply);
        let participant = I::PARTICIPANT.as_str();
        metrics::counter!(
            "participant_commands_total",
            "participant" => participant,
            "operation" => operation.as_str(),
            "outcome" => outcome(&reply),
        )
        .increment(1);
        metrics::histogram!(
            "participant_command_seconds",
            "participant" => participant,
            "operation" => operation.as_str(),
        )
        .record(started.elapsed().as_secs_f64());
        let Some(reply_to) = message.reply_to() else {
            warn!("command without reply_to: applied, but nobody to tell");
            return Disposition::Ack;
        };
        let trace = message.trace().map(|t| t.child());
        match self.send_reply(&envelope, reply, reply_to, trace).await {
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
        let applied = match envelope.message() {
            Command::Reserve(request) => {
                let key = shared.inventory.key(request)?;
                sqlx::query_as::<_, Recorded>(AssertSqlSafe(statements.reserve.clone()))
                    .bind(txn_id)
                    .bind(order_id)
                    .bind(shared.settings.reservation_ttl)
                    .bind(key)
                    .fetch_one(&shared.pool)
                    .await
            }
            Command::Assign(assign) => {
                sqlx::query_as::<_, Recorded>(AssertSqlSafe(statements.assign.clone()))
                    .bind(txn_id)
                    .bind(order_id)
                    .bind(item_ids(&assign.items))
                    .fetch_one(&shared.pool)
                    .await
            }
            Command::Release(_) => {
                let mut tx = shared.pool.begin().await?;
                let reply = barrier::release(&mut tx, statements, txn_id, order_id).await?;
                tx.commit().await?;
                return Ok(reply);
            }
        };
        match applied {
            Ok(row) => Ok(row.into_reply(operation)?),
            Err(err) if barrier::is_recorded_already(&err, statements) => {
                debug!("applied before (or refused by a release); sending the recorded reply");
                let mut conn = shared.pool.acquire().await?;
                Ok(barrier::recorded(&mut conn, txn_id, operation).await?)
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn send_reply(
        &self,
        command: &TxnEnvelope<Command<I::Request>>,
        reply: Reply,
        reply_to: &str,
        trace: Option<TraceContext>,
    ) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let envelope = TxnEnvelope::txn(command.order_id(), command.txn_id(), reply);
        let mut message = Outgoing::txn(&envelope, shared.topology.replies_exchange(), reply_to)?
            .correlation_id(command.message_id)
            .transient();
        if let Some(trace) = trace {
            message = message.header(headers::TRACEPARENT, trace.to_string());
        }
        shared.publisher.publish(&message).await
    }
}

/// A short label of a reply, for metrics.
fn outcome(reply: &Reply) -> &'static str {
    match reply {
        Reply::ReserveReply(ReserveReply::Reserved { .. }) => "reserved",
        Reply::ReserveReply(ReserveReply::Busy) => "busy",
        Reply::ReserveReply(ReserveReply::Unavailable { .. }) => "unavailable",
        Reply::ReserveReply(ReserveReply::Aborted) => "aborted",
        Reply::AssignReply(AssignReply::Assigned { .. }) => "assigned",
        Reply::AssignReply(AssignReply::Refused { .. }) => "refused",
        Reply::ReleaseReply(ReleaseReply::Released { .. }) => "released",
    }
}

fn log_outcome(reply: &Reply) {
    match reply {
        Reply::ReserveReply(ReserveReply::Reserved { items, expires_at }) => {
            info!(?items, %expires_at, "reserved");
        }
        Reply::ReserveReply(ReserveReply::Busy) => info!("all held by others for now"),
        Reply::ReserveReply(ReserveReply::Unavailable { reason }) => {
            info!(reason = reason.as_str(), "unavailable");
        }
        Reply::ReserveReply(ReserveReply::Aborted) => {
            info!("refused: the transaction was released first");
        }
        Reply::AssignReply(AssignReply::Assigned { items }) => info!(?items, "assigned"),
        Reply::AssignReply(AssignReply::Refused { reason }) => info!(?reason, "assign refused"),
        Reply::ReleaseReply(ReleaseReply::Released { items }) => info!(?items, "released"),
    }
}
