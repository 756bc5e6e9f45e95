//! The order service: takes `POST /orders` and coordinates each order's distributed transaction
//! with the store and delivery.
//!
//! # Layout
//! Follow one order: [`http`] → [`placement`] → [`driver`] (asking [`machine::rules`] what to
//! do, [`participants`] to do it, [`machine::transition`] what it comes to) → [`coordinator`]'s
//! `record` → [`repo`]'s `Orders::record` (the one write of a transition) and [`outbox`].
//!
//! - [`machine`]: the order as a value, its events and the one transition function, and the
//!   effects of each transition (event, lease, timer); its [`machine::rules`] decide each next
//!   step. Pure: no I/O, no clock.
//! - [`driver`]: carries out the machine's steps until the order is final.
//! - [`participants`]: the typed client of the store and delivery.
//! - [`phase1`]: phase 1 as a driver runs it, and the request that waits for a new order.
//! - [`coordinator`]: what drivers share; recording an event, keeping a lease.
//! - [`placement`]: `POST /orders`: record (or find by idempotency key), drive, answer in time.
//! - [`cancellation`]: `POST /orders/{id}/cancel`: record the intent, drive, answer in time.
//! - [`progress`]: the consumer of delivery's reports (picked up, delivered).
//! - [`orphans`]: releasing reservations in an order's way whose orders can never be placed.
//! - [`recovery`]: the deadline-timer consumer and the sweep that take over orders whose
//!   driver stopped.
//! - [`live`]: one queue of every order event per coordinator, which wakes the streams of
//!   `GET /orders/{id}/events`.
//! - [`outbox`]: the events written with final orders, and the relay that publishes them.
//! - [`repo`]: the order table.
//! - [`metrics`]: the names and descriptions of the service's metrics; the oldest-order gauge.
//! - [`http`]: the order API.
//! - [`operator`]: the operator API (`/admin/...`): unfinished orders, drive one now, abort one
//!   that is undecided.
//! - [`config`], [`startup`]: settings, and [`Application`], which a test can start on port 0.

pub mod admission;
pub mod cancellation;
pub mod config;
pub mod coordinator;
pub mod driver;
pub mod http;
pub mod live;
/// The order machine (its own crate, so that the model checker builds without the service).
pub use order_machine as machine;
pub mod metrics;
pub mod operator;
pub mod orphans;
pub mod outbox;
pub mod participants;
pub mod phase1;
pub mod placement;
pub mod progress;
pub mod recovery;
pub mod repo;
pub mod startup;

pub use config::Config;
pub use startup::Application;

/// The order service's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");
