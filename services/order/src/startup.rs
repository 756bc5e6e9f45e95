//! Building and running the order service.

use std::net::SocketAddr;
use std::sync::Arc;

use messaging::consumer::{self, AckMode, ConsumerSpec};
use messaging::{Outgoing, RpcClient, TimerWindow};
use protocol::envelope::Envelope;
use protocol::ids::{InstanceId, OrderId};
use protocol::timer::OrderTimer;
use protocol::topology::{Declarations, Topology};
use service_kit::app::{Foundation, StartupError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::config::{Config, DEFAULT_DATABASE};
use crate::coordinator::Coordinator;
use crate::http;
use crate::operator;
use crate::outbox;
use crate::participants::RpcParticipants;
use crate::progress::Progress;
use crate::recovery::{self, Timeouts};
use crate::repo::Orders;

/// Prefetch of the timeout consumer: each fired timer claims a batch of orders.
const TIMEOUT_PREFETCH: u16 = 4;
/// Delivery's progress reports handled at once per coordinator.
const PROGRESS_PREFETCH: u16 = 32;

/// The running order service: database, reply and timeout consumers, recovery, HTTP API.
pub struct Application {
    foundation: Foundation,
    coordinator: Arc<Coordinator>,
}

impl Application {
    /// Connects and migrates the database, starts the consumers and recovery, binds the HTTP
    /// listener. Everything stops when `shutdown` is cancelled.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        for doubt in config.doubts() {
            warn!("{doubt}");
        }
        let instance = InstanceId::new();
        let mut database = config
            .common
            .db
            .settings(config.order_database_url.as_deref(), DEFAULT_DATABASE)?;
        // Names this coordinator in `pg_stat_activity` and as the holder of the leases it takes
        // (`orders.lease_holder`, shown by the operator API).
        database.options = database
            .options
            .application_name(&format!("order-service {instance}"));
        let foundation = Foundation::lay(
            &config.common.identity,
            &database,
            &crate::MIGRATOR,
            config.common.broker.config("order-service"),
            &config.http_addr,
            shutdown,
        )
        .await?;
        crate::metrics::describe();
        let topology = Topology::new(config.common.broker.amqp_prefix.clone());
        let settings = config.coordinator();
        // Deadline timers fire once a dead driver's lease has surely run out.
        let timer_wait = settings.order_deadline + settings.lease + config.timer_window;
        let declarations = topology.coordinator(timer_wait);
        let reply_declarations = Declarations {
            exchanges: declarations.exchanges.clone(),
            queues: vec![topology.reply_queue_spec(instance)],
        };
        let declarations = Arc::new(declarations);
        let sample_interval = config.common.metrics.metrics_sample_interval;
        foundation.watch_dead_letter_queues(&declarations, sample_interval);
        foundation
            .tracker
            .spawn(crate::metrics::sample_oldest_unfinished(
                foundation.pool.clone(),
                sample_interval,
                foundation.stop_background.clone(),
            ));

        let rpc = RpcClient::new(
            foundation.publisher.clone(),
            Topology::reply_routing_key(instance),
        );
        foundation.tracker.spawn(consumer::run(
            foundation.broker.clone(),
            foundation.publisher.clone(),
            ConsumerSpec::exclusive(topology.reply_queue(instance), reply_declarations),
            rpc.replies(),
            foundation.stop_background.clone(),
        ));

        let timers_exchange = topology.timers_exchange("order");
        let wait_key = Topology::timer_wait_routing_key(timer_wait);
        let deadlines = TimerWindow::spawn(
            foundation.publisher.clone(),
            config.timer_window,
            move |order_ids: Vec<OrderId>| {
                let envelope = Envelope::new(OrderTimer::Deadlines { order_ids });
                Outgoing::new(&envelope, timers_exchange.clone(), wait_key.clone())
            },
            foundation.stop_background.clone(),
            &foundation.tracker,
        );
        // Every order event, for the streams of `GET /orders/{id}/events`: a queue of this
        // coordinator's own (exclusive), read with automatic acks.
        let live = crate::live::Live::new();
        let (live_queue, live_declarations) = crate::live::Live::tap(&topology, instance);
        foundation.tracker.spawn(consumer::run(
            foundation.broker.clone(),
            foundation.publisher.clone(),
            ConsumerSpec::exclusive(live_queue, live_declarations),
            live.handler(),
            foundation.stop_background.clone(),
        ));

        let events = Arc::new(Notify::new());
        let coordinator = Arc::new(Coordinator {
            orders: Orders::new(
                foundation.pool.clone(),
                foundation.db_call_bound,
                &foundation.tracker,
            ),
            participants: Arc::new(RpcParticipants::new(
                rpc,
                topology.clone(),
                settings.reply_timeout,
            )),
            settings,
            deadlines,
            events: Arc::clone(&events),
            tracker: foundation.work.clone(),
            shutdown: foundation.shutdown.clone(),
            broker: foundation.broker.health().clone(),
            recovery_slots: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.recovery_concurrency).unwrap_or(usize::MAX),
            )),
            admission: Admission::new(
                usize::try_from(config.max_orders_in_flight).unwrap_or(usize::MAX),
                config.customer_order_rate,
                config.customer_order_burst,
            ),
            live,
        });
        foundation.tracker.spawn(outbox::relay(
            foundation.pool.clone(),
            foundation.publisher.clone(),
            topology.clone(),
            events,
            foundation.stop_background.clone(),
        ));

        foundation.tracker.spawn(consumer::run(
            foundation.broker.clone(),
            foundation.publisher.clone(),
            ConsumerSpec {
                queue: topology.order_timeouts(),
                prefetch: TIMEOUT_PREFETCH,
                ack_mode: AckMode::Manual,
                dead_letter_exchange: Some(topology.dead_letter_exchange("order")),
                declarations: Arc::clone(&declarations),
            },
            Arc::new(Timeouts::new(
                Arc::clone(&coordinator),
                foundation.stop_background.clone(),
            )),
            foundation.stop_background.clone(),
        ));
        foundation.tracker.spawn(consumer::run(
            foundation.broker.clone(),
            foundation.publisher.clone(),
            ConsumerSpec {
                queue: topology.progress_queue(),
                prefetch: PROGRESS_PREFETCH,
                ack_mode: AckMode::Manual,
                dead_letter_exchange: Some(topology.dead_letter_exchange("order")),
                declarations: Arc::clone(&declarations),
            },
            Arc::new(Progress::new(
                Arc::clone(&coordinator),
                foundation.stop_background.clone(),
            )),
            foundation.stop_background.clone(),
        ));
        foundation.tracker.spawn(recovery::sweep_loop(
            Arc::clone(&coordinator),
            config.recovery_interval,
            foundation.stop_background.clone(),
        ));
        info!(%instance, "coordinator started");
        Ok(Self {
            foundation,
            coordinator,
        })
    }

    /// The HTTP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.foundation.local_addr()
    }

    /// Serves until shutdown, then drains (in-flight orders get the drain time to finish; the
    /// rest are finished by recovery, here or in another coordinator).
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let routes =
            http::routes(Arc::clone(&self.coordinator)).merge(operator::routes(self.coordinator));
        self.foundation.run(routes, &http::openapi()).await
    }
}
