//! The start-up and run loop every service shares: database, broker, HTTP listener, and a
//! graceful shutdown that drains background work.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use messaging::{Broker, BrokerConfig, BrokerError, Health, Publisher};
use protocol::topology::Declarations;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use utoipa::openapi::OpenApi;

/// How much longer than the statement timeout a call to the database may take on the client side.
const DB_CALL_MARGIN: Duration = Duration::from_secs(1);

use crate::config::ServiceArgs;
use crate::db::{self, DatabaseSettings, DbError};
use crate::http::{self, Readiness};
use crate::shutdown;

/// How long in-flight work (orders being driven) gets at shutdown, while consumers still run.
const WORK_DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long background tasks (consumers finishing their in-flight messages) get after that.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The database.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Invalid database settings.
    #[error("database settings: {0}")]
    DbSettings(#[from] crate::config::DatabaseSettingsError),
    /// The broker.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The HTTP listener.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    /// Settings that do not fit together.
    #[error(transparent)]
    Settings(#[from] crate::config::SettingsError),
    /// The identity settings or keys.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The OpenAPI document could not be serialised.
    #[error("openapi document: {0}")]
    Document(#[from] serde_json::Error),
}

/// Why the process could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `FAULT_POINTS` is invalid.
    #[error(transparent)]
    Fault(#[from] crate::fault::FaultSpecError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Trace export could not be set up.
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
}

/// Sets the process of `service` up, from `main`: logging and trace export, fault points, the
/// metrics recorder, and the signal handler whose token starts the graceful shutdown.
pub fn init(args: &ServiceArgs, service: &'static str) -> Result<CancellationToken, InitError> {
    crate::telemetry::init(&args.log.log_filter, args.log.log_format, service)?;
    crate::fault::arm(&args.fault.fault_points)?;
    crate::fault::step_clock_on_signals();
    crate::metrics::install()?;
    Ok(crate::shutdown::on_signal())
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
    /// Verifies callers' tokens; in every request's extensions, for [`crate::auth::Caller`].
    pub verifier: crate::auth::Verifier,
    /// How long a call to the database may take on the client side before it is given up as a
    /// lost connection: the statement timeout plus a margin (the server enforces the timeout,
    /// unless it is frozen).
    pub db_call_bound: Duration,
    /// In-flight work that needs the consumers to finish (the coordinator's order drivers).
    pub work: TaskTracker,
    /// Background tasks (consumers, timers, sweeps, relays).
    pub tracker: TaskTracker,
    /// Cancelled when the signal to stop arrives: stop taking new work, stop waiting.
    pub shutdown: CancellationToken,
    /// Cancelled once in-flight work has finished (or its drain time ran out): stop the
    /// background tasks. Consumers keep running until then, so that in-flight orders still get
    /// their replies.
    pub stop_background: CancellationToken,
}

impl Foundation {
    /// Loads the identity keys, connects to (creating and migrating) the database, prepares the
    /// broker pools (connections open on first use) and binds the HTTP listener.
    pub async fn lay(
        identity: &crate::config::IdentityArgs,
        database: &DatabaseSettings,
        migrator: &'static Migrator,
        broker: BrokerConfig,
        http_addr: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, StartupError> {
        let verifier = crate::auth::verifier(identity).await?;
        let db::Database { pool, follower } = db::connect(database, migrator, &shutdown).await?;
        let broker = Broker::new(broker, Health::default())?;
        let publisher = Publisher::new(broker.clone());
        let listener = http::bind(http_addr).await?;
        let tracker = TaskTracker::new();
        let stop_background = CancellationToken::new();
        if let Some(follower) = follower {
            tracker.spawn(follower.run(stop_background.clone()));
        }
        Ok(Self {
            pool,
            db_call_bound: database.statement_timeout + DB_CALL_MARGIN,
            broker,
            publisher,
            listener,
            verifier,
            work: TaskTracker::new(),
            tracker,
            shutdown,
            stop_background,
        })
    }

    /// Samples the depth of the dead-letter queues among `declarations` (those of the queues the
    /// service consumes) every `interval` for the `dead_letter_queue_messages` gauge, until the
    /// background tasks stop.
    pub fn watch_dead_letter_queues(&self, declarations: &Declarations, interval: Duration) {
        self.tracker
            .spawn(messaging::queue_depth::sample_dead_letter_queues(
                self.broker.clone(),
                declarations.dead_letter_queues(),
                interval,
                self.stop_background.clone(),
            ));
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `routes` with the health routes, `GET /openapi.json` (answering `document`, the
    /// service's whole document: see [`http::document`]), body limits and request tracing until
    /// shutdown, then stops in order: in-flight requests finish, in-flight work finishes
    /// (bounded), background tasks finish (bounded), connections close.
    pub async fn run(self, routes: Router, document: &OpenApi) -> Result<(), StartupError> {
        let readiness = Readiness {
            db: self.pool.clone(),
            health: self.broker.health().clone(),
        };
        let routes = routes
            .merge(http::health_routes(readiness))
            .merge(http::document_route(document)?);
        let routes = routes.layer(axum::Extension(self.verifier.clone()));
        let router = http::with_limits(http::with_request_tracing(routes));
        http::serve(self.listener, router, self.shutdown.clone()).await?;
        self.shutdown.cancel();
        info!("http server stopped; finishing in-flight work");
        shutdown::drain(
            &self.work,
            WORK_DRAIN_TIMEOUT,
            "in-flight work",
            "recovery will finish it",
        )
        .await;
        self.stop_background.cancel();
        shutdown::drain(
            &self.tracker,
            DRAIN_TIMEOUT,
            "background work",
            "stopping anyway",
        )
        .await;
        self.broker.close();
        self.pool.close().await;
        info!("stopped");
        Ok(())
    }
}
