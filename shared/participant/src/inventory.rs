//! What differs between participants (how to pick an item and why none could be picked), and
//! the SQL that does not.

use std::sync::Arc;

use protocol::ids::{ItemId, TxnId};
use protocol::topology::Participant;
use serde::{Serialize, de::DeserializeOwned};
use sqlx::{AssertSqlSafe, PgConnection};

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
///
/// A reserve is one SQL statement: pick an item, mark it reserved and record the barrier row
/// with the reply, or record why nothing could be picked. The participant supplies the picking
/// query and the explanation; [`Statements`] assembles the statement once at start.
pub trait Inventory: Send + Sync + 'static {
    /// What a reserve command asks for.
    type Request: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static;

    /// Which participant this is.
    const PARTICIPANT: Participant;

    /// The items table.
    const TABLE: ItemTable;

    /// A query returning the `id` of one free item, locked `FOR UPDATE SKIP LOCKED` so that
    /// concurrent reserves take different items: an available one first, else one whose
    /// reservation has expired. `$4` is the request's key ([`Inventory::key`]).
    const PICK: &'static str;

    /// An SQL expression for when nothing was picked: `'busy'` while any item that could serve
    /// the request is still held by an unfinished transaction (it may come back), else the
    /// final reason (`'food_unavailable'`, `'unknown_food'`, `'agent_unavailable'`). `$4` is the
    /// request's key.
    const SHORTAGE: &'static str;

    /// The value bound to `$4` for `request` (the food of a packet; nothing for an agent), or
    /// why the request cannot be served.
    fn key(&self, request: &Self::Request) -> Result<Option<i64>, ReserveError>;
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

/// The statements of the commands, assembled once from the participant's table and fragments.
///
/// Times are `statement_timestamp()`, not `now()`: with group commit a statement may run some
/// time after its transaction began, and an expiry is judged (and set) by the statement's clock.
///
/// Reserve and assign do their work first and then insert their barrier row with the reply, in
/// the same statement. The barrier's primary key decides: a duplicate of an applied command, or a
/// command whose transaction was released first, fails the insert with a unique violation, which
/// undoes the whole statement (its effect included); the caller then reads the recorded reply. A
/// concurrent duplicate or release waits on the key until this statement's transaction ends.
#[derive(Clone, Debug)]
pub struct Statements {
    /// Reserve: `$1` txn, `$2` order, `$3` ttl, `$4` key.
    pub reserve: Arc<str>,
    /// Assign: `$1` txn, `$2` order, `$3` items.
    pub assign: Arc<str>,
    /// Release, step 0: lock the items the transaction holds, so that an assign of the same
    /// transaction either finishes first or finds them gone (locking in the same order as the
    /// assign, items then barrier row, so that the two never deadlock). `$1` txn.
    pub release_lock: Arc<str>,
    /// Release, step 1: claim the release and refuse the later reserve and assign of the
    /// transaction; returns whether the release is new. `$1` txn, `$2` order.
    pub release_claim: Arc<str>,
    /// Release, step 2 (a new statement, so that it sees what a reserve or assign that it waited
    /// for committed): free the items and record them. `$1` txn.
    pub release_free: Arc<str>,
    /// The unique index on the items' `txn_id` (`<table>_txn`): one item per transaction.
    pub txn_index: Arc<str>,
}

/// The columns every barrier statement returns: the recorded reply.
pub const REPLY_COLUMNS: &str = "outcome, reason, items, expires_at";

impl Statements {
    /// The statements of participant `I`.
    pub fn of<I: Inventory>() -> Self {
        let table = I::TABLE.name;
        let reserve = format!(
            "WITH picked AS ({pick}),
             taken AS (
                 UPDATE {table} t
                 SET state = 'reserved', txn_id = $1, order_id = $2,
                     reserved_until = statement_timestamp() + $3, updated_at = now()
                 FROM picked WHERE t.id = picked.id
                 RETURNING t.id, t.reserved_until
             ),
             verdict AS (
                 SELECT CASE WHEN EXISTS (SELECT 1 FROM taken) THEN 'reserved'
                             ELSE ({shortage}) END AS v
             )
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason, items, expires_at)
             SELECT $1, 'reserve', $2,
                    CASE WHEN v IN ('reserved', 'busy') THEN v ELSE 'unavailable' END,
                    CASE WHEN v IN ('reserved', 'busy') THEN NULL ELSE v END,
                    (SELECT array_agg(id) FROM taken),
                    (SELECT min(reserved_until) FROM taken)
             FROM verdict
             RETURNING {REPLY_COLUMNS}",
            pick = I::PICK,
            shortage = I::SHORTAGE,
        );
        let assign = format!(
            "WITH held AS (
                 SELECT id FROM {table}
                 WHERE id = ANY($3) AND txn_id = $1 AND state = 'reserved'
                   AND reserved_until > statement_timestamp()
                 FOR UPDATE
             ),
             verdict AS (
                 SELECT cardinality($3::bigint[]) > 0
                        AND (SELECT count(*) FROM held) = cardinality($3::bigint[]) AS all_held
             ),
             assigned AS (
                 UPDATE {table} t SET state = 'assigned', reserved_until = NULL, updated_at = now()
                 FROM held, verdict
                 WHERE t.id = held.id AND verdict.all_held
             )
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason, items)
             SELECT $1, 'assign', $2,
                    CASE WHEN all_held THEN 'assigned' ELSE 'refused' END,
                    CASE WHEN all_held THEN NULL ELSE 'expired' END,
                    CASE WHEN all_held THEN $3::bigint[] END
             FROM verdict
             RETURNING {REPLY_COLUMNS}"
        );
        let release_lock = format!("SELECT id FROM {table} WHERE txn_id = $1 FOR UPDATE");
        let release_claim = "WITH claim AS (
                 INSERT INTO txn_barrier (txn_id, operation, order_id, outcome)
                 VALUES ($1, 'release', $2, 'released')
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             ),
             refusals AS (
                 INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason)
                 VALUES ($1, 'reserve', $2, 'aborted', NULL),
                        ($1, 'assign', $2, 'refused', 'released')
                 ON CONFLICT DO NOTHING
             )
             SELECT EXISTS (SELECT 1 FROM claim)"
            .to_owned();
        let release_free = format!(
            "WITH freed AS (
                 UPDATE {table}
                 SET state = 'available', txn_id = NULL, order_id = NULL, reserved_until = NULL,
                     updated_at = now()
                 WHERE txn_id = $1 AND state IN ('reserved', 'assigned')
                 RETURNING id
             )
             UPDATE txn_barrier
             SET items = coalesce((SELECT array_agg(id ORDER BY id) FROM freed), '{{}}')
             WHERE txn_id = $1 AND operation = 'release'
             RETURNING {REPLY_COLUMNS}"
        );
        Self {
            reserve: reserve.into(),
            assign: assign.into(),
            release_lock: release_lock.into(),
            release_claim: release_claim.into(),
            release_free: release_free.into(),
            txn_index: format!("{table}_txn").into(),
        }
    }
}

/// Items as bound to the statements.
pub(crate) fn item_ids(items: &[ItemId]) -> Vec<i64> {
    items.iter().map(|i| i.0).collect()
}
