//! PostgreSQL with a synchronous standby and automatic failover, of a test's own: a
//! pg_auto_failover monitor and two nodes started and stopped with `scripts/local-pg-ha`, beside
//! the machine's server (which the other tests use). Its ports and folder are the test's own; it
//! is removed when dropped, even when the test fails.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::sync::{Mutex, MutexGuard};

use super::infra::DatabaseTarget;

/// A node, 1 or 2 as in `scripts/local-pg-ha`.
pub type Node = usize;

/// Three PostgreSQL servers and their keepers are heavy for a machine of two cores: one
/// failover set-up at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A running primary, standby and monitor.
pub struct PgHa {
    dir: PathBuf,
    port: u16,
    _turn: MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/local-pg-ha")
}

impl PgHa {
    /// Starts the monitor, a primary and its synchronous standby.
    pub async fn start() -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        remove_stale().await;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut rng = rand::rng();
        // Below the RabbitMQ clusters' ports (20,000 and up) and the kernel's ephemeral ones.
        let port = 10_000 + 10 * rng.random_range(0..900u16);
        let ha = Self {
            dir: std::env::temp_dir().join(format!("sys{secs}{:04x}-pg-ha", rng.random::<u16>())),
            port,
            _turn: turn,
        };
        ha.run(&["start"]).await;
        ha
    }

    async fn run(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new(script())
            .args(args)
            .env("PGHA_DIR", &self.dir)
            .env("PGHA_PORT", self.port.to_string())
            .output()
            .await
            .expect("scripts/local-pg-ha runs");
        assert!(
            output.status.success(),
            "scripts/local-pg-ha {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Where the services and the test's own reads reach it: both nodes, as `DATABASE_HOSTS`.
    pub fn target(&self) -> DatabaseTarget {
        let hosts: Vec<String> = [1, 2]
            .iter()
            .map(|n| format!("127.0.0.1:{}", self.port + n))
            .collect();
        DatabaseTarget {
            base: format!("postgres://postgres@{}", hosts[0]),
            hosts,
        }
    }

    /// The node that takes writes, once one does (failing over takes seconds).
    pub async fn primary(&self) -> Node {
        let node = self.run(&["wait-primary"]).await;
        node.trim().parse().expect("a node number")
    }

    /// The node that does not take writes.
    pub async fn standby(&self) -> Node {
        3 - self.primary().await
    }

    /// `kill -9` of `node`'s keeper and PostgreSQL, as the loss of its machine would.
    pub async fn kill(&self, node: Node) {
        self.run(&["kill", &node.to_string()]).await;
    }

    /// Starts `node` again; it rejoins as the standby.
    pub async fn start_node(&self, node: Node) {
        self.run(&["start-node", &node.to_string()]).await;
    }

    /// Waits until the primary's commits wait for a streaming standby again.
    pub async fn wait_standby(&self) {
        self.run(&["wait-standby"]).await;
    }

    /// Swaps primary and standby, as an operator does before maintenance.
    pub async fn switchover(&self) {
        self.run(&["switchover"]).await;
    }

    /// The monitor's view of the nodes.
    pub async fn state(&self) -> String {
        self.run(&["state"]).await
    }
}

impl Drop for PgHa {
    fn drop(&mut self) {
        // Kills every process and removes the folder; the result changes nothing here.
        let _ = std::process::Command::new(script())
            .arg("stop")
            .env("PGHA_DIR", &self.dir)
            .env("PGHA_PORT", self.port.to_string())
            .status();
    }
}

/// Removes the set-ups of test runs that were killed (their folders are over an hour old).
async fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("sys") && n.ends_with("-pg-ha"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if is_ours && old {
            let _ = tokio::process::Command::new(script())
                .arg("stop")
                .env("PGHA_DIR", entry.path())
                .status()
                .await;
        }
    }
}
