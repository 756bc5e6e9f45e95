//! The delivery service: delivery agents.
//!
//! It takes part in every order transaction: it reserves one available agent (phase 1), assigns
//! it to the order (phase 2), or releases it. The transaction logic is the shared [`participant`]
//! crate; this crate says how agents are picked and serves the admin HTTP API.
//!
//! # Layout
//! - [`config`]: settings (flags and environment variables).
//! - [`startup`]: [`Application`], which a test can start on port 0.
//! - [`inventory`]: how a reservation picks an agent.
//! - [`http`]: the HTTP API (`/agents`, `/deliveries`).
//! - [`placed`]: the consumer of `order.placed` events, without which no agent leaves with an
//!   order.
//! - [`repo`]: the SQL of the HTTP API.

pub mod config;
pub mod http;
pub mod inventory;
pub mod placed;
pub mod repo;
pub mod startup;

pub use config::Config;
pub use startup::Application;

/// The delivery service's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/delivery");
