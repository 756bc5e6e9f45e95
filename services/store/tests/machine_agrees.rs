//! The participant machine (`participant::machine`, what the model checker runs) and the store's
//! real statements agree: random sequences of commands, expiries and sweeps go through both, and
//! after each one the replies and the items' states must be the same.
//!
//! The store picks packets from a random place in the stock, the machine the lowest free ones,
//! so items are compared by how many each transaction holds in each state, and replies by their
//! kind and the number of items they name.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use participant::Inventory;
use participant::barrier::{self, Recorded};
use participant::context::{Reserve, reserve_one};
use participant::machine::{Command, ItemState, Items, Outcome};
use participant::{Key, Statements};
use proptest::prelude::*;
use protocol::command::{
    AssignReply, CancelReply, Operation, ReleaseReason, ReleaseReply, Reply, ReserveReply,
};
use protocol::ids::{ItemId, OrderId, TxnId};
use service_kit::testing::ScratchDatabase;
use sqlx::{AssertSqlSafe, PgConnection};

use store_service::MIGRATOR;
use store_service::inventory::Packets;

const PACKETS: i64 = 3;
const TXNS: u128 = 3;

/// One thing that happens to the store.
#[derive(Clone, Debug)]
enum Op {
    Reserve(u128, usize),
    /// Assign what the transaction's reserve gave (or a packet it does not hold).
    Assign(u128),
    Release(u128, ReleaseReason),
    Cancel(u128),
    /// The expiry of the transaction's reservations passes.
    Expire(u128),
    /// The sweep frees expired reservations.
    Sweep,
}

fn any_op() -> impl Strategy<Value = Op> {
    let txn = 1..=TXNS;
    let reason = prop::sample::select(vec![
        ReleaseReason::Abort,
        ReleaseReason::Retry,
        ReleaseReason::Compensate,
    ]);
    prop_oneof![
        3 => (txn.clone(), 1..=2usize).prop_map(|(t, n)| Op::Reserve(t, n)),
        3 => txn.clone().prop_map(Op::Assign),
        2 => (txn.clone(), reason).prop_map(|(t, r)| Op::Release(t, r)),
        1 => txn.clone().prop_map(Op::Cancel),
        1 => txn.prop_map(Op::Expire),
        1 => Just(Op::Sweep),
    ]
}

fn txn(t: u128) -> TxnId {
    TxnId(uuid::Uuid::from_u128(t))
}

fn order(t: u128) -> OrderId {
    OrderId(uuid::Uuid::from_u128(t << 8))
}

/// A reply, without the ids of the items it names.
fn shape_of_reply(reply: &Reply) -> String {
    match reply {
        Reply::ReserveReply(ReserveReply::Reserved { items, .. }) => {
            format!("reserved {}", items.len())
        }
        Reply::ReserveReply(ReserveReply::Busy { .. }) => "busy".into(),
        Reply::ReserveReply(ReserveReply::Unavailable { reason, .. }) => {
            format!("unavailable {reason:?}")
        }
        Reply::ReserveReply(ReserveReply::Aborted) => "aborted".into(),
        Reply::AssignReply(AssignReply::Assigned { items }) => format!("assigned {}", items.len()),
        Reply::AssignReply(AssignReply::Refused { reason }) => format!("refused {reason:?}"),
        Reply::ReleaseReply(ReleaseReply::Released { items }) => {
            format!("released {}", items.len())
        }
        Reply::CancelReply(CancelReply::Cancelled { items }) => {
            format!("cancelled {}", items.len())
        }
        Reply::CancelReply(CancelReply::Refused { reason }) => format!("refused {reason:?}"),
    }
}

fn shape_of_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reserved(items) => format!("reserved {}", items.len()),
        Outcome::Busy => "busy".into(),
        Outcome::Unavailable(reason) => format!("unavailable {reason:?}"),
        Outcome::Aborted => "aborted".into(),
        Outcome::Assigned(items) => format!("assigned {}", items.len()),
        Outcome::AssignRefused(reason) => format!("refused {reason:?}"),
        Outcome::Released(items) => format!("released {}", items.len()),
        Outcome::Cancelled(items) => format!("cancelled {}", items.len()),
        Outcome::CancelRefused(reason) => format!("refused {reason:?}"),
    }
}

