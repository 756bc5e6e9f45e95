//! Settings of the delivery service.

use participant::ParticipantServiceArgs;

/// The delivery service: delivery agents.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "delivery-service", version, about)]
pub struct Config {
    /// The delivery database; defaults to the `delivery_service` database on `DATABASE_URL`.
    #[arg(long, env = "DELIVERY_DATABASE_URL")]
    pub delivery_database_url: Option<String>,

    /// HTTP address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "DELIVERY_HTTP_ADDR", default_value = "127.0.0.1:8082")]
    pub http_addr: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ParticipantServiceArgs,
}

/// The database used when `DELIVERY_DATABASE_URL` is not set.
pub const DEFAULT_DATABASE: &str = "delivery_service";
