//! Services started before PostgreSQL or the broker is up: they wait, retrying, and serve once
//! it is.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::proxy::Proxy;
use crate::helpers::{TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(60);

/// A port on which nothing listens (yet).
async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// `url` with its port replaced.
fn on_port(url: &str, port: u16) -> (String, String, u16) {
    let mut parsed = reqwest::Url::parse(url).expect("a URL");
    let host = parsed.host_str().expect("a host").to_owned();
    let original = parsed.port().expect("a port");
    parsed.set_port(Some(port)).expect("a port can be set");
    (parsed.to_string(), host, original)
}

#[tokio::test]
async fn services_started_before_postgresql_and_the_broker_serve_once_they_are_up() {
    let mut system = TestSystem::start().await;
    let food = system.create_food("Puri", 5).await;
    system.create_agents(5).await;

    // A store whose PostgreSQL is not up yet: its port refuses connections.
    let db_port = free_port().await;
    let (db_url, db_host, db_real_port) = on_port(&system.infra.database_url("store"), db_port);
    let mut late_store = system.store.sibling();
    late_store.set_env("STORE_DATABASE_URL", &db_url);
    // Delivery whose broker is not up yet.
    let amqp_port = free_port().await;
    let (amqp_url, amqp_host, amqp_real_port) =
        on_port(&format!("{}?heartbeat=5", system.infra.amqp_url), amqp_port);
    let mut late_delivery = system.delivery.sibling();
    late_delivery.set_env("AMQP_URL", &amqp_url);
    // Only the late copies serve from now on.
    system.store.kill().await;
    system.delivery.kill().await;

    let store_logs = late_store.logs();
    let store = tokio::spawn(async move {
        late_store.start().await;
        late_store
    });
    late_delivery.spawn().await;
    eventually("the store waits for its database", FINISH, || async {
        store_logs.contain("database not reachable yet")
    })
    .await;
    eventually("delivery waits for the broker", FINISH, || async {
        late_delivery.logged("reconnecting") && !late_delivery.is_ready().await
    })
    .await;

    // The servers come up.
    let _db = Proxy::start_at(db_port, &db_host, db_real_port)
        .await
        .expect("the database's port");
    let _broker = Proxy::start_at(amqp_port, &amqp_host, amqp_real_port)
        .await
        .expect("the broker's port");
    let late_store = store.await.expect("the store started");
    late_delivery.wait_ready(FINISH).await;
    assert!(late_store.is_ready().await);

    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    system.assert_audit_clean(FINISH).await;
}
