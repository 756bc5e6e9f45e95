//! The dashboard and the alert rules of `deploy/` against what the running services export:
//! every metric they use exists, every exported metric is described, and the gauges made for
//! them (dead-letter depths, the oldest unfinished order) say what they claim.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::client::CommandClient;
use crate::helpers::deploy::{self, Exposition, PROMETHEUS_OWN};
use crate::helpers::{Options, Service, TestSystem, eventually, eventually_explained};

const SETTLE: Duration = Duration::from_secs(30);

/// The RabbitMQ Prometheus plugin of the machine's node.
fn rabbitmq_prometheus_url() -> String {
    std::env::var("TEST_RABBITMQ_PROMETHEUS_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15692".to_owned())
}

async fn scrape(system: &TestSystem, service: &Service) -> String {
    let response = system
        .http()
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{} /metrics",
        service.name
    );
    response.text().await.unwrap()
}

#[test]
fn metric_names_are_told_from_functions_keywords_labels_and_variables() {
    let names = deploy::metric_names(
        r#"histogram_quantile(0.99, sum by (le, phase) (rate(order_phase_seconds_bucket{job=~"order|x"}[$__rate_interval])))
           / on (job) group_left (instance) max without (queue) (dead_letter_queue_messages offset 5m) > bool 1e3
           or up{job="order"} == 0 and count(foo:bar_total) unless label_replace(x, "dst", "$1", "src", "(.*)")"#,
    );
    let expected: BTreeSet<String> = [
        "order_phase_seconds_bucket",
        "dead_letter_queue_messages",
        "up",
        "foo:bar_total",
        "x",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported_and_described() {
    let used = deploy::used_metric_names();
    // The files are read at all: the dashboard and the rules name these.
    for name in [
        "orders_total",
        "order_phase_seconds_bucket",
        "orders_oldest_unfinished_age_seconds",
        "dead_letter_queue_messages",
        "service_ready",
        "rabbitmq_detailed_queue_messages_ready",
    ] {
        assert!(used.contains_key(name), "{name} is not used: {used:?}");
    }

    // As compose runs them: each service with its own broker user and database role.
    let system = TestSystem::start_least_privilege(
        Options::default().all("METRICS_SAMPLE_INTERVAL", "200ms"),
    )
    .await;
    let food = system.create_food("Idli", 1).await;
    system.create_agents(1).await;
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let ours: Vec<(&String, &String)> = used
        .iter()
        .filter(|(name, _)| {
            !name.starts_with("rabbitmq_") && !PROMETHEUS_OWN.contains(&name.as_str())
        })
        .collect();
    let services = [&system.order, &system.store, &system.delivery];
    // The sampled gauges appear a moment after the start.
    eventually_explained(
        "every metric of the dashboard and the alerts exported",
        SETTLE,
        || async {
            let mut exported = Exposition::default();
            for service in services {
                let one = Exposition::parse(&scrape(&system, service).await);
                exported.samples.extend(one.samples);
                exported.typed.extend(one.typed);
            }
            let missing: Vec<String> = ours
                .iter()
                .filter(|(name, _)| !exported.has(name))
                .map(|(name, place)| format!("{name} (used in {place})"))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing: {missing:?}"))
            }
        },
    )
    .await;

    for service in services {
        let text = scrape(&system, service).await;
        let exported = Exposition::parse(&text);
        assert!(exported.typed.len() >= 10, "{}: {text}", service.name);
        let undescribed: Vec<&String> = exported.typed.difference(&exported.described).collect();
        assert!(
            undescribed.is_empty(),
            "{} exports metrics without a # HELP line: {undescribed:?}",
            service.name
        );
        assert!(
            exported.samples.iter().all(|s| !s.starts_with("rabbitmq_")),
            "{}: the rabbitmq_ prefix is RabbitMQ's",
            service.name
        );
    }

    check_rabbitmq_names(&used).await;
}

/// The `rabbitmq_` names against the machine's RabbitMQ, at the endpoints that Prometheus
/// scrapes (each RabbitMQ job's path and parameters). The plugin is enabled if it is not (CI
/// enables it); if it cannot be reached, this part is skipped, saying so.
async fn check_rabbitmq_names(used: &std::collections::BTreeMap<String, String>) {
    let wanted: Vec<&String> = used.keys().filter(|n| n.starts_with("rabbitmq_")).collect();
    let jobs: Vec<deploy::ScrapeJob> = deploy::scrape_jobs()
        .into_iter()
        .filter(|job| job.targets.iter().any(|t| t.ends_with(":15692")))
        .collect();
    assert!(!jobs.is_empty(), "Prometheus scrapes no RabbitMQ node");
    let base = rabbitmq_prometheus_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let reachable = || async { http.get(format!("{base}/metrics")).send().await.is_ok() };
    if !reachable().await {
        let enabled = tokio::process::Command::new("rabbitmq-plugins")
            .args(["enable", "--quiet", "rabbitmq_prometheus"])
            .status()
            .await
            .is_ok_and(|s| s.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while enabled && !reachable().await && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !reachable().await {
            eprintln!(
                "SKIPPED: RabbitMQ's Prometheus plugin does not answer at {base} (enable it with \
                 `rabbitmq-plugins enable rabbitmq_prometheus`, or set TEST_RABBITMQ_PROMETHEUS_URL); \
                 not checked: {wanted:?}"
            );
            return;
        }
    }
    let mut exported = Exposition::default();
    for job in &jobs {
        let url = if job.query.is_empty() {
            format!("{base}{}", job.path)
        } else {
            format!("{base}{}?{}", job.path, job.query)
        };
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{url} (job {})",
            job.name
        );
        let one = Exposition::parse(&response.text().await.unwrap());
        assert!(!one.samples.is_empty(), "{url} exports nothing");
        exported.samples.extend(one.samples);
        exported.typed.extend(one.typed);
    }
    let missing: Vec<&&String> = wanted.iter().filter(|n| !exported.has(n)).collect();
    assert!(
        missing.is_empty(),
        "RabbitMQ does not export {missing:?} at the endpoints Prometheus scrapes"
    );
}

#[tokio::test]
async fn a_parked_message_shows_in_the_gauge_of_the_service_that_owns_the_dead_letter_queue() {
    let system =
        TestSystem::start_with(Options::default().all("METRICS_SAMPLE_INTERVAL", "200ms")).await;
    let client = CommandClient::connect(&system.infra).await;
    let topology = client.topology().clone();
    let gauge = |queue: &str| format!("dead_letter_queue_messages{{queue=\"{queue}\"}}");

    // Every dead-letter queue a service owns is watched, from zero.
    for (service, queues) in [
        (&system.store, vec!["store.reserve.dlq", "store.expiry.dlq"]),
        (&system.delivery, vec!["delivery.cancel.dlq"]),
        (
            &system.order,
            vec!["order.progress.dlq", "order.timeouts.dlq"],
        ),
    ] {
        eventually(
            &format!("{} reports its dead-letter queues empty", service.name),
            SETTLE,
            || async {
                let text = scrape(&system, service).await;
                queues
                    .iter()
                    .all(|queue| deploy::sample_value(&text, &gauge(queue)) == Some(0.0))
            },
        )
        .await;
    }

    // Two unreadable commands to the store's assign queue: parked in store.assign.dlq.
    for _ in 0..2 {
        client
            .publish_raw(
                &topology.commands_exchange(protocol::topology::Participant::Store),
                "assign",
                b"not a command",
            )
            .await;
    }
    let parked = gauge("store.assign.dlq");
    eventually("the store reports two parked messages", SETTLE, || async {
        deploy::sample_value(&scrape(&system, &system.store).await, &parked) == Some(2.0)
    })
    .await;
    // Only the owner reports it.
    for service in [&system.order, &system.delivery] {
        let text = scrape(&system, service).await;
        assert_eq!(
            deploy::sample_value(&text, &parked),
            None,
            "{}",
            service.name
        );
    }

    // Emptied: back to zero.
    system
        .infra
        .management
        .purge(&system.infra.vhost, "store.assign.dlq")
        .await;
    eventually(
        "the store reports the queue empty again",
        SETTLE,
        || async {
            deploy::sample_value(&scrape(&system, &system.store).await, &parked) == Some(0.0)
        },
    )
    .await;
}

#[tokio::test]
async fn the_oldest_unfinished_order_shows_its_age_until_it_is_finished() {
    let mut system = TestSystem::start_with(
        Options::default()
            .order("ORDER_DEADLINE", "8s")
            .order("RESPONSE_BUDGET", "1s")
            .all("METRICS_SAMPLE_INTERVAL", "200ms"),
    )
    .await;
    let food = system.create_food("Poha", 1).await;
    system.create_agents(1).await;
    let reserving = "orders_oldest_unfinished_age_seconds{state=\"reserving\"}";
    let age = |text: &str, series: &str| deploy::sample_value(text, series);
    eventually("no unfinished order", SETTLE, || async {
        let text = scrape(&system, &system.order).await;
        ["reserving", "assigning", "compensating", "cancelling"]
            .iter()
            .all(|s| {
                age(
                    &text,
                    &format!("orders_oldest_unfinished_age_seconds{{state=\"{s}\"}}"),
                ) == Some(0.0)
            })
    })
    .await;

    // The store does not answer: the order stays in phase 1 until its deadline.
    system.store.kill().await;
    let (status, body) = system
        .post(
            &system.order,
            "/orders",
            json!({ "food_id": food, "customer_id": "c-7" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["order_id"].as_str().unwrap().to_owned();
    eventually("the order's age shows, and grows", SETTLE, || async {
        age(&scrape(&system, &system.order).await, reserving).is_some_and(|a| a >= 3.0)
    })
    .await;
    let (_, now) = system.get(&system.order, &format!("/orders/{id}")).await;
    assert_eq!(now["status"], "pending", "{now}");

    // At the deadline it is not placed, and nothing is unfinished any more.
    let finished = system.order_when_final(&system.order, &id).await;
    assert_eq!(finished["reason"], "timeout", "{finished}");
    eventually("the age is back to zero", SETTLE, || async {
        age(&scrape(&system, &system.order).await, reserving) == Some(0.0)
    })
    .await;
}
