//! Settings of the delivery service.

use participant::ParticipantServiceArgs;

/// The delivery service: delivery agents.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "delivery-service", version, about)]
pub struct Config {
    /// The delivery database; defaults to the `delivery_service` database on `DATABASE_URL`.
    /// It may hold a password: give it in the environment, or in a file named by
    /// `DELIVERY_DATABASE_URL_FILE`.
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

impl Config {
    /// Fills in the secret settings given as files (`DELIVERY_DATABASE_URL_FILE`, `AMQP_URL_FILE`,
    /// `DATABASE_URL_FILE`).
    pub fn read_secret_files(&mut self) -> Result<(), service_kit::config::SettingsError> {
        if let Some(url) = service_kit::config::secret_from_file("DELIVERY_DATABASE_URL")? {
            self.delivery_database_url = Some(url);
        }
        self.service.common.read_secret_files()
    }
}
