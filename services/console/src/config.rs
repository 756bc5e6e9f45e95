//! Settings of the console.

use std::path::PathBuf;
use std::time::Duration;

use service_kit::config::{
    BrokerArgs, IdentityArgs, LogArgs, SettingsError, parse_positive_duration, secret_from_file,
};

/// The operations console: every hub's day as it happens, and the customer's page.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "console", version, about)]
pub struct Config {
    /// HTTP address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "CONSOLE_HTTP_ADDR", default_value = "127.0.0.1:8090")]
    pub http_addr: String,

    /// The order service.
    #[arg(long, env = "ORDER_URL", default_value = "http://127.0.0.1:8080")]
    pub order_url: String,

    /// The store service.
    #[arg(long, env = "STORE_URL", default_value = "http://127.0.0.1:8081")]
    pub store_url: String,

    /// The delivery service.
    #[arg(long, env = "DELIVERY_URL", default_value = "http://127.0.0.1:8082")]
    pub delivery_url: String,

    /// The console's own operator token, for reading the services (a file holding it): the
    /// console reads them once for all its pages. Or give `AUTH_SIGNING_KEY_FILE`.
    #[arg(long, env = "CONSOLE_TOKEN_FILE")]
    pub console_token_file: Option<PathBuf>,

    /// Development only: the identity provider's private key. The console then mints its own
    /// operator tokens and offers sign-in without a token on its pages (`scripts/run` sets it
    /// to the development key). Never in production.
    #[arg(long, env = "AUTH_SIGNING_KEY_FILE")]
    pub auth_signing_key_file: Option<PathBuf>,

    /// How often the console reads the services when no event comes (an event makes it read
    /// at once, at most every `CONSOLE_MIN_REFRESH`).
    #[arg(long, env = "CONSOLE_REFRESH", default_value = "2s", value_parser = parse_positive_duration)]
    pub refresh: Duration,

    /// The shortest time between two reads of the services, however many events come.
    #[arg(long, env = "CONSOLE_MIN_REFRESH", default_value = "250ms", value_parser = parse_positive_duration)]
    pub min_refresh: Duration,

    /// An order not final after this long is listed as stuck (with abort and retry).
    #[arg(long, env = "CONSOLE_STUCK_AFTER", default_value = "10s", value_parser = parse_positive_duration)]
    pub stuck_after: Duration,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub identity: IdentityArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

impl Config {
    /// Fills in `AMQP_URL` from `AMQP_URL_FILE`, if given.
    pub fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        if let Some(url) = secret_from_file("AMQP_URL")? {
            self.broker.amqp_url = url;
        }
        Ok(())
    }
}
