//! The store service: foods and their individual packets.
//!
//! It takes part in every order transaction: it reserves one available packet of the ordered
//! food (phase 1), assigns it to the order (phase 2), or releases it. The transaction logic is
//! the shared [`participant`] crate; this crate says how packets are picked and serves the admin
//! HTTP API.
//!
//! # Layout
//! - [`config`]: settings (flags and environment variables).
//! - [`startup`]: [`Application`], which a test can start on port 0.
//! - [`inventory`]: how a reservation picks a packet.
//! - [`http`]: the HTTP API (`/foods`, `/packets`).
//! - [`repo`]: the SQL of the HTTP API.

pub mod config;
pub mod http;
pub mod inventory;
pub mod repo;
pub mod startup;

pub use config::Config;
pub use startup::Application;

/// The store's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/store");
