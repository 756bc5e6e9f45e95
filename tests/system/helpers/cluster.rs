//! A three-node RabbitMQ cluster of a test's own, beside the machine's node (which the other
//! tests use), started and stopped with `scripts/local-cluster`. Its ports, node names and
//! directory are the test's own; it is removed when dropped, even when the test fails.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;
use tokio::sync::{Mutex, MutexGuard};

use super::infra::{BrokerTarget, Management, encode};

/// A node, numbered 1 to 3 as in `scripts/local-cluster`.
pub type Node = usize;

/// Every node.
pub const NODES: [Node; 3] = [1, 2, 3];

/// Clusters are heavy for a machine of two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A running cluster.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    port: u16,
    _turn: MutexGuard<'static, ()>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/local-cluster")
}

impl Cluster {
    /// Starts three nodes and clusters them.
    pub async fn start() -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        remove_stale().await;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut rng = rand::rng();
        let name = format!("sys{secs}{:04x}", rng.random::<u16>());
        // Below the kernel's ephemeral ports (32768 and up), apart from the machine's node.
        let port = 20_000 + 30 * rng.random_range(0..400u16);
        let cluster = Self {
            dir: std::env::temp_dir().join(format!("{name}-cluster")),
            name,
            port,
            _turn: turn,
        };
        cluster.run(&["start"]).await;
        cluster
    }

    async fn run(&self, args: &[&str]) -> String {
        let output = tokio::process::Command::new(script())
            .args(args)
            .env("CLUSTER_NAME", &self.name)
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_PORT", self.port.to_string())
            .output()
            .await
            .expect("scripts/local-cluster runs");
        assert!(
            output.status.success(),
            "scripts/local-cluster {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Where the services and the test's own clients reach it.
    pub fn target(&self) -> BrokerTarget {
        BrokerTarget {
            amqp_base: format!("amqp://guest:guest@127.0.0.1:{}", self.amqp_port(1)),
            addresses: NODES
                .iter()
                .map(|n| format!("127.0.0.1:{}", self.amqp_port(*n)))
                .collect(),
            management_url: self.management_url(1),
        }
    }

    fn amqp_port(&self, node: Node) -> u16 {
        self.port + u16::try_from(node).expect("node number")
    }

    fn management_url(&self, node: Node) -> String {
        let port = self.amqp_port(node) + 10;
        format!("http://guest:guest@127.0.0.1:{port}")
    }

    /// The Erlang name of `node`.
    pub fn node_name(&self, node: Node) -> String {
        format!("{}-{node}@localhost", self.name)
    }

    fn node_of(&self, name: &str) -> Option<Node> {
        NODES.into_iter().find(|n| self.node_name(*n) == name)
    }

    /// The management API of `node`.
    pub fn management(&self, node: Node) -> Management {
        Management::at(&self.management_url(node))
    }

    /// `kill -9` of `node`, as a crash would.
    pub async fn kill(&self, node: Node) {
        self.run(&["kill", &node.to_string()]).await;
    }

    /// Starts `node` again and waits until it runs; it rejoins with its data.
    pub async fn start_node(&self, node: Node) {
        self.run(&["start-node", &node.to_string()]).await;
    }

    /// Stops `node` cleanly.
    pub async fn stop_node(&self, node: Node) {
        self.run(&["stop-node", &node.to_string()]).await;
    }

    /// `rabbitmqctl` on `node`; returns its output.
    pub async fn ctl(&self, node: Node, args: &[&str]) -> String {
        let node = node.to_string();
        let mut all = vec!["ctl", node.as_str()];
        all.extend_from_slice(args);
        self.run(&all).await
    }

    /// The node that leads `queue` of `vhost`, asked of `via`.
    pub async fn leader(&self, via: Node, vhost: &str, queue: &str) -> Node {
        let info = self
            .management(via)
            .get(&format!("queues/{}/{}", encode(vhost), encode(queue)))
            .await;
        let leader = info["leader"].as_str().unwrap_or_default();
        self.node_of(leader)
            .unwrap_or_else(|| panic!("no leader for {queue}: {info}"))
    }

    /// How many queues of `vhost` each node leads, and how many members each queue has.
    pub async fn leaders(&self, via: Node, vhost: &str) -> (Vec<(Node, usize)>, Vec<usize>) {
        let queues = self.management(via).queues(vhost).await;
        let quorum: Vec<&Value> = queues.iter().filter(|q| q["type"] == "quorum").collect();
        let led = NODES
            .iter()
            .map(|n| {
                let name = self.node_name(*n);
                (*n, quorum.iter().filter(|q| q["leader"] == name).count())
            })
            .collect();
        let members = quorum
            .iter()
            .map(|q| q["members"].as_array().map_or(0, Vec::len))
            .collect();
        (led, members)
    }

    /// The node that holds most of the connections of `vhost`, asked of `via`.
    pub async fn busiest_node(&self, via: Node, vhost: &str) -> Node {
        let connections = self
            .management(via)
            .get(&format!("vhosts/{}/connections", encode(vhost)))
            .await;
        let connections = connections.as_array().cloned().unwrap_or_default();
        NODES
            .into_iter()
            .max_by_key(|n| {
                let name = self.node_name(*n);
                connections.iter().filter(|c| c["node"] == name).count()
            })
            .expect("three nodes")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kills every node and removes the directory; the result changes nothing here.
        let _ = std::process::Command::new(script())
            .arg("stop")
            .env("CLUSTER_NAME", &self.name)
            .env("CLUSTER_DIR", &self.dir)
            .env("CLUSTER_PORT", self.port.to_string())
            .status();
    }
}

/// Removes the clusters of test runs that were killed (their directories are over an hour old).
async fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix("sys"))
            .and_then(|n| n.strip_suffix("-cluster"))
        else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old {
            let _ = tokio::process::Command::new(script())
                .arg("stop")
                .env("CLUSTER_NAME", format!("sys{name}"))
                .env("CLUSTER_DIR", entry.path())
                .status()
                .await;
        }
    }
}
