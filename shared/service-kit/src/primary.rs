//! Several database hosts of which one takes writes (a primary and its standbys under a failover
//! manager such as Patroni or pg_auto_failover): find that one, point the pool at it, and follow
//! it when it moves. As libpq's `target_session_attrs=read-write`, a server whose sessions are
//! read-only by default (a standby, or a primary being demoted) is passed over.
//!
//! Nothing here decides which server is the primary: the failover manager does, and this only
//! asks each server what it is. A connection that finds itself on a read-only server is refused
//! (the caller sees a transient error and tries again), and connections opened before the pool
//! moved are closed instead of being handed out.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How long asking one server may take (connecting included): a host that does not answer is
/// passed over after this, as `connect_timeout` does for libpq.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the follower asks whether the pool's server still takes writes.
const FOLLOW_PERIOD: Duration = Duration::from_secs(1);

/// One database host, `name:port` (the port defaults to 5432).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Host name or address.
    pub name: String,
    /// TCP port.
    pub port: u16,
}

/// A host that is not `name[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("database host {0:?} is not name[:port]")]
pub struct BadHost(String);

impl FromStr for Host {
    type Err = BadHost;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => (name, port.parse().map_err(|_| BadHost(s.to_owned()))?),
            None => (s, 5432),
        };
        if name.is_empty() || name.contains([' ', '/', ',']) {
            return Err(BadHost(s.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// Whether a session on `conn` may write by default (`SHOW transaction_read_only` is `off`).
pub async fn takes_writes(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(conn)
        .await?;
    Ok(read_only == "off")
}

/// The error of a connection made to a server that does not take writes: transient (the
/// failover manager is moving the primary, or the pool is about to follow it).
pub fn read_only_server() -> sqlx::Error {
    sqlx::Error::Protocol("the server is read-only (a standby): not the primary".into())
}

/// Connects to `options` and asks whether it takes writes, within [`PROBE_TIMEOUT`]. A server
/// that answers but refuses the database (it does not have it yet: the service creates it at its
/// first start) is asked in its `postgres` database.
async fn probe(options: &PgConnectOptions) -> Result<bool, sqlx::Error> {
    let ask = async {
        let mut conn = match PgConnection::connect_with(options).await {
            Err(sqlx::Error::Database(_)) => {
                PgConnection::connect_with(&options.clone().database("postgres")).await?
            }
            other => other?,
        };
        let writes = takes_writes(&mut conn).await;
        let _ = conn.close().await;
        writes
    };
    tokio::time::timeout(PROBE_TIMEOUT, ask)
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
}

/// The first of `candidates` that takes writes (its index). Otherwise the last error, or
/// [`read_only_server`] when every server answered read-only.
pub async fn find(candidates: &[(Host, PgConnectOptions)]) -> Result<usize, sqlx::Error> {
    let mut last = read_only_server();
    for (i, (_, options)) in candidates.iter().enumerate() {
        match probe(options).await {
            Ok(true) => return Ok(i),
            Ok(false) => last = read_only_server(),
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// When the pool last moved to another server: connections opened before then are closed
/// instead of being handed out (they lead to the old primary).
#[derive(Clone, Debug, Default)]
pub struct Moves(Arc<Mutex<Option<Instant>>>);

impl Moves {
    fn record(&self) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Whether a connection opened `age` ago was opened after the last move.
    pub fn opened_since_last(&self, age: Duration) -> bool {
        match self.0.lock().ok().and_then(|last| *last) {
            Some(moved) => age <= moved.elapsed(),
            None => true,
        }
    }
}

/// Keeps a pool on the server that takes writes, among several.
#[derive(Debug)]
pub struct Follower {
    pool: PgPool,
    /// The hosts' connection options, in the order given, as the pool uses them.
    candidates: Vec<(Host, PgConnectOptions)>,
    current: usize,
    moves: Moves,
}

impl Follower {
    /// A follower of `pool`, now connected to `candidates[current]`.
    pub fn new(
        pool: PgPool,
        candidates: Vec<(Host, PgConnectOptions)>,
        current: usize,
        moves: Moves,
    ) -> Self {
        Self {
            pool,
            candidates,
            current,
            moves,
        }
    }

    /// Every [`FOLLOW_PERIOD`], asks the pool's server over a connection of its own whether it
    /// still takes writes (one cheap statement; the pool's connections may all be busy, or
    /// waiting on a server that is gone); when it says it does not, or cannot be asked, finds
    /// the server that does and, if it is another one, points the pool at it. Until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut watch = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_PERIOD) => {}
                () = stop.cancelled() => return,
            }
            if self.current_takes_writes(&mut watch).await {
                continue;
            }
            match find(&self.candidates).await {
                Ok(found) if found != self.current => self.move_to(found),
                // The same server: the pool's broken connections are closed as they fail.
                Ok(_) => {}
                Err(err) => {
                    warn!(error = %err, "no database host takes writes; asking again");
                }
            }
        }
    }

    /// Whether the current server takes writes, asked over `watch` (connected first if need
    /// be; dropped when it fails, to be made again).
    async fn current_takes_writes(&self, watch: &mut Option<PgConnection>) -> bool {
        if watch.is_none() {
            let options = &self.candidates[self.current].1;
            let connect = PgConnection::connect_with(options);
            *watch = tokio::time::timeout(PROBE_TIMEOUT, connect)
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(conn) = watch.as_mut() else {
            return false;
        };
        let writes = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, takes_writes(conn)).await,
            Ok(Ok(true))
        );
        if !writes {
            *watch = None;
        }
        writes
    }

    fn move_to(&mut self, found: usize) {
        let (host, options) = &self.candidates[found];
        warn!(
            from = %self.candidates[self.current].0,
            to = %host,
            "the database primary moved; following it"
        );
        self.pool.set_connect_options(options.clone());
        self.moves.record();
        self.current = found;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_a_name_and_a_port_that_defaults_to_postgres_own() {
        assert_eq!(
            "db-1:6432".parse::<Host>().ok(),
            Some(Host {
                name: "db-1".into(),
                port: 6432
            })
        );
        assert_eq!("db-2".parse::<Host>().map(|h| h.port).ok(), Some(5432));
        for bad in ["", ":5432", "db:port", "db:99999", "a b:1"] {
            assert!(bad.parse::<Host>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_connections_opened_after_the_last_move_are_handed_out() {
        let moves = Moves::default();
        assert!(moves.opened_since_last(Duration::from_secs(3600)));
        moves.record();
        assert!(!moves.opened_since_last(Duration::from_secs(3600)));
        assert!(moves.opened_since_last(Duration::ZERO));
    }
}
