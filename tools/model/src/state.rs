//! What the model's world holds at one moment: the two participants' items (the participant
//! machine), each order's record and drivers (the order machine's [`Order`] and what a driver
//! keeps in memory), the messages in flight, and the faults still allowed.

use chrono::{DateTime, Utc};
use order_machine::rules::{AssignAnswer, CancelAnswer, Driving, Report, Reservation};
use order_machine::{NotPlacedReason, Order, OrderState};
use participant_machine::{Command, Items};
use protocol::command::PacketLine;
use protocol::event::OrderEventKind;
use protocol::ids::{FoodId, HubId, OrderId, TxnId};
use protocol::sides::Sides;
use protocol::topology::Participant;
use uuid::Uuid;

/// Every time the machines are given: the model has no clock, only events that say a time
/// passed (a deadline, an expiry), so one instant serves for all.
pub const AT: DateTime<Utc> = DateTime::<Utc>::UNIX_EPOCH;

/// The world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// The store's packets.
    pub store: Items,
    /// Delivery's agents.
    pub delivery: Items,
    /// The orders, by their place.
    pub orders: Vec<Slot>,
    /// Messages in flight, sorted (a multiset: the network delivers them in any order). A
    /// participant's reply reaches the coordinator as the participant applies the command (or
    /// is lost then): what else may happen before a reply arrives may as well happen before its
    /// command arrives, with the same outcome for the driver, and the checker has far fewer
    /// states to see.
    pub net: Vec<Msg>,
    /// The faults still allowed.
    pub faults: Faults,
}

impl State {
    /// The participant `side`.
    pub fn side(&self, side: Participant) -> &Items {
        match side {
            Participant::Store => &self.store,
            Participant::Delivery => &self.delivery,
        }
    }

    /// The participant `side`, to change.
    pub fn side_mut(&mut self, side: Participant) -> &mut Items {
        match side {
            Participant::Store => &mut self.store,
            Participant::Delivery => &mut self.delivery,
        }
    }

    /// Sends `msg`.
    pub fn send(&mut self, msg: Msg) {
        let at = self.net.partition_point(|m| *m <= msg);
        self.net.insert(at, msg);
    }

    /// Takes one copy of `msg` off the network (it arrives, or is lost); `None` if none is on it.
    pub fn take(&mut self, msg: &Msg) -> Option<()> {
        let at = self.net.iter().position(|m| m == msg)?;
        self.net.remove(at);
        Some(())
    }

    /// The place of the order `id`.
    pub fn slot_of(&self, id: OrderId) -> Option<usize> {
        (0..self.orders.len()).find(|o| order_id(*o) == id)
    }
}

/// How many faults of each kind may still happen (the checker explores every place they can
/// happen, so each is a small number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    /// A coordinator dies with what it held in memory.
    pub crashes: u8,
    /// A reply is lost (replies are published without confirms).
    pub lost_replies: u8,
    /// A message is delivered twice (redelivery after a lost ack, a duplicate publish).
    pub duplicates: u8,
    /// A live driver stalls past its lease and another takes the order over.
    pub stalls: u8,
    /// A write of the order commits but its acknowledgement is lost, and the retries fail.
    pub lost_acks: u8,
    /// A command is lost before it arrives (commands sent as transient messages, lost with a
    /// broker node; the driver asks again after its reply timeout).
    pub lost_commands: u8,
}

impl Faults {
    /// One fault of each kind.
    pub fn each_once() -> Self {
        Self {
            crashes: 1,
            lost_replies: 1,
            duplicates: 1,
            stalls: 1,
            lost_acks: 1,
            lost_commands: 1,
        }
    }
}

/// One order: its client, its record and its drivers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The customer who sent it.
    pub client: Client,
    /// The order as recorded in the order database, with the token of its lease.
    pub record: Option<Record>,
    /// The drivers that think they drive it (a stalled one and the one that took over).
    pub drivers: Vec<Driver>,
    /// Lease tokens handed out so far.
    pub tokens: u8,
    /// Transactions made so far.
    pub txns: u8,
    /// Ghost (what the properties look at, not what any process knows): a participant refused a
    /// reserve of this order for a shortage while enough items were free or only reserved.
    pub refused_while_free: bool,
    /// The customer sent the order again with its idempotency key.
    pub replayed: bool,
    /// Ghost: a replay of an order already recorded sent a reserve (it holds items it can never
    /// use, since its key is taken).
    pub replay_reserved: bool,
}

