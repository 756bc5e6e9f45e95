//! Batches: several commands for one participant queue in one message, and their replies in one
//! message back.
//!
//! When many orders are in flight, the coordinator sends the commands that are ready at the same
//! moment (for the same queue) together, and the participant applies them in one database
//! transaction and answers them together. Each command keeps its own envelope (message id, order,
//! transaction), is applied and recorded on its own, and gets its own reply, matched by the id of
//! the command it answers: batching changes how many messages and transactions carry the work,
//! not the work. At low load a batch is a single command, sent as a plain command message.
//!
//! ```json
//! {"v": 1, "message_id": "…", "sent_at": "…", "kind": "command_batch",
//!  "items": [{"v": 1, "message_id": "…", "order_id": "…", "txn_id": "…", "kind": "reserve", …}, …]}
//! {"v": 1, "message_id": "…", "sent_at": "…", "kind": "reply_batch",
//!  "items": [{"in_reply_to": "…", "reply": {"v": 1, "message_id": "…", "kind": "reserve_reply", …}}, …]}
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::{DecodeError, PROTOCOL_VERSION};
use crate::ids::MessageId;

/// The `kind` (and AMQP `type`) of a command batch.
pub const COMMAND_BATCH: &str = "command_batch";
/// The `kind` (and AMQP `type`) of a reply batch.
pub const REPLY_BATCH: &str = "reply_batch";

/// A batch message. Items stay raw JSON until each is read on its own, so that one unreadable
/// item does not spoil the others.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch<T> {
    /// Protocol version.
    pub v: u16,
    /// This message's id.
    pub message_id: MessageId,
    /// When it was sent.
    pub sent_at: DateTime<Utc>,
    /// [`COMMAND_BATCH`] or [`REPLY_BATCH`].
    pub kind: String,
    /// The items.
    pub items: Vec<T>,
}

/// One reply of a reply batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchedReply {
    /// The message id of the command it answers.
    pub in_reply_to: MessageId,
    /// The reply's own envelope.
    pub reply: Box<RawValue>,
}

impl<T> Batch<T> {
    /// A new batch of `kind`.
    pub fn new(kind: &str, items: Vec<T>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            message_id: MessageId::new(),
            sent_at: Utc::now(),
            kind: kind.to_owned(),
            items,
        }
    }
}

impl<T: Serialize> Batch<T> {
    /// The JSON bytes to publish.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }
}

impl<'de, T: Deserialize<'de>> Batch<T> {
    /// Parses a batch of the expected `kind`, checking the version first.
    pub fn decode(bytes: &'de [u8], kind: &str) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Probe {
            v: Option<u64>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        match probe.v {
            None => return Err(DecodeError::MissingVersion),
            Some(v) if v != u64::from(PROTOCOL_VERSION) => {
                return Err(DecodeError::UnsupportedVersion { found: v });
            }
            Some(_) => {}
        }
        let batch: Self = serde_json::from_slice(bytes).map_err(DecodeError::Invalid)?;
        if batch.kind != kind {
            return Err(DecodeError::Invalid(serde::de::Error::custom(format!(
                "a {} where a {kind} was expected",
                batch.kind
            ))));
        }
        Ok(batch)
    }
}

/// Turns already-serialized JSON into a raw item.
pub fn raw(json: Vec<u8>) -> Result<Box<RawValue>, serde_json::Error> {
    let text = String::from_utf8(json).map_err(serde::de::Error::custom)?;
    RawValue::from_string(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{AgentRequest, Command, Reply, ReserveReply};
    use crate::envelope::{Envelope, TxnEnvelope};
    use crate::ids::{OrderId, TxnId};

    #[test]
    fn commands_travel_whole_and_are_read_one_by_one() {
        let one = TxnEnvelope::txn(
            OrderId::new(),
            TxnId::new(),
            Command::Reserve(AgentRequest::default()),
        );
        let batch = Batch::new(
            COMMAND_BATCH,
            vec![
                raw(one.to_bytes().unwrap()).unwrap(),
                raw(b"{\"v\":1}".to_vec()).unwrap(),
            ],
        );
        let bytes = batch.to_bytes().unwrap();
        let back: Batch<Box<RawValue>> = Batch::decode(&bytes, COMMAND_BATCH).unwrap();
        let first: TxnEnvelope<Command<AgentRequest>> =
            Envelope::decode(back.items[0].get().as_bytes()).unwrap();
        assert_eq!(first, one);
        assert!(
            TxnEnvelope::<Command<AgentRequest>>::decode(back.items[1].get().as_bytes()).is_err()
        );
        assert!(Batch::<Box<RawValue>>::decode(&bytes, REPLY_BATCH).is_err());
    }

    #[test]
    fn replies_name_the_command_they_answer() {
        let command = MessageId::new();
        let reply = TxnEnvelope::txn(
            OrderId::new(),
            TxnId::new(),
            Reply::ReserveReply(ReserveReply::Busy { holders: vec![] }),
        );
        let batch = Batch::new(
            REPLY_BATCH,
            vec![BatchedReply {
                in_reply_to: command,
                reply: raw(reply.to_bytes().unwrap()).unwrap(),
            }],
        );
        let bytes = batch.to_bytes().unwrap();
        let back: Batch<BatchedReply> = Batch::decode(&bytes, REPLY_BATCH).unwrap();
        assert_eq!(back.items[0].in_reply_to, command);
        let decoded: TxnEnvelope<Reply> =
            Envelope::decode(back.items[0].reply.get().as_bytes()).unwrap();
        assert_eq!(decoded, reply);
    }
}
