//! The barrier table (`txn_barrier`): at most once per (transaction, operation), the same reply
//! on redelivery, and no reservation after a release.
//!
//! Each row holds the reply that was sent, as typed columns (`outcome`, `reason`, `items`,
//! `expires_at`). Reserve and assign write their row in the statement that does their work (see
//! [`Statements`]); a release first claims its row and writes refusals for the reserve and assign
//! of its transaction, then frees what the transaction holds.
//!
//! All the SQL on `txn_barrier` is here. The work on the items that a statement does before it
//! records its row comes from the participant's [`ItemTable`](crate::ItemTable).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use protocol::command::{
    AssignRefusal, AssignReply, CancelRefusal, CancelReply, Operation, ReleaseReason, ReleaseReply,
    Reply, ReserveReply, Shortage,
};
use protocol::ids::{FoodId, ItemId, OrderId, TxnId};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::inventory::Inventory;
use crate::machine;

/// A recorded reply, as stored.
#[derive(Debug, sqlx::FromRow)]
pub struct Recorded {
    outcome: String,
    reason: Option<String>,
    items: Option<Vec<i64>>,
    expires_at: Option<DateTime<Utc>>,
}

fn corrupt(what: String) -> sqlx::Error {
    // Not transient: reading again cannot repair a row.
    sqlx::Error::Decode(what.into())
}

impl Recorded {
    /// The reply this row records for `operation`.
    pub fn into_reply(self, operation: Operation) -> Result<Reply, sqlx::Error> {
        let items = || -> Vec<ItemId> {
            self.items
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(ItemId)
                .collect()
        };
        let reason = self.reason.as_deref();
        Ok(match (operation, self.outcome.as_str()) {
            (Operation::Reserve, "reserved") => Reply::ReserveReply(ReserveReply::Reserved {
                items: items(),
                expires_at: self
                    .expires_at
                    .ok_or_else(|| corrupt("a reservation without its expiry".into()))?,
            }),
            // The holders are read when the reserve is applied, not recorded.
            (Operation::Reserve, "busy") => {
                Reply::ReserveReply(ReserveReply::Busy { holders: vec![] })
            }
            (Operation::Reserve, "aborted") => Reply::ReserveReply(ReserveReply::Aborted),
            (Operation::Reserve, "unavailable") => {
                let reason = reason
                    .and_then(Shortage::from_name)
                    .ok_or_else(|| corrupt(format!("unknown shortage {reason:?}")))?;
                // For an unavailable reserve, `items` holds the kinds that are short.
                let food_ids = items().into_iter().map(|i| FoodId(i.0)).collect();
                Reply::ReserveReply(ReserveReply::Unavailable { reason, food_ids })
            }
            (Operation::Assign, "assigned") => {
                Reply::AssignReply(AssignReply::Assigned { items: items() })
            }
            (Operation::Assign, "refused") => {
                let reason = match reason {
                    Some("expired") => AssignRefusal::Expired,
                    Some("released") => AssignRefusal::Released,
                    other => return Err(corrupt(format!("unknown refusal {other:?}"))),
                };
                Reply::AssignReply(AssignReply::Refused { reason })
            }
            (Operation::Release, "released") => {
                Reply::ReleaseReply(ReleaseReply::Released { items: items() })
            }
            (Operation::Cancel, "cancelled") => {
                Reply::CancelReply(CancelReply::Cancelled { items: items() })
            }
            (Operation::Cancel, "refused") => match reason {
                Some("picked_up") => Reply::CancelReply(CancelReply::Refused {
                    reason: CancelRefusal::PickedUp,
                }),
                other => return Err(corrupt(format!("unknown cancel refusal {other:?}"))),
            },
            (operation, outcome) => {
                return Err(corrupt(format!("outcome {outcome:?} for a {operation}")));
            }
        })
    }
}