/// A recorded order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// As recorded.
    pub order: Order,
    /// The lease token its driver presents; none once nobody drives it.
    pub lease: Option<u8>,
    /// The order events written with its transitions (the outbox), in order.
    pub events: Vec<OrderEventKind>,
}

/// The customer of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// Has not sent it.
    Idle,
    /// Waits for the answer.
    Waiting,
    /// Was told the order's end.
    Answered(Answer),
    /// Was told nothing final (its coordinator died, or it was told to ask later).
    Unanswered,
}

/// A final answer to `POST /orders`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    /// `201 placed`.
    Placed,
    /// `409 not_placed`.
    NotPlaced(NotPlacedReason),
}

/// A driver: what a coordinator holds in memory for an order it drives. Lost in a crash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Driver {
    /// The lease token it presents with every write.
    pub token: u8,
    /// Who it drives for.
    pub driving: Driving,
    /// The order as it knows it.
    pub order: Order,
    /// A new order not recorded yet (presumed abort): its first record is an insert.
    pub unrecorded: bool,
    /// Whether phase 1's deadline has passed.
    pub deadline_passed: bool,
    /// What it waits for.
    pub phase: Phase,
    /// Whether the customer's request waits on it (the driver that took the request).
    pub request: bool,
    /// The fault of a lost acknowledgement: its first record of a commit decision commits, but
    /// the driver sees an error.
    pub ack_lost: bool,
    /// Ghost: the driver of a replayed request whose order was recorded before it began.
    pub replays_recorded: bool,
}

/// What a driver waits for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Nothing: its next step is the machine's `next_step`.
    Start,
    /// Phase 1's answers.
    Reserving(Sides<Option<Reservation>>),
    /// Phase 2's answers; `gave_up` once the reservations' expiry and the grace have passed.
    Assigning {
        /// The answers so far.
        answers: Sides<Option<AssignAnswer>>,
        /// Whether it stopped asking.
        gave_up: bool,
    },
    /// Compensation's confirmations.
    Compensating(Sides<bool>),
    /// Cancellation: delivery's answer, then the store's.
    Cancelling {
        /// Delivery's answer.
        delivery: Option<CancelAnswer>,
        /// Whether the store answered.
        store: bool,
    },
}

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// A coordinator's command to a participant.
    Command {
        /// To whom.
        to: Participant,
        /// For which order (its place).
        order: usize,
        /// What.
        command: Command,
    },
    /// Delivery's report of a pick-up or a delivery (durable: written to its outbox first).
    Report {
        /// Which order.
        order: usize,
        /// What happened.
        report: Report,
    },
    /// The `order.placed` event, on its way to delivery (durable: written to the coordinator's
    /// outbox with the record, and published at least once).
    Placed {
        /// Which order.
        order: usize,
    },
}

/// The id of the order at place `slot`.
pub fn order_id(slot: usize) -> OrderId {
    OrderId(Uuid::from_u128(slot as u128 + 1))
}

/// The `n`th transaction of the order at place `slot`.
pub fn txn_id(slot: usize, n: u8) -> TxnId {
    TxnId(Uuid::from_u128(((slot as u128 + 1) << 8) | u128::from(n)))
}

/// A new order as the coordinator drafts it: `packets` packets of one food at hub 1.
pub fn draft(slot: usize, packets: u32) -> Order {
    Order {
        id: order_id(slot),
        customer_id: format!("c-{slot}"),
        hub_id: HubId(1),
        lines: vec![PacketLine {
            food_id: FoodId(1),
            quantity: packets,
        }],
        state: OrderState::Reserving,
        reason: None,
        txn_id: txn_id(slot, 0),
        attempt: 0,
        packet_ids: Vec::new(),
        agent_id: None,
        reserved_until: None,
        deadline: AT,
        created_at: AT,
        decided_at: None,
        finished_at: None,
        traceparent: None,
    }
}
