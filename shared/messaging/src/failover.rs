//! Connecting to whichever node of a cluster answers: the connection manager of the broker's
//! pools, over the nodes of `AMQP_ADDRESSES`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_lapin::lapin::{self, tcp::OwnedTLSConfig, types::LongString};
use rand::Rng;
use tracing::{info, warn};

use crate::config::BrokerConfig;
use crate::error::BrokerError;

/// Connects to the nodes of a cluster: to the one it was last connected to, or, when that one is
/// lost, to the next that answers. Each process starts at a random node, so that the copies of a
/// service spread their connections over the cluster.
pub(crate) struct Failover {
    /// Each node's `host:port` (for the logs: never the credentials) and URL.
    pub(crate) nodes: Vec<(String, String)>,
    /// The connection's properties (its name).
    name: String,
    /// The certificate authorities an `amqps://` connection trusts besides the system's.
    tls: OwnedTLSConfig,
    /// The node that the last connection was made to.
    current: AtomicUsize,
    /// How long one node may take to accept a connection before the next one is tried.
    attempt_timeout: Duration,
}

impl Failover {
    pub(crate) fn new(config: &BrokerConfig, name: String) -> Result<Self, BrokerError> {
        let nodes = node_urls(&config.url, &config.addresses)?;
        let cert_chain = match &config.tls_ca_file {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|err| {
                BrokerError::Config(format!("AMQP_TLS_CA_FILE {}: {err}", path.display()))
            })?),
        };
        let start = rand::rng().random_range(0..nodes.len());
        Ok(Self {
            nodes,
            name,
            tls: OwnedTLSConfig {
                identity: None,
                cert_chain,
            },
            current: AtomicUsize::new(start),
            attempt_timeout: config.connect_timeout,
        })
    }

    /// A connection to the node at `url` (TLS for `amqps://`, with the configured authorities).
    async fn connect(&self, url: &str) -> Result<lapin::Connection, lapin::Error> {
        let properties = lapin::ConnectionProperties::default()
            .with_connection_name(LongString::from(self.name.clone()));
        lapin::Connection::connect_with_config(
            url,
            properties,
            self.tls.clone(),
            async_rs::Runtime::tokio_current(),
        )
        .await
    }
}

impl managed::Manager for Failover {
    type Type = lapin::Connection;
    type Error = lapin::Error;

    async fn create(&self) -> Result<lapin::Connection, lapin::Error> {
        let first = self.current.load(Ordering::Relaxed);
        let mut last_error = None;
        for step in 0..self.nodes.len() {
            let at = (first + step) % self.nodes.len();
            let (address, url) = &self.nodes[at];
            let error = match tokio::time::timeout(self.attempt_timeout, self.connect(url)).await {
                Ok(Ok(connection)) => {
                    if at != first {
                        info!(node = %address, "connected to another broker node");
                    }
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(connection);
                }
                Ok(Err(err)) => err,
                Err(_) => lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {:?}", self.attempt_timeout),
                )),
            };
            if self.nodes.len() > 1 {
                warn!(node = %address, error = %error, "broker node not reachable; trying the next");
            }
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| {
            lapin::Error::from(std::io::Error::other("no broker node configured"))
        }))
    }

    async fn recycle(
        &self,
        connection: &mut lapin::Connection,
        _: &Metrics,
    ) -> RecycleResult<lapin::Error> {
        if connection.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message(format!(
                "the broker connection is closed: {:?}",
                connection.status()
            )))
        }
    }
}

/// The URL of each node: `url` with each of `addresses` (`host:port`) in place of its own host
/// and port, with the address for the logs. No addresses: `url` alone.
fn node_urls(url: &str, addresses: &[String]) -> Result<Vec<(String, String)>, BrokerError> {
    let invalid = |why: &str| BrokerError::Config(format!("{why}: AMQP URL {:?}", redact(url)));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if addresses.is_empty() {
        return Ok(vec![(host.to_owned(), url.to_owned())]);
    }
    addresses
        .iter()
        .map(|address| {
            let address = address.trim();
            if address.is_empty() || address.contains(['/', '@', '?']) {
                return Err(BrokerError::Config(format!(
                    "broker address {address:?} is not host:port"
                )));
            }
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            Ok((
                address.to_owned(),
                format!("{scheme}://{user}{address}{path}"),
            ))
        })
        .collect()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let name = user.split(':').next().unwrap_or_default();
            format!("{}{name}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(url: &str, addresses: &[&str]) -> Result<Vec<(String, String)>, BrokerError> {
        let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_owned()).collect();
        node_urls(url, &addresses)
    }

    #[test]
    fn each_address_takes_the_place_of_the_urls_host_and_keeps_the_rest() {
        let nodes = urls(
            "amqp://order:s3cret@rabbit:5672/%2f?heartbeat=10",
            &["rabbit-1:5672", " rabbit-2:5673"],
        )
        .unwrap();
        assert_eq!(
            nodes,
            [
                (
                    "rabbit-1:5672".to_owned(),
                    "amqp://order:s3cret@rabbit-1:5672/%2f?heartbeat=10".to_owned()
                ),
                (
                    "rabbit-2:5673".to_owned(),
                    "amqp://order:s3cret@rabbit-2:5673/%2f?heartbeat=10".to_owned()
                ),
            ]
        );
        assert_eq!(
            urls("amqp://rabbit?heartbeat=5", &["a:1"]).unwrap()[0].1,
            "amqp://a:1?heartbeat=5"
        );
    }

    #[test]
    fn without_addresses_the_url_is_the_one_node() {
        assert_eq!(
            urls("amqp://u:p@host:5672/vh", &[]).unwrap(),
            [("host:5672".to_owned(), "amqp://u:p@host:5672/vh".to_owned())]
        );
    }

    #[test]
    fn a_bad_url_or_address_is_refused_without_showing_the_password() {
        for (url, addresses) in [
            ("rabbit:5672", &[][..]),
            ("amqp://u:hidden@/vh", &[][..]),
            ("amqp://u:hidden@h/vh", &["a:1/x"][..]),
            ("amqp://u:hidden@h/vh", &[""][..]),
        ] {
            let err = urls(url, addresses).unwrap_err().to_string();
            assert!(!err.contains("hidden"), "{err}");
            assert!(err.starts_with("invalid broker configuration"), "{err}");
        }
    }
}
