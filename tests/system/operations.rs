//! What operators rely on: least privilege, the admin token, body limits, metrics, trace
//! context, and a healthy topology in the management API.

use std::time::Duration;

use messaging::{Broker, BrokerConfig, Health};
use protocol::topology::{Declarations, QueueKind, QueueSpec, Topology};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::service::Service;
use crate::helpers::{Options, TestSystem, eventually};

#[tokio::test]
async fn services_run_with_their_own_broker_users_and_database_roles() {
    let system = TestSystem::start_least_privilege(Options::default()).await;
    let food = system.create_food("Misal", 2).await;
    system.create_agents(2).await;
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The store's broker user cannot declare the coordinator's queues.
    let store = system.infra.account("store");
    let broker = Broker::new(
        BrokerConfig {
            url: store.amqp_url.clone(),
            addresses: Vec::new(),
            connection_name: "least privilege check".into(),
            publisher_channels: 1,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            tls_ca_file: None,
        },
        Health::default(),
    )
    .unwrap();
    let foreign = Declarations {
        exchanges: vec![],
        queues: vec![QueueSpec {
            name: Topology::new("").order_timeouts(),
            kind: QueueKind::Quorum,
            message_ttl: None,
            dead_letter: None,
            reliable_dead_letter: false,
            delivery_limit: None,
            bindings: vec![],
        }],
    };
    let refused = broker.declare(&foreign).await.unwrap_err().to_string();
    assert!(
        refused.contains("ACCESS_REFUSED") || refused.contains("access"),
        "{refused}"
    );
    broker.close();

    // The store's database role cannot connect to the order database.
    let order_db = system.infra.account("order").database_url;
    let store_role_on_order_db = order_db.replacen(
        &format!("{}_order@", system.infra.id),
        &format!("{}_store@", system.infra.id),
        1,
    );
    assert!(
        sqlx::PgConnection::connect(&store_role_on_order_db)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_before_they_are_read() {
    let system = TestSystem::start().await;
    let http = system.http();
    // A body over the limit is refused before it is read whole.
    let huge = json!({ "food_id": 1, "customer_id": "x".repeat(100 * 1024) });
    let response = http
        .post(system.order.url("/orders"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(system.infra.order_states().await.is_empty());
}

async fn metrics(system: &TestSystem, service: &crate::helpers::Service) -> String {
    system
        .http()
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_count_orders_and_commands() {
    // No resent command may be counted twice: replies are waited for as long as the test runs.
    let system = TestSystem::start_with(Options::default().order("REPLY_TIMEOUT", "60s")).await;
    let food = system.create_food("Pav Bhaji", 1).await;
    system.create_agents(1).await;
    assert_eq!(system.place_order(food).await.0, StatusCode::CREATED);
    assert_eq!(system.place_order(food).await.0, StatusCode::CONFLICT);

    // Gauges and probes settle just after the answers: wait for every line.
    let expected = [
        (
            &system.order,
            vec![
                r#"orders_total{outcome="placed",reason=""} 1"#,
                r#"orders_total{outcome="not_placed",reason="food_unavailable"} 1"#,
                "database_up 1",
                "order_phase_seconds_bucket",
                "orders_in_flight 0",
            ],
        ),
        (
            &system.store,
            vec![
                r#"participant_commands_total{participant="store",operation="reserve",outcome="reserved"} 1"#,
                r#"participant_commands_total{participant="store",operation="assign",outcome="assigned"} 1"#,
                r#"broker_component_up{component="consumer store.reserve"} 1"#,
            ],
        ),
    ];
    for (service, lines) in expected {
        let what = format!("{} /metrics to show {lines:?}", service.name);
        eventually(&what, Duration::from_secs(10), || async {
            let text = metrics(&system, service).await;
            lines.iter().all(|line| text.contains(line))
        })
        .await;
    }
}

#[tokio::test]
async fn one_trace_id_joins_an_orders_log_lines_in_all_three_services() {
    let system = TestSystem::start().await;
    let food = system.create_food("Vada Pav", 1).await;
    system.create_agents(1).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = system
        .http()
        .post(system.order.url("/orders"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({ "food_id": food, "customer_id": "c-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    for service in [&system.order, &system.store, &system.delivery] {
        eventually(
            &format!("{} logs the trace id", service.name),
            Duration::from_secs(10),
            || async { service.logged(trace_id) },
        )
        .await;
    }
}

#[tokio::test]
async fn the_management_api_shows_every_queue_consumed_and_nothing_left_behind() {
    let system = TestSystem::start().await;
    let food = system.create_food("Sabudana", 20).await;
    system.create_agents(20).await;
    for _ in 0..10 {
        system.place_order(food).await;
    }
    let management = &system.infra.management;
    let vhost = &system.infra.vhost;
    let topology = Topology::new("");
    let mut consumed = vec![topology.order_timeouts()];
    for participant in protocol::topology::Participant::ALL {
        for op in protocol::command::Operation::ALL {
            consumed.push(topology.command_queue(participant, op));
        }
        consumed.push(topology.expiry_queue(participant));
    }
    eventually(
        "every consumed queue has a consumer and nothing unacked",
        Duration::from_secs(30),
        || async {
            let queues = management.queues(vhost).await;
            consumed.iter().all(|name| {
                queues.iter().any(|q| {
                    q["name"] == name.as_str()
                        && q["consumers"].as_i64().unwrap_or(0) >= 1
                        && q["messages_unacknowledged"].as_i64().unwrap_or(1) == 0
                })
            })
        },
    )
    .await;
    for name in &consumed {
        let dlq = Topology::dead_letter_queue(name);
        assert_eq!(management.count_messages(vhost, &dlq).await, 0, "{dlq}");
    }
    let exchanges = management.get(&format!("exchanges/{vhost}")).await;
    for name in [
        "order.events",
        "order.replies",
        "order.timers",
        "store.commands",
        "delivery.commands",
        "store.dead-letter",
    ] {
        assert!(
            exchanges
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == name),
            "exchange {name} missing"
        );
    }
}

/// Posts `body` to `path` of `service` with `Idempotency-Key: key`; the status, whether the
/// answer says it is a repeat's, and the body.
async fn post_keyed(
    system: &TestSystem,
    service: &Service,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, bool, Value) {
    let response = system
        .http()
        .post(service.url(path))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .expect("the service answers");
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (
        status,
        replayed,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// An operator's call that creates, sent again with its key (its first answer lost, in a database
/// failover say), is answered as the first was and creates nothing more; the key used for
/// another call is refused.
#[tokio::test]
async fn an_operators_creations_repeated_with_their_keys_create_nothing_more() {
    let system = TestSystem::start().await;
    let twice = |service: &'static str, path: String, key: &'static str, body: Value| {
        let system = &system;
        async move {
            let service = match service {
                "store" => &system.store,
                _ => &system.delivery,
            };
            let (first_status, first_replayed, first) =
                post_keyed(system, service, &path, key, body.clone()).await;
            let (again_status, again_replayed, again) =
                post_keyed(system, service, &path, key, body).await;
            assert_eq!(
                (first_status, first_replayed, again_status, again_replayed),
                (StatusCode::CREATED, false, StatusCode::CREATED, true),
                "{path}: {first} then {again}"
            );
            assert_eq!(first, again, "{path}: the same answer");
            first
        }
    };

    let hub = twice(
        "store",
        "/hubs".into(),
        "hub-1",
        json!({ "name": "Indiranagar" }),
    )
    .await;
    let hub = hub["id"].as_i64().expect("hub id");
    let food = twice(
        "store",
        "/foods".into(),
        "food-1",
        json!({ "name": "Idli", "packets": 3, "hub_id": hub }),
    )
    .await;
    let food = food["id"].as_i64().expect("food id");
    twice(
        "store",
        format!("/foods/{food}/packets"),
        "packets-1",
        json!({ "count": 2, "hub_id": hub }),
    )
    .await;
    let agents = twice(
        "delivery",
        "/agents".into(),
        "agents-1",
        json!({ "count": 2, "hub_id": hub }),
    )
    .await;
    assert_eq!(agents["ids"].as_array().map(Vec::len), Some(2), "{agents}");

    // One hub, one food of 3 + 2 packets, two agents: nothing created twice.
    let (_, hubs) = system.get(&system.store, "/hubs").await;
    let named = |name: &str| {
        hubs.as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["name"] == name)
            .count()
    };
    assert_eq!(named("Indiranagar"), 1, "{hubs}");
    let (_, stock) = system.get(&system.store, &format!("/hubs/{hub}")).await;
    assert_eq!(stock["foods"][0]["available"], 5, "{stock}");
    let (_, riders) = system
        .get(&system.delivery, &format!("/agents/summary?hub_id={hub}"))
        .await;
    assert_eq!(riders["available"], 2, "{riders}");

    // The key of another call, and a malformed key, are refused; nothing is created.
    let (status, _, body) = post_keyed(
        &system,
        &system.store,
        "/hubs",
        "hub-1",
        json!({ "name": "Koramangala" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (status, _, body) = post_keyed(
        &system,
        &system.store,
        "/hubs",
        "a key",
        json!({ "name": "Koramangala" }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, hubs) = system.get(&system.store, "/hubs").await;
    assert!(
        hubs.as_array()
            .into_iter()
            .flatten()
            .all(|h| h["name"] != "Koramangala"),
        "{hubs}"
    );
}
