//! The harness of the system tests: each test gets its own RabbitMQ virtual host and its own
//! three databases, runs the real service binaries against them (on port 0), and removes
//! everything when it ends, even when it fails.
//!
//! Settings (environment variables, with local defaults):
//! - `TEST_AMQP_URL`: the broker without a vhost (`amqp://guest:guest@127.0.0.1:5672`).
//! - `TEST_RABBITMQ_MANAGEMENT_URL`: the management API (`http://guest:guest@127.0.0.1:15672`),
//!   used to create and delete the per-test vhost.
//! - `TEST_DATABASE_URL`: the PostgreSQL server (`postgres://postgres@127.0.0.1:5432`).
//! - `TEST_LOG=1`: print the services' logs as the test runs (they are printed anyway when a
//!   test fails).

// Helpers serve every test module; not every module uses every helper.
#![allow(dead_code)]

pub mod browser;
pub mod checker;
pub mod client;
pub mod cluster;
pub mod deploy;
pub mod events;
pub mod infra;
pub mod keys;
pub mod load;
pub mod pg_ha;
pub mod proxy;
pub mod service;
pub mod sse;

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use tokio::time::Instant;

pub use infra::Infra;
pub use service::Service;

/// How long a rider's app asks again for a pick-up that delivery refuses because it has not seen
/// the order placed yet: the `order.placed` event is published by the coordinator's outbox
/// relay and consumed by delivery, a few milliseconds after the customer's answer.
pub const PLACED_SEEN: Duration = Duration::from_secs(10);

/// A whole system under test: its own vhost, its own databases, three running services.
pub struct TestSystem {
    /// Broker and databases of this test.
    pub infra: Infra,
    /// The order service (coordinator).
    pub order: Service,
    /// The store service.
    pub store: Service,
    /// The delivery service.
    pub delivery: Service,
    http: reqwest::Client,
    // Dropped last (fields drop in order): held while the test runs.
    _broker: BrokerShare,
}

/// Tests share one RabbitMQ node and one PostgreSQL server. Most tests only need their own vhost
/// and databases and share the servers freely; a test that restarts the node or the server (the
/// soak), or a load test held to the production deadlines ([`Options::alone`]), takes them
/// exclusively, waiting for the others to finish and holding back new ones while it runs.
static BROKER: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// A test's share of the servers, held while it runs.
pub enum BrokerShare {
    /// Beside other tests.
    Shared(OwnedRwLockReadGuard<()>),
    /// Alone.
    Exclusive(OwnedRwLockWriteGuard<()>),
}

/// Environment for the services of a test, on top of the defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// For every service.
    pub all: Vec<(String, String)>,
    /// For the order service only.
    pub order: Vec<(String, String)>,
    /// For the store only.
    pub store: Vec<(String, String)>,
    /// For delivery only.
    pub delivery: Vec<(String, String)>,
    /// The test restarts the RabbitMQ node or the PostgreSQL server, or needs the machine to
    /// itself: run it alone.
    pub exclusive_broker: bool,
}

