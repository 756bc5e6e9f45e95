//! Confirmed publishing on long-lived channels.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use deadpool_lapin::lapin::{
    BasicProperties, Channel, Confirmation,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use protocol::envelope::{Envelope, Kind, TxnEnvelope};
use protocol::headers;
use protocol::ids::MessageId;
use serde::Serialize;
use tokio::sync::{Mutex, Notify};

use crate::backoff::Backoff;
use crate::broker::{Broker, BrokerError, Role};

/// A message ready to publish. Build it from an envelope, then adjust routing and properties.
#[derive(Clone, Debug)]
pub struct Outgoing {
    exchange: String,
    routing_key: String,
    payload: Vec<u8>,
    kind: &'static str,
    message_id: MessageId,
    correlation_id: Option<MessageId>,
    reply_to: Option<String>,
    headers: Vec<(&'static str, String)>,
    persistent: bool,
    mandatory: bool,
    /// The properties of a message copied as it was (parked, or moved back from its
    /// dead-letter queue), used instead of the ones above; `headers` are added to its own.
    copied: Option<BasicProperties>,
}

impl Outgoing {
    /// A persistent, mandatory message carrying `envelope`.
    pub fn new<P: Serialize + Kind>(
        envelope: &Envelope<P>,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Result<Self, BrokerError> {
        Ok(Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            payload: envelope.to_bytes()?,
            kind: envelope.kind(),
            message_id: envelope.message_id,
            correlation_id: None,
            reply_to: None,
            headers: Vec::new(),
            persistent: true,
            mandatory: true,
            copied: None,
        })
    }

    /// Like [`Outgoing::new`], with the order and transaction ids also in headers, so that the
    /// receiver can log them before parsing the body.
    pub fn txn<M: Serialize + Kind>(
        envelope: &TxnEnvelope<M>,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Result<Self, BrokerError> {
        Ok(Self::new(envelope, exchange, routing_key)?
            .header(headers::ORDER_ID, envelope.order_id().to_string())
            .header(headers::TXN_ID, envelope.txn_id().to_string()))
    }

    /// Raw bytes (used to move an unreadable message to a dead-letter queue untouched).
    pub fn raw(
        payload: Vec<u8>,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            payload,
            kind: "raw",
            message_id: MessageId::new(),
            correlation_id: None,
            reply_to: None,
            headers: Vec::new(),
            persistent: true,
            mandatory: true,
            copied: None,
        }
    }

    /// A copy of a received message, with its properties (message id, type, reply-to,
    /// correlation id, headers) as they were: a message parked in its dead-letter queue, or moved
    /// back to its queue from there.
    pub(crate) fn copy(
        payload: Vec<u8>,
        properties: BasicProperties,
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
    ) -> Self {
        Self {
            copied: Some(properties),
            ..Self::raw(payload, exchange, routing_key)
        }
    }

    /// Sets the message id.
    #[must_use]
    pub fn message_id(mut self, id: MessageId) -> Self {
        self.message_id = id;
        self
    }

    /// Sets the `type` property.
    #[must_use]
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// Where the reply should go (a routing key on the replies exchange).
    #[must_use]
    pub fn reply_to(mut self, reply_to: impl Into<String>) -> Self {
        self.reply_to = Some(reply_to.into());
        self
    }

