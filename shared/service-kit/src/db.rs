//! The service's database: created if missing, migrated, pooled; and which errors are transient.

use std::time::Duration;

use messaging::Backoff;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::primary::{self, Follower, Host, Moves};

/// How to reach and pool the service's database.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// Server and database.
    pub options: PgConnectOptions,
    /// The servers to choose from, in order, when there are several (a primary and its
    /// standbys): the one that takes writes is used, and followed when it moves. Empty: the
    /// server of `options` alone.
    pub hosts: Vec<Host>,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Longest a statement may run.
    pub statement_timeout: Duration,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or created.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Shutdown was requested while waiting for the database.
    #[error("shut down while waiting for the database")]
    Cancelled,
}

impl DatabaseSettings {
    /// The database name.
    pub fn database(&self) -> &str {
        self.options.get_database().unwrap_or("postgres")
    }

    /// Each server to choose from, with the options of a session on it.
    fn candidates(&self) -> Vec<(Host, PgConnectOptions)> {
        let session = self.session_options();
        if self.hosts.is_empty() {
            let host = Host {
                name: self.options.get_host().to_owned(),
                port: self.options.get_port(),
            };
            return vec![(host, session)];
        }
        self.hosts
            .iter()
            .map(|h| (h.clone(), session.clone().host(&h.name).port(h.port)))
            .collect()
    }

    /// Connection options with the session timeouts that keep a stuck or abandoned transaction
    /// from holding locks: sqlx does not cancel server-side work when a future is dropped, so the
    /// server must.
    fn session_options(&self) -> PgConnectOptions {
        let statement = format!("{}ms", self.statement_timeout.as_millis());
        self.options
            .clone()
            .options([
                ("statement_timeout", statement.as_str()),
                ("lock_timeout", "2s"),
                ("idle_in_transaction_session_timeout", "10s"),
                // Plan each prepared statement once. The hot statements pick rows through
                // partial indexes whatever their parameters, so a generic plan is as good as a
                // custom one, and re-planning them on every execution was the largest cost.
                ("plan_cache_mode", "force_generic_plan"),
            ])
            .log_statements(tracing::log::LevelFilter::Trace)
    }
}

/// The service's database: a pool on the server that takes writes and, where there are several
/// servers to choose from, what follows that server when it moves (for the caller to run).
#[derive(Debug)]
pub struct Database {
    /// The pool.
    pub pool: PgPool,
    /// Follows the primary among several servers: run it until shutdown.
    pub follower: Option<Follower>,
}

/// Creates the database if missing, runs `migrator` and returns a pool on the server that takes
/// writes. Waits with backoff while PostgreSQL is unreachable (e.g. still starting, or failing
/// over), until `shutdown`. Safe when several replicas start at once: creation tolerates losing
/// the race, and sqlx migrations take an advisory lock.
pub async fn connect(
    settings: &DatabaseSettings,
    migrator: &'static Migrator,
    shutdown: &CancellationToken,
) -> Result<Database, DbError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match try_connect(settings, migrator).await {
            Ok(database) => return Ok(database),
            Err(DbError::Sqlx(err)) if is_transient(&err) => {
                warn!(error = %err, database = settings.database(), "database not reachable yet; retrying");
            }
            Err(err) => return Err(err),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return Err(DbError::Cancelled),
        }
    }
}

async fn try_connect(
    settings: &DatabaseSettings,
    migrator: &'static Migrator,
) -> Result<Database, DbError> {
    let database = open(settings).await?;
    migrator.run(&database.pool).await?;
    info!(database = settings.database(), "database ready");
    Ok(database)
}