/// A recorded reply and the transaction it is for, as a statement of many transactions returns
/// them.
#[derive(Debug, sqlx::FromRow)]
pub struct RecordedFor {
    /// The transaction.
    pub txn_id: uuid::Uuid,
    /// Its reply.
    #[sqlx(flatten)]
    pub recorded: Recorded,
}

/// The columns every barrier statement returns: the recorded reply.
pub const REPLY_COLUMNS: &str = "outcome, reason, items, expires_at";

/// The statements of the commands, assembled once: the participant's work on its items (the
/// `WITH` clauses of [`ItemTable`](crate::ItemTable), with its [`Inventory::PICK`] and
/// [`Inventory::SHORTAGE`]), then the barrier row with the reply.
///
/// The `items` column holds the items of the reply; for an unavailable reserve, the kinds (foods)
/// that are short.
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
    /// Reserve: `$1` txn, `$2` order, `$3` ttl, `$4`-`$6` key.
    pub reserve: Arc<str>,
    /// The reserves of many transactions in one statement: `$1` txns, `$2` orders, `$3` ttls,
    /// `$4` hubs, and the lines of all of them, `$5` the place (from 1) in `$1` of the
    /// transaction each is for, `$6` the kind and `$7` the quantity. Returns `txn_id` and the
    /// reply of each reserve it took, and nothing for the others, which the caller runs again
    /// with [`Statements::reserve`] (see [`ItemTable::reserve_set_ctes`](crate::ItemTable)).
    pub reserve_set: Arc<str>,
    /// Assign: `$1` txn, `$2` order, `$3` items.
    pub assign: Arc<str>,
    /// The assigns of many transactions in one statement: `$1` txns, `$2` orders, and the items
    /// of all of them, `$3` the place (from 1) in `$1` of the transaction each is for and `$4` the
    /// item. Returns `txn_id` and the reply of each.
    pub assign_set: Arc<str>,
    /// Release, step 0: lock the items the transaction holds, so that an assign of the same
    /// transaction either finishes first or finds them gone (locking in the same order as the
    /// assign, items then barrier row, so that the two never deadlock). `$1` txn.
    pub release_lock: Arc<str>,
    /// Release, step 1: claim the release's barrier row (`$3`: `release`, or `compensate`) and
    /// refuse the later reserve and assign of the transaction; returns whether the release is
    /// new. `$1` txn, `$2` order.
    pub release_claim: Arc<str>,
    /// Release for a retry or an abort, step 2 (a new statement, so that it sees what a reserve
    /// or assign that it waited for committed): free what is *reserved* and record it. An abort
    /// never undoes an assignment: a driver that recovered the order may have assigned it after
    /// the abort was sent. `$1` txn.
    pub release_free: Arc<str>,
    /// Compensation, step 2: free what is reserved or assigned (phase 2 failed on the other
    /// side) and record it. `$1` txn.
    pub compensate_free: Arc<str>,
    /// Cancel: `$1` txn, `$2` order.
    pub cancel: Arc<str>,
    /// The index on the items' `txn_id` (`<table>_txn`); unique where a transaction holds one
    /// item.
    pub txn_index: Arc<str>,
}

