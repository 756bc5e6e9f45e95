//! OTLP trace export: the spans of one order, from the three services, share one trace id, and
//! each has the parent it should. A small OTLP/HTTP receiver (protobuf, the
//! `opentelemetry-proto` types) collects what the services send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use protocol::trace::TraceContext;

use crate::helpers::{Options, TestSystem, eventually};

/// A span as received.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// An OTLP/HTTP trace receiver on a free port.
struct Receiver {
    url: String,
    spans: Spans,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Spans = Arc::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&spans));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

#[tokio::test]
async fn one_orders_spans_from_the_three_services_share_its_trace_with_the_right_parents() {
    let receiver = Receiver::start().await;
    let options = Options::default()
        .all("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url)
        // Batches every 200 ms, so the test need not wait the default 5 s.
        .all("OTEL_BSP_SCHEDULE_DELAY", "200");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Kachori", 3).await;
    system.create_agents(3).await;

    // The client's own span: the order's trace continues it.
    let caller = TraceContext::root();
    let response = system
        .http()
        .post(system.order.url("/orders"))
        .header("traceparent", caller.to_string())
        .json(&serde_json::json!({ "food_id": food, "customer_id": "c-7" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let trace_id = caller.trace_id();

    // Reserve and assign on both sides, each committed, each answered.
    let complete = |spans: &[Received]| {
        let count = |service: &str, name: &str| {
            spans
                .iter()
                .filter(|s| s.service == service && s.name == name)
                .count()
        };
        count("order-service", "place_order") == 1
            && count("order-service", "command") >= 4
            && count("order-service", "reply") >= 4
            && ["store-service", "delivery-service"].iter().all(|p| {
                count(p, "message") >= 2 && count(p, "command") >= 2 && count(p, "commit") >= 2
            })
    };
    eventually(
        "the order's spans from all three services",
        Duration::from_secs(30),
        || async { complete(&receiver.of_trace(&trace_id)) },
    )
    .await;

    let spans = receiver.of_trace(&trace_id);
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent_of = |span: &Received| {
        by_id
            .get(span.parent.as_str())
            .copied()
            .unwrap_or_else(|| panic!("the parent of {span:?} was not exported"))
    };
    for span in &spans {
        if span.name == "place_order" {
            // The request's span continues the caller's.
            assert_eq!(span.parent, caller.span_id(), "{span:?}");
            continue;
        }
        let parent = parent_of(span);
        let expected: &[(&str, &str)] = match (span.service.as_str(), span.name.as_str()) {
            ("order-service", "order") => &[("order-service", "place_order")],
            ("order-service", "command") => &[("order-service", "order")],
            ("order-service", "reply") => &[("order-service", "command")],
            // The coordinator's reply consumer continues the participant's handling span.
            ("order-service", "message") => &[
                ("store-service", "command"),
                ("delivery-service", "command"),
            ],
            // A participant handles what the coordinator's command span sent.
            (_, "message") => &[("order-service", "command")],
            (p, "command") if p != "order-service" => {
                &[(p, "message"), ("order-service", "command")]
            }
            (p, "commit") => &[(p, "command")],
            _ => continue,
        };
        assert!(
            expected
                .iter()
                .any(|(service, name)| parent.service == *service && parent.name == *name),
            "{span:?} has parent {parent:?}, expected one of {expected:?}"
        );
    }
    // The participants' handling spans are children of the commands sent to them, by participant.
    for span in spans
        .iter()
        .filter(|s| s.name == "message" && s.service != "order-service")
    {
        let sent = parent_of(span);
        let participant = span.service.trim_end_matches("-service");
        assert_eq!(
            sent.attributes.get("participant").map(String::as_str),
            Some(participant),
            "{span:?} from {sent:?}"
        );
    }
}
