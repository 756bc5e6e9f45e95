//! Settings of the order service.

use std::time::Duration;

use service_kit::config::{ServiceArgs, parse_duration, parse_lease, parse_positive_duration};

use crate::coordinator::CoordinatorSettings;

/// The order service: takes orders and coordinates their transactions.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "order-service", version, about)]
pub struct Config {
    /// The order database; defaults to the `order_service` database on `DATABASE_URL`.
    /// It may hold a password: give it in the environment, or in a file named by
    /// `ORDER_DATABASE_URL_FILE`.
    #[arg(long, env = "ORDER_DATABASE_URL")]
    pub order_database_url: Option<String>,

    /// HTTP address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "ORDER_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,

    /// Phase 1 (both reservations) must be decided within this time, or the order is not placed
    /// with reason `timeout`.
    #[arg(long, env = "ORDER_DEADLINE", default_value = "5s", value_parser = parse_positive_duration)]
    pub order_deadline: Duration,

    /// How long `POST /orders` waits for the final answer before answering `202 pending`.
    #[arg(long, env = "RESPONSE_BUDGET", default_value = "6s", value_parser = parse_positive_duration)]
    pub response_budget: Duration,

    /// How long a phase-2 or compensation request waits for its reply before it is sent again.
    #[arg(long, env = "REPLY_TIMEOUT", default_value = "2s", value_parser = parse_positive_duration)]
    pub reply_timeout: Duration,

    /// How long an order's driver holds its lease beyond its last renewal. A coordinator that
    /// dies leaves its orders to the others (or to itself after a restart) this long after.
    #[arg(long, env = "LEASE", default_value = "5s", value_parser = parse_lease)]
    pub lease: Duration,

    /// How long after the reservations expire phase 2 keeps asking before compensating.
    #[arg(long, env = "PHASE2_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub phase2_grace: Duration,

    /// How often the recovery sweep looks for orders whose driver stopped.
    #[arg(long, env = "RECOVERY_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub recovery_interval: Duration,

    /// How many taken-over orders one coordinator drives at once. Recovery claims no more than
    /// it has room for, so that claimed orders do not wait for a driver while their lease runs
    /// out (and get claimed again).
    #[arg(long, env = "RECOVERY_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub recovery_concurrency: u32,

    /// How long deadline timers are collected before being published as one message.
    #[arg(long, env = "TIMER_WINDOW", default_value = "100ms", value_parser = parse_duration)]
    pub timer_window: Duration,

    /// New orders this coordinator drives at once; past it `POST /orders` answers `503` with
    /// `Retry-After` at once.
    #[arg(long, env = "MAX_ORDERS_IN_FLIGHT", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_orders_in_flight: u32,

    /// Orders per second one customer may place through this coordinator (`0`: no limit);
    /// past it, `429` with `Retry-After`.
    #[arg(long, env = "CUSTOMER_ORDER_RATE", default_value_t = 5.0)]
    pub customer_order_rate: f64,

    /// How many orders a customer may place at once before the rate applies.
    #[arg(long, env = "CUSTOMER_ORDER_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub customer_order_burst: u32,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ServiceArgs,
}

/// The database used when `ORDER_DATABASE_URL` is not set.
pub const DEFAULT_DATABASE: &str = "order_service";

impl Config {
    /// Fills in the secret settings given as files (`ORDER_DATABASE_URL_FILE`, `AMQP_URL_FILE`,
    /// `DATABASE_URL_FILE`).
    pub fn read_secret_files(&mut self) -> Result<(), service_kit::config::SettingsError> {
        if let Some(url) = service_kit::config::secret_from_file("ORDER_DATABASE_URL")? {
            self.order_database_url = Some(url);
        }
        self.common.read_secret_files()
    }

    /// Settings that are allowed but probably not what was meant, each said in a sentence.
    pub fn doubts(&self) -> Vec<String> {
        let mut doubts = Vec::new();
        if self.response_budget <= self.order_deadline {
            doubts.push(format!(
                "RESPONSE_BUDGET ({}) does not exceed ORDER_DEADLINE ({}): orders still in phase 1 \
                 are answered 202 pending",
                humantime::format_duration(self.response_budget),
                humantime::format_duration(self.order_deadline),
            ));
        }
        doubts
    }

    /// The coordinator's settings.
    pub fn coordinator(&self) -> CoordinatorSettings {
        CoordinatorSettings {
            order_deadline: self.order_deadline,
            response_budget: self.response_budget,
            reply_timeout: self.reply_timeout,
            lease: self.lease,
            phase2_grace: self.phase2_grace,
        }
    }
}
