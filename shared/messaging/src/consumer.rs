//! Supervised consumers with manual acks.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use deadpool_lapin::lapin::{
    BasicProperties,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions,
        BasicRejectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use futures::{FutureExt, StreamExt};
use protocol::envelope::{DecodeError, Envelope};
use protocol::headers;
use protocol::ids::MessageId;
use protocol::topology::Declarations;
use protocol::trace::TraceContext;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError, Role};
use crate::publisher::{Outgoing, Publisher};

/// A received message, without its acker: the supervisor acks according to the handler's
/// [`Disposition`].
#[derive(Clone, Debug)]
pub struct Incoming {
    queue: String,
    data: Vec<u8>,
    properties: BasicProperties,
}

impl Incoming {
    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The body.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Parses the body as an envelope (version checked first).
    pub fn decode<P: DeserializeOwned>(&self) -> Result<Envelope<P>, DecodeError> {
        Envelope::decode(&self.data)
    }

    /// A string header.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.headers()?.inner().get(name)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
    }

    /// The `order-id` header, for logs.
    pub fn order_id(&self) -> Option<&str> {
        self.header(headers::ORDER_ID)
    }

    /// The sender's trace context (`traceparent` header), if valid.
    pub fn trace(&self) -> Option<TraceContext> {
        TraceContext::parse(self.header(headers::TRACEPARENT)?)
    }

    /// The message this one answers.
    pub fn correlation_id(&self) -> Option<MessageId> {
        self.properties
            .correlation_id()
            .as_ref()?
            .as_str()
            .parse()
            .ok()
    }

    /// This message's id.
    pub fn message_id(&self) -> Option<MessageId> {
        self.properties.message_id().as_ref()?.as_str().parse().ok()
    }

    /// Where a reply should go.
    pub fn reply_to(&self) -> Option<&str> {
        self.properties.reply_to().as_ref().map(|s| s.as_str())
    }

    /// The message kind from the `type` property.
    pub fn kind(&self) -> Option<&str> {
        self.properties.kind().as_ref().map(|s| s.as_str())
    }

    /// How many times a quorum queue delivered it before without its being settled (the
    /// `x-delivery-count` header; 0 on a first delivery).
    pub fn delivery_count(&self) -> i64 {
        match self
            .headers()
            .and_then(|h| h.inner().get(headers::DELIVERY_COUNT))
        {
            Some(AMQPValue::LongLongInt(n)) => *n,
            Some(AMQPValue::LongInt(n)) => (*n).into(),
            Some(AMQPValue::LongUInt(n)) => (*n).into(),
            Some(AMQPValue::ShortInt(n)) => (*n).into(),
            _ => 0,
        }
    }
}

/// What to do with a message once handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Done (its effects are committed): remove it from the queue.
    Ack,
    /// It can never be handled (unreadable, unknown version, invalid): move it to the queue's
    /// dead-letter queue with this reason, then remove it.
    DeadLetter(String),
    /// Handling failed for now: return it to the queue. A quorum queue counts the attempt and
    /// parks the message in the dead-letter queue after its delivery limit.
    Retry,
}

/// Handles the messages of one queue.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. Called concurrently for up to `prefetch` messages.
    fn handle(&self, message: &Incoming) -> impl Future<Output = Disposition> + Send;
}

/// Whether the consumer acks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// Ack after the handler, according to its [`Disposition`].
    Manual,
    /// The broker forgets a message as soon as it is sent (`no_ack`). Only for reply queues:
    /// a reply matters only to the live process that waits for it, and the queue dies with it.
    Auto,
}

/// One supervised consumer.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// The queue.
    pub queue: String,
    /// Unacked messages the broker may push at once; also how many are handled concurrently.
    pub prefetch: u16,
    /// Manual or automatic acks.
    pub ack_mode: AckMode,
    /// Where [`Disposition::DeadLetter`] messages go (routing key = the queue's name).
    pub dead_letter_exchange: Option<String>,
    /// Declared on the consumer's own channel before consuming, after every reconnection (an
    /// exclusive queue must be declared on the connection that consumes it).
    pub declarations: Arc<Declarations>,
}

