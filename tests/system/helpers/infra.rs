//! Per-test broker and databases, the service binaries, and cleanup.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{Value, json};
use service_kit::db::DatabaseSettings;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// Test resources older than this are left-overs of runs that were killed; any test run
/// removes them.
const STALE_AFTER: Duration = Duration::from_secs(3600);
/// Every per-test vhost and database name starts with this.
const NAME_PREFIX: &str = "sys_";

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn amqp_base() -> String {
    env_or("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
}

fn management_url() -> reqwest::Url {
    reqwest::Url::parse(&env_or(
        "TEST_RABBITMQ_MANAGEMENT_URL",
        "http://guest:guest@127.0.0.1:15672",
    ))
    .expect("TEST_RABBITMQ_MANAGEMENT_URL is a URL")
}

fn database_base() -> String {
    env_or("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432")
}

/// The RabbitMQ management API, for vhosts, queues and connections (the set-up tool's client,
/// with what the tests need on top).
#[derive(Clone, Debug)]
pub struct Management {
    api: rabbitmq_setup::Management,
}

impl Management {
    /// The management API from `TEST_RABBITMQ_MANAGEMENT_URL`.
    pub fn new() -> Self {
        Self::at(management_url().as_str())
    }

    /// The management API at `url` (`http://user:password@host:port`).
    pub fn at(url: &str) -> Self {
        Self {
            api: rabbitmq_setup::Management::new(url).expect("management URL is usable"),
        }
    }

    /// The set-up tool's client.
    pub fn api(&self) -> &rabbitmq_setup::Management {
        &self.api
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.api
            .request(method, path, body)
            .await
            .unwrap_or_else(|err| panic!("management API (is rabbitmq_management enabled?): {err}"))
    }

    /// `GET /api/<path>` as JSON.
    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await;
    }

    /// `DELETE /api/<path>`; a missing resource is fine.
    pub async fn delete(&self, path: &str) {
        let _ = self.api.request(reqwest::Method::DELETE, path, None).await;
    }

    /// The queues of `vhost`.
    pub async fn queues(&self, vhost: &str) -> Vec<Value> {
        self.get(&format!("queues/{}", encode(vhost)))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Messages in a queue of `vhost` right now (up to 1,000), read with a non-destructive get
    /// rather than from the statistics, which lag by seconds.
    pub async fn count_messages(&self, vhost: &str, queue: &str) -> usize {
        self.peek(vhost, queue, 1_000).await.len()
    }

    /// Up to `count` messages of a queue, left in it (`ack_requeue_true`).
    pub async fn peek(&self, vhost: &str, queue: &str, count: u32) -> Vec<Value> {
        let body = json!({ "count": count, "ackmode": "ack_requeue_true", "encoding": "auto" });
        let path = format!("queues/{}/{}/get", encode(vhost), encode(queue));
        self.call(reqwest::Method::POST, &path, Some(body))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Deletes a queue of `vhost` (with its messages).
    pub async fn delete_queue(&self, vhost: &str, queue: &str) {
        self.delete(&format!("queues/{}/{}", encode(vhost), encode(queue)))
            .await;
    }

    /// Removes every message of a queue.
    pub async fn purge(&self, vhost: &str, queue: &str) {
        self.delete(&format!(
            "queues/{}/{}/contents",
            encode(vhost),
            encode(queue)
        ))
        .await;
    }
}

/// Runs `rabbitmqctl` with `args` (the broker is on this machine in the test set-up).
pub async fn rabbitmqctl(args: &[&str]) {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The broker node, stopped (`rabbitmqctl stop_app`) until [`StoppedBroker::start`]. A test that
/// fails while the node is down starts it again when this is dropped, so that the tests after it
/// find the broker running.
#[must_use = "the broker starts again when this is dropped"]
pub struct StoppedBroker {
    started: bool,
}

impl StoppedBroker {
    /// Stops the node's RabbitMQ application.
    pub async fn stop() -> Self {
        rabbitmqctl(&["stop_app"]).await;
        Self { started: false }
    }

    /// Starts it again and waits until it is up.
    pub async fn start(mut self) {
        rabbitmqctl(&["start_app"]).await;
        self.started = true;
        rabbitmqctl(&["await_startup"]).await;
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        if !self.started {
            // Only reached when the test is already failing: the results change nothing.
            for args in [["start_app"].as_slice(), &["await_startup"]] {
                let _ = std::process::Command::new("rabbitmqctl")
                    .args(args)
                    .status();
            }
        }
    }
}

/// A memory alarm on the broker node: it blocks every publishing connection until
/// [`MemoryAlarm::clear`], or until dropped, which puts the node's watermark back.
#[must_use = "the alarm is cleared when this is dropped"]
pub struct MemoryAlarm {
    watermark: String,
    cleared: bool,
}

impl MemoryAlarm {
    /// Lowers the node's memory high watermark below what it uses, which raises the alarm.
    pub async fn raise() -> Self {
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .output()
            .await
            .expect("rabbitmqctl runs");
        let watermark = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success() && watermark.parse::<f64>().is_ok(),
            "cannot read the memory high watermark: {watermark:?}"
        );
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.000001"]).await;
        Self {
            watermark,
            cleared: false,
        }
    }

    /// Puts the watermark back, which clears the alarm.
    pub async fn clear(mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", &self.watermark]).await;
        self.cleared = true;
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        if !self.cleared {
            // Only reached when the test is already failing: the result changes nothing.
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["set_vm_memory_high_watermark", &self.watermark])
                .status();
        }
    }
}

pub use rabbitmq_setup::encode;

/// The RabbitMQ that a test runs on: the machine's node, or a cluster of the test's own.
#[derive(Clone, Debug)]
pub struct BrokerTarget {
    /// AMQP URL without a vhost, e.g. `amqp://guest:guest@127.0.0.1:5672`.
    pub amqp_base: String,
    /// The cluster's nodes (`AMQP_ADDRESSES`); empty for one node.
    pub addresses: Vec<String>,
    /// The management API of a node.
    pub management_url: String,
}

impl BrokerTarget {
    /// The machine's node, from `TEST_AMQP_URL` and `TEST_RABBITMQ_MANAGEMENT_URL`.
    pub fn machine() -> Self {
        Self {
            amqp_base: amqp_base(),
            addresses: Vec::new(),
            management_url: management_url().to_string(),
        }
    }
}

/// The PostgreSQL that a test runs on: the machine's server, or a failover set-up of the test's
/// own.
#[derive(Clone, Debug)]
pub struct DatabaseTarget {
    /// URL without a database, e.g. `postgres://postgres@127.0.0.1:5432`.
    pub base: String,
    /// Several servers of which one is the primary (`DATABASE_HOSTS`); empty for one.
    pub hosts: Vec<String>,
}

impl DatabaseTarget {
    /// The machine's server, from `TEST_DATABASE_URL`.
    pub fn machine() -> Self {
        Self {
            base: database_base(),
            hosts: Vec::new(),
        }
    }
}

/// The vhost and databases of one test.
pub struct Infra {
    /// Unique name: `sys_<unix seconds>_<random>`.
    pub id: String,
    /// The vhost (named like the test).
    pub vhost: String,
    /// AMQP URL of the vhost.
    pub amqp_url: String,
    /// The nodes of the test's cluster (`AMQP_ADDRESSES`); empty on the machine's node.
    pub amqp_addresses: Vec<String>,
    /// Management API.
    pub management: Management,
    management_url: String,
    /// Where the databases are.
    pub database: DatabaseTarget,
    order_db: OnceCell<PgPool>,
    store_db: OnceCell<PgPool>,
    delivery_db: OnceCell<PgPool>,
    /// Stops the test's own pools following the primary (on a failover set-up).
    stop_following: CancellationToken,
    /// Broker users created for this test (users are global to the node).
    users: std::sync::Mutex<Vec<String>>,
    accounts: std::sync::Mutex<Vec<(String, ServiceAccount)>>,
}

/// A service's own credentials, from [`Infra::least_privilege`].
#[derive(Clone, Debug)]
pub struct ServiceAccount {
    /// `AMQP_URL` with the service's broker user.
    pub amqp_url: String,
    /// The service's database URL, with its own role.
    pub database_url: String,
}

impl Infra {
    /// Creates the vhost (the databases are created by the services). Removes left-overs of
    /// killed runs first, once per test process.
    pub async fn create() -> Self {
        static JANITOR: OnceCell<()> = OnceCell::const_new();
        JANITOR
            .get_or_init(|| async { remove_stale(&Management::new()).await })
            .await;
        Self::create_at(BrokerTarget::machine()).await
    }

    /// The same on `target`.
    pub async fn create_at(target: BrokerTarget) -> Self {
        let management = Management::at(&target.management_url);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let id = format!("{NAME_PREFIX}{secs}_{:08x}", rand::rng().random::<u32>());
        management.put(&format!("vhosts/{id}"), json!({})).await;
        management
            .put(
                &format!("permissions/{id}/{}", encode(management.api().user())),
                json!({ "configure": ".*", "write": ".*", "read": ".*" }),
            )
            .await;
        Self {
            amqp_url: format!("{}/{id}", target.amqp_base),
            amqp_addresses: target.addresses,
            vhost: id.clone(),
            id,
            management,
            management_url: target.management_url,
            database: DatabaseTarget::machine(),
            order_db: OnceCell::new(),
            store_db: OnceCell::new(),
            delivery_db: OnceCell::new(),
            stop_following: CancellationToken::new(),
            users: std::sync::Mutex::new(Vec::new()),
            accounts: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The same with the databases on `database` (a failover set-up of the test's own).
    pub fn on_database(mut self, database: DatabaseTarget) -> Self {
        self.database = database;
        self
    }

    /// The account [`Infra::least_privilege`] created for `service`.
    pub fn account(&self, service: &str) -> ServiceAccount {
        self.accounts
            .lock()
            .expect("accounts")
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no account for {service}"))
    }

    /// One broker user per service with the permissions of `Topology::permissions` (through
    /// `rabbitmq-setup`), and one PostgreSQL role per service that owns its database and is the
    /// only one (besides the superuser) allowed to connect to it.
    pub async fn least_privilege(&self, service: &'static str) -> ServiceAccount {
        let name = format!("{}_{service}", self.id);
        let password = format!("{:016x}", rand::rng().random::<u64>());
        let admin =
            rabbitmq_setup::Management::new(management_url().as_str()).expect("management URL");
        self.users.lock().expect("users").push(name.clone());
        admin
            .create_users(
                &self.vhost,
                &protocol::topology::Topology::new(""),
                &[rabbitmq_setup::ServiceUser {
                    service,
                    user: name.clone(),
                    password: password.clone(),
                }],
            )
            .await
            .expect("broker user created");
        let db = admin_pool().await.expect("admin connection");
        for statement in [
            format!("CREATE ROLE \"{name}\" LOGIN"),
            format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""),
            format!("REVOKE CONNECT ON DATABASE \"{name}\" FROM PUBLIC"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&db)
                .await
                .expect("database role set up");
        }
        db.close().await;
        let amqp = amqp_base().replacen("guest:guest@", &format!("{name}:{password}@"), 1);
        let db_base = database_base().replacen("postgres@", &format!("{name}@"), 1);
        let account = ServiceAccount {
            amqp_url: format!("{amqp}/{}?heartbeat=5", self.vhost),
            database_url: format!("{db_base}/{name}"),
        };
        self.accounts
            .lock()
            .expect("accounts")
            .push((service.to_owned(), account.clone()));
        account
    }

    /// The database URL of a service (`order`, `store` or `delivery`).
    pub fn database_url(&self, service: &str) -> String {
        format!("{}/{}_{service}", self.database.base, self.id)
    }

    /// The environment that points a service at this test's broker and databases.
    pub fn service_env(&self, service: &str) -> Vec<(String, String)> {
        let upper = service.to_uppercase();
        let mut env = vec![
            ("AMQP_URL".into(), format!("{}?heartbeat=5", self.amqp_url)),
            (format!("{upper}_DATABASE_URL"), self.database_url(service)),
            (format!("{upper}_HTTP_ADDR"), "127.0.0.1:0".into()),
            ("LOG_FORMAT".into(), "json".into()),
            // Tests run in parallel against one PostgreSQL (100 connections by default).
            ("DATABASE_POOL_SIZE".into(), "6".into()),
            ("RUST_LOG".into(), "info".into()),
            // Identity is the subject of its own tests (`identity.rs`, with keys of their own:
            // `Options::identity`); the others act as anyone.
            ("AUTH_DISABLED".into(), "true".into()),
            // The tests' customers place orders in bursts; the per-customer rate is the subject
            // of `admission.rs`.
            ("CUSTOMER_ORDER_RATE".into(), "0".into()),
        ];
        if !self.amqp_addresses.is_empty() {
            env.push(("AMQP_ADDRESSES".into(), self.amqp_addresses.join(",")));
        }
        if !self.database.hosts.is_empty() {
            env.push(("DATABASE_HOSTS".into(), self.database.hosts.join(",")));
        }
        env
    }

    async fn pool(&self, service: &str) -> &PgPool {
        let cell = match service {
            "order" => &self.order_db,
            "store" => &self.store_db,
            _ => &self.delivery_db,
        };
        cell.get_or_init(|| async {
            if self.database.hosts.is_empty() {
                return PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&self.database_url(service))
                    .await
                    .expect("test database reachable");
            }
            // On a failover set-up the test reads the primary as the services do, and follows
            // it when it moves.
            let settings = DatabaseSettings {
                options: self.database_url(service).parse().expect("a database URL"),
                hosts: self
                    .database
                    .hosts
                    .iter()
                    .map(|h| h.parse().expect("host:port"))
                    .collect(),
                pool_size: 2,
                statement_timeout: Duration::from_secs(30),
            };
            let database = service_kit::db::open(&settings)
                .await
                .expect("test database reachable");
            if let Some(follower) = database.follower {
                tokio::spawn(follower.run(self.stop_following.clone()));
            }
            database.pool
        })
        .await
    }

    /// The order database.
    pub async fn order_db(&self) -> &PgPool {
        self.pool("order").await
    }

    /// The store database.
    pub async fn store_db(&self) -> &PgPool {
        self.pool("store").await
    }

    /// The delivery database.
    pub async fn delivery_db(&self) -> &PgPool {
        self.pool("delivery").await
    }

    /// The audit of this test's databases, with a short grace.
    pub async fn audit(&self) -> audit::Report {
        let db = audit::Databases {
            order: self.order_db().await.clone(),
            store: self.store_db().await.clone(),
            delivery: self.delivery_db().await.clone(),
        };
        audit::audit(&db, Duration::from_secs(5))
            .await
            .expect("audit ran")
    }

    /// Packets and agents currently reserved.
    pub async fn reserved_counts(&self) -> (i64, i64) {
        let count = |pool: PgPool, table: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {table} WHERE state = 'reserved'"
            )))
            .fetch_one(&pool)
            .await
            .expect("count")
        };
        (
            count(self.store_db().await.clone(), "packets").await,
            count(self.delivery_db().await.clone(), "agents").await,
        )
    }

    /// Closes every broker connection of this test's vhost (`rabbitmqctl close_all_connections`).
    pub async fn close_broker_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.vhost,
            "--limit",
            "1000",
            "system test: connections closed",
        ])
        .await;
    }

    /// Every reservation held now, a line each: the item, its transaction and order, its
    /// expiry, the participant's barrier rows of the transaction, and the order as recorded.
    pub async fn reservations(&self) -> Vec<String> {
        let held = |pool: PgPool, table: &'static str| async move {
            sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(format!(
                "SELECT r.order_id::text,
                        format('{table} %s for txn %s, until %s; barrier: %s', r.id, r.txn_id,
                               r.reserved_until,
                               (SELECT string_agg(b.operation || '=' || coalesce(b.outcome, '?') || ' at ' || b.created_at, ', ')
                                FROM txn_barrier b WHERE b.txn_id = r.txn_id))
                 FROM {table} r WHERE r.state = 'reserved' ORDER BY r.id LIMIT 20"
            )))
            .fetch_all(&pool)
            .await
            .expect("reservations")
        };
        let mut lines = Vec::new();
        let rows = [
            held(self.store_db().await.clone(), "packets").await,
            held(self.delivery_db().await.clone(), "agents").await,
        ];
        for (order, what) in rows.into_iter().flatten() {
            let recorded: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT state, reason FROM orders WHERE id::text = $1")
                    .bind(&order)
                    .fetch_optional(self.order_db().await)
                    .await
                    .expect("order");
            lines.push(format!("{what}; order {order}: {recorded:?}"));
        }
        lines
    }

    /// How long the youngest reservation (of packets and agents) has held its item, given the
    /// reservations' lifetime `ttl_seconds`, by the databases' clocks (zero if none).
    pub async fn youngest_reservation_held_for(&self, ttl_seconds: i64) -> Duration {
        let held = |pool: PgPool, table: &'static str| async move {
            sqlx::query_scalar::<_, f64>(sqlx::AssertSqlSafe(format!(
                "SELECT coalesce(extract(epoch FROM now()
                            - (max(reserved_until) - make_interval(secs => $1::double precision))),
                        0)::float8
                 FROM {table} WHERE state = 'reserved'"
            )))
            .bind(ttl_seconds as f64)
            .fetch_one(&pool)
            .await
            .expect("reservation age")
        };
        let store = held(self.store_db().await.clone(), "packets").await;
        let delivery = held(self.delivery_db().await.clone(), "agents").await;
        Duration::from_secs_f64(store.min(delivery).max(0.0))
    }

    /// Whether delivery has seen order `id` placed (its agent carries the mark that a pick-up
    /// needs).
    pub async fn placement_seen(&self, id: &str) -> bool {
        let id: uuid::Uuid = id.parse().expect("an order id");
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM agents WHERE placed_order_id = $1)")
            .bind(id)
            .fetch_one(self.delivery_db().await)
            .await
            .expect("placement mark")
    }

    /// Terminates every PostgreSQL backend connected to this test's databases (as an operator's
    /// `pg_terminate_backend` would). Returns how many.
    pub async fn terminate_backends(&self) -> i64 {
        let admin = admin_pool().await.expect("admin connection");
        let names: Vec<String> = ["order", "store", "delivery"]
            .iter()
            .map(|s| format!("{}_{s}", self.id))
            .collect();
        let n = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = ANY($1) AND pid <> pg_backend_pid()",
        )
        .bind(&names)
        .fetch_one(&admin)
        .await
        .expect("terminate backends");
        admin.close().await;
        n
    }

    /// Orders by state.
    pub async fn order_states(&self) -> std::collections::HashMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>("SELECT state, count(*) FROM orders GROUP BY state")
            .fetch_all(self.order_db().await)
            .await
            .expect("order states")
            .into_iter()
            .collect()
    }
}

