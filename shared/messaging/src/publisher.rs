//! Confirmed publishing on long-lived channels.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
use tokio::sync::Mutex;

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
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    slots: Vec<Mutex<Option<Channel>>>,
    next: AtomicUsize,
}

const HEALTH_COMPONENT: &str = "amqp publisher";

impl Publisher {
    /// A publisher with `broker.config().publisher_channels` channels, opened on first use.
    pub fn new(broker: Broker) -> Self {
        let slots = (0..broker.config().publisher_channels.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        broker.health().set(HEALTH_COMPONENT, true);
        Self {
            inner: Arc::new(Inner {
                broker,
                slots,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// Publishes `message` and waits for the broker's confirm. `Ok` means the broker has taken
    /// responsibility for it (for a persistent message to a quorum queue: written to a majority).
    pub async fn publish(&self, message: &Outgoing) -> Result<(), BrokerError> {
        let slot = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.slots.len();
        let channel = self.channel(slot).await?;
        let result = self.publish_on(&channel, message).await;
        let health = self.inner.broker.health();
        match &result {
            Ok(()) | Err(BrokerError::Unroutable { .. }) => health.set(HEALTH_COMPONENT, true),
            Err(_) => {
                health.set(HEALTH_COMPONENT, false);
                self.discard(slot, &channel).await;
            }
        }
        result
    }

    async fn publish_on(&self, channel: &Channel, message: &Outgoing) -> Result<(), BrokerError> {
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                &message.payload,
                message.properties(),
            )
            .await?;
        let timeout = self.inner.broker.config().confirm_timeout;
        let confirmation = tokio::time::timeout(timeout, confirm)
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
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
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
