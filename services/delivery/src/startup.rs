//! Building and running the delivery service.

use std::net::SocketAddr;

use std::sync::Arc;

use participant::{Identity, ParticipantApp};
use service_kit::app::StartupError;
use service_kit::outbox::Destination;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DEFAULT_DATABASE};
use crate::http;
use crate::inventory::Agents;
use crate::placed::Placed;

/// The running delivery service: database, consumers (commands, expiry timers, placed orders),
/// the relay of its progress reports, HTTP API.
pub struct Application {
    app: ParticipantApp,
    reports: Arc<Notify>,
}

impl Application {
    /// Connects and migrates the database, starts the command consumers and binds the HTTP
    /// listener. Everything stops when `shutdown` is cancelled.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let identity = Identity {
            name: "delivery-service",
            default_database: DEFAULT_DATABASE,
            migrator: &crate::MIGRATOR,
        };
        let app = ParticipantApp::build(
            Agents,
            identity,
            config.delivery_database_url.as_deref(),
            &config.http_addr,
            config.service,
            shutdown,
        )
        .await?;
        let reports = app.relay_outbox(Destination {
            exchange: app.topology().progress_exchange(),
            kind: "delivery_progress",
            // The coordinator must get every report: one that no queue takes (the coordinator
            // has not declared its queue yet) stays in the outbox and is sent again.
            mandatory: true,
        });
        let placed = Placed::new(app.pool().clone(), app.stop_background());
        app.consume(app.topology().placed_queue(), placed);
        Ok(Self { app, reports })
    }

    /// The HTTP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.app.local_addr()
    }

    /// Serves until shutdown, then drains.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let reports = self.reports;
        self.app
            .run(|pool| http::routes(pool, reports), &http::openapi())
            .await
    }
}
