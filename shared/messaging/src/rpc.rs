//! Request/reply over the broker, matched on correlation id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::ids::MessageId;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use crate::backoff::Backoff;

use crate::broker::BrokerError;
use crate::consumer::{Disposition, Handler, Incoming};
use crate::publisher::{Outgoing, Publisher};

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request could not be published (and confirmed).
    #[error("request not published: {0}")]
    Publish(#[from] BrokerError),
    /// No reply in time. The request may still be handled later; the late reply is then
    /// dropped.
    #[error("no reply in time")]
    Timeout,
}

type Waiters = Mutex<HashMap<MessageId, oneshot::Sender<Incoming>>>;

/// Sends requests and hands each reply to the task waiting for it. Consume the reply queue with
/// [`RpcClient::replies`] as handler.
pub struct RpcClient {
    publisher: Publisher,
    reply_to: String,
    waiters: Waiters,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("reply_to", &self.reply_to)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client whose replies come back with routing key `reply_to`.
    pub fn new(publisher: Publisher, reply_to: String) -> Arc<Self> {
        Arc::new(Self {
            publisher,
            reply_to,
            waiters: Mutex::new(HashMap::new()),
        })
    }

    /// The publisher requests go through.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Publishes `request` (its message id is the correlation id) and waits up to `timeout` for
    /// the reply. Cancel-safe: dropping the future forgets the request.
    pub async fn call(&self, request: Outgoing, timeout: Duration) -> Result<Incoming, RpcError> {
        let id = request.id();
        let (sender, receiver) = oneshot::channel();
        self.waiters().insert(id, sender);
        let _forget = Forget { client: self, id };
        let request = request.reply_to(self.reply_to.clone());
        let exchange = async {
            self.publisher.publish(&request).await?;
            // The sender is only dropped with the waiter entry, which `_forget` keeps alive.
            receiver.await.map_err(|_| RpcError::Timeout)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RpcError::Timeout)?
    }

    /// Publishes `request` and waits for its reply until `deadline`, publishing the same message
    /// (same message id) again whenever `backoff` says, in case it or its reply was lost. A reply
    /// to any of the copies ends the wait: a slow participant's answer to an earlier copy is as
    /// good as an answer to the latest. Cancel-safe.
    pub async fn call_until(
        &self,
        request: Outgoing,
        mut backoff: Backoff,
        deadline: Instant,
    ) -> Result<Incoming, RpcError> {
        let id = request.id();
        let (sender, mut receiver) = oneshot::channel();
        self.waiters().insert(id, sender);
        let _forget = Forget { client: self, id };
        let request = request.reply_to(self.reply_to.clone());
        let mut first = true;
        loop {
            if !first {
                metrics::counter!("rpc_resends_total").increment(1);
            }
            first = false;
            if let Err(err) = self.publisher.publish(&request).await {
                debug!(error = %err, "request not published; trying again");
            }
            let wait_until = (Instant::now() + backoff.next_delay()).min(deadline);
            match tokio::time::timeout_at(wait_until, &mut receiver).await {
                Ok(Ok(reply)) => return Ok(reply),
                // The sender lives in the waiter entry, which `_forget` keeps until we return.
                Ok(Err(_)) => return Err(RpcError::Timeout),
                Err(_) if Instant::now() >= deadline => {
                    return Err(RpcError::Timeout);
                }
                Err(_) => {}
            }
        }
    }

    /// Publishes `request` with this client's reply address, without waiting for the reply (it
    /// will be dropped on arrival). For commands whose effect matters but whose answer does not.
    pub async fn send(&self, request: Outgoing) -> Result<(), BrokerError> {
        self.publisher
            .publish(&request.reply_to(self.reply_to.clone()))
            .await
    }

    /// Requests waiting for a reply.
    pub fn in_flight(&self) -> usize {
        self.waiters().len()
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, oneshot::Sender<Incoming>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The handler for the reply queue.
    pub fn replies(self: &Arc<Self>) -> Arc<Replies> {
        Arc::new(Replies(Arc::clone(self)))
    }
}

/// Removes a waiter when its call ends, however it ends.
struct Forget<'a> {
    client: &'a RpcClient,
    id: MessageId,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.client.waiters().remove(&self.id);
    }
}

/// Consumes the reply queue and wakes the caller of each reply.
#[derive(Debug)]
pub struct Replies(Arc<RpcClient>);

impl Handler for Replies {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let waiter = message
            .correlation_id()
            .and_then(|id| self.0.waiters().remove(&id));
        match waiter {
            Some(sender) => {
                let _ = sender.send(message.clone());
            }
            None => debug!(
                correlation_id = ?message.correlation_id(),
                "reply nobody waits for (late or duplicate); dropped"
            ),
        }
        Disposition::Ack
    }
}
