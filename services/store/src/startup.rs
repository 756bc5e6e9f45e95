//! Building and running the store service.

use std::net::SocketAddr;

use protocol::topology::Topology;
use service_kit::app::{Foundation, StartupError};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_DATABASE};
use crate::http;
use crate::inventory::Packets;

/// The running store service: database, consumers, HTTP API.
pub struct Application {
    foundation: Foundation,
    admin_token: Option<String>,
}

impl Application {
    /// Connects and migrates the database, starts the command consumers and binds the HTTP
    /// listener. Everything stops when `shutdown` is cancelled.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let database = config
            .db
            .settings(config.store_database_url.as_deref(), DEFAULT_DATABASE)?;
        let foundation = Foundation::lay(
            &database,
            &crate::MIGRATOR,
            config.broker.config("store-service"),
            &config.http_addr,
            shutdown,
        )
        .await?;
        participant::start(
            Packets,
            &foundation,
            Topology::new(config.broker.amqp_prefix.clone()),
            config.participant.settings(),
        );
        Ok(Self {
            foundation,
            admin_token: config.admin_token,
        })
    }

    /// The HTTP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.foundation.local_addr()
    }

    /// Serves until shutdown, then drains.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let routes = service_kit::http::admin_guard(
            http::routes(self.foundation.pool.clone()),
            self.admin_token,
        );
        self.foundation.run(routes).await
    }
}
