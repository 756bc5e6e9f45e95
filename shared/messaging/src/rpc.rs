//! Request/reply over the broker, matched on correlation id, with commands of concurrent callers
//! sent together.
//!
//! Requests for the same destination (exchange and routing key) that are ready at the same moment
//! travel in one message (a [`protocol::batch`] command batch): each destination has a lane that
//! keeps at most [`LANE_IN_FLIGHT`] publishes outstanding and puts everything that queued up
//! meanwhile into the next one, gathered as [`crate::gather`] does (a few yields to the runtime,
//! so that tasks ready to run can add theirs). At low load that is one request per message, sent at once;
//! under load the batches grow by themselves, and so do the participant's transactions. Each request
//! keeps its own message id, and its reply (alone, or inside a reply batch) is matched on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use protocol::batch::{self, Batch, BatchedReply};
use protocol::command::{Answer, AnswerError, decode_answer};
use protocol::ids::MessageId;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::broker::BrokerError;
use crate::consumer::{Disposition, Handler, Incoming};
use crate::publisher::{Outgoing, Publisher};

/// Publishes a lane keeps outstanding; requests that arrive meanwhile form the next batch.
pub const LANE_IN_FLIGHT: usize = 2;
/// Requests in one batch at most.
const MAX_BATCH: usize = 128;

/// Why a call got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The request could not be published (and confirmed).
    #[error("request not published: {0}")]
    Publish(String),
    /// No reply in time. The request may still be handled later; the late reply is then
    /// dropped.
    #[error("no reply in time")]
    Timeout,
    /// A reply came, but not one the command could have: a broken participant.
    #[error(transparent)]
    Unreadable(#[from] AnswerError),
}

/// How long a call waits for its reply.
#[derive(Clone, Debug)]
pub enum Wait {
    /// One message, one wait: a request that goes unanswered is the caller's to handle.
    Once(Duration),
    /// Until `until`, publishing the same message again whenever `backoff` says (for requests
    /// that need an answer however long the participant takes).
    Resending {
        /// When to give up.
        until: Instant,
        /// Pauses between copies.
        backoff: Backoff,
    },
}

impl From<BrokerError> for RpcError {
    fn from(err: BrokerError) -> Self {
        RpcError::Publish(err.to_string())
    }
}

/// A reply as received: the JSON of its envelope.
type ReplyBytes = Vec<u8>;

type Waiters = Mutex<HashMap<MessageId, oneshot::Sender<ReplyBytes>>>;

/// A request waiting in a lane, with where to report whether it was published.
type Queued = (Outgoing, oneshot::Sender<Result<(), String>>);

/// Sends requests and hands each reply to the task waiting for it. Consume the reply queue with
/// [`RpcClient::replies`] as handler.
pub struct RpcClient {
    publisher: Publisher,
    reply_to: String,
    waiters: Waiters,
    lanes: Mutex<HashMap<(String, String), mpsc::UnboundedSender<Queued>>>,
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
            lanes: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `request` (its message id is the correlation id) and waits for its reply as `wait`
    /// says, read as the answer `A` that the command expects. Cancel-safe: dropping the future
    /// forgets the request.
    pub async fn call<A: Answer>(&self, request: Outgoing, wait: Wait) -> Result<A, RpcError> {
        let bytes = match wait {
            Wait::Once(timeout) => self.call_once(request, timeout).await?,
            Wait::Resending { until, backoff } => self.call_until(request, backoff, until).await?,
        };
        Ok(decode_answer(&bytes)?)
    }

    /// Sends `request`, possibly together with other requests for the same destination, and
    /// waits up to `timeout` for the reply.
    async fn call_once(
        &self,
        request: Outgoing,
        timeout: Duration,
    ) -> Result<ReplyBytes, RpcError> {
        let (receiver, _forget) = self.wait_for(request.id());
        let exchange = async {
            self.enqueue(request).await?;
            receiver.await.map_err(|_| RpcError::Timeout)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RpcError::Timeout)?
    }