/// A pool on the server that takes writes (of several, the first in order that does), creating
/// the database there if missing; where there are several servers, with its [`Follower`].
pub async fn open(settings: &DatabaseSettings) -> Result<Database, sqlx::Error> {
    let candidates = settings.candidates();
    let current = if candidates.len() > 1 {
        primary::find(&candidates).await?
    } else {
        0
    };
    let (host, session) = candidates[current].clone();
    ensure_database(&settings.options.clone().host(&host.name).port(host.port)).await?;
    let moves = Moves::default();
    let mut pool = PgPoolOptions::new()
        .max_connections(settings.pool_size)
        .acquire_timeout(Duration::from_secs(5))
        // No ping before every checkout (a round trip per statement): a dead connection fails its
        // statement with a transient error, which the callers retry.
        .test_before_acquire(false)
        // A new connection that finds a standby (a failover under way, or a proxy that has not
        // yet followed the primary) is refused: a transient error, tried again.
        .after_connect(|conn, _| {
            Box::pin(async move {
                if primary::takes_writes(conn).await? {
                    Ok(())
                } else {
                    Err(primary::read_only_server())
                }
            })
        });
    if candidates.len() > 1 {
        let moves = moves.clone();
        pool = pool.before_acquire(move |_, meta| {
            let fresh = moves.opened_since_last(meta.age);
            Box::pin(async move { Ok(fresh) })
        });
    }
    let pool = pool.connect_with(session).await?;
    info!(database = settings.database(), host = %host, "connected to the primary");
    let follower =
        (candidates.len() > 1).then(|| Follower::new(pool.clone(), candidates, current, moves));
    Ok(Database { pool, follower })
}

/// Creates the service's database if it does not exist. Connects to it first: where it exists
/// (or the service's role may not create databases, as in a least-privilege set-up where an
/// administrator created it), nothing else is needed.
async fn ensure_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    match PgConnection::connect_with(options).await {
        Ok(conn) => return conn.close().await,
        Err(err) if is_missing_database(&err) => {}
        Err(err) => return Err(err),
    }
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
    {
        Ok(_) => info!(database = %name, "database created"),
        // Another replica created it first.
        Err(err) if is_duplicate_database(&err) => {}
        Err(err) => return Err(err),
    }
    admin.close().await
}

fn is_missing_database(err: &sqlx::Error) -> bool {
    // 3D000 invalid_catalog_name: the database does not exist.
    matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "3D000"))
}

fn is_duplicate_database(err: &sqlx::Error) -> bool {
    // 42P04 duplicate_database; 23505 when two CREATE DATABASE race on pg_database's index.
    match err {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c == "42P04" || c == "23505"),
        _ => false,
    }
}

/// An error that may say "the database is unavailable for now; try again".
pub trait Transient {
    /// Whether trying again later may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for sqlx::Error {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

/// Whether an error is worth retrying: the connection or server went away, a timeout, a
/// serialization failure or deadlock. Anything else is a bug or bad data, and retrying would only
/// repeat it.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code: &str = &code;
            // 08: connection exception; 40001 serialization failure; 40P01 deadlock;
            // 55P03 lock timeout; 57014 statement timeout; 57P01-57P03 server shutting down or
            // backend terminated; 53300 too many connections; 25P03 idle-in-transaction timeout;
            // 25006 a write on a read-only server (a primary being demoted: the pool follows
            // the new one).
            code.starts_with("08")
                || matches!(
                    code,
                    "40001"
                        | "40P01"
                        | "55P03"
                        | "57014"
                        | "57P01"
                        | "57P02"
                        | "57P03"
                        | "53300"
                        | "25P03"
                        | "25006"
                )
        }),
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not [transient](is_transient),
/// or `shutdown` (then the last transient error is returned). For work that holds an unacked
/// message: waiting out a database outage in place costs the message no delivery attempt, so an
/// outage never parks valid commands in a dead-letter queue.
pub async fn retry_transient<T, E, F, Fut>(
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<T, E>
where
    E: Transient + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        match attempt().await {
            Err(err) if err.is_transient() && !shutdown.is_cancelled() => {
                if backoff.attempts().is_multiple_of(10) {
                    warn!(error = %err, attempts = backoff.attempts(), "database unavailable; waiting");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = shutdown.cancelled() => return Err(err),
                }
            }
            other => return other,
        }
    }
}
