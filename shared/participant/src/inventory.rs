//! What differs between participants (how to pick an item and why none could be picked), and
//! the SQL on their items table that does not. The barrier's side of the command statements is
//! in [`crate::barrier`], which assembles them.

use protocol::command::{Holder, MAX_HOLDERS};
use protocol::ids::{ItemId, OrderId, TxnId};
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

/// What a reserve statement is bound to: `$4` the hub, `$5` the foods and `$6` their quantities
/// (empty for a participant whose items are not of a kind, like agents).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key {
    /// The hub the items must come from.
    pub hub: i64,
    /// The kinds of item (foods), each at most once.
    pub kinds: Vec<i64>,
    /// How many of each kind, in the order of `kinds`.
    pub quantities: Vec<i32>,
}

/// The items of one participant: a table with the columns `id`, `hub_id`, `state`
/// (`available`/`reserved`/`assigned`, and others of the participant's own that no command
/// changes), `txn_id`, `order_id`, `reserved_until` and `updated_at`.
///
/// A reserve is one SQL statement: pick the items, mark them reserved and record the barrier
/// row with the reply, or record why they could not be picked. The participant supplies the
/// picking query and the explanation; [`Statements`](crate::barrier::Statements) assembles the
/// statement once at start.
pub trait Inventory: Send + Sync + 'static {
    /// What a reserve command asks for.
    type Request: Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static;

    /// Which participant this is.
    const PARTICIPANT: Participant;

    /// The items table.
    const TABLE: ItemTable;

    /// A query returning the `id` of every item the request asks for, locked `FOR UPDATE SKIP
    /// LOCKED` so that concurrent reserves take different items (an available one first, else
    /// one whose reservation has expired), or no rows at all if it cannot have every one of them:
    /// all or nothing. `$4`, `$5` and `$6` are the request's [`Key`], and it uses no other
    /// parameter: a group's reserves run it once per request within one statement, with those
    /// three replaced by the request's columns ([`ItemTable::reserve_set_ctes`]).
    const PICK: &'static str;

    /// A query of one row `(v text, short bigint[])` for when nothing was picked: `v` is
    /// `'busy'` while the items that could serve the request are only held by unfinished
    /// transactions (they may come back), else the final reason (`'food_unavailable'`,
    /// `'unknown_food'`, `'agent_unavailable'`, `'unknown_hub'`); `short` names the kinds that
    /// are short (or NULL). Only run when nothing was picked.
    const SHORTAGE: &'static str;

    /// A query of the reservations that hold items a busy request needs, oldest first: rows
    /// `(txn_id uuid, order_id uuid, reserved_until timestamptz)`, at most `$3` of them. `$1` is
    /// the hub and `$2` the kinds. Run only after a reserve answered `busy`, so that the
    /// coordinator can release a reservation whose coordinator died in phase 1.
    const HOLDERS: &'static str;

    /// The values bound for `request`, or why the request cannot be served.
    fn key(&self, request: &Self::Request) -> Result<Key, ReserveError>;
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

    /// The holders of what a busy request for `key` needs ([`Inventory::HOLDERS`], with the
    /// participant's query `holders`), each with how long it has held it by this database's
    /// clock: its expiry less `ttl`, the reservation's lifetime.
    pub async fn holders(
        &self,
        conn: &mut PgConnection,
        holders: &str,
        key: &Key,
        ttl: std::time::Duration,
    ) -> Result<Vec<Holder>, sqlx::Error> {
        let rows: Vec<(uuid::Uuid, uuid::Uuid, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT txn_id, order_id,
                    greatest(0, (extract(epoch FROM statement_timestamp()
                                 - (reserved_until - $4::interval)) * 1000))::bigint
             FROM ({holders}) h"
        )))
        .bind(key.hub)
        .bind(&key.kinds)
        .bind(i64::try_from(MAX_HOLDERS).unwrap_or(i64::MAX))
        .bind(ttl)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(txn, order, held_ms)| Holder {
                txn_id: TxnId(txn),
                order_id: OrderId(order),
                held_ms: u64::try_from(held_ms).unwrap_or(0),
            })
            .collect())
    }

    /// The `WITH` clause of a reserve (`$1` txn, `$2` order, `$3` ttl, `$4`-`$6` key): takes the
    /// items `pick` finds, if any. Defines `taken (id, reserved_until)` and `verdict (v, short)`:
    /// `'reserved'`, or what `shortage` says (run only if nothing was taken: a CTE is read on
    /// demand).
    pub(crate) fn reserve_ctes(&self, pick: &str, shortage: &str) -> String {
        let table = self.name;
        format!(
            "WITH picked AS ({pick}),
             taken AS (
                 UPDATE {table} t
                 SET state = 'reserved', txn_id = $1, order_id = $2,
                     reserved_until = statement_timestamp() + $3, updated_at = now()
                 FROM picked WHERE t.id = picked.id
                 RETURNING t.id, t.reserved_until
             ),
             shortage AS ({shortage}),
             verdict AS (
                 SELECT CASE WHEN EXISTS (SELECT 1 FROM taken) THEN 'reserved'
                             ELSE (SELECT v FROM shortage) END AS v,
                        CASE WHEN EXISTS (SELECT 1 FROM taken) THEN NULL
                             ELSE (SELECT short FROM shortage) END AS short
             )"
        )
    }

    /// The `WITH` clause of the reserves of many transactions in one statement (`$1` txns, `$2`
    /// orders, `$3` ttls, `$4` hubs, and the lines of all of them: `$5` the place (from 1) in
    /// `$1` of the request each is for, `$6` the kind and `$7` the quantity). Defines
    /// `requests (n, txn_id, order_id)` and `taken (n, id, reserved_until)`, `n` a request's
    /// place in the arrays.
    ///
    /// `pick` runs once per request (a `LATERAL` subquery), but all of them read one snapshot and
    /// `SKIP LOCKED` does not skip the rows that an earlier request of the same statement locked,
    /// so two requests may pick the same item. A request takes what it picked only if no other
    /// request picked any of it; a request that picked nothing (it is short, or busy) or that
    /// shares an item takes nothing here, and the caller runs it again on its own statement,
    /// which sees what this one took.
    pub(crate) fn reserve_set_ctes(&self, pick: &str) -> String {
        let table = self.name;
        let pick = per_request(pick);
        format!(
            "WITH lines AS (
                 SELECT * FROM unnest($5::int[], $6::bigint[], $7::int[])
                     WITH ORDINALITY AS l(n, kind, quantity, pos)
             ),
             requests AS (
                 SELECT r.n, r.txn_id, r.order_id, r.ttl, r.hub,
                        coalesce((SELECT array_agg(l.kind ORDER BY l.pos) FROM lines l
                                  WHERE l.n = r.n), '{{}}') AS kinds,
                        coalesce((SELECT array_agg(l.quantity ORDER BY l.pos) FROM lines l
                                  WHERE l.n = r.n), '{{}}') AS quantities
                 FROM unnest($1::uuid[], $2::uuid[], $3::interval[], $4::bigint[])
                     WITH ORDINALITY AS r(txn_id, order_id, ttl, hub, n)
             ),
             picked AS (
                 SELECT request.n, p.id FROM requests request CROSS JOIN LATERAL ({pick}) p
             ),
             contested AS (
                 SELECT DISTINCT picked.n FROM picked
                 JOIN (SELECT id FROM picked GROUP BY id HAVING count(*) > 1) twice USING (id)
             ),
             taken AS (
                 UPDATE {table} t
                 SET state = 'reserved', txn_id = request.txn_id, order_id = request.order_id,
                     reserved_until = statement_timestamp() + request.ttl, updated_at = now()
                 FROM picked JOIN requests request ON request.n = picked.n
                 WHERE t.id = picked.id AND picked.n NOT IN (SELECT n FROM contested)
                 RETURNING picked.n, t.id, t.reserved_until
             )"
        )
    }

    /// The `WITH` clause of an assign (`$1` txn, `$3` items): assigns the items if the
    /// transaction still holds every one of them, unexpired. Defines `verdict (all_held)`.
    ///
    /// The items are found by primary key, and [`HELD_BY`] is written so that no other index
    /// can serve it: under a generic plan PostgreSQL would otherwise AND a scan of every live
    /// reservation (the index on `reserved_until`) with the index on `txn_id`.
    pub(crate) fn assign_ctes(&self) -> String {
        let table = self.name;
        let held_by = HELD_BY.replace("{t}", "").replace("{txn}", "$1");
        format!(
            "WITH held AS (
                 SELECT id FROM {table}
                 WHERE id = ANY($3) AND {held_by}
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
             )"
        )
    }

    /// The `WITH` clause of the assigns of many transactions in one statement (`$1` txns, `$2`
    /// orders, and the items of all of them: `$3` the place in `$1` of the command each is for,
    /// `$4` the item): what [`ItemTable::assign_ctes`] does for each. Defines `verdict (n, txn_id,
    /// order_id, items, all_held)`, `n` the command's place in the arrays. The transactions'
    /// items are disjoint (an item is held by one transaction), so the assigns cannot see each
    /// other's work.
    pub(crate) fn assign_set_ctes(&self) -> String {
        let table = self.name;
        let held_by = HELD_BY.replace("{t}", "t.").replace("{txn}", "c.txn_id");
        format!(
            "WITH asked AS (
                 SELECT * FROM unnest($3::int[], $4::bigint[]) WITH ORDINALITY AS a(n, id, pos)
             ),
             cmd AS (
                 SELECT c.n, c.txn_id, c.order_id,
                        coalesce((SELECT array_agg(a.id ORDER BY a.pos) FROM asked a
                                  WHERE a.n = c.n), '{{}}') AS items
                 FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS c(txn_id, order_id, n)
             ),
             held AS (
                 SELECT t.id, c.n FROM asked a
                 JOIN cmd c ON c.n = a.n
                 JOIN {table} t ON t.id = a.id
                 WHERE {held_by}
                 FOR UPDATE OF t
             ),
             counted AS (SELECT n, count(DISTINCT id) AS held FROM held GROUP BY n),
             verdict AS (
                 SELECT c.n, c.txn_id, c.order_id, c.items,
                        cardinality(c.items) > 0
                        AND coalesce(counted.held, 0) = cardinality(c.items) AS all_held
                 FROM cmd c LEFT JOIN counted ON counted.n = c.n
             ),
             assigned AS (
                 UPDATE {table} t SET state = 'assigned', reserved_until = NULL, updated_at = now()
                 FROM held JOIN verdict ON verdict.n = held.n
                 WHERE t.id = held.id AND verdict.all_held
             )"
        )
    }

    /// The `WITH` clause of a cancel (`$1` txn): frees the items the transaction was assigned, if
    /// it holds any and every one of them is still only assigned (an agent that picked its order
    /// up is not). Defines `verdict (cancellable)` and `freed (id)`.
    pub(crate) fn cancel_ctes(&self) -> String {
        let table = self.name;
        format!(
            "WITH held AS (
                 SELECT id, state FROM {table} WHERE txn_id = $1 FOR UPDATE
             ),
             verdict AS (
                 SELECT EXISTS (SELECT 1 FROM held)
                        AND NOT EXISTS (SELECT 1 FROM held WHERE state <> 'assigned') AS cancellable
             ),
             freed AS (
                 UPDATE {table} t
                 SET state = 'available', txn_id = NULL, order_id = NULL, reserved_until = NULL,
                     updated_at = now()
                 FROM held, verdict
                 WHERE t.id = held.id AND verdict.cancellable
                 RETURNING t.id
             )"
        )
    }

    /// Locks the items that transaction `$1` holds.
    pub(crate) fn lock_held(&self) -> String {
        let table = self.name;
        format!("SELECT id FROM {table} WHERE txn_id = $1 FOR UPDATE")
    }

    /// The `WITH` clause of a release (`$1` txn): frees what the transaction holds in one of
    /// `states` (a list of quoted states). Defines `freed (id)`.
    pub(crate) fn free_ctes(&self, states: &str) -> String {
        let table = self.name;
        format!(
            "WITH freed AS (
                 UPDATE {table}
                 SET state = 'available', txn_id = NULL, order_id = NULL, reserved_until = NULL,
                     updated_at = now()
                 WHERE txn_id = $1 AND state IN ({states})
                 RETURNING id
             )"
        )
    }

    /// The name of the index on the items' `txn_id` (unique where a transaction holds one item).
    pub(crate) fn txn_index(&self) -> String {
        format!("{}_txn", self.name)
    }
}

