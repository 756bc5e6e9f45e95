//! Commands from the coordinator to a participant, and the replies.
//!
//! Each participant has one queue per [`Operation`], so that assign and release work never waits
//! behind a backlog of new reservations. Every command is applied at most once per
//! (transaction, operation); a redelivered command gets the reply recorded the first time.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Kind;
use crate::ids::{FoodId, HubId, ItemId, OrderId, TxnId};

/// The four operations of a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Phase 1: hold items for the transaction until an expiry time.
    Reserve,
    /// Phase 2: give the held items to the order.
    Assign,
    /// Free what the transaction holds; blocks later reserves and assigns of the transaction.
    Release,
    /// Undo the assignment of a placed order (the customer cancelled), unless its items have
    /// left the participant's hands (an agent that picked the order up).
    Cancel,
}

impl Operation {
    /// Every operation, in protocol order.
    pub const ALL: [Operation; 4] = [
        Operation::Reserve,
        Operation::Assign,
        Operation::Release,
        Operation::Cancel,
    ];

    /// The name used in queue names, database rows and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Reserve => "reserve",
            Operation::Assign => "assign",
            Operation::Release => "release",
            Operation::Cancel => "cancel",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command to a participant. `R` is what a reservation asks for: [`PacketRequest`] for the
/// store, [`AgentRequest`] for delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Command<R> {
    /// Phase 1.
    Reserve(R),
    /// Phase 2.
    Assign(Assign),
    /// Abort or compensation.
    Release(Release),
    /// A placed order is cancelled.
    Cancel(Cancel),
}

impl<R> Command<R> {
    /// Which operation this command asks for.
    pub fn operation(&self) -> Operation {
        match self {
            Command::Reserve(_) => Operation::Reserve,
            Command::Assign(_) => Operation::Assign,
            Command::Release(_) => Operation::Release,
            Command::Cancel(_) => Operation::Cancel,
        }
    }
}

impl<R> Kind for Command<R> {
    fn kind(&self) -> &'static str {
        self.operation().as_str()
    }
}

/// A command to the store.
pub type StoreCommand = Command<PacketRequest>;

/// What the store is asked to reserve: `quantity` packets of each line's food, all from one hub,
/// all or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketRequest {
    /// The hub whose stock to take from ([`HubId::DEFAULT`] if absent).
    #[serde(default)]
    pub hub_id: HubId,
    /// The lines of the order: each food at most once.
    pub lines: Vec<PacketLine>,
}

/// Packets of one food.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PacketLine {
    /// The food.
    pub food_id: FoodId,
    /// How many packets (1 if absent).
    #[serde(default = "one")]
    pub quantity: u32,
}

fn one() -> u32 {
    1
}

impl PacketLine {
    /// One packet of `food_id`.
    pub fn one(food_id: FoodId) -> Self {
        Self {
            food_id,
            quantity: 1,
        }
    }
}

/// The most lines a basket may have.
pub const MAX_LINES: usize = 50;
/// The most packets of one food a line may ask for.
pub const MAX_QUANTITY: u32 = 20;

/// What delivery is asked to reserve: one agent of a hub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequest {
    /// The hub whose agents to take from ([`HubId::DEFAULT`] if absent).
    #[serde(default)]
    pub hub_id: HubId,
}

/// Phase 2: give the reserved items to the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assign {
    /// The items the reserve reply named; the participant assigns exactly these or nothing.
    pub items: Vec<ItemId>,
}

/// Free what the transaction holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Why, for the participant's logs.
    pub reason: ReleaseReason,
}

/// Cancel the order's assignment: what the transaction was given returns to stock (the store) or
/// becomes free (delivery), unless it has left the participant's hands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {}

/// Why the coordinator releases a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The order will not be placed (a reservation failed or phase 1 timed out).
    Abort,
    /// Every item was held by others; the order retries with a new transaction.
    Retry,
    /// Phase 2 failed on the other side; undo this side's assignment.
    Compensate,
}

/// A reply from a participant, published to the coordinator's reply queue with the command's
/// message id as correlation id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Reply {
    /// Reply to a reserve.
    ReserveReply(ReserveReply),
    /// Reply to an assign.
    AssignReply(AssignReply),
    /// Reply to a release.
    ReleaseReply(ReleaseReply),
    /// Reply to a cancel.
    CancelReply(CancelReply),
}

impl Kind for Reply {
    fn kind(&self) -> &'static str {
        match self {
            Reply::ReserveReply(_) => "reserve_reply",
            Reply::AssignReply(_) => "assign_reply",
            Reply::ReleaseReply(_) => "release_reply",
            Reply::CancelReply(_) => "cancel_reply",
        }
    }
}

