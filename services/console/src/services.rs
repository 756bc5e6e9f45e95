//! The three services' APIs as the console reads them, with its own operator token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use identity::Issuer;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

/// How long one read of a service may take.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the console's own minted tokens last.
const OWN_TOKEN_TTL: Duration = Duration::from_secs(600);

/// Why a service could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No answer.
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    /// An answer other than 200.
    #[error("answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
    /// A `200` whose body is not what the API documents.
    #[error("unexpected body: {0}")]
    Body(String),
    /// The console's token could not be read or minted.
    #[error("the console's token: {0}")]
    Token(String),
}

/// Where the console's own operator token comes from.
pub enum OwnToken {
    /// None: the services run with identity turned off (development).
    None,
    /// A file holding it (`CONSOLE_TOKEN_FILE`), read again each time (it may be rotated).
    File(PathBuf),
    /// Minted with the development signing key, and renewed before it expires.
    Minted {
        /// The key.
        issuer: Box<Issuer>,
        /// The current token and when to renew it.
        current: Mutex<Option<(String, Instant)>>,
    },
}

impl OwnToken {
    fn get(&self) -> Result<Option<String>, ReadError> {
        match self {
            OwnToken::None => Ok(None),
            OwnToken::File(path) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|err| ReadError::Token(format!("{}: {err}", path.display()))),
            OwnToken::Minted { issuer, current } => {
                let mut current = current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((token, renew)) = current.as_ref()
                    && Instant::now() < *renew
                {
                    return Ok(Some(token.clone()));
                }
                let token = issuer
                    .operator("console", OWN_TOKEN_TTL)
                    .map_err(|err| ReadError::Token(err.to_string()))?;
                *current = Some((token.clone(), Instant::now() + OWN_TOKEN_TTL / 2));
                Ok(Some(token))
            }
        }
    }
}

/// Which service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// The coordinator.
    Order,
    /// Hubs, foods, packets.
    Store,
    /// Agents and deliveries.
    Delivery,
}

/// The services' addresses and the console's token.
pub struct Services {
    http: reqwest::Client,
    order: String,
    store: String,
    delivery: String,
    token: OwnToken,
    food_names: Mutex<HashMap<i64, String>>,
}

#[derive(Deserialize)]
struct Named {
    id: i64,
    name: String,
}

impl Services {
    /// The services at these addresses, read with `token`.
    pub fn new(order: &str, store: &str, delivery: &str, token: OwnToken) -> Self {
        let trim = |url: &str| url.trim_end_matches('/').to_owned();
        Self {
            http: reqwest::Client::new(),
            order: trim(order),
            store: trim(store),
            delivery: trim(delivery),
            token,
            food_names: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTP client (for forwarding).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The address of `service`.
    pub fn url(&self, service: Service) -> &str {
        match service {
            Service::Order => &self.order,
            Service::Store => &self.store,
            Service::Delivery => &self.delivery,
        }
    }

    /// `GET` of `path` on `service` with the console's token: the JSON body of a `200`.
    async fn read(&self, service: Service, path: &str) -> Result<Value, ReadError> {
        let mut request = self
            .http
            .request(Method::GET, format!("{}{path}", self.url(service)))
            .timeout(READ_TIMEOUT);
        if let Some(token) = self.token.get()? {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            return Err(ReadError::Status { status, body });
        }
        Ok(response.json().await?)
    }

    /// Every hub: id and name.
    pub async fn hubs(&self) -> Result<Vec<(i64, String)>, ReadError> {
        let hubs: Vec<Named> = serde_json::from_value(self.read(Service::Store, "/hubs").await?)
            .map_err(|err| ReadError::Body(err.to_string()))?;
        Ok(hubs.into_iter().map(|h| (h.id, h.name)).collect())
    }

    /// A hub's stock: one line per food, with its name.
    pub async fn stock(&self, hub: i64) -> Result<Vec<Value>, ReadError> {
        let hub = self.read(Service::Store, &format!("/hubs/{hub}")).await?;
        let mut foods: Vec<Value> = hub["foods"].as_array().cloned().unwrap_or_default();
        let unknown = {
            let names = self.names();
            foods.iter().any(|f| {
                f["food_id"]
                    .as_i64()
                    .is_some_and(|id| !names.contains_key(&id))
            })
        };
        if unknown {
            // Names are read again only when a food appears that the console has not seen.
            let all: Vec<Named> =
                serde_json::from_value(self.read(Service::Store, "/foods").await?)
                    .map_err(|err| ReadError::Body(err.to_string()))?;
            let mut names = self.names();
            for food in all {
                names.insert(food.id, food.name);
            }
        }
        let names = self.names();
        for food in &mut foods {
            let name = food["food_id"]
                .as_i64()
                .and_then(|id| names.get(&id).cloned());
            food["name"] = name.map_or(Value::Null, Value::String);
        }
        Ok(foods)
    }

    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.food_names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A hub's agents, counted by state.
    pub async fn riders(&self, hub: i64) -> Result<Value, ReadError> {
        self.read(Service::Delivery, &format!("/agents/summary?hub_id={hub}"))
            .await
    }

    /// A hub's orders in flight: the counts by state, and the oldest `limit`.
    pub async fn in_flight(
        &self,
        hub: i64,
        limit: usize,
    ) -> Result<(Value, Vec<Value>), ReadError> {
        let mut body = self
            .read(
                Service::Order,
                &format!("/admin/hubs/{hub}/orders?limit={limit}"),
            )
            .await?;
        let orders = body["orders"].as_array().cloned().unwrap_or_default();
        Ok((body["counts"].take(), orders))
    }

    /// Unfinished orders older than `after`, oldest first, at most `limit`.
    pub async fn stuck(&self, after: Duration, limit: usize) -> Result<Vec<Value>, ReadError> {
        let body = self
            .read(
                Service::Order,
                &format!(
                    "/admin/orders?older_than={}ms&limit={limit}",
                    after.as_millis()
                ),
            )
            .await?;
        Ok(body["orders"].as_array().cloned().unwrap_or_default())
    }
}