/// An assign's test that an item (of the table aliased `{t}`) is held by transaction `{txn}`,
/// reserved and unexpired. The comparisons are written so that no index can serve them, not
/// even a partial one on `state = 'reserved'` (`IS NOT DISTINCT FROM` and `IS TRUE` give what
/// `=` and `>` give for the values they meet: the transaction and the state are never NULL, and
/// a NULL expiry is not held either way), which leaves the primary key to find the items.
const HELD_BY: &str = "{t}txn_id IS NOT DISTINCT FROM {txn}
                   AND {t}state IS NOT DISTINCT FROM 'reserved'
                   AND ({t}reserved_until > statement_timestamp()) IS TRUE";

/// `pick` with the parameters of a request's [`Key`] (`$4`, `$5`, `$6`) replaced by the columns
/// of the request it runs for in a set (`request.hub`, `request.kinds`, `request.quantities`).
/// Any other parameter is left as it is (and a set statement would bind it wrongly, which its
/// tests would show).
fn per_request(pick: &str) -> String {
    let mut out = String::with_capacity(pick.len());
    let mut rest = pick;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match &after[..digits] {
            "4" => out.push_str("request.hub"),
            "5" => out.push_str("request.kinds"),
            "6" => out.push_str("request.quantities"),
            _ => out.push_str(&rest[at..=at + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Items as bound to the statements.
pub(crate) fn item_ids(items: &[ItemId]) -> Vec<i64> {
    items.iter().map(|i| i.0).collect()
}

#[cfg(test)]
mod tests {
    use super::per_request;

    #[test]
    fn a_pick_per_request_reads_the_request_columns_instead_of_the_key_parameters() {
        assert_eq!(
            per_request("hub_id = $4 AND food = ANY($5::bigint[]) LIMIT $6[1] OR $44 $1 $"),
            "hub_id = request.hub AND food = ANY(request.kinds::bigint[]) \
             LIMIT request.quantities[1] OR $44 $1 $"
        );
    }
}
