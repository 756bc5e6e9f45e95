//! What differs between participants (how to pick items), and the SQL that does not.

use std::future::Future;

use std::time::Duration;

use protocol::command::ReserveReply;
use protocol::ids::{ItemId, OrderId, TxnId};
use protocol::topology::Participant;
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{AssertSqlSafe, PgConnection};

/// A reservation being made: for whom and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Hold {
    /// The transaction that will hold the items.
    pub txn_id: TxnId,
    /// Its order.
    pub order_id: OrderId,
    /// How long the reservation lasts. The expiry instant is computed by the database
    /// (`now() + ttl`) so that it is compared against the same clock that checks it.
    pub ttl: Duration,
}

/// Why a reserve could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// The request can never be served as sent (e.g. more lines than supported): the command
    /// goes to the dead-letter queue with this reason.
    #[error("invalid reserve request: {0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The items of one participant: a table with the columns `id`, `state`
/// (`available`/`reserved`/`assigned`), `txn_id`, `order_id`, `reserved_until` and `updated_at`.
pub trait Inventory: Send + Sync + 'static {
    /// What a reserve command asks for.
    type Request: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static;

    /// Which participant this is.
    const PARTICIPANT: Participant;

    /// The items table.
    const TABLE: ItemTable;

    /// Reserves items for `hold` inside the caller's database transaction. Must take items with
    /// row locks that skip items locked by others (`FOR UPDATE SKIP LOCKED`), treat reservations
    /// past `reserved_until` as free, and answer `Busy` rather than `Unavailable` while any item
    /// that could serve the request is still held by an unfinished transaction.
    fn reserve(
        &self,
        tx: &mut PgConnection,
        hold: Hold,
        request: &Self::Request,
    ) -> impl Future<Output = Result<ReserveReply, ReserveError>> + Send;
}

/// The SQL on an items table that is the same for every participant.
#[derive(Clone, Copy, Debug)]
pub struct ItemTable {
    /// The table's name: a constant of the service, never input.
    pub name: &'static str,
}

impl ItemTable {
    fn sql(&self, template: &str) -> AssertSqlSafe<String> {
        // Only ever called with the service's constant table name.
        AssertSqlSafe(template.replace("{table}", self.name))
    }

    /// Assigns exactly `items`, if all are still reserved by `txn_id` and unexpired; otherwise
    /// nothing. Returns whether they were assigned.
    pub async fn assign(
        &self,
        tx: &mut PgConnection,
        txn_id: TxnId,
        items: &[ItemId],
    ) -> Result<bool, sqlx::Error> {
        if items.is_empty() {
            return Ok(false);
        }
        let ids: Vec<i64> = items.iter().map(|i| i.0).collect();
        let assigned = sqlx::query(self.sql(
            "WITH held AS (
                 SELECT id FROM {table}
                 WHERE id = ANY($1) AND txn_id = $2 AND state = 'reserved' AND reserved_until > now()
                 FOR UPDATE
             )
             UPDATE {table} t SET state = 'assigned', reserved_until = NULL, updated_at = now()
             FROM held
             WHERE t.id = held.id AND (SELECT count(*) FROM held) = cardinality($1::bigint[])",
        ))
        .bind(&ids)
        .bind(txn_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Ok(usize::try_from(assigned).is_ok_and(|n| n == ids.len()))
    }

    /// Frees whatever `txn_id` holds, reserved or assigned (compensation). Returns the items.
    pub async fn release(
        &self,
        tx: &mut PgConnection,
        txn_id: TxnId,
    ) -> Result<Vec<ItemId>, sqlx::Error> {
        sqlx::query_scalar(self.sql(
            "UPDATE {table}
             SET state = 'available', txn_id = NULL, order_id = NULL, reserved_until = NULL,
                 updated_at = now()
             WHERE txn_id = $1 AND state IN ('reserved', 'assigned')
             RETURNING id",
        ))
        .bind(txn_id)
        .fetch_all(&mut *tx)
        .await
        .map(|ids: Vec<i64>| ids.into_iter().map(ItemId).collect())
    }

    /// Frees the reservations of `txn_ids` that are past their expiry and still only reserved.
    pub async fn expire(
        &self,
        conn: &mut PgConnection,
        txn_ids: &[TxnId],
    ) -> Result<u64, sqlx::Error> {
        let ids: Vec<uuid::Uuid> = txn_ids.iter().map(|t| t.0).collect();
        Ok(sqlx::query(self.sql(
            "UPDATE {table}
             SET state = 'available', txn_id = NULL, order_id = NULL, reserved_until = NULL,
                 updated_at = now()
             WHERE txn_id = ANY($1) AND state = 'reserved' AND reserved_until <= now()",
        ))
        .bind(&ids)
        .execute(&mut *conn)
        .await?
        .rows_affected())
    }

    /// Frees up to `limit` reservations that expired more than `grace_ms` ago (the sweep, for
    /// timers that were lost). Returns how many.
    pub async fn sweep(
        &self,
        conn: &mut PgConnection,
        grace_ms: i64,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(self.sql(
            "UPDATE {table} t
             SET state = 'available', txn_id = NULL, order_id = NULL, reserved_until = NULL,
                 updated_at = now()
             FROM (
                 SELECT id FROM {table}
                 WHERE state = 'reserved'
                   AND reserved_until < now() - make_interval(secs => $1::double precision / 1000)
                 ORDER BY reserved_until
                 LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ) expired
             WHERE t.id = expired.id",
        ))
        .bind(grace_ms)
        .bind(limit)
        .execute(&mut *conn)
        .await?
        .rows_affected())
    }
}
