//! `tail-events`: a small consumer of order events. It binds a queue of its own (exclusive,
//! deleted when it exits) to the `order.events` topic exchange and prints each event as one JSON
//! line. An example of consuming the events from another service, and a debugging tool.
//!
//! ```sh
//! tail-events                         # every event
//! tail-events --routing-key order.placed
//! ```

use std::sync::Arc;

use clap::Parser;
use messaging::consumer::{self, ConsumerSpec};
use messaging::{Broker, Disposition, Handler, Health, Incoming, Publisher};
use protocol::topology::Topology;
use service_kit::config::BrokerArgs;

/// Prints order events as they arrive.
#[derive(Parser, Debug)]
#[command(name = "tail-events", version, about)]
struct Args {
    /// Which events: `order.placed`, `order.not_placed`, or a pattern such as `order.#`.
    #[arg(long, default_value = "order.#")]
    routing_key: String,

    #[command(flatten)]
    broker: BrokerArgs,
}

struct Print;

impl Handler for Print {
    async fn handle(&self, message: &Incoming) -> Disposition {
        match serde_json::from_slice::<serde_json::Value>(message.data()) {
            Ok(event) => println!("{event}"),
            Err(_) => println!("{}", String::from_utf8_lossy(message.data())),
        }
        Disposition::Ack
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topology = Topology::new(args.broker.amqp_prefix.clone());
    let broker = Broker::new(args.broker.config("tail-events"), Health::default())?;
    let publisher = Publisher::new(broker.clone());
    let queue = format!(
        "{}tail-events.{}",
        args.broker.amqp_prefix,
        uuid::Uuid::new_v4()
    );
    let declarations = topology.events_tap(queue.clone(), &args.routing_key);
    let shutdown = service_kit::shutdown::on_signal();
    consumer::run(
        broker,
        publisher,
        ConsumerSpec::exclusive(queue, declarations),
        Arc::new(Print),
        shutdown,
    )
    .await;
    Ok(())
}
