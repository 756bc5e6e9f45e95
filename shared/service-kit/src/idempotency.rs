//! Calls that create, made safe to repeat with an `Idempotency-Key`: the first answer to a key is
//! kept with the change it answers, in the same transaction, and a repeat of the same request
//! with that key gets that answer and changes nothing. A client whose answer was lost (a dropped
//! connection, a `503` after a commit whose own answer was lost in a database failover) sends the
//! request again with the same key instead of creating twice.
//!
//! Two requests with one key at once take turns: the second's claim waits on the first's
//! uncommitted row and then finds its answer. The keys live in the service's
//! `idempotent_answers` table, and are kept as long as barrier rows (`BARRIER_RETENTION`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::http::ApiError;

/// The request header.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The answer header that marks a repeat's answer (`true`).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// The longest key.
pub const MAX_KEY_LEN: usize = 200;

/// The request's key, if it sent one; `400` if it is not 1 to [`MAX_KEY_LEN`] visible ASCII
/// characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    let visible = |c: char| c.is_ascii_graphic();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(visible) {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// The answer of [`once`].
#[derive(Debug)]
pub enum Answer<T> {
    /// Created now.
    New(T),
    /// The answer kept for the key: created before.
    Replayed(T),
}

impl<T> Answer<T> {
    /// The answer, and the headers that say whether it is a repeat's.
    pub fn into_parts(self) -> (HeaderMap, T) {
        let mut headers = HeaderMap::new();
        match self {
            Answer::New(value) => (headers, value),
            Answer::Replayed(value) => {
                headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                (headers, value)
            }
        }
    }
}

/// Runs `create` in a transaction; with `key`, keeps its answer there, or, if the key was used
/// before for the same `request` (a fingerprint: the route and its body), answers what was kept
/// and runs nothing. A key used for another request is `422`. An error of `create` rolls
/// everything back, the key's claim included, so that a repeat runs again.
pub async fn once<T>(
    pool: &PgPool,
    key: Option<&str>,
    request: &str,
    create: impl AsyncFnOnce(&mut PgConnection) -> Result<T, ApiError>,
) -> Result<Answer<T>, ApiError>
where
    T: Serialize + DeserializeOwned,
{
    let mut tx = pool.begin().await?;
    if let Some(key) = key {
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO idempotent_answers (key, request) VALUES ($1, $2)
             ON CONFLICT (key) DO NOTHING RETURNING key",
        )
        .bind(key)
        .bind(request)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            let (first, answer): (String, Option<Value>) =
                sqlx::query_as("SELECT request, answer FROM idempotent_answers WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut *tx)
                    .await?;
            if first != request {
                return Err(ApiError::Unprocessable(
                    "this Idempotency-Key was used for another request".to_owned(),
                ));
            }
            let answer = answer.ok_or_else(|| {
                ApiError::internal(std::io::Error::other("a kept key without its answer"))
            })?;
            return serde_json::from_value(answer)
                .map(Answer::Replayed)
                .map_err(ApiError::internal);
        }
    }
    let value = create(&mut tx).await?;
    if let Some(key) = key {
        let answer = serde_json::to_value(&value).map_err(ApiError::internal)?;
        sqlx::query("UPDATE idempotent_answers SET answer = $2 WHERE key = $1")
            .bind(key)
            .bind(answer)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Answer::New(value))
}

/// Forgets the keys kept longer than `retention_secs`; how many. (Operators' calls: a few rows.)
pub async fn prune(conn: &mut PgConnection, retention_secs: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM idempotent_answers
         WHERE created_at < now() - make_interval(secs => $1::double precision)",
    )
    .bind(retention_secs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_two_hundred_visible_ascii_characters() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                IDEMPOTENCY_KEY,
                HeaderValue::from_str(value).expect("a header value"),
            );
            key(&headers)
        };
        assert_eq!(key(&HeaderMap::new()).ok(), Some(None));
        assert_eq!(with("hub-7").ok(), Some(Some("hub-7".to_owned())));
        assert!(with("").is_err());
        assert!(with("a b").is_err());
        assert!(with(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
    }
}