    /// The message this one answers.
    #[must_use]
    pub fn correlation_id(mut self, id: MessageId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// A header.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Not written to disk by the broker: for replies, which only matter to a live coordinator
    /// that would re-ask after a restart anyway.
    #[must_use]
    pub fn transient(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Whether an unroutable message is an error (default) or silently dropped.
    #[must_use]
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// The message id (the correlation id of a command's reply).
    pub fn id(&self) -> MessageId {
        self.message_id
    }

    /// The body.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The exchange it goes to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Its routing key.
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    fn properties(&self) -> BasicProperties {
        if let Some(copied) = &self.copied {
            let mut headers = copied.headers().clone().unwrap_or_default();
            for (name, value) in &self.headers {
                headers.insert(
                    (*name).into(),
                    AMQPValue::LongString(LongString::from(value.as_str())),
                );
            }
            return copied.clone().with_headers(headers);
        }
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            headers.insert(
                (*name).into(),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        let mut props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(if self.persistent { 2 } else { 1 })
            .with_message_id(ShortString::from(self.message_id.to_string()))
            .with_type(ShortString::from(self.kind))
            .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or_default())
            .with_headers(headers);
        if let Some(id) = self.correlation_id {
            props = props.with_correlation_id(ShortString::from(id.to_string()));
        }
        if let Some(reply_to) = &self.reply_to {
            props = props.with_reply_to(ShortString::from(reply_to.as_str()));
        }
        props
    }
}

/// Publishes with publisher confirms on a few long-lived channels, reopened after failures.
/// Cheap to clone; many tasks publish concurrently.
///
/// Reports itself in the broker's health table as `amqp publisher`: down after a failed publish,
/// up again after a successful one or, without traffic, as soon as a background probe has
/// reopened every channel. So a service that nothing asks to publish still becomes ready again
/// once the broker is back.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    /// Whether its channels are in confirm mode and each publish waits for its confirm.
    confirms: bool,
    /// Its line in the broker's health table.
    component: &'static str,
    slots: Vec<Mutex<Option<Channel>>>,
    next: AtomicUsize,
    /// Wakes the probe after a failed publish (and when the publisher is dropped, to end it).
    failed: Arc<Notify>,
    /// Whether the probe task was started (on the first failure, from inside the runtime).
    probing: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.failed.notify_one();
    }
}

const HEALTH_COMPONENT: &str = "amqp publisher";
const UNCONFIRMED_HEALTH_COMPONENT: &str = "amqp reply publisher";
/// First wait of the probe after a failure; it backs off up to [`PROBE_MAX_DELAY`].
const PROBE_BASE_DELAY: Duration = Duration::from_millis(100);
const PROBE_MAX_DELAY: Duration = Duration::from_secs(5);

impl Publisher {
    /// A publisher with `broker.config().publisher_channels` channels, opened on first use.
    pub fn new(broker: Broker) -> Self {
        Self::with(broker, true, HEALTH_COMPONENT)
    }

    /// A publisher whose publishes do not wait for the broker's confirm: `Ok` means the message
    /// was handed to the connection, not that the broker has it, and a message that no queue
    /// takes is dropped (its `mandatory` flag is ignored). For messages whose loss is repaired
    /// by asking again, such as replies, which are transient anyway. Reports itself in the
    /// health table as `amqp reply publisher`.
    pub fn without_confirms(broker: Broker) -> Self {
        Self::with(broker, false, UNCONFIRMED_HEALTH_COMPONENT)
    }

    fn with(broker: Broker, confirms: bool, component: &'static str) -> Self {
        let slots = (0..broker.config().publisher_channels.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        broker.health().set(component, true);
        Self {
            inner: Arc::new(Inner {
                broker,
                confirms,
                component,
                slots,
                next: AtomicUsize::new(0),
                failed: Arc::new(Notify::new()),
                probing: AtomicBool::new(false),
            }),
        }
    }

    /// Publishes `message` and waits for the broker's confirm. `Ok` means the broker has taken
    /// responsibility for it (for a persistent message to a quorum queue: written to a majority).
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        let slot = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let result = match self.channel(slot).await {
            Ok(channel) => {
                let result = self.publish_on(&channel, message).await;
                if result.as_ref().is_err_and(|err| !err.is_unroutable()) {
                    self.discard(slot, &channel).await;
                }
                result
            }
            // No channel: the broker is unreachable, or refuses this connection.
            Err(err) => Err(err),
        };
        let health = self.inner.broker.health();
        if result.as_ref().is_err_and(|err| !err.is_unroutable()) {
            health.set(self.inner.component, false);
            self.wake_probe();
        } else {
            health.set(self.inner.component, true);
        }
        result
    }

