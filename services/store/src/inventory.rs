//! How the store picks the packets of a basket for a reservation.

use std::collections::HashSet;

use participant::{Inventory, ItemTable, Key, ReserveError};
use protocol::command::{MAX_LINES, MAX_QUANTITY, PacketRequest};
use protocol::topology::Participant;

/// The store's items: packets of foods, each in one hub.
#[derive(Clone, Copy, Debug, Default)]
pub struct Packets;

impl Inventory for Packets {
    type Request = PacketRequest;

    const PARTICIPANT: Participant = Participant::Store;

    const TABLE: ItemTable = ItemTable { name: "packets" };

    /// For each line (`$5` foods, `$6` quantities), `quantity` packets of the food at the hub
    /// (`$4`): available ones, looking from a random place in the range of the food's packet ids
    /// at that hub (up, then down from there), else ones whose reservation has expired. Every
    /// packet of every line, or none: if any line is short, no row is returned (the packets
    /// locked meanwhile stay untouched and are unlocked when the statement's transaction ends).
    ///
    /// Each line is an index lookup within its (hub, food): the cost does not grow with the
    /// number of hubs, foods or packets. Starting at random spreads concurrent reserves over the
    /// packets instead of making them all contend for the first ones. `LIMIT` over `UNION ALL`
    /// stops at the first branches that find enough.
    const PICK: &'static str = "WITH wanted AS (
            SELECT w.food_id, w.quantity,
                   s.packets_lo + floor(random() * (s.packets_hi - s.packets_lo + 1))::bigint AS at
            FROM unnest($5::bigint[], $6::int[]) AS w(food_id, quantity)
            JOIN stock s ON s.hub_id = $4 AND s.food_id = w.food_id
        ),
        candidates AS (
            SELECT c.id FROM wanted w
            CROSS JOIN LATERAL (
                SELECT id FROM (
                    SELECT id FROM (
                        SELECT id FROM packets
                        WHERE hub_id = $4 AND food_id = w.food_id AND state = 'available'
                          AND id >= w.at
                        ORDER BY id LIMIT w.quantity FOR UPDATE SKIP LOCKED) above
                    UNION ALL
                    SELECT id FROM (
                        SELECT id FROM packets
                        WHERE hub_id = $4 AND food_id = w.food_id AND state = 'available'
                          AND id < w.at
                        ORDER BY id DESC LIMIT w.quantity FOR UPDATE SKIP LOCKED) below
                    UNION ALL
                    SELECT id FROM (
                        SELECT id FROM packets
                        WHERE hub_id = $4 AND food_id = w.food_id AND state = 'reserved'
                          AND reserved_until < statement_timestamp()
                        ORDER BY reserved_until LIMIT w.quantity FOR UPDATE SKIP LOCKED) expired
                ) free LIMIT w.quantity
            ) c
        )
        SELECT id FROM candidates
        WHERE (SELECT count(*) FROM candidates)
              = (SELECT coalesce(sum(q), 0) FROM unnest($6::int[]) AS q)";

    /// Not every line could be picked. A line with fewer packets free or held at the hub than it
    /// asks for is short for good (the rest are assigned): `food_unavailable`, naming the short
    /// foods. Otherwise some packets are only held by unfinished transactions (or locked by a
    /// concurrent reserve) for now: `busy`, worth a retry. Each count stops at the quantity.
    const SHORTAGE: &'static str = "WITH lines AS (
            SELECT food_id, quantity FROM unnest($5::bigint[], $6::int[]) AS w(food_id, quantity)
        ),
        unknown AS (
            SELECT array_agg(l.food_id ORDER BY l.food_id) AS ids FROM lines l
            WHERE NOT EXISTS (SELECT 1 FROM foods f WHERE f.id = l.food_id)
        ),
        short AS (
            SELECT array_agg(l.food_id ORDER BY l.food_id) AS ids FROM lines l
            WHERE (SELECT count(*) FROM (
                       SELECT 1 FROM packets p
                       WHERE p.hub_id = $4 AND p.food_id = l.food_id AND p.state = 'available'
                       LIMIT l.quantity) a)
                + (SELECT count(*) FROM (
                       SELECT 1 FROM packets p
                       WHERE p.hub_id = $4 AND p.food_id = l.food_id AND p.state = 'reserved'
                       LIMIT l.quantity) r)
                < l.quantity
        )
        SELECT CASE
                   WHEN NOT EXISTS (SELECT 1 FROM hubs WHERE id = $4) THEN 'unknown_hub'
                   WHEN (SELECT ids FROM unknown) IS NOT NULL THEN 'unknown_food'
                   WHEN (SELECT ids FROM short) IS NOT NULL THEN 'food_unavailable'
                   ELSE 'busy' END AS v,
               CASE
                   WHEN NOT EXISTS (SELECT 1 FROM hubs WHERE id = $4) THEN NULL
                   WHEN (SELECT ids FROM unknown) IS NOT NULL THEN (SELECT ids FROM unknown)
                   ELSE (SELECT ids FROM short) END AS short";

    /// The oldest reservations of the hub's packets of the foods asked for (the index on
    /// `(hub_id, food_id, reserved_until)` of reserved packets).
    const HOLDERS: &'static str = "SELECT txn_id, order_id, reserved_until FROM packets
        WHERE hub_id = $1 AND food_id = ANY($2) AND state = 'reserved'
        ORDER BY reserved_until LIMIT $3";

    fn key(&self, request: &PacketRequest) -> Result<Key, ReserveError> {
        let invalid = |why: String| Err(ReserveError::Invalid(why));
        if request.lines.is_empty() || request.lines.len() > MAX_LINES {
            return invalid(format!(
                "{} lines; a basket has 1 to {MAX_LINES}",
                request.lines.len()
            ));
        }
        let mut seen = HashSet::new();
        let mut key = Key {
            hub: request.hub_id.0,
            ..Key::default()
        };
        for line in &request.lines {
            if !seen.insert(line.food_id) {
                return invalid(format!("food {} is on two lines", line.food_id));
            }
            if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                return invalid(format!(
                    "quantity {} of food {}; a line asks for 1 to {MAX_QUANTITY}",
                    line.quantity, line.food_id
                ));
            }
            key.kinds.push(line.food_id.0);
            // At most MAX_QUANTITY, so it fits.
            key.quantities
                .push(i32::try_from(line.quantity).unwrap_or(i32::MAX));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use participant::barrier::{Recorded, RecordedFor};
    use participant::context::{Reserve, reserve_one, reserve_set};
    use participant::{Key, Statements};
    use protocol::command::Operation;
    use protocol::ids::{OrderId, TxnId};
    use service_kit::testing::ScratchDatabase;
    use sqlx::{AssertSqlSafe, PgConnection};

    use super::Packets;

    /// The assigns: a transaction, the packets it holds, whether their reservation has expired,
    /// and the packets its assign asks for.
    const ASSIGNS: [(u128, &[i64], bool, &[i64]); 5] = [
        // Holds what it asks for.
        (0xa, &[1, 2], false, &[1, 2]),
        // Asks for one it does not hold.
        (0xb, &[3], false, &[3, 4]),
        // Its reservation has expired.
        (0xc, &[5], true, &[5]),
        // Asks for nothing.
        (0xd, &[], false, &[]),
        // Holds what it asks for, asked in another order.
        (0xe, &[6, 7], false, &[7, 6]),
    ];

    fn order_of(txn: u128) -> uuid::Uuid {
        uuid::Uuid::from_u128(txn << 8)
    }

    /// The replies of the assigns, run one by one or as one set in a database of their own, and
    /// what they left in the packets and the barrier (without the times the database chose).
    async fn run(as_set: bool) -> (Vec<String>, Vec<String>) {
        let database = ScratchDatabase::create("store_assign_test").await.unwrap();
        crate::MIGRATOR.run(database.pool()).await.unwrap();
        let mut conn = database.pool().acquire().await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO foods (name) VALUES ('rice');
             INSERT INTO packets (food_id, hub_id) SELECT 1, 1 FROM generate_series(1, 8);",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        for (txn, held, expired, _) in ASSIGNS {
            sqlx::query(
                "UPDATE packets SET state = 'reserved', txn_id = $1, order_id = $2,
                     reserved_until = now() + CASE WHEN $4 THEN interval '-1 s' ELSE interval '1 min' END
                 WHERE id = ANY($3)",
            )
            .bind(uuid::Uuid::from_u128(txn))
            .bind(order_of(txn))
            .bind(held)
            .bind(expired)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        let statements = Statements::of::<Packets>();
        let recorded = if as_set {
            assign_set(&mut conn, &statements).await
        } else {
            let mut recorded = Vec::new();
            for (txn, _, _, asked) in ASSIGNS {
                let row: Recorded = sqlx::query_as(AssertSqlSafe(statements.assign.clone()))
                    .bind(uuid::Uuid::from_u128(txn))
                    .bind(order_of(txn))
                    .bind(asked)
                    .fetch_one(&mut *conn)
                    .await
                    .unwrap();
                recorded.push(row);
            }
            recorded
        };
        let mut left: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(' ', id, state, txn_id, order_id, reserved_until IS NULL)
             FROM packets ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        left.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT concat_ws(' ', txn_id, operation, order_id, outcome, reason, items)
                 FROM txn_barrier ORDER BY txn_id",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap(),
        );
        drop(conn);
        database.drop_database().await.unwrap();
        let replies = recorded
            .into_iter()
            .map(|row| format!("{:?}", row.into_reply(Operation::Assign).unwrap()))
            .collect();
        (replies, left)
    }

    async fn assign_set(conn: &mut PgConnection, statements: &Statements) -> Vec<Recorded> {
        let txns: Vec<uuid::Uuid> = ASSIGNS.iter().map(|a| uuid::Uuid::from_u128(a.0)).collect();
        let orders: Vec<uuid::Uuid> = ASSIGNS.iter().map(|a| order_of(a.0)).collect();
        let (item_of, items): (Vec<i32>, Vec<i64>) = (1..)
            .zip(ASSIGNS)
            .flat_map(|(place, (_, _, _, asked))| asked.iter().map(move |&item| (place, item)))
            .unzip();
        let rows: Vec<RecordedFor> = sqlx::query_as(AssertSqlSafe(statements.assign_set.clone()))
            .bind(&txns)
            .bind(orders)
            .bind(item_of)
            .bind(items)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let mut rows: std::collections::HashMap<_, _> =
            rows.into_iter().map(|r| (r.txn_id, r.recorded)).collect();
        txns.iter().map(|txn| rows.remove(txn).unwrap()).collect()
    }

    #[tokio::test]
    async fn an_assign_finds_its_packets_by_primary_key_among_many_reservations() {
        let database = ScratchDatabase::create("store_assign_test").await.unwrap();
        crate::MIGRATOR.run(database.pool()).await.unwrap();
        let mut conn = database.pool().acquire().await.unwrap();
        // Many packets, a tenth of them reserved by transactions of their own.
        sqlx::raw_sql(
            "INSERT INTO foods (name) VALUES ('rice');
             INSERT INTO packets (food_id, hub_id) SELECT 1, 1 FROM generate_series(1, 20000);
             UPDATE packets SET state = 'reserved', txn_id = gen_random_uuid(),
                 order_id = gen_random_uuid(), reserved_until = now() + interval '1 min'
             WHERE id % 10 = 0;
             ANALYZE packets;
             SET plan_cache_mode = force_generic_plan;",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        let statements = Statements::of::<Packets>();
        let mut plans = Vec::new();
        for (name, types, statement, args) in [
            (
                "one",
                "uuid, uuid, bigint[]",
                &statements.assign,
                "gen_random_uuid(), gen_random_uuid(), '{10, 20}'",
            ),
            (
                "set",
                "uuid[], uuid[], int[], bigint[]",
                &statements.assign_set,
                "ARRAY[gen_random_uuid()], ARRAY[gen_random_uuid()], '{1, 1}', '{10, 20}'",
            ),
        ] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "PREPARE {name} ({types}) AS {statement}"
            )))
            .execute(&mut *conn)
            .await
            .unwrap();
            let plan: Vec<String> =
                sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN EXECUTE {name} ({args})")))
                    .fetch_all(&mut *conn)
                    .await
                    .unwrap();
            plans.push(plan.join("\n"));
        }
        drop(conn);
        database.drop_database().await.unwrap();

        for plan in plans {
            assert!(plan.contains("packets_pkey"), "{plan}");
            assert!(!plan.contains("packets_reserved_until"), "{plan}");
            assert!(!plan.contains("packets_txn"), "{plan}");
            assert!(!plan.contains("Seq Scan on packets"), "{plan}");
        }
    }

    #[tokio::test]
    async fn assigns_as_one_statement_reply_and_leave_what_they_would_one_by_one() {
        let (one_by_one, left_one_by_one) = run(false).await;
        let (as_set, left_as_set) = run(true).await;
        let assigned: Vec<bool> = one_by_one.iter().map(|r| r.contains("Assigned")).collect();
        assert_eq!(
            assigned,
            [true, false, false, false, true],
            "{one_by_one:#?}"
        );
        assert_eq!(as_set, one_by_one);
        assert_eq!(left_as_set, left_one_by_one);
    }

    /// The reserves (a transaction and its lines, food and quantity) in a store of rice (3
    /// packets), tea, milk and sugar (8 each) and salt (none), all at hub 1: four reserves
    /// compete for the three packets of rice, two for five of the eight of tea, one meets no
    /// other, one is short of salt and one asks for a food that does not exist.
    const RESERVES: [(u128, &[(i64, i32)]); 9] = [
        (0x1, &[(1, 1)]),
        (0x2, &[(1, 1)]),
        (0x3, &[(1, 1)]),
        (0x4, &[(1, 1)]),
        (0x5, &[(2, 5)]),
        (0x6, &[(2, 5)]),
        (0x7, &[(3, 2), (5, 1)]),
        (0x8, &[(2, 2), (4, 1)]),
        (0x9, &[(99, 1)]),
    ];

    fn reserve(txn: u128, lines: &[(i64, i32)]) -> Reserve {
        Reserve {
            txn_id: TxnId(uuid::Uuid::from_u128(txn)),
            order_id: OrderId(order_of(txn)),
            ttl: Duration::from_secs(60),
            key: Key {
                hub: 1,
                kinds: lines.iter().map(|l| l.0).collect(),
                quantities: lines.iter().map(|l| l.1).collect(),
            },
        }
    }

    async fn stocked_store() -> (ScratchDatabase, sqlx::pool::PoolConnection<sqlx::Postgres>) {
        let database = ScratchDatabase::create("store_reserve_test").await.unwrap();
        crate::MIGRATOR.run(database.pool()).await.unwrap();
        let mut conn = database.pool().acquire().await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO foods (name) VALUES ('rice'), ('tea'), ('milk'), ('salt'), ('sugar');
             INSERT INTO packets (food_id, hub_id) SELECT 1, 1 FROM generate_series(1, 3);
             INSERT INTO packets (food_id, hub_id) SELECT 2, 1 FROM generate_series(1, 8);
             INSERT INTO packets (food_id, hub_id) SELECT 3, 1 FROM generate_series(1, 8);
             INSERT INTO packets (food_id, hub_id) SELECT 5, 1 FROM generate_series(1, 8);
             INSERT INTO stock (hub_id, food_id, packets_lo, packets_hi)
             SELECT hub_id, food_id, min(id), max(id) FROM packets GROUP BY hub_id, food_id;",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        (database, conn)
    }

    /// Each reserve's reply with the foods of its packets for the packets themselves (which
    /// packets a reserve gets is chosen at random), after checking that the packets are the
    /// reserve's in the table and in the barrier, and that nothing else is reserved.
    async fn outcomes(conn: &mut PgConnection, replies: Vec<Recorded>) -> Vec<String> {
        let mut outcomes = Vec::new();
        let mut all_items = Vec::new();
        for ((txn, _), reply) in RESERVES.iter().zip(replies) {
            let reply = reply.into_reply(Operation::Reserve).unwrap();
            let text = format!("{reply:?}");
            let protocol::command::Reply::ReserveReply(protocol::command::ReserveReply::Reserved {
                items,
                ..
            }) = reply
            else {
                outcomes.push(text);
                continue;
            };
            let ids: Vec<i64> = items.iter().map(|i| i.0).collect();
            let held: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM packets WHERE txn_id = $1 AND state = 'reserved' ORDER BY id",
            )
            .bind(uuid::Uuid::from_u128(*txn))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            assert_eq!(held, ids, "{text}");
            let foods: Vec<String> = sqlx::query_scalar(
                "SELECT concat(food_id, ' x', count(*)) FROM packets WHERE id = ANY($1)
                 GROUP BY food_id ORDER BY food_id",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            all_items.extend(ids);
            outcomes.push(format!("reserved {foods:?}"));
        }
        let reserved: i64 =
            sqlx::query_scalar("SELECT count(*) FROM packets WHERE state = 'reserved'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        let distinct: std::collections::BTreeSet<_> = all_items.iter().collect();
        assert_eq!(distinct.len(), all_items.len(), "a packet reserved twice");
        assert_eq!(usize::try_from(reserved).unwrap(), all_items.len());
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM txn_barrier WHERE operation = 'reserve'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(usize::try_from(recorded).unwrap(), RESERVES.len());
        outcomes
    }

    /// The outcomes of the reserves run one by one or as a set, with those of the reserves that
    /// compete for the rice, and for the tea, sorted (which of them is left without depends on
    /// the order).
    async fn run_reserves(as_set: bool) -> Vec<String> {
        let (database, mut conn) = stocked_store().await;
        let statements = Statements::of::<Packets>();
        let reserves: Vec<Reserve> = RESERVES.iter().map(|(t, l)| reserve(*t, l)).collect();
        let replies = if as_set {
            let refs: Vec<&Reserve> = reserves.iter().collect();
            reserve_set(&mut conn, &statements, &refs).await.unwrap()
        } else {
            let mut replies = Vec::new();
            for reserve in &reserves {
                replies.push(reserve_one(&mut conn, &statements, reserve).await.unwrap());
            }
            replies
        };
        let mut outcomes = outcomes(&mut conn, replies).await;
        outcomes[..4].sort();
        outcomes[4..6].sort();
        drop(conn);
        database.drop_database().await.unwrap();
        outcomes
    }

    #[tokio::test]
    async fn reserves_as_one_statement_reply_and_leave_what_they_would_one_by_one() {
        let one_by_one = run_reserves(false).await;
        assert_eq!(
            one_by_one,
            [
                "ReserveReply(Busy { holders: [] })",
                "reserved [\"1 x1\"]",
                "reserved [\"1 x1\"]",
                "reserved [\"1 x1\"]",
                "ReserveReply(Busy { holders: [] })",
                "reserved [\"2 x5\"]",
                "reserved [\"3 x2\", \"5 x1\"]",
                "ReserveReply(Unavailable { reason: FoodUnavailable, food_ids: [FoodId(4)] })",
                "ReserveReply(Unavailable { reason: UnknownFood, food_ids: [FoodId(99)] })",
            ]
        );
        // The packets are picked at random, so the competitions go differently from one run to
        // the next.
        for _ in 0..3 {
            assert_eq!(run_reserves(true).await, one_by_one);
        }
    }

    #[tokio::test]
    async fn a_set_of_reserves_takes_those_that_meet_no_other_in_one_statement() {
        let (database, mut conn) = stocked_store().await;
        let statements = Statements::of::<Packets>();
        let reserves: Vec<Reserve> = RESERVES.iter().map(|(t, l)| reserve(*t, l)).collect();
        let mut lines = (Vec::new(), Vec::new(), Vec::new());
        for (place, reserve) in (1_i32..).zip(&reserves) {
            for (kind, quantity) in reserve.key.kinds.iter().zip(&reserve.key.quantities) {
                lines.0.push(place);
                lines.1.push(*kind);
                lines.2.push(*quantity);
            }
        }
        let rows: Vec<RecordedFor> = sqlx::query_as(AssertSqlSafe(statements.reserve_set.clone()))
            .bind(reserves.iter().map(|r| r.txn_id.0).collect::<Vec<_>>())
            .bind(reserves.iter().map(|r| r.order_id.0).collect::<Vec<_>>())
            .bind(reserves.iter().map(|r| r.ttl).collect::<Vec<_>>())
            .bind(reserves.iter().map(|r| r.key.hub).collect::<Vec<_>>())
            .bind(lines.0)
            .bind(lines.1)
            .bind(lines.2)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        database.drop_database().await.unwrap();
        let taken: Vec<u128> = rows.iter().map(|r| r.txn_id.as_u128()).collect();
        // The one that meets no other is taken. The two that want five of the eight packets of
        // tea must have picked some of the same, so neither is; nor are the short and the
        // unknown. Of the four that compete for three packets, at most three are.
        assert!(taken.contains(&0x7), "{taken:x?}");
        for not_taken in [0x5, 0x6, 0x8, 0x9] {
            assert!(!taken.contains(&not_taken), "{taken:x?}");
        }
        assert!(
            taken.iter().filter(|t| **t <= 0x4).count() <= 3,
            "{taken:x?}"
        );
    }
}