impl Options {
    /// Sets `key` for every service.
    pub fn all(mut self, key: &str, value: &str) -> Self {
        self.all.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets `key` for the order service.
    pub fn order(mut self, key: &str, value: &str) -> Self {
        self.order.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets `key` for the store.
    pub fn store(mut self, key: &str, value: &str) -> Self {
        self.store.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets `key` for delivery.
    pub fn delivery(mut self, key: &str, value: &str) -> Self {
        self.delivery.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Makes every service verify tokens with `keys` (identity on, as in production).
    pub fn identity(mut self, keys: &keys::TestKeys) -> Self {
        let settings = keys::verifying_with(&keys.public_key_file());
        self.all.extend(settings);
        self
    }

    /// Runs this test alone on the broker and the database server (it restarts one of them).
    pub fn exclusive_broker(mut self) -> Self {
        self.exclusive_broker = true;
        self
    }

    /// Runs this test alone, for a load test held to the production deadlines: on a machine of
    /// two cores, two such tests side by side (each with three debug-built services) miss them
    /// for want of CPU, not because of what they test.
    pub fn alone(mut self) -> Self {
        self.exclusive_broker = true;
        self
    }

    /// Long deadlines, for tests that place many orders at once and expect every one of them to
    /// get its final answer (never `timeout`, never `202`) however slow the machine is.
    pub fn patient() -> Self {
        Self::default()
            .order("ORDER_DEADLINE", "20s")
            .order("RESPONSE_BUDGET", "25s")
            .all("RESERVATION_TTL", "60s")
    }

    /// Short timings, so that timeouts, leases, expiries and sweeps happen within a test.
    pub fn fast() -> Self {
        Self::default()
            .order("ORDER_DEADLINE", "2s")
            .order("RESPONSE_BUDGET", "3s")
            .order("REPLY_TIMEOUT", "500ms")
            .order("LEASE", "1s")
            .order("PHASE2_GRACE", "2s")
            .order("RECOVERY_INTERVAL", "300ms")
            .all("RESERVATION_TTL", "4s")
            .all("EXPIRY_GRACE", "500ms")
            .all("SWEEP_INTERVAL", "300ms")
            .all("TIMER_WINDOW", "50ms")
    }
}

impl TestSystem {
    /// A system with default settings, started and ready.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A system with extra settings, started and ready.
    pub async fn start_with(options: Options) -> Self {
        let broker = Self::share_broker(&options).await;
        let infra = Infra::create().await;
        Self::start_on(infra, options, broker).await
    }

    /// A system on a cluster of the test's own (its nodes in `AMQP_ADDRESSES`).
    pub async fn start_on_cluster(cluster: &cluster::Cluster, options: Options) -> Self {
        // The machine's node is not touched: share it like any test.
        let broker = Self::share_broker(&Options::default()).await;
        let infra = Infra::create_at(cluster.target()).await;
        Self::start_on(infra, options, broker).await
    }

    /// A system whose databases are on `database` (a failover set-up of the test's own: its
    /// servers in `DATABASE_HOSTS`).
    pub async fn start_on_database(database: infra::DatabaseTarget, options: Options) -> Self {
        let broker = Self::share_broker(&options).await;
        let infra = Infra::create().await.on_database(database);
        Self::start_on(infra, options, broker).await
    }

    /// A system whose services run with their own least-privilege broker users and database
    /// roles.
    pub async fn start_least_privilege(options: Options) -> Self {
        let broker = Self::share_broker(&options).await;
        let infra = Infra::create().await;
        let mut options = options;
        for service in ["order", "store", "delivery"] {
            let account = infra.least_privilege(service).await;
            let own = match service {
                "order" => &mut options.order,
                "store" => &mut options.store,
                _ => &mut options.delivery,
            };
            own.push(("AMQP_URL".into(), account.amqp_url));
            own.push((
                format!("{}_DATABASE_URL", service.to_uppercase()),
                account.database_url,
            ));
        }
        Self::start_on(infra, options, broker).await
    }

    /// Holds the servers shared, for a test that uses the broker or the database server without
    /// starting a system: no test that restarts them runs meanwhile.
    pub async fn share_servers() -> BrokerShare {
        Self::share_broker(&Options::default()).await
    }

    async fn share_broker(options: &Options) -> BrokerShare {
        if options.exclusive_broker {
            BrokerShare::Exclusive(Arc::clone(&BROKER).write_owned().await)
        } else {
            BrokerShare::Shared(Arc::clone(&BROKER).read_owned().await)
        }
    }

    async fn start_on(infra: Infra, options: Options, broker: BrokerShare) -> Self {
        let mut system = Self::new_stopped(infra, options, broker);
        // The participants first: they declare the command queues the coordinator sends to.
        tokio::join!(system.store.start(), system.delivery.start());
        system.order.start().await;
        system
    }

    fn new_stopped(infra: Infra, options: Options, broker: BrokerShare) -> Self {
        let env = |name: &str, own: &[(String, String)]| {
            let mut env = infra.service_env(name);
            env.extend(options.all.iter().cloned());
            env.extend(own.iter().cloned());
            env
        };
        Self {
            order: Service::new("order-service", env("order", &options.order)),
            store: Service::new("store-service", env("store", &options.store)),
            delivery: Service::new("delivery-service", env("delivery", &options.delivery)),
            infra,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            _broker: broker,
        }
    }

    /// Another order service (coordinator) on the same broker and database, not started.
    pub fn another_order_service(&self) -> Service {
        self.order.sibling()
    }

    /// Waits until every order in `outcomes` that got an id is final (asking `via`), and
    /// returns the final bodies.
    pub async fn wait_final(&self, via: &Service, outcomes: &[load::Outcome]) -> Vec<Value> {
        let mut finals = Vec::new();
        for id in outcomes.iter().filter_map(load::Outcome::order_id) {
            finals.push(self.order_when_final(via, id).await);
        }
        finals
    }

    /// Waits until order `id` is final (asking `via`) and returns its body.
    pub async fn order_when_final(&self, via: &Service, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, body) = self.get(via, &format!("/orders/{id}")).await;
            if body["status"] != "pending" {
                return body;
            }
            assert!(Instant::now() < deadline, "order {id} not final: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no order in the database is unfinished.
    pub async fn assert_all_orders_final(&self, timeout: Duration) {
        eventually("every order final", timeout, || async {
            let states = self.infra.order_states().await;
            ["reserving", "assigning", "compensating", "cancelling"]
                .iter()
                .all(|s| states.get(*s).copied().unwrap_or(0) == 0)
        })
        .await;
    }

    /// A request to `service`; returns the status and the JSON body (`Null` if none).
    pub async fn request(
        &self,
        service: &Service,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.request_as(service, method, path, body, None).await
    }

    /// A request to `service` with `token` (as its bearer), if given; returns the status and the
    /// JSON body (`Null` if none).
    pub async fn request_as(
        &self,
        service: &Service,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, service.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("response body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, json)
    }

    /// POST JSON.
    pub async fn post(&self, service: &Service, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(service, reqwest::Method::POST, path, Some(&body))
            .await
    }

    /// GET.
    pub async fn get(&self, service: &Service, path: &str) -> (StatusCode, Value) {
        self.request(service, reqwest::Method::GET, path, None)
            .await
    }

    /// The raw HTTP client, for requests the helpers do not cover.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Creates a food with `packets` packets; returns its id.
    pub async fn create_food(&self, name: &str, packets: i64) -> i64 {
        let (status, body) = self
            .post(
                &self.store,
                "/foods",
                json!({ "name": name, "packets": packets }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("food id")
    }

    /// Creates `count` agents; returns their ids.
    pub async fn create_agents(&self, count: i64) -> Vec<i64> {
        let (status, body) = self
            .post(&self.delivery, "/agents", json!({ "count": count }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect()
    }

    /// Places an order for `food_id`.
    pub async fn place_order(&self, food_id: i64) -> (StatusCode, Value) {
        self.post(
            &self.order,
            "/orders",
            json!({ "food_id": food_id, "customer_id": "c-42" }),
        )
        .await
    }

    /// Creates a hub; returns its id.
    pub async fn create_hub(&self, name: &str) -> i64 {
        let (status, body) = self
            .post(&self.store, "/hubs", json!({ "name": name }))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().expect("hub id")
    }

    /// Adds `count` packets of `food` at `hub`.
    pub async fn add_packets(&self, food: i64, hub: i64, count: i64) {
        let (status, body) = self
            .post(
                &self.store,
                &format!("/foods/{food}/packets"),
                json!({ "count": count, "hub_id": hub }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// Creates `count` agents at `hub`; returns their ids.
    pub async fn create_agents_at(&self, hub: i64, count: i64) -> Vec<i64> {
        let (status, body) = self
            .post(
                &self.delivery,
                "/agents",
                json!({ "count": count, "hub_id": hub }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_i64().expect("id"))
            .collect()
    }

    /// Places a basket of `(food, quantity)` lines at `hub` for customer `c-42`.
    pub async fn place_basket(&self, hub: i64, lines: &[(i64, i64)]) -> (StatusCode, Value) {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(food, quantity)| json!({ "food_id": food, "quantity": quantity }))
            .collect();
        self.post(
            &self.order,
            "/orders",
            json!({ "customer_id": "c-42", "hub_id": hub, "lines": lines }),
        )
        .await
    }

    /// Asks to cancel `order` as `customer`.
    pub async fn cancel(&self, order: &str, customer: &str) -> (StatusCode, Value) {
        self.post(
            &self.order,
            &format!("/orders/{order}/cancel"),
            json!({ "customer_id": customer }),
        )
        .await
    }

    /// The rider reports `step` (`picked-up` or `delivered`) of `order`, as a rider's app does:
    /// a pick-up refused with `409` (delivery has not seen the order placed yet) is asked again
    /// until it is answered otherwise, or for [`PLACED_SEEN`].
    pub async fn rider(&self, order: &str, step: &str) -> (StatusCode, Value) {
        self.rider_as(order, step, None).await
    }

    /// [`TestSystem::rider`] with the rider's `token` (identity on).
    pub async fn rider_as(
        &self,
        order: &str,
        step: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let deadline = Instant::now() + PLACED_SEEN;
        loop {
            let (status, body) = self
                .request_as(
                    &self.delivery,
                    reqwest::Method::POST,
                    &format!("/deliveries/{order}/{step}"),
                    None,
                    token,
                )
                .await;
            if step != "picked-up" || status != StatusCode::CONFLICT || Instant::now() > deadline {
                return (status, body);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The rider reports `step` of `order` once, and gets delivery's answer.
    pub async fn rider_once(&self, order: &str, step: &str) -> (StatusCode, Value) {
        self.request(
            &self.delivery,
            reqwest::Method::POST,
            &format!("/deliveries/{order}/{step}"),
            None,
        )
        .await
    }

    /// Waits until order `id` is in `status` (asking the order service), and returns its body.
    pub async fn order_reaches(&self, id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.get(&self.order, &format!("/orders/{id}")).await;
            if body["status"] == status {
                return body;
            }
            assert!(Instant::now() < deadline, "order {id} not {status}: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A food's counts.
    pub async fn food(&self, id: i64) -> Value {
        let (status, body) = self.get(&self.store, &format!("/foods/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Agent counts.
    pub async fn agents_summary(&self) -> Value {
        let (status, body) = self.get(&self.delivery, "/agents/summary").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Holds every answer the load's clients got against the order database (the checker), and
    /// fails the test on any contradiction. Call it once every order is final.
    pub async fn assert_checked(&self, outcomes: &[load::Outcome]) -> checker::Checked {
        let checked = checker::check(self.infra.order_db().await, outcomes).await;
        println!("{checked}");
        assert!(checked.is_clean(), "{checked}: {:#?}", checked.problems);
        checked
    }

    /// `Ok` when every service is ready, else the `/readyz` answer of the first that is not.
    pub async fn all_ready(&self) -> Result<(), String> {
        self.order.readiness().await?;
        self.store.readiness().await?;
        self.delivery.readiness().await
    }

    /// Stops `load`, waits until each of its orders is final and nothing is held, and holds every
    /// answer against the databases: the audit, then the checker (whose counts it returns).
    pub async fn finish_and_check(&self, load: load::Load, timeout: Duration) -> checker::Checked {
        let outcomes = load.stop().await;
        self.wait_final(&self.order, &outcomes).await;
        self.assert_all_orders_final(timeout).await;
        self.assert_nothing_reserved(timeout).await;
        self.assert_audit_clean(timeout).await;
        self.assert_checked(&outcomes).await
    }

    /// Runs the audit on the three databases.
    pub async fn audit(&self) -> audit::Report {
        self.infra.audit().await
    }

    /// Waits until the audit is clean (things in flight settle), or fails with its report.
    pub async fn assert_audit_clean(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let report = self.audit().await;
            if report.is_clean() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "audit not clean after {timeout:?}: {report:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until no packet and no agent is reserved.
    pub async fn assert_nothing_reserved(&self, timeout: Duration) {
        eventually_explained("nothing reserved", timeout, || async {
            let held = self.infra.reservations().await;
            if held.is_empty() {
                Ok(())
            } else {
                Err(format!("still reserved:\n{}", held.join("\n")))
            }
        })
        .await;
    }
}

/// Polls `condition` until it holds, failing the test after `timeout`. The waiting is on a
/// condition with a deadline, never a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_explained(what, timeout, || {
        let holds = condition();
        async move {
            if holds.await {
                Ok(())
            } else {
                Err(String::new())
            }
        }
    })
    .await;
}

/// Like [`eventually`], for a condition that says why it does not hold yet: the last reason is
/// part of the failure.
pub async fn eventually_explained<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let why_not = match condition().await {
            Ok(()) => return,
            Err(why_not) => why_not,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what} {why_not}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