impl Statements {
    /// The statements of participant `I`.
    pub fn of<I: Inventory>() -> Self {
        let items = I::TABLE;
        let reserve = format!(
            "{ctes}
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason, items, expires_at)
             SELECT $1, 'reserve', $2,
                    CASE WHEN v IN ('reserved', 'busy') THEN v ELSE 'unavailable' END,
                    CASE WHEN v IN ('reserved', 'busy') THEN NULL ELSE v END,
                    CASE WHEN v = 'reserved' THEN (SELECT array_agg(id ORDER BY id) FROM taken)
                         ELSE short END,
                    (SELECT min(reserved_until) FROM taken)
             FROM verdict
             RETURNING {REPLY_COLUMNS}",
            ctes = items.reserve_ctes(I::PICK, I::SHORTAGE),
        );
        let reserve_set = format!(
            "{ctes}
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, items, expires_at)
             SELECT request.txn_id, 'reserve', request.order_id, 'reserved',
                    array_agg(taken.id ORDER BY taken.id), min(taken.reserved_until)
             FROM taken JOIN requests request ON request.n = taken.n
             GROUP BY request.n, request.txn_id, request.order_id
             ORDER BY request.n
             RETURNING txn_id, {REPLY_COLUMNS}",
            ctes = items.reserve_set_ctes(I::PICK),
        );
        let assign = format!(
            "{ctes}
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason, items)
             SELECT $1, 'assign', $2,
                    CASE WHEN all_held THEN 'assigned' ELSE 'refused' END,
                    CASE WHEN all_held THEN NULL ELSE 'expired' END,
                    CASE WHEN all_held THEN $3::bigint[] END
             FROM verdict
             RETURNING {REPLY_COLUMNS}",
            ctes = items.assign_ctes(),
        );
        let assign_set = format!(
            "{ctes}
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason, items)
             SELECT txn_id, 'assign', order_id,
                    CASE WHEN all_held THEN 'assigned' ELSE 'refused' END,
                    CASE WHEN all_held THEN NULL ELSE 'expired' END,
                    CASE WHEN all_held THEN items END
             FROM verdict ORDER BY n
             RETURNING txn_id, {REPLY_COLUMNS}",
            ctes = items.assign_set_ctes(),
        );
        let cancel = format!(
            "{ctes}
             INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason, items)
             SELECT $1, 'cancel', $2,
                    CASE WHEN cancellable THEN 'cancelled' ELSE 'refused' END,
                    CASE WHEN cancellable THEN NULL ELSE 'picked_up' END,
                    CASE WHEN cancellable
                         THEN coalesce((SELECT array_agg(id ORDER BY id) FROM freed), '{{}}') END
             FROM verdict
             RETURNING {REPLY_COLUMNS}",
            ctes = items.cancel_ctes(),
        );
        let release_claim = "WITH claim AS (
                 INSERT INTO txn_barrier (txn_id, operation, order_id, outcome)
                 VALUES ($1, $3, $2, 'released')
                 ON CONFLICT DO NOTHING
                 RETURNING 1
             ),
             refusals AS (
                 INSERT INTO txn_barrier (txn_id, operation, order_id, outcome, reason)
                 VALUES ($1, 'reserve', $2, 'aborted', NULL),
                        ($1, 'assign', $2, 'refused', 'released')
                 ON CONFLICT DO NOTHING
             )
             SELECT EXISTS (SELECT 1 FROM claim)";
        let free = |operation: BarrierOperation| {
            format!(
                "{ctes}
                 UPDATE txn_barrier
                 SET items = coalesce((SELECT array_agg(id ORDER BY id) FROM freed), '{{}}')
                 WHERE txn_id = $1 AND operation = '{operation}'
                 RETURNING {REPLY_COLUMNS}",
                ctes = items.free_ctes(operation.frees()),
                operation = operation.as_str(),
            )
        };
        Self {
            reserve: reserve.into(),
            reserve_set: reserve_set.into(),
            assign: assign.into(),
            assign_set: assign_set.into(),
            release_lock: items.lock_held().into(),
            release_claim: release_claim.into(),
            release_free: free(BarrierOperation::Release).into(),
            compensate_free: free(BarrierOperation::Compensate).into(),
            cancel: cancel.into(),
            txn_index: items.txn_index().into(),
        }
    }
}

/// Whether `err` says that the command was applied before (or refused by an earlier release):
/// the barrier's primary key refused a second row for the (transaction, operation), or the
/// items table's unique index on `txn_id` refused a second item for the transaction (a repeated
/// reserve meets that index before it reaches the barrier).
pub fn is_recorded_already(err: &sqlx::Error, statements: &Statements) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c == "23505")
            && db.constraint().is_some_and(|c| c == "txn_barrier_pkey" || c == &*statements.txn_index))
}