impl ConsumerSpec {
    /// A queue of this process's own (exclusive, declared by `declarations`) read with automatic
    /// acks: a reply queue, or a tap of events that matter only while the process lives.
    pub fn exclusive(queue: String, declarations: Declarations) -> Self {
        Self {
            queue,
            // Ignored with automatic acks: messages are handled as they come.
            prefetch: 0,
            ack_mode: AckMode::Auto,
            dead_letter_exchange: None,
            declarations: Arc::new(declarations),
        }
    }
}

/// How long in-flight handlers may take to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumes `spec.queue` with `handler` until `shutdown`, reconnecting with backoff after every
/// failure. Reports itself in the broker's health table as `consumer <queue>`: down from the call
/// (before the returned future is first polled, so a readiness check made right after spawning it
/// already waits for it), up while subscribed.
pub fn run<H: Handler>(
    broker: Broker,
    publisher: Publisher,
    spec: ConsumerSpec,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let component = format!("consumer {}", spec.queue);
    broker.health().set(&component, false);
    crate::metrics::register_consumer(&spec.queue);
    supervise(broker, publisher, spec, handler, shutdown, component)
}

async fn supervise<H: Handler>(
    broker: Broker,
    publisher: Publisher,
    spec: ConsumerSpec,
    handler: Arc<H>,
    shutdown: CancellationToken,
    component: String,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let tracker = TaskTracker::new();
    loop {
        let result = consume_once(
            &broker,
            &publisher,
            &spec,
            &handler,
            &shutdown,
            &tracker,
            &component,
            &mut backoff,
        )
        .await;
        broker.health().set(&component, false);
        if !shutdown.is_cancelled() {
            metrics::counter!(crate::metrics::CONSUMER_RESTARTS, "queue" => spec.queue.clone())
                .increment(1);
        }
        if shutdown.is_cancelled() {
            break;
        }
        match result {
            Ok(()) => {
                warn!(queue = %spec.queue, "consumer cancelled by the broker; subscribing again")
            }
            Err(err) => warn!(queue = %spec.queue, error = %err, "consumer lost; reconnecting"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => break,
        }
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        warn!(queue = %spec.queue, "handlers still running at shutdown; their messages will be redelivered");
    }
}

#[allow(clippy::too_many_arguments)]
async fn consume_once<H: Handler>(
    broker: &Broker,
    publisher: &Publisher,
    spec: &ConsumerSpec,
    handler: &Arc<H>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    component: &str,
    backoff: &mut Backoff,
) -> Result<(), BrokerError> {
    let channel = broker.open_channel(Role::Consume).await?;
    channel
        .basic_qos(spec.prefetch, BasicQosOptions::default())
        .await?;
    broker.declare_on(&channel, &spec.declarations).await?;
    let mut consumer = channel
        .basic_consume(
            spec.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: spec.ack_mode == AckMode::Auto,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    broker.health().set(component, true);
    backoff.reset();
    info!(queue = %spec.queue, prefetch = spec.prefetch, "consuming");
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = shutdown.cancelled() => {
                let _ = channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                // Let in-flight handlers ack on this channel before it closes.
                tracker.close();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await;
                let _ = channel.close(200, "shutting down".into()).await;
                return Ok(());
            }
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => return Err(err.into()),
            None => return Ok(()),
        };
        let Delivery {
            data,
            properties,
            acker,
            ..
        } = delivery;
        let message = Incoming {
            queue: spec.queue.clone(),
            data,
            properties,
        };
        let trace = message.trace();
        let span = info_span!(
            "message",
            queue = %spec.queue,
            kind = message.kind().unwrap_or("?"),
            order_id = message.order_id().unwrap_or("?"),
            trace_id = trace.map(|t| t.trace_id()).unwrap_or_default(),
            span_id = trace.map(|t| t.span_id()).unwrap_or_default(),
        );
        // The sender's span is this one's parent (when spans are exported).
        if let Some(trace) = trace {
            crate::trace::set_parent(&span, trace);
        }
        if spec.ack_mode == AckMode::Auto {
            // Acked on delivery: a handler that panics loses only its own message.
            if let Err(panic) = AssertUnwindSafe(handler.handle(&message).instrument(span))
                .catch_unwind()
                .await
            {
                error!(queue = %spec.queue, panic = panic_text(&*panic), "handler panicked; message dropped");
            }
            continue;
        }
        let handler = Arc::clone(handler);
        let publisher = publisher.clone();
        let dead_letter_exchange = spec.dead_letter_exchange.clone();
        tracker.spawn(
            async move {
                // A handler that panics must not leave its message unacked until the channel
                // dies: the message that made it panic is parked with the reason.
                let disposition = match AssertUnwindSafe(handler.handle(&message))
                    .catch_unwind()
                    .await
                {
                    Ok(disposition) => disposition,
                    Err(panic) => {
                        let panic = panic_text(&*panic);
                        error!(panic, "handler panicked");
                        metrics::counter!(crate::metrics::HANDLER_PANICS, "queue" => message.queue().to_owned())
                            .increment(1);
                        Disposition::DeadLetter(format!("the handler panicked: {panic}"))
                    }
                };
                let settled = match disposition {
                    Disposition::Ack => acker.ack(BasicAckOptions::default()).await,
                    Disposition::Retry => {
                        acker
                            .reject(BasicRejectOptions { requeue: true })
                            .await
                    }
                    Disposition::DeadLetter(reason) => {
                        warn!(reason, "dead-lettering message");
                        metrics::counter!(crate::metrics::MESSAGES_DEAD_LETTERED, "queue" => message.queue().to_owned())
                            .increment(1);
                        match dead_letter_exchange.as_deref() {
                            Some(exchange) => {
                                match dead_letter(&publisher, exchange, &message, &reason).await {
                                    Ok(()) => acker.ack(BasicAckOptions::default()).await,
                                    Err(err) => {
                                        // Not lost: back to the queue, where the delivery limit
                                        // parks it through the broker's own dead-lettering.
                                        warn!(error = %err, "could not dead-letter; returning it to the queue");
                                        acker.reject(BasicRejectOptions { requeue: true }).await
                                    }
                                }
                            }
                            // The broker dead-letters it through the queue's own arguments.
                            None => acker.reject(BasicRejectOptions { requeue: false }).await,
                        }
                    }
                };
                if let Err(err) = settled {
                    // The channel is gone; the broker redelivers the message to someone else.
                    debug!(error = %err, "could not settle message");
                }
            }
            .instrument(span),
        );
    }
}

/// What a panic said, if it said it with a string.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

/// Publishes an unhandleable message, untouched, to the dead-letter queue beside its queue, with
/// the reason in a header.
async fn dead_letter(
    publisher: &Publisher,
    exchange: &str,
    message: &Incoming,
    reason: &str,
) -> Result<(), BrokerError> {
    // Parked as it came (message id, type, reply-to, headers), so that it can be moved back to
    // its queue after a fix (`messaging::dlq::replay`) and handled as if it were new.
    let out = Outgoing::copy(
        message.data().to_vec(),
        message.properties.clone(),
        exchange,
        message.queue(),
    )
    .header(headers::DEAD_LETTER_REASON, reason)
    .header(headers::DEAD_LETTER_QUEUE, message.queue())
    .header(headers::PARKED_AT, chrono_millis_now().to_string());
    publisher.publish(&out).await
}

/// Milliseconds since the Unix epoch, now.
fn chrono_millis_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}
