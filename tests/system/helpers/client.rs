//! A test-side client that talks to the participants directly over the broker, as the
//! coordinator does, to deliver commands exactly as a test needs (twice, out of order, broken).

use std::sync::Arc;
use std::time::Duration;

use messaging::consumer::{self, AckMode, ConsumerSpec};
use messaging::{Broker, BrokerConfig, Health, Outgoing, Publisher, RpcClient, Wait};
use protocol::command::{Command, Reply};
use protocol::envelope::TxnEnvelope;
use protocol::ids::InstanceId;
use protocol::topology::{Declarations, ExchangeKind, ExchangeSpec, Participant, Topology};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Infra;
use super::eventually;

/// Sends commands to the participants of a test system and waits for their replies.
pub struct CommandClient {
    rpc: Arc<RpcClient>,
    publisher: Publisher,
    topology: Topology,
    shutdown: CancellationToken,
}

impl CommandClient {
    /// Connects to the test's vhost and starts consuming its own reply queue.
    pub async fn connect(infra: &Infra) -> Self {
        let health = Health::default();
        let broker = Broker::new(
            BrokerConfig {
                url: infra.amqp_url.clone(),
                addresses: infra.amqp_addresses.clone(),
                connection_name: "system test".into(),
                publisher_channels: 1,
                confirm_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                tls_ca_file: None,
            },
            health.clone(),
        )
        .expect("broker config");
        let publisher = Publisher::new(broker.clone());
        let topology = Topology::new("");
        let instance = InstanceId::new();
        let rpc = RpcClient::new(publisher.clone(), Topology::reply_routing_key(instance));
        let shutdown = CancellationToken::new();
        let declarations = Declarations {
            exchanges: vec![ExchangeSpec {
                name: topology.replies_exchange(),
                kind: ExchangeKind::Direct,
            }],
            queues: vec![topology.reply_queue_spec(instance)],
        };
        tokio::spawn(consumer::run(
            broker,
            publisher.clone(),
            ConsumerSpec {
                queue: topology.reply_queue(instance),
                prefetch: 0,
                ack_mode: AckMode::Auto,
                dead_letter_exchange: None,
                declarations: Arc::new(declarations),
            },
            rpc.replies(),
            shutdown.clone(),
        ));
        eventually("test reply consumer up", Duration::from_secs(10), || {
            let up = !health.snapshot().is_empty() && health.all_up();
            async move { up }
        })
        .await;
        Self {
            rpc,
            publisher,
            topology,
            shutdown,
        }
    }

    /// The message carrying `envelope` to `to`.
    pub fn message<R: Serialize>(
        &self,
        to: Participant,
        envelope: &TxnEnvelope<Command<R>>,
    ) -> Outgoing {
        let operation = envelope.message().operation();
        Outgoing::txn(
            envelope,
            self.topology.commands_exchange(to),
            Topology::command_routing_key(operation),
        )
        .expect("encodable")
    }

    /// Delivers `envelope` to `to` and returns the reply.
    pub async fn call<R: Serialize>(
        &self,
        to: Participant,
        envelope: &TxnEnvelope<Command<R>>,
    ) -> Reply {
        self.rpc
            .call(
                self.message(to, envelope),
                Wait::Once(Duration::from_secs(10)),
            )
            .await
            .expect("a readable reply")
    }

    /// Delivers `envelopes` to `to` in one command batch and returns their replies, in order.
    pub async fn call_batch<R: Serialize>(
        &self,
        to: Participant,
        envelopes: &[TxnEnvelope<Command<R>>],
    ) -> Vec<Reply> {
        let messages = envelopes.iter().map(|e| self.message(to, e)).collect();
        self.rpc
            .call_batch(messages, Duration::from_secs(10))
            .await
            .into_iter()
            .map(|reply| reply.expect("a readable reply"))
            .collect()
    }

    /// Publishes `envelope` to `to` (confirmed) without waiting for a reply.
    pub async fn send<R: Serialize>(&self, to: Participant, envelope: &TxnEnvelope<Command<R>>) {
        self.publisher
            .publish(&self.message(to, envelope))
            .await
            .expect("published");
    }

    /// Publishes raw bytes (confirmed) to `exchange` with `routing_key`.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        self.publisher
            .publish(&Outgoing::raw(body.to_vec(), exchange, routing_key))
            .await
            .expect("published");
    }

    /// The topology (empty prefix, as the services under test use).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }
}

impl Drop for CommandClient {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
