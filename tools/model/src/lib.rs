//! The order transaction as a model, checked with [stateright](https://docs.rs/stateright).
//!
//! The model runs the real pure code of both sides: the order machine of `services/order`
//! ([`order_machine::apply`] and its rules) and the participant machine of
//! `shared/participant` ([`participant_machine::Items`]). Around them it puts what the world
//! may do, in every order the checker can find:
//!
//! - customers send orders (two or three, competing for one or two packets and agents at one
//!   hub), and cancel placed ones; riders report pick-ups and deliveries; an operator aborts an
//!   undecided order; a customer told nothing sends the order again with its idempotency key;
//! - the network delivers messages in any order, loses replies (they are published without
//!   confirms) and delivers any message twice;
//! - a coordinator dies at any step with what it held in memory; a driver stalls past its lease
//!   and another takes the order over while the first still runs; a write of the order commits
//!   but its acknowledgement is lost;
//! - phase 1's deadline passes, phase 2 gives up, reservations expire and the sweep frees them,
//!   at any moment.
//!
//! The driver of `services/order` is async code; [`driver`] restates what it does at each step
//! with the machine's rules (which commands it sends, what it records, what it tells the
//! customer). The properties are in [`properties`]; `cargo run -p model --release -- --help`
//! runs a deeper check than the tests do.

pub mod answers;
pub mod driver;
pub mod properties;
pub mod replay;
pub mod state;
mod table;
mod world;

pub use state::State;
pub use world::Action;

use state::Faults;

/// The size of a model: what it holds and which faults may happen how often.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many orders are sent.
    pub orders: usize,
    /// The store's packets (one food, one hub).
    pub packets: i64,
    /// Delivery's agents.
    pub agents: i64,
    /// Packets per order.
    pub packets_per_order: u32,
    /// Phase 1's attempts per order (the deadline, in the model's terms).
    pub max_attempts: i32,
    /// The faults allowed.
    pub faults: Faults,
    /// Riders report pick-ups and deliveries. A rider may report a pick-up as soon as delivery
    /// has assigned the agent, before the order is placed: delivery must refuse it until it has
    /// seen the order's `order.placed` event.
    pub riders: bool,
    /// Customers cancel placed orders.
    pub cancels: bool,
    /// Phase 1's deadline passes, and phase 2 gives up, whenever the checker chooses. Without
    /// them (participants always answer in time), every order must end through lost replies
    /// too: nothing may wait for an answer that will never come.
    pub deadlines: bool,
    /// Phase 1 may outlast the response budget (the order is then recorded `reserving`), and an
    /// operator may abort such an order.
    pub operator: bool,
    /// A driver in phase 1 releases a reservation in its way whose order the machine's
    /// `is_orphan` says can never assign it. At any moment: the service waits until the holder
    /// is older than a whole phase 1, which the model does not require, so that every stall and
    /// clock is covered.
    pub orphans: bool,
    /// A customer told nothing final (its coordinator died, or the first record's
    /// acknowledgement was lost) sends the order again with its idempotency key, once.
    pub replays: bool,
    /// A replayed request looks its key up before phase 1, and answers with the order recorded
    /// under it. Without it, the replay runs a phase 1 of its own first.
    pub key_lookup: bool,
}

impl Config {
    /// No faults, nothing after placement: the plain protocol.
    pub fn plain(orders: usize) -> Self {
        Self {
            orders,
            packets: 1,
            agents: 1,
            packets_per_order: 1,
            max_attempts: 2,
            faults: Faults::default(),
            riders: false,
            cancels: false,
            operator: false,
            deadlines: true,
            orphans: true,
            replays: false,
            key_lookup: true,
        }
    }
}

/// The model: a [`Config`] to check.
#[derive(Clone, Debug)]
pub struct OrderModel {
    /// Its size.
    pub config: Config,
}

impl OrderModel {
    /// The model of `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}
