//! The participant side of the order transaction, shared by the store (packets) and delivery
//! (agents).
//!
//! A participant owns items. For a transaction it can **reserve** items (hold them until an
//! expiry time), **assign** them to the order, or **release** them. The service-specific part is
//! only how to pick an item for a reservation and why none could be picked ([`Inventory`]);
//! everything else is the same
//! for packets and agents and lives here:
//!
//! - the **barrier** ([`barrier`]): each (transaction, operation) is applied at most once, in the
//!   same database statement (or transaction) as its effect, and its reply is recorded there, so
//!   a redelivered command changes nothing and gets the same reply. A release records refusals
//!   for the reserve and assign of its transaction first, so a reserve that arrives after its
//!   release cannot hold an item for a dead transaction.
//! - **commands** ([`commands`]): consume the reserve, assign and release queues; apply; reply to
//!   the coordinator; ack only after the commit.
//! - **expiry** ([`expiry`]): reservation timers through a TTL wait queue, and a periodic sweep
//!   for timers that were lost. The `reserved_until` column is the truth either way: an expired
//!   reservation can never be assigned and others may take the item at once.
//!
//! # Layout
//! Each module uses only those below it:
//! - [`app`]: the start-up and run loop of a participant service.
//! - [`runtime`]: wires the consumers and the sweep for a service; the command-line settings.
//! - [`commands`], [`expiry`]: as above.
//! - [`holders`]: the reservations a busy reply names, read at most once per half second for
//!   each kind of request.
//! - [`context`]: what the consumers and the sweep share (settings, pool, statements, the
//!   group-commit writer and its write).
//! - `attempts`: attempts at messages that may have crashed the process (handled alone,
//!   counted, parked after a few).
//! - [`barrier`]: all the SQL on the barrier table (`txn_barrier`), the recorded replies, and
//!   the command statements ([`Statements`]) assembled from the item work and the barrier row.
//! - [`machine`]: the item life and the barrier's rules as a value, without I/O (what the model
//!   checker runs).
//! - [`inventory`]: the [`Inventory`] trait and the table-generic SQL on the items table
//!   ([`ItemTable`]).
//! - [`metrics`]: the names and descriptions of the metrics a participant records.

pub mod app;
mod attempts;
pub mod barrier;
pub mod commands;
pub mod context;
pub mod expiry;
pub mod holders;
pub mod inventory;
pub mod metrics;

/// The item life and the barrier's rules as a value (its own crate, so that the model checker
/// builds without a database driver).
pub use participant_machine as machine;
pub mod runtime;

pub use app::{Identity, ParticipantApp, ParticipantServiceArgs};
pub use barrier::Statements;
pub use context::ParticipantSettings;
pub use inventory::{Inventory, ItemTable, Key, ReserveError};
pub use runtime::{ParticipantArgs, start};
