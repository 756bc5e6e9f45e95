//! A test-side listener on the `order.events` exchange.

use std::sync::Arc;
use std::time::Duration;

use messaging::consumer::{self, ConsumerSpec};
use messaging::{
    Broker, BrokerConfig, Disposition, Handler, Health, Incoming, Outgoing, Publisher,
};
use protocol::topology::Topology;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Infra, eventually};

/// Receives every order event published in a test's vhost from the moment it is created.
pub struct EventTap {
    events: Mutex<mpsc::UnboundedReceiver<Value>>,
    publisher: Publisher,
    exchange: String,
    shutdown: CancellationToken,
}

struct Forward(mpsc::UnboundedSender<Value>);

impl Handler for Forward {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let event = serde_json::from_slice(message.data()).unwrap_or(Value::Null);
        let _ = self.0.send(event);
        Disposition::Ack
    }
}

impl EventTap {
    /// Binds a queue of its own to `order.events` in a test's vhost and starts consuming.
    pub async fn start(infra: &Infra) -> Self {
        Self::start_at(&infra.amqp_url).await
    }

    /// The same, on the broker at `url`.
    pub async fn start_at(url: &str) -> Self {
        let health = Health::default();
        let broker = Broker::new(
            BrokerConfig {
                url: url.to_owned(),
                addresses: Vec::new(),
                connection_name: "system test events".into(),
                publisher_channels: 1,
                confirm_timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(5),
                tls_ca_file: None,
            },
            health.clone(),
        )
        .expect("broker config");
        let topology = Topology::new("");
        let publisher = Publisher::new(broker.clone());
        let queue = format!("test.events.{}", uuid::Uuid::new_v4());
        let declarations = topology.events_tap(queue.clone(), "order.#");
        let (sender, receiver) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        tokio::spawn(consumer::run(
            broker,
            publisher.clone(),
            ConsumerSpec::exclusive(queue, declarations),
            Arc::new(Forward(sender)),
            shutdown.clone(),
        ));
        eventually("event tap consuming", Duration::from_secs(10), || {
            let up = health.all_up();
            async move { up }
        })
        .await;
        Self {
            events: Mutex::new(receiver),
            publisher,
            exchange: topology.events_exchange(),
            shutdown,
        }
    }

    /// Asserts that no event was published before this call that has not been read yet. It
    /// publishes a marker of its own to `order.events` and reads up to it: everything that the
    /// broker confirmed before the marker sits in front of it in the tap's queue.
    pub async fn assert_nothing_unread(&self, why: &str) {
        let marker = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({ "test_marker": marker }).to_string();
        let message = Outgoing::raw(
            body.into_bytes(),
            self.exchange.clone(),
            "order.test.marker",
        );
        self.publisher
            .publish(&message)
            .await
            .expect("the marker is published");
        let next = self
            .next(Duration::from_secs(20))
            .await
            .expect("the marker comes back");
        assert_eq!(
            next["test_marker"], marker,
            "{why}: this came first: {next}"
        );
    }

    /// The next event, waiting up to `timeout`.
    pub async fn next(&self, timeout: Duration) -> Option<Value> {
        tokio::time::timeout(timeout, self.events.lock().await.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for EventTap {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