/// An answer that a caller expects to a command: the reply type bound to a command, read out of
/// the [`Reply`] of a reply envelope. [`Reply`] itself takes any answer.
pub trait Answer: Sized {
    /// The answer inside `reply`, or `reply` back if it answers another operation.
    fn from_reply(reply: Reply) -> Result<Self, Reply>;
}

impl Answer for Reply {
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        Ok(reply)
    }
}

impl Answer for ReserveReply {
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        match reply {
            Reply::ReserveReply(answer) => Ok(answer),
            other => Err(other),
        }
    }
}

impl Answer for AssignReply {
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        match reply {
            Reply::AssignReply(answer) => Ok(answer),
            other => Err(other),
        }
    }
}

impl Answer for ReleaseReply {
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        match reply {
            Reply::ReleaseReply(answer) => Ok(answer),
            other => Err(other),
        }
    }
}

impl Answer for CancelReply {
    fn from_reply(reply: Reply) -> Result<Self, Reply> {
        match reply {
            Reply::CancelReply(answer) => Ok(answer),
            other => Err(other),
        }
    }
}

/// Why a reply could not be read as the answer expected.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Not a reply envelope.
    #[error("unreadable reply: {0}")]
    Unreadable(#[from] crate::DecodeError),
    /// A reply to another operation.
    #[error("unexpected reply {0}")]
    Unexpected(&'static str),
}

/// Reads the reply envelope in `bytes` as the answer `A`.
pub fn decode_answer<A: Answer>(bytes: &[u8]) -> Result<A, AnswerError> {
    let envelope = crate::envelope::Envelope::<crate::envelope::TxnMessage<Reply>>::decode(bytes)?;
    A::from_reply(envelope.payload.message).map_err(|other| AnswerError::Unexpected(other.kind()))
}

/// The outcome of a reserve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReserveReply {
    /// The items are held for the transaction until `expires_at`.
    Reserved {
        /// One item per requested line, in line order.
        items: Vec<ItemId>,
        /// After this instant the reservation is void: it cannot be assigned and others may take
        /// the items.
        expires_at: DateTime<Utc>,
    },
    /// Every matching item is held by other transactions that have not finished: they may yet be
    /// released. Nothing was reserved; try again with a new transaction.
    Busy {
        /// The oldest reservations that hold what the request needs (at most
        /// [`MAX_HOLDERS`]): a coordinator releases those whose order can no longer be placed
        /// (its coordinator died in phase 1). Empty in a reply repeated from the barrier.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        holders: Vec<Holder>,
    },
    /// Final: nothing can be had. Nothing was reserved.
    Unavailable {
        /// Why.
        reason: Shortage,
        /// The foods that are short or unknown (the store); empty for delivery.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        food_ids: Vec<FoodId>,
    },
    /// The transaction was released before this reserve arrived (an empty rollback). Nothing was
    /// reserved, and nothing ever will be for this transaction.
    Aborted,
}

/// How many holders a busy reply names at most.
pub const MAX_HOLDERS: usize = 8;

/// A reservation that holds an item another transaction asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Holder {
    /// The transaction that holds it.
    pub txn_id: TxnId,
    /// Its order.
    pub order_id: OrderId,
    /// How long it has held it, by the participant's clock.
    pub held_ms: u64,
}

/// Why a reservation can never succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shortage {
    /// Fewer packets of a food than asked for are free or held at the hub: the rest are
    /// assigned to orders.
    FoodUnavailable,
    /// No such food.
    UnknownFood,
    /// Every agent of the hub is assigned to an order (or off duty).
    AgentUnavailable,
    /// No such hub.
    UnknownHub,
}

impl Shortage {
    /// The reason string used in replies, in the order API and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Shortage::FoodUnavailable => "food_unavailable",
            Shortage::UnknownFood => "unknown_food",
            Shortage::AgentUnavailable => "agent_unavailable",
            Shortage::UnknownHub => "unknown_hub",
        }
    }

    /// The shortage named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Shortage::FoodUnavailable,
            Shortage::UnknownFood,
            Shortage::AgentUnavailable,
            Shortage::UnknownHub,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// The outcome of an assign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AssignReply {
    /// The items now belong to the order.
    Assigned {
        /// The items assigned.
        items: Vec<ItemId>,
    },
    /// Final: the reservation is gone. Nothing was assigned.
    Refused {
        /// Why.
        reason: AssignRefusal,
    },
}

/// Why an assign was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignRefusal {
    /// The reservation expired (and may have gone to someone else).
    Expired,
    /// The transaction was released before the assign arrived.
    Released,
}

/// The outcome of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReleaseReply {
    /// Whatever the transaction held is free; `items` is empty for an empty rollback.
    Released {
        /// The items freed.
        items: Vec<ItemId>,
    },
}

