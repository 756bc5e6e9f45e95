//! System tests: the real service binaries against a real RabbitMQ and PostgreSQL. Each test
//! has its own vhost and databases (see `helpers`), so tests run in parallel and leave nothing
//! behind.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test binary exports nothing; `pub` marks what the test modules share.
#![allow(unreachable_pub)]

mod helpers;

mod admission;
mod api;
mod auth;
mod barrier;
mod clocks;
mod console;
mod contention;
mod crashes;
mod dashboards;
mod delivery_day;
mod deployment;
mod events;
mod expiry;
mod hostile_input;
mod live;
mod many_orders;
mod operations;
mod operator;
mod orders;
mod outages;
mod partitions;
mod poison;
mod recovery;
mod redelivery;
mod retention;
mod run_script;
mod settings;
mod soak;
mod startup;
mod tls;
mod traces;
