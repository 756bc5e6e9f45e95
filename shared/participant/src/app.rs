//! The start-up and run loop of a participant service (store, delivery).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use messaging::Handler;
use protocol::topology::Topology;
use service_kit::app::{Foundation, StartupError};
use service_kit::config::ServiceArgs;
use service_kit::outbox::Destination;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::OpenApi;

use crate::inventory::Inventory;
use crate::runtime::{self, Consumers, ParticipantArgs};

/// The settings of a participant service, besides its own database URL and HTTP address.
#[derive(clap::Args, Clone, Debug)]
pub struct ParticipantServiceArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub participant: ParticipantArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: ServiceArgs,
}

/// Who the service is.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    /// The binary's name, shown as the broker connection's name.
    pub name: &'static str,
    /// The database used when the service's own database URL is not set.
    pub default_database: &'static str,
    /// Its migrations.
    pub migrator: &'static Migrator,
}

/// A running participant: database, broker consumers, HTTP listener.
pub struct ParticipantApp {
    foundation: Foundation,
    topology: Topology,
    consumers: Consumers,
}

impl ParticipantApp {
    /// Connects and migrates the database, starts the consumers of participant `I` and binds the
    /// HTTP listener. Everything stops when `shutdown` is cancelled.
    pub async fn build<I: Inventory>(
        inventory: I,
        identity: Identity,
        own_database_url: Option<&str>,
        http_addr: &str,
        args: ParticipantServiceArgs,
        shutdown: CancellationToken,
    ) -> Result<Self, StartupError> {
        let settings = args.participant.settings()?;
        let common = &args.common;
        let database = common
            .db
            .settings(own_database_url, identity.default_database)?;
        let foundation = Foundation::lay(
            &common.identity,
            &database,
            identity.migrator,
            common.broker.config(identity.name),
            http_addr,
            shutdown,
        )
        .await?;
        crate::metrics::describe(I::PARTICIPANT);
        let topology = Topology::new(common.broker.amqp_prefix.clone());
        let consumers = runtime::start(
            inventory,
            &foundation,
            topology.clone(),
            settings,
            common.metrics.metrics_sample_interval,
        );
        Ok(Self {
            foundation,
            topology,
            consumers,
        })
    }

    /// The broker's names, under the service's prefix.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Starts the relay of the service's `outbox` table to `destination`, until shutdown.
    /// Notify the returned handle after each write to the outbox, to publish it at once.
    pub fn relay_outbox(&self, destination: Destination) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        self.foundation.tracker.spawn(service_kit::outbox::relay(
            self.foundation.pool.clone(),
            self.foundation.publisher.clone(),
            destination,
            Arc::clone(&wake),
            self.foundation.stop_background.clone(),
        ));
        wake
    }

    /// Consumes `queue` (one the participant declares with its commands, such as delivery's
    /// queue of placed orders) with `handler`, until shutdown.
    pub fn consume<H: Handler>(&self, queue: String, handler: H) {
        self.foundation.tracker.spawn(messaging::consumer::run(
            self.foundation.broker.clone(),
            self.foundation.publisher.clone(),
            self.consumers.spec(queue),
            Arc::new(handler),
            self.foundation.stop_background.clone(),
        ));
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.foundation.pool
    }

    /// Cancelled when background work (consumers, relays) must stop: after the HTTP drain.
    pub fn stop_background(&self) -> CancellationToken {
        self.foundation.stop_background.clone()
    }

    /// The HTTP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.foundation.local_addr()
    }

    /// Serves `routes` (given the database pool; each handler decides from its
    /// [`Caller`](service_kit::auth::Caller) who may call it) and their OpenAPI `document` until
    /// shutdown, then drains.
    pub async fn run(
        self,
        routes: impl FnOnce(PgPool) -> Router,
        document: &OpenApi,
    ) -> Result<(), StartupError> {
        let routes = routes(self.foundation.pool.clone());
        self.foundation.run(routes, document).await
    }
}
