//! Building and running the store service.

use std::net::SocketAddr;

use participant::{Identity, ParticipantApp};
use service_kit::app::StartupError;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_DATABASE};
use crate::http;
use crate::inventory::Packets;

/// The running store service: database, consumers, HTTP API.
pub struct Application(ParticipantApp);

impl Application {
    /// Connects and migrates the database, starts the command consumers and binds the HTTP
    /// listener. Everything stops when `shutdown` is cancelled.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let identity = Identity {
            name: "store-service",
            default_database: DEFAULT_DATABASE,
            migrator: &crate::MIGRATOR,
        };
        ParticipantApp::build(
            Packets,
            identity,
            config.store_database_url.as_deref(),
            &config.http_addr,
            config.service,
            shutdown,
        )
        .await
        .map(Self)
    }

    /// The HTTP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Serves until shutdown, then drains.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        self.0.run(http::routes, &http::openapi()).await
    }
}
