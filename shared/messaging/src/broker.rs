//! Connection pools and topology declaration (the configuration and errors are in `config` and
//! `error`, re-exported here).

use std::sync::Arc;

use deadpool::managed::{self, PoolConfig, Timeouts};
use deadpool_lapin::lapin::{
    self, Channel, ExchangeKind as LapinExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use protocol::topology::{Declarations, ExchangeKind, QueueKind, QueueSpec};

pub use crate::config::BrokerConfig;
pub use crate::error::BrokerError;
use crate::failover::Failover;
use crate::health::Health;

/// Which pool a channel comes from. Publishing and consuming use separate connections: when the
/// broker applies flow control to a publishing connection, consumers on other connections keep
/// draining queues.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Role {
    Publish,
    Consume,
}

/// A handle on the broker: two connection pools and the health table. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

/// A pool of connections to whichever node of the cluster answers.
type Pool = managed::Pool<Failover>;

struct Inner {
    config: BrokerConfig,
    publish: Pool,
    consume: Pool,
    health: Health,
    /// Declarations from several consumers of one process run one at a time: RabbitMQ can fail
    /// concurrent declarations of the same quorum queue with a connection-level error.
    declaring: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connection_name", &self.inner.config.connection_name)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Builds the pools; connections are opened on first use, so this succeeds while the broker is
    /// down and the service can start, report not-ready, and connect when it comes up.
    pub fn new(config: BrokerConfig, health: Health) -> Result<Self, BrokerError> {
        let publish = Self::pool(&config, "publish", 1)?;
        let consume = Self::pool(&config, "consume", 1)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                publish,
                consume,
                health,
                declaring: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn pool(config: &BrokerConfig, role: &str, size: usize) -> Result<Pool, BrokerError> {
        let name = format!("{} ({role})", config.connection_name);
        let manager = Failover::new(config, name)?;
        // Every node is tried in turn before a `get` gives up.
        let nodes = u32::try_from(manager.nodes.len()).unwrap_or(u32::MAX);
        let create = config.connect_timeout.saturating_mul(nodes);
        Pool::builder(manager)
            .config(PoolConfig {
                // One connection per role carries all channels of that role; a dead one is
                // replaced on the next `get` because recycling checks that it is connected.
                max_size: size,
                timeouts: Timeouts {
                    wait: Some(create),
                    create: Some(create),
                    recycle: Some(config.connect_timeout),
                },
                ..PoolConfig::default()
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|err| BrokerError::Config(err.to_string()))
    }

    /// The configuration this broker was built with.
    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// The health table that publishers and consumers report to.
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    /// Opens a new channel on a pooled connection. The connection goes back to the pool at once;
    /// the channel keeps working on it and may be kept for as long as it stays open.
    pub(crate) async fn open_channel(&self, role: Role) -> Result<Channel, BrokerError> {
        let pool = match role {
            Role::Publish => &self.inner.publish,
            Role::Consume => &self.inner.consume,
        };
        let connection = pool.get().await?;
        // The broker stops reading from a connection it has blocked (memory or disk alarm), so
        // a channel requested on it would wait for the alarm to clear.
        if connection.status().blocked() {
            return Err(BrokerError::Blocked);
        }
        let timeout = self.inner.config.connect_timeout;
        match tokio::time::timeout(timeout, connection.create_channel()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(err)) => {
                // Most likely the connection died: take it out of the pool rather than hand it to
                // the next caller.
                let _detached = managed::Object::take(connection);
                Err(err.into())
            }
            // Alive but not answering (blocked after the check above, or overloaded): it stays
            // in the pool, and the caller backs off.
            Err(_) => Err(BrokerError::Timeout {
                what: "opening a channel",
                after: timeout,
            }),
        }
    }

    /// Declares exchanges, queues and bindings on a fresh channel. Declarations are idempotent.
    pub async fn declare(&self, declarations: &Declarations) -> Result<(), BrokerError> {
        let channel = self.open_channel(Role::Consume).await?;
        self.declare_on(&channel, declarations).await?;
        // Closing can only fail if the channel is already gone, which changes nothing here.
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// Closes the pools; open channels end with their connections.
    pub fn close(&self) {
        self.inner.publish.close();
        self.inner.consume.close();
    }
}

impl Broker {
    /// Declares `declarations` on `channel`, one declaring channel at a time.
    pub(crate) async fn declare_on(
        &self,
        channel: &Channel,
        declarations: &Declarations,
    ) -> Result<(), lapin::Error> {
        let _one_at_a_time = self.inner.declaring.lock().await;
        declare_all(channel, declarations).await
    }
}

async fn declare_all(channel: &Channel, declarations: &Declarations) -> Result<(), lapin::Error> {
    for exchange in &declarations.exchanges {
        let kind = match exchange.kind {
            ExchangeKind::Direct => LapinExchangeKind::Direct,
            ExchangeKind::Topic => LapinExchangeKind::Topic,
        };
        channel
            .exchange_declare(
                exchange.name.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    for queue in &declarations.queues {
        declare_queue(channel, queue).await?;
    }
    Ok(())
}

async fn declare_queue(channel: &Channel, queue: &QueueSpec) -> Result<(), lapin::Error> {
    let mut args = FieldTable::default();
    let options = match queue.kind {
        QueueKind::Quorum => {
            args.insert("x-queue-type".into(), long_string("quorum"));
            // On a cluster, each queue's leader goes to the node with the fewest leaders rather
            // than to the node of the connection that declared it, so that no node carries all
            // of them (and losing one node moves only its share). One node: no effect.
            args.insert("x-queue-leader-locator".into(), long_string("balanced"));
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            }
        }
        QueueKind::Exclusive => {
            args.insert("x-queue-type".into(), long_string("classic"));
            QueueDeclareOptions {
                durable: false,
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            }
        }
    };
    if let Some(ttl) = queue.message_ttl {
        let millis = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(millis));
    }
    if let Some((exchange, routing_key)) = &queue.dead_letter {
        args.insert("x-dead-letter-exchange".into(), long_string(exchange));
        args.insert("x-dead-letter-routing-key".into(), long_string(routing_key));
        if queue.reliable_dead_letter {
            // Quorum queues dead-letter at most once unless told otherwise; at-least-once keeps a
            // parked command until its dead-letter queue has it. It requires reject-publish.
            args.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            args.insert("x-overflow".into(), long_string("reject-publish"));
        }
    }
    if let Some(limit) = queue.delivery_limit {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(limit.into()),
        );
    }
    channel
        .queue_declare(queue.name.as_str().into(), options, args)
        .await?;
    for (exchange, routing_key) in &queue.bindings {
        channel
            .queue_bind(
                queue.name.as_str().into(),
                exchange.as_str().into(),
                routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}
