//! TLS to the broker and the databases: a RabbitMQ node that speaks only amqps and a
//! PostgreSQL server that takes only TLS connections, with a certificate authority of the
//! test's own (`scripts/local-tls`). The three services place an order through them, verifying
//! each server's certificate and name (`AMQP_TLS_CA_FILE`; `sslmode=verify-full` with
//! `sslrootcert`); without the authority they refuse the servers.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::eventually;
use crate::helpers::service::Service;

/// The TLS servers of one test, stopped and removed when dropped.
struct TlsServers {
    name: String,
    dir: PathBuf,
    port: u16,
    /// The services' settings, as `scripts/local-tls env` prints them.
    env: Vec<(String, String)>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/local-tls")
}

impl TlsServers {
    async fn start() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut rng = rand::rng();
        let name = format!("tls{secs}{:04x}", rng.random::<u16>());
        // Below the kernel's ephemeral ports, apart from the machine's servers and the clusters.
        let port = 14_000 + 10 * rng.random_range(0..500u16);
        let mut servers = Self {
            dir: std::env::temp_dir().join(&name),
            name,
            port,
            env: Vec::new(),
        };
        let printed = servers.run("start").await;
        servers.env = printed
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        servers
    }

    async fn run(&self, command: &str) -> String {
        let output = tokio::process::Command::new(script())
            .arg(command)
            .env("TLS_NAME", &self.name)
            .env("TLS_DIR", &self.dir)
            .env("TLS_PORT", self.port.to_string())
            .output()
            .await
            .expect("scripts/local-tls runs");
        assert!(
            output.status.success(),
            "scripts/local-tls {command}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn var(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("scripts/local-tls env prints {name}"))
    }

    /// A service on these servers, identity off (not the subject here).
    fn service(&self, name: &'static str, without: &[&str]) -> Service {
        let upper = name.trim_end_matches("-service").to_uppercase();
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| !without.contains(&k.as_str()))
            .cloned()
            .collect();
        env.extend([
            (format!("{upper}_HTTP_ADDR"), "127.0.0.1:0".to_owned()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            ("AUTH_DISABLED".to_owned(), "true".to_owned()),
            ("DATABASE_POOL_SIZE".to_owned(), "4".to_owned()),
        ]);
        Service::new(name, env)
    }
}

impl Drop for TlsServers {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .arg("stop")
            .env("TLS_NAME", &self.name)
            .env("TLS_DIR", &self.dir)
            .env("TLS_PORT", self.port.to_string())
            .output();
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = http.post(url).json(&body).send().await.expect("answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_services_place_an_order_over_tls_to_the_broker_and_the_databases_and_verify_them() {
    let servers = TlsServers::start().await;
    let mut store = servers.service("store-service", &[]);
    let mut delivery = servers.service("delivery-service", &[]);
    let mut order = servers.service("order-service", &[]);
    tokio::join!(store.start(), delivery.start());
    order.start().await;

    let http = reqwest::Client::new();
    let (status, food) = post(
        &http,
        store.url("/foods"),
        json!({ "name": "Vada", "packets": 2 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{food}");
    let (status, agents) = post(&http, delivery.url("/agents"), json!({ "count": 2 })).await;
    assert_eq!(status, StatusCode::CREATED, "{agents}");
    let (status, placed) = post(
        &http,
        order.url("/orders"),
        json!({ "food_id": food["id"], "customer_id": "c-tls" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["status"], "placed", "{placed}");

    // Every connection of the services to PostgreSQL is encrypted (the server takes no other,
    // and says so).
    let mut admin = sqlx::PgConnection::connect(servers.var("DATABASE_URL"))
        .await
        .expect("the test connects with verify-full");
    let (plain, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname IN ('order_service', 'store_service', 'delivery_service')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(plain, 0, "no plain connection");
    assert!(
        encrypted >= 3,
        "each service is connected over TLS: {encrypted}"
    );

    // Without the test's authority, the broker's certificate is refused: the service never
    // gets a broker connection (and says why).
    let mut untrusting = servers.service("store-service", &["AMQP_TLS_CA_FILE"]);
    untrusting.spawn().await;
    eventually(
        "the broker's certificate is refused",
        Duration::from_secs(30),
        || async { untrusting.logged("certificate verify failed") },
    )
    .await;
    let ready = http
        .get(untrusting.url("/readyz"))
        .send()
        .await
        .expect("answers")
        .status();
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);

    // And `verify-full` without the authority refuses the database server.
    let url = servers.var("DATABASE_URL");
    let without_ca = url.split("&sslrootcert").next().unwrap_or(url);
    let refused = sqlx::PgConnection::connect(without_ca).await;
    assert!(refused.is_err(), "verify-full without the CA must fail");
}
