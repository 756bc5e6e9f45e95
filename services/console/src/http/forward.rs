//! Passing a call on to a service with the caller's own token and headers.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use service_kit::http::ApiError;

use super::Console;
use crate::services::Service;

/// The request headers passed on to a service.
const FORWARDED: [&str; 5] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "traceparent",
];

/// Calls `path` on `service` with the caller's token and headers, and answers with its answer
/// as it comes (a stream of events stays a stream).
pub(super) async fn forward(
    console: &Console,
    service: Service,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(ApiError::internal)?;
    let mut request = console
        .services
        .http()
        .request(method, format!("{}{path}", console.services.url(service)));
    for name in FORWARDED {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    if !body.is_empty() {
        if !headers.contains_key(header::CONTENT_TYPE) {
            request = request.header(header::CONTENT_TYPE.as_str(), "application/json");
        }
        request = request.body(body);
    }
    let answer = request
        .send()
        .await
        .map_err(|err| ApiError::Unavailable(format!("the {service:?} service: {err}")))?;
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in [
        header::CONTENT_TYPE.as_str(),
        "retry-after",
        "idempotent-replayed",
        "www-authenticate",
    ] {
        if let Some(value) = answer.headers().get(name) {
            response = response.header(name, value.as_bytes());
        }
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(ApiError::internal)
}