/// The reply recorded for (`txn_id`, `operation`).
pub async fn recorded(
    conn: &mut PgConnection,
    txn_id: TxnId,
    operation: Operation,
) -> Result<Reply, sqlx::Error> {
    recorded_row(conn, txn_id, operation.as_str())
        .await?
        .into_reply(operation)
}

/// The row of (`txn_id`, the barrier operation named `row`).
async fn recorded_row(
    conn: &mut PgConnection,
    txn_id: TxnId,
    row: &str,
) -> Result<Recorded, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {REPLY_COLUMNS} FROM txn_barrier WHERE txn_id = $1 AND operation = $2"
    )))
    .bind(txn_id)
    .bind(row)
    .fetch_one(&mut *conn)
    .await
}

/// The barrier row a release claims: a release for a retry or an abort has one row, and
/// compensation another, so that an abort applied first does not stand in the way of the
/// compensation that must still undo the assignment. The rules are those of
/// [`machine::Items`](crate::machine::Items).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarrierOperation {
    Release,
    Compensate,
}

impl BarrierOperation {
    fn of(reason: ReleaseReason) -> Self {
        match machine::Operation::of_release(reason) {
            machine::Operation::Compensate => BarrierOperation::Compensate,
            _ => BarrierOperation::Release,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            BarrierOperation::Release => machine::Operation::Release.as_str(),
            BarrierOperation::Compensate => machine::Operation::Compensate.as_str(),
        }
    }

    /// The states of the items it frees.
    fn frees(self) -> &'static str {
        match self {
            BarrierOperation::Release => "'reserved'",
            BarrierOperation::Compensate => "'reserved', 'assigned'",
        }
    }
}

/// Applies a release in the caller's transaction: locks what the transaction holds, claims the
/// release (and refuses the later reserve and assign of its transaction), then frees what the
/// transaction holds: what is reserved, and for compensation what is assigned too. A release
/// seen before gets its recorded reply and changes nothing.
///
/// Separate statements, not one: the claim waits for a reserve or assign of the same transaction
/// that is committing right now, and only a statement that starts after that wait sees its
/// items.
pub async fn release(
    tx: &mut PgConnection,
    statements: &Statements,
    txn_id: TxnId,
    order_id: OrderId,
    reason: ReleaseReason,
) -> Result<Reply, sqlx::Error> {
    let operation = BarrierOperation::of(reason);
    sqlx::query(AssertSqlSafe(statements.release_lock.clone()))
        .bind(txn_id)
        .execute(&mut *tx)
        .await?;
    let claimed: bool = sqlx::query_scalar(AssertSqlSafe(statements.release_claim.clone()))
        .bind(txn_id)
        .bind(order_id)
        .bind(operation.as_str())
        .fetch_one(&mut *tx)
        .await?;
    if !claimed {
        // Compensation's row answers as a release does.
        return recorded_row(tx, txn_id, operation.as_str())
            .await?
            .into_reply(Operation::Release);
    }
    let free = match operation {
        BarrierOperation::Release => &statements.release_free,
        BarrierOperation::Compensate => &statements.compensate_free,
    };
    let row: Recorded = sqlx::query_as(AssertSqlSafe(free.clone()))
        .bind(txn_id)
        .fetch_one(&mut *tx)
        .await?;
    row.into_reply(Operation::Release)
}

/// Deletes up to `limit` barrier rows older than `retention_secs`: by then no redelivery of their
/// commands can arrive (the coordinator gives up on a transaction long before).
pub async fn prune(
    conn: &mut PgConnection,
    retention_secs: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM txn_barrier WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM txn_barrier
             WHERE created_at < now() - make_interval(secs => $1::double precision)
             ORDER BY created_at
             LIMIT $2
         ))",
    )
    .bind(retention_secs)
    .bind(limit)
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
