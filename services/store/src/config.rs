//! Settings of the store service.

use participant::ParticipantServiceArgs;

/// The store service: foods and their packets.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "store-service", version, about)]
pub struct Config {
    /// The store's database; defaults to the `store_service` database on `DATABASE_URL`.
    #[arg(long, env = "STORE_DATABASE_URL")]
    pub store_database_url: Option<String>,

    /// HTTP address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "STORE_HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: String,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub service: ParticipantServiceArgs,
}

/// The database used when `STORE_DATABASE_URL` is not set.
pub const DEFAULT_DATABASE: &str = "store_service";
