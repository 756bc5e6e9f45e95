//! The order service: takes `POST /orders` and coordinates each order's distributed transaction
//! with the store and delivery.
//!
//! # Layout
//! - [`config`]: settings (flags and environment variables).
//! - [`startup`]: [`Application`], which a test can start on port 0.
//! - [`state`]: the order state machine (one exhaustive transition function).
//! - [`coordinator`]: drives an order through phase 1, the commit decision, phase 2 and
//!   compensation.
//! - [`recovery`]: the deadline-timer consumer and the sweep that finish orders whose driver
//!   stopped.
//! - [`outbox`]: the relay that publishes order events written with final states.
//! - [`http`]: the order API.
//! - [`repo`]: all SQL.

pub mod config;
pub mod coordinator;
pub mod http;
pub mod outbox;
pub mod recovery;
pub mod repo;
pub mod startup;
pub mod state;

pub use config::Config;
pub use startup::Application;

/// The order service's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/order");
