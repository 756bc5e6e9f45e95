//! The barrier table (`txn_barrier`): at most once per (transaction, operation), same reply on
//! redelivery, and no reservation after a release.

use protocol::command::{AssignRefusal, AssignReply, Operation, Reply, ReserveReply};
use protocol::ids::{OrderId, TxnId};
use sqlx::PgConnection;
use sqlx::types::Json;

/// Claims (`txn_id`, `operation`) inside the caller's transaction. `None`: the operation is
/// new, apply it and [`record`] the reply before committing. `Some(reply)`: it was applied before
/// (or refused by an earlier release); send this reply again and change nothing.
///
/// The claim comes first, before any item is touched: a concurrent duplicate, or a release of
/// the same transaction, then waits on this row instead of racing with the effect.
pub async fn claim(
    tx: &mut PgConnection,
    txn_id: TxnId,
    operation: Operation,
    order_id: OrderId,
) -> Result<Option<Reply>, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO txn_barrier (txn_id, operation, order_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(txn_id)
    .bind(operation.as_str())
    .bind(order_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let recorded: Option<Json<Reply>> =
        sqlx::query_scalar("SELECT reply FROM txn_barrier WHERE txn_id = $1 AND operation = $2")
            .bind(txn_id)
            .bind(operation.as_str())
            .fetch_one(&mut *tx)
            .await?;
    // A committed row always has its reply: it is written in the transaction that claims it.
    recorded
        .map(|Json(reply)| Some(reply))
        // Not transient: retrying cannot fill in a reply.
        .ok_or_else(|| sqlx::Error::Decode("barrier row without a reply".into()))
}

/// Records the reply of the operation claimed in this transaction.
pub async fn record(
    tx: &mut PgConnection,
    txn_id: TxnId,
    operation: Operation,
    reply: &Reply,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE txn_barrier SET reply = $3 WHERE txn_id = $1 AND operation = $2")
        .bind(txn_id)
        .bind(operation.as_str())
        .bind(Json(reply))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// For a release: claims the reserve and assign of the same transaction with refusals, unless
/// they were applied already. A reserve or assign that arrives later (or is in flight right now,
/// and loses the race for its row) gets the refusal and changes nothing: no item is ever held for
/// a released transaction.
pub async fn refuse_later(
    tx: &mut PgConnection,
    txn_id: TxnId,
    order_id: OrderId,
) -> Result<(), sqlx::Error> {
    let reserve = Reply::ReserveReply(ReserveReply::Aborted);
    let assign = Reply::AssignReply(AssignReply::Refused {
        reason: AssignRefusal::Released,
    });
    sqlx::query(
        "INSERT INTO txn_barrier (txn_id, operation, order_id, reply)
         VALUES ($1, 'reserve', $2, $3), ($1, 'assign', $2, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(txn_id)
    .bind(order_id)
    .bind(Json(reserve))
    .bind(Json(assign))
    .execute(&mut *tx)
    .await?;
    Ok(())
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
