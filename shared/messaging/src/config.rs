//! How to reach the broker.

use std::time::Duration;

/// How to reach the broker.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `amqp://user:password@host:port/vhost`; the vhost is honoured. Add `?heartbeat=10` to notice
    /// a silently dead connection sooner.
    pub url: String,
    /// The nodes of a cluster, as `host:port`, each used with the credentials, vhost and options
    /// of `url` in place of its own host and port. Empty: `url`'s node alone.
    pub addresses: Vec<String>,
    /// The connection name shown in the management UI, e.g. `store-service`.
    pub connection_name: String,
    /// Publisher channels kept open. RabbitMQ runs each channel in one Erlang process, so a few
    /// channels publish faster than one under load.
    pub publisher_channels: usize,
    /// How long to wait for a publisher confirm before treating the publish as failed.
    pub confirm_timeout: Duration,
    /// How long to wait for a connection to open.
    pub connect_timeout: Duration,
    /// For `amqps://` URLs: a PEM file of the certificate authorities to trust besides the
    /// system's (a private CA that signed the broker's certificate). The broker's name is
    /// verified against its certificate either way.
    pub tls_ca_file: Option<std::path::PathBuf>,
}