/// How many items each transaction holds in each state (`None`: free).
type Holdings = BTreeMap<(Option<uuid::Uuid>, String), usize>;

fn machine_holdings(items: &Items) -> Holdings {
    let mut out = Holdings::new();
    for (_, state) in items.items() {
        let key = match state {
            ItemState::Available => (None, "available".to_owned()),
            ItemState::Reserved { txn, .. } => (Some(txn.0), "reserved".to_owned()),
            ItemState::Assigned { txn, .. } => (Some(txn.0), "assigned".to_owned()),
            ItemState::Delivering { txn, .. } => (Some(txn.0), "delivering".to_owned()),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

async fn real_holdings(conn: &mut PgConnection) -> Holdings {
    let rows: Vec<(Option<uuid::Uuid>, String, i64)> =
        sqlx::query_as("SELECT txn_id, state, count(*) FROM packets GROUP BY txn_id, state")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(txn, state, n)| ((txn, state), usize::try_from(n).unwrap()))
        .collect()
}

/// The store's side of one run: a database of its own, reset between runs.
struct Store {
    database: ScratchDatabase,
    statements: Statements,
}

impl Store {
    async fn reset(&self) -> PgConnection {
        let mut conn = self.database.pool().acquire().await.unwrap().detach();
        sqlx::raw_sql(
            "TRUNCATE packets, txn_barrier, stock RESTART IDENTITY;
             INSERT INTO packets (food_id, hub_id) SELECT 1, 1 FROM generate_series(1, 3);
             INSERT INTO stock (hub_id, food_id, packets_lo, packets_hi) VALUES (1, 1, 1, 3);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn
    }

    /// The reply a command's statement came to: its row, or, where the barrier says the
    /// command was applied (or refused) before, the recorded one, as the participant answers.
    async fn reply(
        &self,
        conn: &mut PgConnection,
        row: Result<Recorded, sqlx::Error>,
        t: u128,
        operation: Operation,
    ) -> Reply {
        match row {
            Ok(row) => row.into_reply(operation).unwrap(),
            Err(err) if barrier::is_recorded_already(&err, &self.statements) => {
                barrier::recorded(conn, txn(t), operation).await.unwrap()
            }
            Err(err) => panic!("{operation}: {err}"),
        }
    }

    async fn run(&self, ops: &[Op]) -> Result<(), TestCaseError> {
        let mut conn = self.reset().await;
        let mut machine = Items::new(PACKETS);
        // What each transaction's reserve gave, in the store and in the machine.
        let mut given: BTreeMap<u128, (Vec<ItemId>, Vec<ItemId>)> = BTreeMap::new();
        for (step, op) in ops.iter().enumerate() {
            let (real, model) = match op {
                Op::Reserve(t, n) => {
                    let reserve = Reserve {
                        txn_id: txn(*t),
                        order_id: order(*t),
                        ttl: Duration::from_secs(60),
                        key: Key {
                            hub: 1,
                            kinds: vec![1],
                            quantities: vec![i32::try_from(*n).unwrap()],
                        },
                    };
                    let real = {
                        let row = reserve_one(&mut conn, &self.statements, &reserve).await;
                        self.reply(&mut conn, row, *t, Operation::Reserve).await
                    };
                    let model = machine.apply(&Command::Reserve {
                        txn: txn(*t),
                        order: order(*t),
                        wanted: *n,
                    });
                    if let (
                        Reply::ReserveReply(ReserveReply::Reserved { items, .. }),
                        Outcome::Reserved(mine),
                    ) = (&real, &model)
                    {
                        given.insert(*t, (items.clone(), mine.clone()));
                    }
                    (shape_of_reply(&real), shape_of_outcome(&model))
                }
                Op::Assign(t) => {
                    let (real_items, model_items) = given
                        .get(t)
                        .cloned()
                        .unwrap_or_else(|| (vec![ItemId(1)], vec![ItemId(1)]));
                    let ids: Vec<i64> = real_items.iter().map(|i| i.0).collect();
                    let row: Result<Recorded, _> =
                        sqlx::query_as(AssertSqlSafe(self.statements.assign.clone()))
                            .bind(txn(*t))
                            .bind(order(*t))
                            .bind(ids)
                            .fetch_one(&mut conn)
                            .await;
                    let real = self.reply(&mut conn, row, *t, Operation::Assign).await;
                    let model = machine.apply(&Command::Assign {
                        txn: txn(*t),
                        order: order(*t),
                        items: model_items,
                    });
                    (shape_of_reply(&real), shape_of_outcome(&model))
                }
                Op::Release(t, reason) => {
                    let real =
                        barrier::release(&mut conn, &self.statements, txn(*t), order(*t), *reason)
                            .await
                            .unwrap();
                    let model = machine.apply(&Command::Release {
                        txn: txn(*t),
                        reason: *reason,
                    });
                    (shape_of_reply(&real), shape_of_outcome(&model))
                }
                Op::Cancel(t) => {
                    let row: Result<Recorded, _> =
                        sqlx::query_as(AssertSqlSafe(self.statements.cancel.clone()))
                            .bind(txn(*t))
                            .bind(order(*t))
                            .fetch_one(&mut conn)
                            .await;
                    let real = self.reply(&mut conn, row, *t, Operation::Cancel).await;
                    let model = machine.apply(&Command::Cancel { txn: txn(*t) });
                    (shape_of_reply(&real), shape_of_outcome(&model))
                }
                Op::Expire(t) => {
                    // The statements take expired items oldest expiry first; the machine takes
                    // them in the order of its own ids. Any expired item may be taken, so the
                    // expiries are set to follow the machine's ids: each of the transaction's
                    // items (in id order) gets the expiry of the machine's item in the same
                    // place, in the past.
                    let held: Vec<ItemId> = machine
                        .items()
                        .filter(|(_, s)| matches!(s, ItemState::Reserved { txn: x, .. } if *x == txn(*t)))
                        .map(|(id, _)| id)
                        .collect();
                    let real: Vec<i64> = sqlx::query_scalar(
                        "SELECT id FROM packets WHERE txn_id = $1 AND state = 'reserved' ORDER BY id",
                    )
                    .bind(txn(*t))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                    let order_of: Vec<i64> = held.iter().map(|id| id.0).collect();
                    sqlx::query(
                        "UPDATE packets t
                         SET reserved_until = timestamptz '2000-01-01' + m.at * interval '1 ms'
                         FROM unnest($1::bigint[], $2::bigint[]) AS m(id, at)
                         WHERE t.id = m.id",
                    )
                    .bind(&real)
                    .bind(&order_of)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                    for id in held {
                        machine.expire(id);
                    }
                    continue;
                }
                Op::Sweep => {
                    Packets::TABLE.sweep(&mut conn, 0, 100).await.unwrap();
                    let expired: Vec<ItemId> = machine
                        .items()
                        .filter(|(_, s)| matches!(s, ItemState::Reserved { expired: true, .. }))
                        .map(|(id, _)| id)
                        .collect();
                    for id in expired {
                        machine.sweep(id);
                    }
                    continue;
                }
            };
            prop_assert_eq!(
                &real,
                &model,
                "reply of step {} ({:?}) of {:?}",
                step,
                op,
                ops
            );
            let (real, model) = (real_holdings(&mut conn).await, machine_holdings(&machine));
            prop_assert_eq!(
                real,
                model,
                "items after step {} ({:?}) of {:?}",
                step,
                op,
                ops
            );
        }
        Ok(())
    }
}

#[test]
fn the_participant_machine_and_the_stores_statements_agree() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(async {
        let database = ScratchDatabase::create("store_machine_test").await.unwrap();
        MIGRATOR.run(database.pool()).await.unwrap();
        sqlx::query("INSERT INTO foods (name) VALUES ('rice')")
            .execute(database.pool())
            .await
            .unwrap();
        Store {
            database,
            statements: Statements::of::<Packets>(),
        }
    });
    // Found in CI: two transactions' reservations expire, and a third takes the one that expired
    // first. The statements take the oldest expiry first, the machine the lowest id: the test
    // makes expiries follow the ids (see `Op::Expire`).
    use Op::{Expire, Reserve};
    runtime
        .block_on(store.run(&[
            Reserve(3, 1),
            Reserve(1, 1),
            Expire(1),
            Expire(3),
            Reserve(2, 2),
        ]))
        .unwrap();
    let config = ProptestConfig {
        cases: 128,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in prop::collection::vec(any_op(), 1..14))| {
        runtime.block_on(store.run(&ops))?;
    });
    runtime.block_on(store.database.drop_database()).unwrap();
}
