//! Attempts at messages that may have crashed the process: see the `message_attempts`
//! migration. All the table's SQL is here.

use protocol::ids::MessageId;
use sqlx::PgPool;

/// Counts one more attempt at `message`; returns the attempts so far, this one included.
pub(crate) async fn start(pool: &PgPool, message: MessageId) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO message_attempts (message_id, attempts) VALUES ($1, 1)
         ON CONFLICT (message_id) DO UPDATE
             SET attempts = message_attempts.attempts + 1, last_attempt_at = now()
         RETURNING attempts",
    )
    .bind(message.0)
    .fetch_one(pool)
    .await
}

/// Forgets the attempts at `message` (handled, or parked).
pub(crate) async fn forget(pool: &PgPool, message: MessageId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM message_attempts WHERE message_id = $1")
        .bind(message.0)
        .execute(pool)
        .await?;
    Ok(())
}