impl Drop for Infra {
    fn drop(&mut self) {
        self.stop_following.cancel();
        // A failover set-up of the test's own is removed whole (`PgHa`).
        let own_databases = self.database.hosts.is_empty();
        let id = self.id.clone();
        let management_url = self.management_url.clone();
        let users = self.users.lock().map(|u| u.clone()).unwrap_or_default();
        // Drop runs inside the test's runtime, which is blocked while this waits: clean up on a
        // thread with a runtime of its own, and with clients of its own (a pooled connection of
        // the test's HTTP client is driven by the test's runtime, and would never answer).
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let management = Management::at(&management_url);
                management.delete(&format!("vhosts/{id}")).await;
                for user in users {
                    management.delete(&format!("users/{}", encode(&user))).await;
                }
                if own_databases {
                    drop_databases(&format!("{id}_")).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn admin_pool() -> Option<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{}/postgres", database_base()))
        .await
        .ok()
}

/// Drops every database whose name starts with `prefix`.
async fn drop_databases(prefix: &str) {
    let Some(admin) = admin_pool().await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(prefix)
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
    for name in names {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
    // Roles of least-privilege tests are named like their databases.
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)")
            .bind(prefix)
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
    for role in roles {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{role}\""
        )))
        .execute(&admin)
        .await;
    }
    admin.close().await;
}

/// Whether a `sys_<secs>_...` name is older than [`STALE_AFTER`].
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
        return false;
    };
    let Some(secs) = rest.split('_').next().and_then(|s| s.parse::<u64>().ok()) else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    now.saturating_sub(secs) > STALE_AFTER.as_secs()
}

async fn remove_stale(management: &Management) {
    let vhosts = management.get("vhosts").await;
    for vhost in vhosts.as_array().into_iter().flatten() {
        if let Some(name) = vhost["name"].as_str()
            && is_stale(name)
        {
            management.delete(&format!("vhosts/{}", encode(name))).await;
        }
    }
    let Some(admin) = admin_pool().await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, 'sys_')")
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
    admin.close().await;
    for name in names.into_iter().filter(|n| is_stale(n)) {
        drop_databases(&name).await;
    }
}

/// The path of a service binary, built (once per test process) with the same profile as the
/// tests, so a test never runs a stale binary.
pub fn binary(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/system-<hash> → target/<profile>
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target directory")
            .to_path_buf();
        let mut cargo = std::process::Command::new(env!("CARGO"));
        cargo.args(["build", "--workspace", "--bins"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("cargo runs");
        assert!(status.success(), "building the service binaries failed");
        dir
    });
    dir.join(name)
}
