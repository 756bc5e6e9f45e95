//! Settings of the store service.

use participant::ParticipantServiceArgs;

/// The store service: foods and their packets.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "store-service", version, about)]
pub struct Config {
    /// The store's database; defaults to the `store_service` database on `DATABASE_URL`.
    /// It may hold a password: give it in the environment, or in a file named by
    /// `STORE_DATABASE_URL_FILE`.
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

impl Config {
    /// Fills in the secret settings given as files (`STORE_DATABASE_URL_FILE`, `AMQP_URL_FILE`,
    /// `DATABASE_URL_FILE`).
    pub fn read_secret_files(&mut self) -> Result<(), service_kit::config::SettingsError> {
        if let Some(url) = service_kit::config::secret_from_file("STORE_DATABASE_URL")? {
            self.store_database_url = Some(url);
        }
        self.service.common.read_secret_files()
    }
}