    /// Sends `request` and waits for its reply until `deadline`, publishing the same message
    /// (same message id) again whenever `backoff` says, in case it or its reply was lost. A reply
    /// to any of the copies ends the wait: a slow participant's answer to an earlier copy is as
    /// good as an answer to the latest. The first copy may travel in a batch; later ones go
    /// alone.
    async fn call_until(
        &self,
        request: Outgoing,
        mut backoff: Backoff,
        deadline: Instant,
    ) -> Result<ReplyBytes, RpcError> {
        let (mut receiver, _forget) = self.wait_for(request.id());
        let request = request.reply_to(self.reply_to.clone());
        let mut first = true;
        loop {
            let sent = if first {
                first = false;
                self.enqueue(request.clone()).await
            } else {
                metrics::counter!(crate::metrics::RPC_RESENDS).increment(1);
                self.publisher
                    .publish(&request)
                    .await
                    .map_err(RpcError::from)
            };
            if let Err(err) = sent {
                debug!(error = %err, "request not published; trying again");
            }
            let wait_until = (Instant::now() + backoff.next_delay()).min(deadline);
            match tokio::time::timeout_at(wait_until, &mut receiver).await {
                Ok(Ok(reply)) => return Ok(reply),
                // The sender lives in the waiter entry, which `_forget` keeps until we return.
                Ok(Err(_)) => return Err(RpcError::Timeout),
                Err(_) if Instant::now() >= deadline => return Err(RpcError::Timeout),
                Err(_) => {}
            }
        }
    }

    /// Sends `requests` together, as one command batch for their common destination, and waits
    /// up to `timeout` for every reply. The lanes batch concurrent calls by themselves; this
    /// makes a batch on purpose, for tests of how participants handle batches.
    #[cfg(feature = "testing")]
    pub async fn call_batch<A: Answer>(
        &self,
        requests: Vec<Outgoing>,
        timeout: Duration,
    ) -> Vec<Result<A, RpcError>> {
        let (Some(first), waits) = (
            requests.first(),
            requests
                .iter()
                .map(|r| self.wait_for(r.id()))
                .collect::<Vec<_>>(),
        ) else {
            return Vec::new();
        };
        let (exchange, routing_key) = (first.exchange().to_owned(), first.routing_key().to_owned());
        let group: Vec<Queued> = requests
            .into_iter()
            .map(|r| (r.reply_to(self.reply_to.clone()), oneshot::channel().0))
            .collect();
        let published = match batch_message(&group, &exchange, &routing_key, &self.reply_to) {
            Ok(message) => self
                .publisher
                .publish(&message)
                .await
                .map_err(RpcError::from),
            Err(err) => Err(RpcError::from(err)),
        };
        let deadline = Instant::now() + timeout;
        let mut results = Vec::with_capacity(waits.len());
        for (receiver, _forget) in waits {
            results.push(match &published {
                Err(err) => Err(RpcError::Publish(err.to_string())),
                Ok(()) => match tokio::time::timeout_at(deadline, receiver).await {
                    Ok(Ok(reply)) => decode_answer(&reply).map_err(RpcError::from),
                    _ => Err(RpcError::Timeout),
                },
            });
        }
        results
    }

    /// Publishes `request` with this client's reply address, without waiting for the reply (it
    /// will be dropped on arrival). For commands whose effect matters but whose answer does not.
    pub async fn send(&self, request: Outgoing) -> Result<(), BrokerError> {
        self.publisher
            .publish(&request.reply_to(self.reply_to.clone()))
            .await
    }

    /// The handler for the reply queue.
    pub fn replies(self: &Arc<Self>) -> Arc<Replies> {
        Arc::new(Replies(Arc::clone(self)))
    }

    fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<MessageId, oneshot::Sender<ReplyBytes>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait_for(&self, id: MessageId) -> (oneshot::Receiver<ReplyBytes>, Forget<'_>) {
        let (sender, receiver) = oneshot::channel();
        self.waiters().insert(id, sender);
        (receiver, Forget { client: self, id })
    }

