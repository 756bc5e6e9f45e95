//! The operations console: each dark store's day as it happens, for the operator who keeps it
//! open all day, and a small customer page that places an order and watches it move.
//!
//! It owns no data. It reads the three services' APIs (with a token of its own) and counts the
//! `order.events` it hears on one queue of its own, and hands every open page the same picture.
//!
//! # Layout
//! - [`tally`]: the events counted per hub and second (outcomes, refusals by reason, rates).
//! - [`services`]: the services' APIs as the console reads them.
//! - [`snapshot`]: one picture of the day, read on each event (at most every
//!   `CONSOLE_MIN_REFRESH`) and every `CONSOLE_REFRESH`, shared by every page.
//! - [`http`]: the pages, the live picture (server-sent events), the operator's actions (abort,
//!   retry, dead-letter replay with its dry run), and the customer page's calls.
//! - [`config`], [`startup`]: settings, and [`Application`].

pub mod config;
pub mod http;
pub mod services;
pub mod snapshot;
pub mod startup;
pub mod tally;

pub use config::Config;
pub use startup::Application;
