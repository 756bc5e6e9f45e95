//! The start-up and run loop every service shares: database, broker, HTTP listener, and a
//! graceful shutdown that drains background work.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use messaging::{Broker, BrokerConfig, BrokerError, Health, Publisher};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::db::{self, DatabaseSettings, DbError};
use crate::http::{self, Readiness};

/// How long background tasks (consumers finishing their in-flight messages) get at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Invalid database settings.
    #[error("database settings: {0}")]
    DbSettings(#[from] sqlx::Error),
    /// The broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The HTTP listener.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
}

/// What every service stands on.
pub struct Foundation {
    /// The service's own database, migrated.
    pub pool: PgPool,
    /// The broker.
    pub broker: Broker,
    /// The confirming publisher.
    pub publisher: Publisher,
    /// The bound HTTP listener.
    pub listener: TcpListener,
    /// Background tasks (consumers, sweeps); drained at shutdown.
    pub tracker: TaskTracker,
    /// Cancelled when the service should stop.
    pub shutdown: CancellationToken,
}

impl Foundation {
    /// Connects to (creating and migrating) the database, prepares the broker pools (connections
    /// open on first use) and binds the HTTP listener.
    pub async fn lay(
        database: &DatabaseSettings,
        migrator: &'static Migrator,
        broker: BrokerConfig,
        http_addr: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, StartupError> {
        let pool = db::connect(database, migrator, &shutdown).await?;
        let broker = Broker::new(broker, Health::default())?;
        let publisher = Publisher::new(broker.clone());
        let listener = http::bind(http_addr).await?;
        Ok(Self {
            pool,
            broker,
            publisher,
            listener,
            tracker: TaskTracker::new(),
            shutdown,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `routes` with the health routes and body limits until shutdown, then waits (with a
    /// bound) for background tasks to finish and closes the broker connections.
    pub async fn run(self, routes: Router) -> Result<(), StartupError> {
        let readiness = Readiness {
            db: self.pool.clone(),
            health: self.broker.health().clone(),
        };
        let router = http::with_limits(routes.merge(http::health_routes(readiness)));
        http::serve(self.listener, router, self.shutdown.clone()).await?;
        info!("http server stopped; draining background work");
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            warn!("background work still running after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
        self.broker.close();
        self.pool.close().await;
        info!("stopped");
        Ok(())
    }
}
