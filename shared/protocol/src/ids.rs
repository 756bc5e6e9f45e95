//! Identifier newtypes. Each id has its own type so that a packet id can never be passed where an
//! agent id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random id. Order ids are time-ordered (UUIDv7) so that recent rows sit
            /// together in the primary-key index.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

macro_rules! int_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// An order, as the customer knows it.
    OrderId
);
uuid_id!(
    /// One attempt of the distributed transaction of an order. Participants key their
    /// idempotency records on it.
    TxnId
);
uuid_id!(
    /// A single message; also the correlation id of a command and its reply.
    MessageId
);
uuid_id!(
    /// An order event; consumers de-duplicate on it.
    EventId
);
uuid_id!(
    /// A running coordinator process; names its reply queue and owns leases on orders.
    InstanceId
);

int_id!(
    /// A food on the store's menu.
    FoodId
);
int_id!(
    /// A dark store (hub): its stock of packets and its delivery agents. Hub ids are created by
    /// the store; delivery takes them as given.
    HubId
);

impl HubId {
    /// The hub that the migrations create in both services, used when a request names none.
    pub const DEFAULT: HubId = HubId(1);
}

impl Default for HubId {
    fn default() -> Self {
        Self::DEFAULT
    }
}
int_id!(
    /// One physical packet of a food, owned by the store.
    PacketId
);
int_id!(
    /// A delivery agent, owned by the delivery service.
    AgentId
);
int_id!(
    /// An item held by a participant: a packet in the store, an agent in delivery. Replies carry
    /// item ids without knowing which participant they come from; each side converts at its edge.
    ItemId
);

impl From<PacketId> for ItemId {
    fn from(id: PacketId) -> Self {
        Self(id.0)
    }
}

impl From<AgentId> for ItemId {
    fn from(id: AgentId) -> Self {
        Self(id.0)
    }
}
