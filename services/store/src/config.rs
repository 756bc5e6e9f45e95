//! Settings of the store service.

use participant::ParticipantArgs;
use service_kit::config::{BrokerArgs, DatabaseArgs, FaultArgs, LogArgs};

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

    /// When set, every request that changes something (creating foods, packets, agents) needs
    /// `Authorization: Bearer <ADMIN_TOKEN>`; reads stay open.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub participant: ParticipantArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DatabaseArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub fault: FaultArgs,
}

/// The database used when `STORE_DATABASE_URL` is not set.
pub const DEFAULT_DATABASE: &str = "store_service";
