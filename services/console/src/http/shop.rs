//! The customer page's calls, passed to the store or the order service with the caller's own
//! token, unchanged: only the calls the page makes, so that the console is no open proxy.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use service_kit::http::{ApiError, AppPath};
use uuid::Uuid;

use super::Console;
use super::forward::forward;
use crate::services::Service;

/// Where a call of the customer page goes: the service, if it is one the page makes (with ids
/// that are ids), else `None`.
fn target(method: &Method, path: &str) -> Option<Service> {
    let is_hub = |id: &str| id.parse::<u64>().is_ok();
    let is_order = |id: &str| Uuid::parse_str(id).is_ok();
    let parts: Vec<&str> = path.split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::GET, ["hubs"] | ["foods"]) => Some(Service::Store),
        (&Method::GET, ["hubs", id]) if is_hub(id) => Some(Service::Store),
        (&Method::POST, ["orders"]) => Some(Service::Order),
        (&Method::GET, ["orders", id] | ["orders", id, "events"]) if is_order(id) => {
            Some(Service::Order)
        }
        (&Method::POST, ["orders", id, "cancel"]) if is_order(id) => Some(Service::Order),
        _ => None,
    }
}

/// `/api/shop/{path}`: the call `path` of the customer page.
pub(super) async fn shop(
    State(console): State<Arc<Console>>,
    AppPath(path): AppPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let service = target(&parts.method, &path)
        .ok_or_else(|| ApiError::NotFound(format!("the customer page makes no call {path}")))?;
    let body = axum::body::to_bytes(body, service_kit::http::MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::BadRequest("the body is over 64 KiB or unreadable".to_owned()))?;
    forward(
        &console,
        service,
        parts.method.as_str(),
        &format!("/{path}"),
        &parts.headers,
        body,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pages_own_calls_pass() {
        let order = Uuid::new_v4().to_string();
        for (method, path, to) in [
            (Method::GET, "hubs".to_owned(), Some(Service::Store)),
            (Method::GET, "hubs/2".to_owned(), Some(Service::Store)),
            (Method::GET, "foods".to_owned(), Some(Service::Store)),
            (Method::POST, "orders".to_owned(), Some(Service::Order)),
            (Method::GET, format!("orders/{order}"), Some(Service::Order)),
            (
                Method::GET,
                format!("orders/{order}/events"),
                Some(Service::Order),
            ),
            (
                Method::POST,
                format!("orders/{order}/cancel"),
                Some(Service::Order),
            ),
            (Method::POST, "hubs".to_owned(), None),
            (Method::GET, "hubs/../admin".to_owned(), None),
            (Method::GET, "admin/orders".to_owned(), None),
            (Method::POST, format!("admin/orders/{order}/abort"), None),
            (Method::GET, "orders/not-a-uuid".to_owned(), None),
            (Method::DELETE, format!("orders/{order}"), None),
            (Method::GET, "packets/1".to_owned(), None),
        ] {
            assert_eq!(target(&method, &path), to, "{method} {path}");
        }
    }
}
