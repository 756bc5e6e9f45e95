//! What every service of the system shares, so that whoever knows one service knows all three.
//!
//! Library code here never reads the environment: `main` parses the command line (with `clap`,
//! whose `env` attributes make every setting an environment variable too) and passes typed
//! settings down.
//!
//! # Layout
//! - [`app`]: start-up (database, broker, listener) and the serve-then-drain run loop.
//! - [`config`]: command-line/environment settings shared by the services.
//! - [`db`]: create the service's database if missing, migrate it, pool it; classify errors.
//! - [`primary`]: among several database servers, the one that takes writes, followed when it
//!   moves.
//! - [`http`]: the JSON error type, extractors that answer bad input in JSON, health routes, serving.
//! - [`metrics`]: the Prometheus recorder behind `GET /metrics`.
//! - [`telemetry`]: logging set-up.
//! - [`shutdown`]: the signal that starts a graceful shutdown.
//! - [`group_commit`]: single-statement writes that arrive together share one transaction.
//! - [`idempotency`]: calls that create, made safe to repeat with an `Idempotency-Key`.
//! - [`auth`]: who is calling (the [`auth::Caller`] extractor) and how tokens are verified.
//! - [`fault`]: test-only crash points, switched on by an environment variable.

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod fault;
pub mod group_commit;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod outbox;
pub mod primary;
pub mod shutdown;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
