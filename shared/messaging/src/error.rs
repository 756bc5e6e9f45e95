//! What can go wrong in the messaging layer.

use std::time::Duration;

use deadpool::managed;
use deadpool_lapin::lapin;

/// Errors of the messaging layer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection could be had from the pool (every node down, wrong credentials, …).
    #[error("cannot get a broker connection: {0}")]
    Pool(#[from] managed::PoolError<lapin::Error>),
    /// The pool could not be built from the configuration.
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// A protocol or connection error.
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// A publish was not sent and confirmed in time; the broker may or may not have the message.
    #[error("the broker did not confirm the message within {0:?}")]
    ConfirmTimeout(Duration),
    /// The broker has blocked the connection (memory or disk alarm) and takes no publishes.
    #[error("the broker has blocked the connection (resource alarm)")]
    Blocked,
    /// The broker did not answer a request in time.
    #[error("the broker did not answer {what} within {after:?}")]
    Timeout {
        /// The request.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// The broker refused to take responsibility for a message.
    #[error("the broker refused the message (nack)")]
    Nacked,
    /// A mandatory message matched no queue.
    #[error(
        "unroutable: no queue is bound to exchange {exchange:?} with routing key {routing_key:?}"
    )]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
    },
    /// A message could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl BrokerError {
    /// Whether the broker took the message but no queue was bound for it: the connection and
    /// channel are fine.
    pub fn is_unroutable(&self) -> bool {
        matches!(self, Self::Unroutable { .. })
    }
}