/// The outcome of a cancel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CancelReply {
    /// The order's items are free again (back in stock, or an agent free for other orders).
    Cancelled {
        /// The items freed.
        items: Vec<ItemId>,
    },
    /// Final: nothing changed.
    Refused {
        /// Why.
        reason: CancelRefusal,
    },
}

/// Why a cancel was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelRefusal {
    /// The items have left the participant's hands: the agent picked the order up (or
    /// delivered it).
    PickedUp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, TxnEnvelope};
    use crate::ids::{OrderId, TxnId};

    #[test]
    fn reserve_command_wire_shape() {
        let env = TxnEnvelope::txn(
            OrderId::new(),
            TxnId::new(),
            StoreCommand::Reserve(PacketRequest {
                hub_id: HubId(3),
                lines: vec![PacketLine::one(FoodId(7))],
            }),
        );
        let json: serde_json::Value = serde_json::from_slice(&env.to_bytes().unwrap()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["kind"], "reserve");
        assert_eq!(json["body"]["lines"][0]["food_id"], 7);
        assert_eq!(json["body"]["lines"][0]["quantity"], 1);
        assert_eq!(json["body"]["hub_id"], 3);
        assert_eq!(json["order_id"], env.order_id().to_string());
        let back: TxnEnvelope<StoreCommand> = Envelope::decode(&env.to_bytes().unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn reply_round_trips() {
        let reply = Reply::ReserveReply(ReserveReply::Unavailable {
            reason: Shortage::FoodUnavailable,
            food_ids: vec![FoodId(4)],
        });
        let env = TxnEnvelope::txn(OrderId::new(), TxnId::new(), reply);
        let bytes = env.to_bytes().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["kind"], "reserve_reply");
        assert_eq!(json["body"]["outcome"], "unavailable");
        assert_eq!(json["body"]["reason"], "food_unavailable");
        assert_eq!(json["body"]["food_ids"][0], 4);
        let back: TxnEnvelope<Reply> = Envelope::decode(&bytes).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn an_answer_is_read_as_the_reply_its_command_expects() {
        let reply = Reply::AssignReply(AssignReply::Assigned {
            items: vec![ItemId(3)],
        });
        let bytes = TxnEnvelope::txn(OrderId::new(), TxnId::new(), reply.clone())
            .to_bytes()
            .unwrap();
        assert_eq!(
            decode_answer::<AssignReply>(&bytes).unwrap(),
            AssignReply::Assigned {
                items: vec![ItemId(3)]
            }
        );
        assert_eq!(decode_answer::<Reply>(&bytes).unwrap(), reply);
        let err = decode_answer::<ReserveReply>(&bytes).unwrap_err();
        assert!(
            matches!(err, AnswerError::Unexpected("assign_reply")),
            "{err}"
        );
        assert!(matches!(
            decode_answer::<ReleaseReply>(b"nonsense"),
            Err(AnswerError::Unreadable(_))
        ));
    }

    #[test]
    fn requests_of_the_one_item_api_still_read() {
        let request: PacketRequest =
            serde_json::from_str(r#"{"lines": [{"food_id": 7}]}"#).unwrap();
        assert_eq!(request.hub_id, HubId::DEFAULT);
        assert_eq!(request.lines, vec![PacketLine::one(FoodId(7))]);
        let agent: AgentRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(agent.hub_id, HubId::DEFAULT);
        for shortage in [
            Shortage::FoodUnavailable,
            Shortage::UnknownFood,
            Shortage::AgentUnavailable,
            Shortage::UnknownHub,
        ] {
            assert_eq!(Shortage::from_name(shortage.as_str()), Some(shortage));
        }
    }

    #[test]
    fn version_is_checked_first() {
        let err = TxnEnvelope::<StoreCommand>::decode(br#"{"v": 2, "whatever": true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unsupported protocol version 2"), "{err}");
        let err = TxnEnvelope::<StoreCommand>::decode(br#"{"kind": "reserve"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no protocol version"), "{err}");
        let err = TxnEnvelope::<StoreCommand>::decode(b"\xff garbage")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a JSON object"), "{err}");
    }

    #[test]
    fn unknown_kind_is_invalid() {
        let raw = format!(
            r#"{{"v":1,"message_id":"{m}","sent_at":"2026-01-01T00:00:00Z","order_id":"{m}","txn_id":"{m}","kind":"launch","body":{{}}}}"#,
            m = uuid::Uuid::now_v7()
        );
        let err = TxnEnvelope::<StoreCommand>::decode(raw.as_bytes()).unwrap_err();
        assert!(matches!(err, crate::DecodeError::Invalid(_)), "{err}");
    }
}
