//! Least privilege on the broker: one user per service, allowed to declare and read only its own
//! exchanges and queues, and to publish only where it must (see
//! [`protocol::topology::Topology::permissions`]). Applied through the management HTTP API.

use protocol::topology::Topology;
use serde_json::json;

/// A service's broker account.
#[derive(Clone, Debug)]
pub struct ServiceUser {
    /// `order`, `store` or `delivery`.
    pub service: &'static str,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Why the set-up failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The management API could not be reached.
    #[error("management API: {0}")]
    Http(#[from] reqwest::Error),
    /// The management API refused a request.
    #[error("management API answered {status} to {what}")]
    Refused {
        /// What was asked.
        what: String,
        /// The status.
        status: reqwest::StatusCode,
    },
    /// The management URL is not usable.
    #[error("invalid management URL: {0}")]
    Url(String),
}

/// The management API of a broker, with administrator credentials.
#[derive(Clone, Debug)]
pub struct Management {
    base: reqwest::Url,
    user: String,
    password: String,
    http: reqwest::Client,
}

/// Percent-encodes a path segment (a vhost, a queue or a user name).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Management {
    /// From `http://user:password@host:15672`.
    pub fn new(url: &str) -> Result<Self, SetupError> {
        let mut base = reqwest::Url::parse(url).map_err(|e| SetupError::Url(e.to_string()))?;
        let user = base.username().to_owned();
        let password = base.password().unwrap_or_default().to_owned();
        base.set_username("")
            .and_then(|()| base.set_password(None))
            .map_err(|()| SetupError::Url("cannot strip credentials".into()))?;
        Ok(Self {
            base,
            user,
            password,
            http: reqwest::Client::new(),
        })
    }

    /// `method /api/<path>` with an optional JSON body; the JSON answer (`null` if none). A
    /// `DELETE` of something missing is fine.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, SetupError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}api/{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() || (method == reqwest::Method::DELETE && status == 404) {
            Ok(response.json().await.unwrap_or(serde_json::Value::Null))
        } else {
            Err(SetupError::Refused {
                what: format!("{method} {path}"),
                status,
            })
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(), SetupError> {
        self.request(method, path, body).await.map(|_| ())
    }

    /// The user name of the administrator credentials.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Creates `vhost` if missing.
    pub async fn create_vhost(&self, vhost: &str) -> Result<(), SetupError> {
        self.send(
            reqwest::Method::PUT,
            &format!("vhosts/{}", encode(vhost)),
            Some(json!({})),
        )
        .await
    }

    /// Creates (or updates) each service's user with its permissions on `vhost`.
    pub async fn create_users(
        &self,
        vhost: &str,
        topology: &Topology,
        users: &[ServiceUser],
    ) -> Result<(), SetupError> {
        for user in users {
            self.send(
                reqwest::Method::PUT,
                &format!("users/{}", encode(&user.user)),
                Some(json!({ "password": user.password, "tags": "" })),
            )
            .await?;
            let p = topology.permissions(user.service);
            self.send(
                reqwest::Method::PUT,
                &format!("permissions/{}/{}", encode(vhost), encode(&user.user)),
                Some(json!({ "configure": p.configure, "write": p.write, "read": p.read })),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes a user (missing is fine).
    pub async fn delete_user(&self, user: &str) -> Result<(), SetupError> {
        self.send(
            reqwest::Method::DELETE,
            &format!("users/{}", encode(user)),
            None,
        )
        .await
    }
}
