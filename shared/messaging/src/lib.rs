//! RabbitMQ for the services, on lapin and deadpool.
//!
//! Business code never touches bytes, `FieldTable` or `BasicProperties`: it publishes
//! [`Outgoing`] messages built from protocol envelopes, calls participants through the
//! [`RpcClient`], and handles [`Incoming`] messages in a [`Handler`] run by a supervised consumer.
//!
//! # Reliability
//! - Publishing waits for the broker's confirm (publisher confirms on long-lived channels), with
//!   `mandatory` set so that an unroutable message is an error rather than silently dropped.
//! - Consumers ack manually, after the handler returns (so after its database commit). A message
//!   that cannot be parsed is republished to the queue's dead-letter exchange with the reason and
//!   then acked; a message whose handling fails is rejected back to its queue, where the quorum
//!   queue's delivery limit parks it in the dead-letter queue if it keeps failing.
//! - Every consumer runs under a supervisor that rebuilds channel, QoS, topology and consumer after
//!   any failure (lost connection, closed channel, consumer cancelled by the server), with backoff.
//!
//! # Layout
//! - [`broker`]: the two connection pools (publishing and consuming are kept on separate
//!   connections, as RabbitMQ advises), topology declaration; with `config` ([`BrokerConfig`])
//!   and `error` ([`BrokerError`]), re-exported there.
//! - `failover`: the connection manager that reconnects to the next node of a cluster.
//! - [`publisher`]: [`Outgoing`] and the confirming [`Publisher`].
//! - [`consumer`]: [`Incoming`], [`Handler`], [`Disposition`] and the consumer supervisor.
//! - [`rpc`]: request/reply matched on correlation id, concurrent commands sent as one batch.
//! - [`dlq`]: reading parked messages, and moving them back to their queues.
//! - [`trace`]: the trace context messages carry, tied to the exported spans.
//! - [`timer_window`]: timer ids gathered for a short window and published as one message.
//! - [`gather`]: how concurrent work is gathered into one batch (command lanes, group commit).
//! - [`backoff`]: exponential backoff with jitter.
//! - [`health`]: which components are connected, for readiness probes.
//! - [`queue_depth`]: the depth of the dead-letter queues, sampled for metrics.
//! - [`metrics`]: the names and descriptions of the metrics recorded here.

pub mod backoff;
pub mod broker;
mod config;
pub mod consumer;
pub mod dlq;
mod error;
mod failover;
pub mod gather;
pub mod health;
pub mod metrics;
pub mod publisher;
pub mod queue_depth;
pub mod rpc;
pub mod timer_window;
pub mod trace;

pub use backoff::Backoff;
pub use broker::{Broker, BrokerConfig, BrokerError};
pub use consumer::{AckMode, ConsumerSpec, Disposition, Handler, Incoming};
pub use health::Health;
pub use publisher::{Outgoing, Publisher};
pub use rpc::{RpcClient, RpcError, Wait};
pub use timer_window::TimerWindow;

/// lapin, as deadpool-lapin uses it, so that the two versions cannot drift apart.
pub use deadpool_lapin::lapin;
