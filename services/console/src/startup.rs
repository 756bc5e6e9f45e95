//! Building and running the console.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use identity::Issuer;
use messaging::consumer::{self, ConsumerSpec};
use messaging::{Broker, Health, Publisher};
use protocol::topology::Topology;
use service_kit::app::StartupError;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::http::{self, Console};
use crate::services::{OwnToken, Services};
use crate::snapshot::{Reader, Snapshot};
use crate::tally::{Tally, Tap};

/// How long background tasks get to stop.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The running console: its queue of events, its reader of the services, its pages.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    broker: Broker,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Application {
    /// Loads the keys, binds the queue of events and the HTTP listener, and starts reading the
    /// services. Everything stops when `shutdown` is cancelled.
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let verifier = service_kit::auth::verifier(&config.identity).await?;
        let issuer = match &config.auth_signing_key_file {
            Some(path) => {
                warn!(
                    "development sign-in is on (AUTH_SIGNING_KEY_FILE): the console's pages \
                     hand out tokens to anyone who asks. For development only"
                );
                Some(Arc::new(Issuer::from_pem_file(
                    path,
                    &config.identity.auth_issuer,
                    &config.identity.auth_audience,
                )?))
            }
            None => None,
        };
        let own_token = match (&issuer, &config.console_token_file) {
            (Some(issuer), _) => OwnToken::Minted {
                issuer: Box::new(Issuer::clone(issuer)),
                current: Mutex::new(None),
            },
            (None, Some(path)) => OwnToken::File(path.clone()),
            (None, None) => {
                if !verifier.is_disabled() {
                    warn!(
                        "the console has no token of its own (CONSOLE_TOKEN_FILE): it can read \
                         the services only if their identity is turned off"
                    );
                }
                OwnToken::None
            }
        };
        let services = Arc::new(Services::new(
            &config.order_url,
            &config.store_url,
            &config.delivery_url,
            own_token,
        ));
        let topology = Topology::new(config.broker.amqp_prefix.clone());
        let health = Health::default();
        let broker = Broker::new(config.broker.config("console"), health.clone())?;
        let publisher = Publisher::new(broker.clone());
        let tracker = TaskTracker::new();
        let stop = shutdown.clone();

        // One queue of every order event for all the pages of this process.
        let tally = Arc::new(Mutex::new(Tally::new()));
        let changed = Arc::new(Notify::new());
        let queue = topology.console_queue(uuid::Uuid::new_v4());
        let declarations = topology.events_tap(queue.clone(), "order.#");
        tracker.spawn(consumer::run(
            broker.clone(),
            publisher.clone(),
            ConsumerSpec::exclusive(queue, declarations),
            Arc::new(Tap::new(Arc::clone(&tally), Arc::clone(&changed))),
            stop.clone(),
        ));

        let dead_letter_queues = topology.dead_letter_queues();
        let (snapshots, watching) = watch::channel(Arc::new(Snapshot::default()));
        let reader = Reader {
            services: Arc::clone(&services),
            broker: broker.clone(),
            dead_letter_queues: dead_letter_queues.clone(),
            tally,
            changed,
            stuck_after: config.stuck_after,
            refresh: config.refresh,
            min_refresh: config.min_refresh,
        };
        tracker.spawn(reader.run(snapshots, stop.clone()));

        let console = Arc::new(Console {
            services,
            snapshots: watching,
            broker: broker.clone(),
            publisher,
            dead_letter_queues,
            issuer,
            identity_on: !verifier.is_disabled(),
            health,
            shutdown: shutdown.clone(),
        });
        let routes = http::routes(console, verifier);
        let router =
            service_kit::http::with_limits(service_kit::http::with_request_tracing(routes));
        let listener = service_kit::http::bind(&config.http_addr).await?;
        info!("console started");
        Ok(Self {
            listener,
            router,
            broker,
            tracker,
            shutdown,
        })
    }

    /// The HTTP address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until shutdown (the live streams end with it), then stops the background tasks.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        service_kit::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        self.shutdown.cancel();
        service_kit::shutdown::drain(
            &self.tracker,
            DRAIN_TIMEOUT,
            "background work",
            "stopping anyway",
        )
        .await;
        self.broker.close();
        info!("stopped");
        Ok(())
    }
}
