//! The HTTP API as a contract: the OpenAPI document each service serves, and the id every
//! request gets, answered and logged.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Service, TestSystem, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// The first JSON log line of `service` with `message` that contains `needle`.
fn log_line(service: &Service, needle: &str, message: &str) -> Option<Value> {
    service
        .lines_with(needle)
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == message)
}

#[tokio::test]
async fn every_service_serves_its_committed_openapi_document() {
    let system = TestSystem::start().await;
    for (service, name) in [
        (&system.order, "order"),
        (&system.store, "store"),
        (&system.delivery, "delivery"),
    ] {
        let response = system
            .http()
            .get(service.url("/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let served: Value = response.json().await.unwrap();
        let path = format!("{}/docs/openapi/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let committed: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            served, committed,
            "{} serves another document than {path}",
            service.name
        );
        assert_eq!(served["info"]["title"], service.name);
    }
}

#[tokio::test]
async fn a_request_id_comes_back_as_given_or_fresh_and_is_in_the_log_lines_of_its_request() {
    let system = TestSystem::start().await;
    let http = system.http();

    // Given by the client: answered unchanged, and in the span of every line the request logs,
    // the handler's own included.
    let given = format!("req-{}", Uuid::new_v4());
    let response = http
        .post(system.store.url("/hubs"))
        .header("x-request-id", &given)
        .json(&json!({ "name": "Koramangala" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], given.as_str());
    eventually("the store logs the request with its id", WAIT, || async {
        log_line(&system.store, &given, "request answered").is_some()
            && log_line(&system.store, &given, "hub created").is_some()
    })
    .await;
    let answered = log_line(&system.store, &given, "request answered").unwrap();
    assert_eq!(answered["span"]["name"], "request");
    assert_eq!(answered["span"]["request_id"], given.as_str());
    assert_eq!(answered["span"]["method"], "POST");
    assert_eq!(answered["span"]["route"], "/hubs");
    assert_eq!(answered["status"], 201);
    assert!(answered["latency_ms"].is_number(), "{answered}");
    let created = log_line(&system.store, &given, "hub created").unwrap();
    assert_eq!(created["span"]["request_id"], given.as_str(), "{created}");

    // None given (or one that is not 1 to 200 visible ASCII characters): a fresh UUID each time,
    // answered and logged, by every service.
    let mut fresh = Vec::new();
    for service in [&system.order, &system.store, &system.delivery] {
        for sent in [None, Some("x".repeat(201))] {
            let mut request = http.get(service.url("/openapi.json"));
            if let Some(sent) = &sent {
                request = request.header("x-request-id", sent);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let id = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let uuid = Uuid::parse_str(&id)
                .unwrap_or_else(|_| panic!("{} answered {id:?}, not a UUID", service.name));
            eventually(&format!("{} logs {id}", service.name), WAIT, || async {
                log_line(service, &id, "request answered").is_some_and(|line| {
                    line["span"]["request_id"] == id.as_str()
                        && line["span"]["route"] == "/openapi.json"
                        && line["status"] == 200
                })
            })
            .await;
            fresh.push(uuid);
        }
    }
    let mut distinct = fresh.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), fresh.len(), "ids repeat: {fresh:?}");

    // An order's own lines carry its request's id beside its trace id, which still comes from
    // the request's traceparent.
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let given = format!("req-{}", Uuid::new_v4());
    let response = http
        .post(system.order.url("/orders"))
        .header("x-request-id", &given)
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .json(&json!({ "food_id": 1, "customer_id": "c-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(response.headers()["x-request-id"], given.as_str());
    eventually("the order's lines carry the request id", WAIT, || async {
        log_line(&system.order, &given, "order received").is_some()
    })
    .await;
    let received = log_line(&system.order, &given, "order received").unwrap();
    assert_eq!(received["span"]["name"], "order", "{received}");
    assert_eq!(received["span"]["trace_id"], trace_id, "{received}");
    assert!(
        received["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|span| span["name"] == "request" && span["request_id"] == given.as_str()),
        "{received}"
    );
}