    /// Wakes the probe, starting it on the first failure.
    fn wake_probe(&self) {
        if !self.inner.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(probe(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.failed),
            ));
        }
        // A failure while the probe is busy leaves a permit, so it checks once more afterwards:
        // the component is never left up on the strength of a check made before the failure.
        self.inner.failed.notify_one();
    }

    /// Opens every channel that is not open. `Ok` means the broker takes publishes again.
    async fn reopen_all(&self) -> Result<(), BrokerError> {
        for slot in 0..self.inner.slots.len() {
            self.channel(slot).await?;
        }
        Ok(())
    }

    async fn publish_on(&self, channel: &Channel, message: &Outgoing) -> Result<(), BrokerError> {
        let confirms = self.inner.confirms;
        // The deadline covers sending too: lapin holds publishes while the broker has blocked
        // the connection (resource alarm), which would otherwise wait for the alarm to clear.
        let publish = async {
            let sent = channel
                .basic_publish(
                    message.exchange.as_str().into(),
                    message.routing_key.as_str().into(),
                    BasicPublishOptions {
                        // Without confirms a returned message would only pile up in lapin.
                        mandatory: message.mandatory && confirms,
                        ..BasicPublishOptions::default()
                    },
                    &message.payload,
                    message.properties(),
                )
                .await?;
            if confirms {
                sent.await
            } else {
                Ok(Confirmation::Ack(None))
            }
        };
        let timeout = self.inner.broker.config().confirm_timeout;
        let confirmation = tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| BrokerError::ConfirmTimeout(timeout))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(BrokerError::Unroutable {
                exchange: message.exchange.clone(),
                routing_key: message.routing_key.clone(),
            }),
            Confirmation::Nack(_) | Confirmation::NotRequested => Err(BrokerError::Nacked),
        }
    }

    async fn channel(&self, slot: usize) -> Result<Channel, BrokerError> {
        let mut guard = self.inner.slots[slot].lock().await;
        if let Some(channel) = guard.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let channel = self.inner.broker.open_channel(Role::Publish).await?;
        if !self.inner.confirms {
            *guard = Some(channel.clone());
            return Ok(channel);
        }
        let timeout = self.inner.broker.config().connect_timeout;
        tokio::time::timeout(
            timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .map_err(|_| BrokerError::Timeout {
            what: "confirm.select",
            after: timeout,
        })??;
        *guard = Some(channel.clone());
        Ok(channel)
    }

    /// Forgets `channel` if it is still the one in `slot`, so that the next publish opens anew.
    async fn discard(&self, slot: usize, channel: &Channel) {
        let mut guard = self.inner.slots[slot].lock().await;
        if guard.as_ref().is_some_and(|c| c.id() == channel.id())
            && let Some(old) = guard.take()
        {
            {
                // Close in the background: on a half-dead connection the close handshake may hang
                // until the heartbeat notices, and the caller should not wait for that.
                tokio::spawn(async move {
                    let close = old.close(200, "discarded after error".into());
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), close).await;
                });
            }
        }
    }
}

/// After each failed publish: reopens the channels with backoff until that works, then reports
/// the publisher up. Ends when the publisher is dropped; holds it only while checking, so that it
/// never keeps a dropped publisher alive.
async fn probe(inner: Weak<Inner>, failed: Arc<Notify>) {
    loop {
        failed.notified().await;
        let mut backoff = Backoff::new(PROBE_BASE_DELAY, PROBE_MAX_DELAY);
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let publisher = Publisher { inner };
            match publisher.reopen_all().await {
                Ok(()) => {
                    let component = publisher.inner.component;
                    publisher.inner.broker.health().set(component, true);
                    tracing::info!("amqp publisher: channels open again");
                    break;
                }
                Err(err) => tracing::debug!(
                    error = %err,
                    attempts = backoff.attempts(),
                    "amqp publisher: still cannot open a channel"
                ),
            }
        }
    }
}