    fn deliver(&self, id: MessageId, reply: ReplyBytes) {
        match self.waiters().remove(&id) {
            Some(sender) => {
                let _ = sender.send(reply);
            }
            None => {
                debug!(correlation_id = %id, "reply nobody waits for (late or duplicate); dropped")
            }
        }
    }

    /// Queues `request` in the lane of its destination and waits until it is published.
    async fn enqueue(&self, request: Outgoing) -> Result<(), RpcError> {
        let request = request.reply_to(self.reply_to.clone());
        let key = (
            request.exchange().to_owned(),
            request.routing_key().to_owned(),
        );
        let (published, result) = oneshot::channel();
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes
                .entry(key.clone())
                .or_insert_with(|| {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    tokio::spawn(lane(
                        self.publisher.clone(),
                        key.0.clone(),
                        key.1.clone(),
                        self.reply_to.clone(),
                        receiver,
                    ));
                    sender
                })
                .clone()
        };
        lane.send((request, published))
            .map_err(|_| RpcError::Publish("lane closed".into()))?;
        result
            .await
            .map_err(|_| RpcError::Publish("lane closed".into()))?
            .map_err(RpcError::Publish)
    }
}

/// Publishes the requests of one destination: each publish takes whatever queued up.
async fn lane(
    publisher: Publisher,
    exchange: String,
    routing_key: String,
    reply_to: String,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let in_flight = Arc::new(Semaphore::new(LANE_IN_FLIGHT));
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut group = vec![first];
        crate::gather::gather(&mut queue, &mut group, MAX_BATCH).await;
        // A caller that stopped waiting while its request queued has moved on (a reserve it gave
        // up on is released instead): sending the request now would only act behind its back.
        group.retain(|(_, published)| !published.is_closed());
        if group.is_empty() {
            continue;
        }
        let (publisher, exchange, routing_key, reply_to) = (
            publisher.clone(),
            exchange.clone(),
            routing_key.clone(),
            reply_to.clone(),
        );
        tokio::spawn(async move {
            metrics::histogram!(crate::metrics::RPC_BATCH_SIZE).record(group.len() as f64);
            let result = match group.as_slice() {
                [(single, _)] => publisher.publish(single).await,
                _ => match batch_message(&group, &exchange, &routing_key, &reply_to) {
                    Ok(message) => publisher.publish(&message).await,
                    Err(err) => Err(err),
                },
            };
            let result = result.map_err(|err| {
                warn!(error = %err, requests = group.len(), "requests not published");
                err.to_string()
            });
            for (_, published) in group {
                let _ = published.send(result.clone());
            }
            drop(permit);
        });
    }
}

fn batch_message(
    group: &[Queued],
    exchange: &str,
    routing_key: &str,
    reply_to: &str,
) -> Result<Outgoing, BrokerError> {
    let items = group
        .iter()
        .map(|(request, _)| batch::raw(request.payload().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = Batch::new(batch::COMMAND_BATCH, items);
    Ok(Outgoing::raw(batch.to_bytes()?, exchange, routing_key)
        .message_id(batch.message_id)
        .kind(batch::COMMAND_BATCH)
        .reply_to(reply_to))
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

/// Consumes the reply queue and wakes the caller of each reply (alone or in a reply batch).
#[derive(Debug)]
pub struct Replies(Arc<RpcClient>);

impl Handler for Replies {
    async fn handle(&self, message: &Incoming) -> Disposition {
        if message.kind() == Some(batch::REPLY_BATCH) {
            match Batch::<BatchedReply>::decode(message.data(), batch::REPLY_BATCH) {
                Ok(batch) => {
                    for item in batch.items {
                        self.0
                            .deliver(item.in_reply_to, item.reply.get().as_bytes().to_vec());
                    }
                }
                Err(err) => warn!(error = %err, "unreadable reply batch; dropped"),
            }
        } else {
            match message.correlation_id() {
                Some(id) => self.0.deliver(id, message.data().to_vec()),
                None => warn!("reply without a correlation id; dropped"),
            }
        }
        Disposition::Ack
    }
}
