//! The versioned envelope around every message.
//!
//! A command on the wire looks like this (the `kind`/`body` pair is the message itself):
//!
//! ```json
//! {"v": 1, "message_id": "0190…", "sent_at": "2026-11-29T09:00:00Z",
//!  "order_id": "0190…", "txn_id": "0190…",
//!  "kind": "reserve", "body": {"lines": [{"food_id": 1}]}}
//! ```
//!
//! Receivers check `v` before anything else: a message of another version is dead-lettered with
//! the reason instead of being half-understood.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::ids::{MessageId, OrderId, TxnId};
use crate::trace::TraceContext;

/// The protocol version this build speaks. Bump it for any change that an old reader would
/// misread; additive changes (a new optional field) keep it.
pub const PROTOCOL_VERSION: u16 = 1;

/// A message type with a name for logs, headers and the `kind` field.
pub trait Kind {
    /// The `kind` of this message, e.g. `reserve` or `reserve_reply`.
    fn kind(&self) -> &'static str;
}

impl<T: Kind + ?Sized> Kind for &T {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }
}

/// The envelope: version, message id and time, around a payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// Protocol version, checked first by every receiver.
    pub v: u16,
    /// Unique per message; the correlation id of a command and its reply.
    pub message_id: MessageId,
    /// When the sender created the message.
    pub sent_at: DateTime<Utc>,
    /// The W3C trace context (`traceparent`) of the span that sent it, so that a command that
    /// travels in a batch still continues its own order's trace. Optional (an additive field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The payload, flattened into the envelope.
    #[serde(flatten)]
    pub payload: P,
}

/// A message about one transaction of one order: every command and reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxnMessage<M> {
    /// The order the transaction is for; also in the `order-id` header for logs.
    pub order_id: OrderId,
    /// The transaction attempt; participants apply each operation once per transaction.
    pub txn_id: TxnId,
    /// The command or reply, tagged with `kind` and `body`.
    #[serde(flatten)]
    pub message: M,
}

/// An envelope around a message about one transaction.
pub type TxnEnvelope<M> = Envelope<TxnMessage<M>>;

impl<P: Kind> Kind for Envelope<P> {
    fn kind(&self) -> &'static str {
        self.payload.kind()
    }
}

impl<M: Kind> Kind for TxnMessage<M> {
    fn kind(&self) -> &'static str {
        self.message.kind()
    }
}

impl<P> Envelope<P> {
    /// Wraps `payload` in a new envelope with a fresh message id.
    pub fn new(payload: P) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            message_id: MessageId::new(),
            sent_at: Utc::now(),
            traceparent: None,
            payload,
        }
    }

    /// The same, sent from the span `trace`.
    #[must_use]
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.traceparent = Some(trace.to_string());
        self
    }

    /// The trace context of the span that sent it, if it says (and it reads).
    pub fn trace(&self) -> Option<TraceContext> {
        TraceContext::parse(self.traceparent.as_deref()?)
    }
}

impl<M> TxnEnvelope<M> {
    /// A new envelope for a message about transaction `txn_id` of order `order_id`.
    pub fn txn(order_id: OrderId, txn_id: TxnId, message: M) -> Self {
        Self::new(TxnMessage {
            order_id,
            txn_id,
            message,
        })
    }

    /// The order this message is about.
    pub fn order_id(&self) -> OrderId {
        self.payload.order_id
    }

    /// The transaction this message is about.
    pub fn txn_id(&self) -> TxnId {
        self.payload.txn_id
    }

    /// The command or reply inside.
    pub fn message(&self) -> &M {
        &self.payload.message
    }
}

impl<P: Serialize> Envelope<P> {
    /// The JSON bytes to publish.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

impl<P: DeserializeOwned> Envelope<P> {
    /// Parses an envelope, checking the version before the rest so that a message from a newer
    /// sender is reported as such rather than as garbage.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct VersionProbe {
            v: Option<u64>,
        }
        let probe: VersionProbe = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        match probe.v {
            None => Err(DecodeError::MissingVersion),
            Some(v) if v != u64::from(PROTOCOL_VERSION) => {
                Err(DecodeError::UnsupportedVersion { found: v })
            }
            Some(_) => serde_json::from_slice(bytes).map_err(DecodeError::Invalid),
        }
    }
}

/// Why a message could not be read. Such a message is dead-lettered with this text as the reason.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a JSON object at all.
    #[error("not a JSON object: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A JSON object without the `v` field.
    #[error("no protocol version (`v`) in the message")]
    MissingVersion,
    /// A version this build does not speak.
    #[error("unsupported protocol version {found} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version found in the message.
        found: u64,
    },
    /// The right version, but the fields do not match the expected message.
    #[error("invalid message: {0}")]
    Invalid(#[source] serde_json::Error),
}
