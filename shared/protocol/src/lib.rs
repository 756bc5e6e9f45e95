//! The wire protocol of the order transaction, defined once and shared by every service.
//!
//! # Glossary
//! These words are used everywhere (types, columns, queue names, logs) with one meaning each:
//!
//! - **order**: what a customer asks for through `POST /orders`; it ends **placed** or **not placed**.
//! - **coordinator**: the order service, which runs the transaction for an order.
//! - **participant**: a service that owns items and takes part in the transaction: **store**
//!   (food *packets*) and **delivery** (delivery *agents*).
//! - **transaction** (`TxnId`): one attempt at reserving the items of an order. An order may make
//!   several attempts when items are only held by others for the moment.
//! - **reserve** (phase 1): hold an item for a transaction until an expiry time.
//! - **assign** (phase 2): give the item held by the transaction to the order, for good.
//! - **release**: free whatever the transaction holds (a reservation, or an assignment being
//!   compensated). A release that arrives first blocks every later reserve and assign of the
//!   transaction.
//! - **expiry**: a reservation that was neither assigned nor released by its expiry time is free
//!   again; the expiry time in the participant's database is the truth.
//! - **batch**: several commands (or replies) of concurrent orders in one message ([`batch`]);
//!   writes that share a database transaction are a *group* (group commit), and timer ids
//!   published together a *timer window*.
//!
//! # Layout
//! - [`ids`]: newtypes for every identifier.
//! - [`envelope`]: the versioned envelope that wraps every message.
//! - [`batch`]: several commands (or replies) in one message.
//! - [`command`]: commands from the coordinator to the participants, and their replies.
//! - [`timer`]: the messages that travel through the TTL wait queues.
//! - [`event`]: the order events published for other systems.
//! - [`progress`]: delivery's reports of pick-up and delivery, to the coordinator.
//! - [`headers`]: AMQP header names.
//! - [`topology`]: every exchange, queue and routing key, spelled once.
//! - [`sides`]: one value per participant ([`sides::Sides`]).
//! - [`trace`]: W3C trace context for headers.

pub mod batch;
pub mod command;
pub mod envelope;
pub mod event;
pub mod headers;
pub mod ids;
pub mod progress;
pub mod sides;
pub mod timer;
pub mod topology;
pub mod trace;

pub use envelope::{DecodeError, Envelope, PROTOCOL_VERSION};
