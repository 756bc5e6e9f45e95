//! How delivery picks an agent of a hub for a reservation.

use participant::{Inventory, ItemTable, Key, ReserveError};
use protocol::command::AgentRequest;
use protocol::topology::Participant;

/// Delivery's items: agents, each in one hub.
#[derive(Clone, Copy, Debug, Default)]
pub struct Agents;

impl Inventory for Agents {
    type Request = AgentRequest;

    const PARTICIPANT: Participant = Participant::Delivery;

    const TABLE: ItemTable = ItemTable { name: "agents" };

    /// An available agent of the hub (`$4`), looking from a random place in the range of the
    /// hub's agent ids (up, then down from there), or else one whose reservation has expired.
    /// Off-duty agents and agents out on a delivery are never picked. Starting at random spreads
    /// concurrent reserves over the agents and avoids walking over the index entries that taken
    /// agents leave at the start until vacuum removes them. `LIMIT 1` over `UNION ALL` stops at
    /// the first branch that finds one.
    const PICK: &'static str = "WITH start AS (
            SELECT agents_lo + floor(random() * (agents_hi - agents_lo + 1))::bigint AS at
            FROM hubs WHERE id = $4
        )
        SELECT id FROM (
            SELECT id FROM (
                SELECT id FROM agents
                WHERE hub_id = $4 AND state = 'available' AND id >= (SELECT at FROM start)
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) above
            UNION ALL
            SELECT id FROM (
                SELECT id FROM agents
                WHERE hub_id = $4 AND state = 'available' AND id < (SELECT at FROM start)
                ORDER BY id DESC LIMIT 1 FOR UPDATE SKIP LOCKED) below
            UNION ALL
            SELECT id FROM (
                SELECT id FROM agents
                WHERE hub_id = $4 AND state = 'reserved' AND reserved_until < statement_timestamp()
                ORDER BY reserved_until LIMIT 1 FOR UPDATE SKIP LOCKED) expired
        ) free LIMIT 1";

    /// Nothing free at the hub. "All held for now" is worth a retry; all assigned, out on
    /// deliveries or off duty is final for this order.
    const SHORTAGE: &'static str = "SELECT CASE
            WHEN EXISTS (SELECT 1 FROM agents WHERE hub_id = $4 AND state = 'available')
              OR EXISTS (SELECT 1 FROM agents WHERE hub_id = $4 AND state = 'reserved')
                THEN 'busy'
            ELSE 'agent_unavailable' END AS v, NULL::bigint[] AS short";

    /// The oldest reservations of the hub's agents (the index on `(hub_id, reserved_until)` of
    /// reserved agents). `$2` (kinds) is unused: agents are of one kind.
    const HOLDERS: &'static str = "SELECT txn_id, order_id, reserved_until FROM agents
        WHERE hub_id = $1 AND state = 'reserved'
        ORDER BY reserved_until LIMIT $3";

    fn key(&self, request: &AgentRequest) -> Result<Key, ReserveError> {
        Ok(Key {
            hub: request.hub_id.0,
            ..Key::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use participant::barrier::Recorded;
    use participant::context::{Reserve, reserve_one, reserve_set};
    use participant::{Inventory, Key, Statements};
    use protocol::command::{Operation, Reply, ReserveReply};
    use protocol::ids::{OrderId, TxnId};
    use service_kit::testing::ScratchDatabase;

    use super::Agents;

    /// The reserves (a transaction and its hub): three compete for the two agents of hub 1, one
    /// is for hub 2 (three agents), and one for a hub that does not exist.
    const RESERVES: [(u128, i64); 5] = [(0x1, 1), (0x2, 1), (0x3, 1), (0x4, 2), (0x5, 3)];

    /// The outcomes of the reserves, run one by one or as a set, each reserved one as the hub of
    /// its agent, with those of the three that compete for hub 1 sorted (which of them is left
    /// without depends on the order). Checks that no agent was reserved twice.
    async fn run(as_set: bool) -> Vec<String> {
        let database = ScratchDatabase::create("delivery_reserve_test")
            .await
            .unwrap();
        crate::MIGRATOR.run(database.pool()).await.unwrap();
        let mut conn = database.pool().acquire().await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO hubs (id, agents_lo, agents_hi) VALUES (2, 1, 1);
             INSERT INTO agents (hub_id) SELECT 1 FROM generate_series(1, 2);
             INSERT INTO agents (hub_id) SELECT 2 FROM generate_series(1, 3);
             UPDATE hubs h SET agents_lo = a.lo, agents_hi = a.hi
             FROM (SELECT hub_id, min(id) AS lo, max(id) AS hi FROM agents GROUP BY hub_id) a
             WHERE a.hub_id = h.id;",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        let statements = Statements::of::<Agents>();
        let reserves: Vec<Reserve> = RESERVES
            .iter()
            .map(|(txn, hub)| Reserve {
                txn_id: TxnId(uuid::Uuid::from_u128(*txn)),
                order_id: OrderId(uuid::Uuid::from_u128(txn << 8)),
                ttl: Duration::from_secs(60),
                key: Key {
                    hub: *hub,
                    ..Key::default()
                },
            })
            .collect();
        let replies: Vec<Recorded> = if as_set {
            let refs: Vec<&Reserve> = reserves.iter().collect();
            reserve_set(&mut conn, &statements, &refs).await.unwrap()
        } else {
            let mut replies = Vec::new();
            for reserve in &reserves {
                replies.push(reserve_one(&mut conn, &statements, reserve).await.unwrap());
            }
            replies
        };
        let mut outcomes = Vec::new();
        let mut agents = Vec::new();
        for (reserve, reply) in reserves.iter().zip(replies) {
            match reply.into_reply(Operation::Reserve).unwrap() {
                Reply::ReserveReply(ReserveReply::Reserved { items, .. }) => {
                    let hubs: Vec<String> = sqlx::query_scalar(
                        "SELECT concat('hub ', hub_id) FROM agents
                         WHERE id = ANY($1) AND txn_id = $2 AND state = 'reserved'",
                    )
                    .bind(items.iter().map(|i| i.0).collect::<Vec<_>>())
                    .bind(reserve.txn_id.0)
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
                    agents.extend(items);
                    outcomes.push(format!("reserved {hubs:?}"));
                }
                other => outcomes.push(format!("{other:?}")),
            }
        }
        // A busy reserve's holders: the two transactions that hold hub 1's agents, each with
        // its order, held for less than their lifetime.
        let holders = Agents::TABLE
            .holders(
                &mut conn,
                Agents::HOLDERS,
                &Key {
                    hub: 1,
                    ..Key::default()
                },
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let holding: std::collections::BTreeSet<uuid::Uuid> =
            sqlx::query_scalar("SELECT txn_id FROM agents WHERE hub_id = 1 AND state = 'reserved'")
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(holding.len(), 2);
        assert_eq!(
            holders
                .iter()
                .map(|h| h.txn_id.0)
                .collect::<std::collections::BTreeSet<_>>(),
            holding
        );
        for holder in &holders {
            assert_eq!(holder.order_id.0.as_u128(), holder.txn_id.0.as_u128() << 8);
            assert!(holder.held_ms < 60_000, "{holder:?}");
        }
        let reserved: i64 =
            sqlx::query_scalar("SELECT count(*) FROM agents WHERE state = 'reserved'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        drop(conn);
        database.drop_database().await.unwrap();
        let distinct: std::collections::BTreeSet<_> = agents.iter().map(|a| a.0).collect();
        assert_eq!(distinct.len(), agents.len(), "an agent reserved twice");
        assert_eq!(usize::try_from(reserved).unwrap(), agents.len());
        outcomes[..3].sort();
        outcomes
    }

    #[tokio::test]
    async fn reserves_as_one_statement_reply_and_leave_what_they_would_one_by_one() {
        let one_by_one = run(false).await;
        assert_eq!(
            one_by_one,
            [
                "ReserveReply(Busy { holders: [] })",
                "reserved [\"hub 1\"]",
                "reserved [\"hub 1\"]",
                "reserved [\"hub 2\"]",
                "ReserveReply(Unavailable { reason: AgentUnavailable, food_ids: [] })",
            ]
        );
        // The agents are picked at random, so the competition for hub 1 goes differently from
        // one run to the next.
        for _ in 0..3 {
            assert_eq!(run(true).await, one_by_one);
        }
    }
}
