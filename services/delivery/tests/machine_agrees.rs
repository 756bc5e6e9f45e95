//! The participant machine (`participant::machine`, what the model checker runs) and delivery's
//! real statements agree: random sequences of commands, expiries, sweeps, placements, pick-ups
//! and deliveries go through both, and after each one the replies, the agents' states and the
//! deliveries must be the same.
//!
//! Delivery picks an agent from a random place in its hub, the machine the lowest free one, so
//! agents are compared by how many each transaction (and its order) holds in each state, and
//! replies by their kind and the number of agents they name. A rider's report of an order
//! already out (or delivered) gets the delivery recorded before from delivery, and from the
//! machine the answer of an order it has nothing to do for: both are counted as "before".
//!
//! Each transaction has an order of its own, and a reserve asks for one agent, as delivery's
//! reserves do. Off duty is an agent state the machine does not have: no step puts an agent off
//! duty.

// A test fails by panicking: unwrap and expect are how it says what went wrong.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use participant::Inventory;
use participant::barrier::{self, Recorded};
use participant::context::{Reserve, reserve_one};
use participant::machine::{Command, ItemState, Items, NotPickedUp, Outcome};
use participant::{Key, Statements};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use protocol::command::{
    AssignReply, CancelReply, Operation, ReleaseReason, ReleaseReply, Reply, ReserveReply, Shortage,
};
use protocol::ids::{ItemId, OrderId, TxnId};
use service_kit::testing::ScratchDatabase;
use sqlx::{AssertSqlSafe, PgConnection};

use delivery_service::MIGRATOR;
use delivery_service::inventory::Agents;
use delivery_service::repo::{self, Reported};

const AGENTS: i64 = 2;
const TXNS: u128 = 3;
const HUB: i64 = 1;

/// One thing that happens to delivery.
#[derive(Clone, Debug)]
enum Op {
    Reserve(u128),
    /// Assign what the transaction's reserve gave (or an agent it does not hold).
    Assign(u128),
    Release(u128, ReleaseReason),
    Cancel(u128),
    /// The expiry of the transaction's reservation passes.
    Expire(u128),
    /// The sweep frees expired reservations.
    Sweep,
    /// The `order.placed` event of the transaction's order is consumed.
    MarkPlaced(u128),
    /// A rider reports the transaction's order picked up.
    PickUp(u128),
    /// A rider reports the transaction's order delivered.
    Deliver(u128),
}

/// Any step, of a transaction that `txn` picks.
fn op_of(txn: impl Strategy<Value = u128> + Clone + 'static) -> impl Strategy<Value = Op> {
    let reason = prop::sample::select(vec![
        ReleaseReason::Abort,
        ReleaseReason::Retry,
        ReleaseReason::Compensate,
    ]);
    prop_oneof![
        3 => txn.clone().prop_map(Op::Reserve),
        3 => txn.clone().prop_map(Op::Assign),
        2 => (txn.clone(), reason).prop_map(|(t, r)| Op::Release(t, r)),
        1 => txn.clone().prop_map(Op::Cancel),
        1 => txn.clone().prop_map(Op::Expire),
        1 => Just(Op::Sweep),
        2 => txn.clone().prop_map(Op::MarkPlaced),
        2 => txn.clone().prop_map(Op::PickUp),
        2 => txn.prop_map(Op::Deliver),
    ]
}

/// The life of transaction `t` as it goes when nothing fails (reserve, assign, placement,
/// pick-up, delivery, and the delivery reported again), cut short at a random step, with up to
/// three other steps of its own (or sweeps) put in at random places.
fn life(t: u128) -> impl Strategy<Value = Vec<Op>> {
    let whole = [
        Op::Reserve(t),
        Op::Assign(t),
        Op::MarkPlaced(t),
        Op::PickUp(t),
        Op::Deliver(t),
        Op::Deliver(t),
    ];
    let others = prop::collection::vec((op_of(Just(t)), any::<prop::sample::Index>()), 0..4);
    (0..=whole.len(), others).prop_map(move |(lived, others)| {
        let mut ops = whole[..lived].to_vec();
        for (op, at) in others {
            ops.insert(at.index(ops.len() + 1), op);
        }
        ops
    })
}

/// Random steps of random transactions; or the lives of the transactions, interleaved at
/// random, each turn a step of one of them, and once the turns run out the rest in the order of
/// the transactions (random steps seldom take an order as far as its delivery).
fn any_ops() -> impl Strategy<Value = Vec<Op>> {
    // One life for each of the `TXNS` transactions.
    let lives = (
        life(1),
        life(2),
        life(3),
        prop::collection::vec(any::<prop::sample::Index>(), 0..30),
    )
        .prop_map(|(first, second, third, turns)| {
            let mut lives = [first, second, third];
            for ops in &mut lives {
                ops.reverse();
            }
            let mut ops = Vec::new();
            let mut turns = turns.into_iter();
            loop {
                let waiting: Vec<usize> =
                    (0..lives.len()).filter(|&i| !lives[i].is_empty()).collect();
                let Some(&first) = waiting.first() else {
                    break;
                };
                let next = turns
                    .next()
                    .map_or(first, |turn| waiting[turn.index(waiting.len())]);
                ops.extend(lives[next].pop());
            }
            ops
        });
    prop_oneof![
        prop::collection::vec(op_of(1..=TXNS), 1..20),
        lives.prop_filter("no step at all", |ops| !ops.is_empty()),
    ]
}

fn txn(t: u128) -> TxnId {
    TxnId(uuid::Uuid::from_u128(t))
}

fn order(t: u128) -> OrderId {
    OrderId(uuid::Uuid::from_u128(t << 8))
}

/// A reply, without the ids of the agents it names.
fn shape_of_reply(reply: &Reply) -> String {
    match reply {
        Reply::ReserveReply(ReserveReply::Reserved { items, .. }) => {
            format!("reserved {}", items.len())
        }
        Reply::ReserveReply(ReserveReply::Busy { .. }) => "busy".into(),
        // The machine has one kind of item and names the store's shortage; delivery's is that
        // every agent is taken. Any other reason would be a disagreement.
        Reply::ReserveReply(ReserveReply::Unavailable {
            reason: Shortage::AgentUnavailable,
            ..
        }) => "unavailable".into(),
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
        Outcome::Unavailable(_) => "unavailable".into(),
        Outcome::Aborted => "aborted".into(),
        Outcome::Assigned(items) => format!("assigned {}", items.len()),
        Outcome::AssignRefused(reason) => format!("refused {reason:?}"),
        Outcome::Released(items) => format!("released {}", items.len()),
        Outcome::Cancelled(items) => format!("cancelled {}", items.len()),
        Outcome::CancelRefused(reason) => format!("refused {reason:?}"),
    }
}

/// What a report of progress came to, without the delivery it names.
fn shape_of_report(reported: &Reported, now: &str) -> String {
    match reported {
        Reported::Now(_) => now.into(),
        Reported::Before(_) => "before".into(),
        Reported::NotAssigned => "not assigned".into(),
        Reported::NotPlacedYet => "not placed yet".into(),
        Reported::NotPickedUp => "not picked up".into(),
        Reported::NotYours => "not yours".into(),
    }
}

/// Whether the machine has `order` out with a rider or delivered: a report for it then answers
/// with the delivery as it was recorded before.
fn picked_up_before(machine: &Items, order: OrderId) -> bool {
    machine.was_delivered(order)
        || machine
            .items()
            .any(|(_, s)| matches!(s, ItemState::Delivering { order: o, .. } if o == order))
}

/// How many agents each transaction (and its order) holds in each state (`None`: free).
type Holdings = BTreeMap<(Option<uuid::Uuid>, Option<uuid::Uuid>, String), usize>;

fn machine_holdings(items: &Items) -> Holdings {
    let mut out = Holdings::new();
    for (_, state) in items.items() {
        let name = match state {
            ItemState::Available => "available",
            ItemState::Reserved { .. } => "reserved",
            ItemState::Assigned { .. } => "assigned",
            ItemState::Delivering { .. } => "delivering",
        };
        let key = (
            state.txn().map(|t| t.0),
            state.order().map(|o| o.0),
            name.to_owned(),
        );
        *out.entry(key).or_default() += 1;
    }
    out
}

async fn real_holdings(conn: &mut PgConnection) -> Holdings {
    let rows: Vec<(Option<uuid::Uuid>, Option<uuid::Uuid>, String, i64)> = sqlx::query_as(
        "SELECT txn_id, order_id, state, count(*) FROM agents GROUP BY txn_id, order_id, state",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(txn, order, state, n)| ((txn, order, state), usize::try_from(n).unwrap()))
        .collect()
}

/// Each order picked up: whether it was delivered.
type Deliveries = BTreeMap<uuid::Uuid, bool>;

fn machine_deliveries(items: &Items) -> Deliveries {
    let mut out = Deliveries::new();
    for (_, state) in items.items() {
        if let ItemState::Delivering { order, .. } = state {
            out.insert(order.0, false);
        }
    }
    for t in 1..=TXNS {
        if items.was_delivered(order(t)) {
            out.insert(order(t).0, true);
        }
    }
    out
}

async fn real_deliveries(conn: &mut PgConnection) -> Deliveries {
    let rows: Vec<(uuid::Uuid, bool)> =
        sqlx::query_as("SELECT order_id, delivered_at IS NOT NULL FROM deliveries")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    rows.into_iter().collect()
}

/// Delivery's side of one run: a database of its own, reset between runs.
struct Delivery {
    database: ScratchDatabase,
    statements: Statements,
}

impl Delivery {
    async fn reset(&self) -> PgConnection {
        let mut conn = self.database.pool().acquire().await.unwrap().detach();
        sqlx::raw_sql(AssertSqlSafe(format!(
            "TRUNCATE deliveries, agents, hubs, txn_barrier, outbox RESTART IDENTITY;
             INSERT INTO hubs (id, agents_lo, agents_hi) VALUES ({HUB}, 1, {AGENTS});
             INSERT INTO agents (hub_id) SELECT {HUB} FROM generate_series(1, {AGENTS});"
        )))
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
        let pool = self.database.pool();
        let mut machine = Items::new(AGENTS);
        // What each transaction's reserve gave, in delivery and in the machine.
        let mut given: BTreeMap<u128, (Vec<ItemId>, Vec<ItemId>)> = BTreeMap::new();
        for (step, op) in ops.iter().enumerate() {
            let (real, model) = match op {
                Op::Reserve(t) => {
                    let reserve = Reserve {
                        txn_id: txn(*t),
                        order_id: order(*t),
                        ttl: Duration::from_secs(60),
                        key: Key {
                            hub: HUB,
                            ..Key::default()
                        },
                    };
                    let real = {
                        let row = reserve_one(&mut conn, &self.statements, &reserve).await;
                        self.reply(&mut conn, row, *t, Operation::Reserve).await
                    };
                    let model = machine.apply(&Command::Reserve {
                        txn: txn(*t),
                        order: order(*t),
                        wanted: 1,
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
                        "SELECT id FROM agents WHERE txn_id = $1 AND state = 'reserved' ORDER BY id",
                    )
                    .bind(txn(*t))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                    let order_of: Vec<i64> = held.iter().map(|id| id.0).collect();
                    sqlx::query(
                        "UPDATE agents t
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
                    Agents::TABLE.sweep(&mut conn, 0, 100).await.unwrap();
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
                Op::MarkPlaced(t) => {
                    let real = repo::mark_placed(pool, order(*t)).await.unwrap();
                    let model = machine.mark_placed(order(*t));
                    (format!("marked {real}"), format!("marked {model}"))
                }
                Op::PickUp(t) => {
                    let before = picked_up_before(&machine, order(*t));
                    let real = repo::pick_up(pool, order(*t), None).await.unwrap();
                    let model = match machine.pick_up(order(*t)) {
                        Ok(_) => "picked up",
                        Err(NotPickedUp::NotPlacedYet) => "not placed yet",
                        Err(NotPickedUp::NotAssigned) if before => "before",
                        Err(NotPickedUp::NotAssigned) => "not assigned",
                    };
                    (shape_of_report(&real, "picked up"), model.to_owned())
                }
                Op::Deliver(t) => {
                    let before = picked_up_before(&machine, order(*t));
                    let real = repo::deliver(pool, order(*t), None).await.unwrap();
                    let model = match machine.deliver(order(*t)) {
                        Some(_) => "delivered",
                        None if before => "before",
                        None => "not picked up",
                    };
                    (shape_of_report(&real, "delivered"), model.to_owned())
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
                "agents after step {} ({:?}) of {:?}",
                step,
                op,
                ops
            );
            let (real, model) = (
                real_deliveries(&mut conn).await,
                machine_deliveries(&machine),
            );
            prop_assert_eq!(
                real,
                model,
                "deliveries after step {} ({:?}) of {:?}",
                step,
                op,
                ops
            );
        }
        Ok(())
    }
}

#[test]
fn the_participant_machine_and_deliverys_statements_agree() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let delivery = runtime.block_on(async {
        let database = ScratchDatabase::create("delivery_machine_test")
            .await
            .unwrap();
        MIGRATOR.run(database.pool()).await.unwrap();
        Delivery {
            database,
            statements: Statements::of::<Agents>(),
        }
    });
    // Run by hand rather than with `proptest!`, so that the database is dropped even when a case
    // fails (the failure, shrunk, is reported after).
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        source_file: Some(file!()),
        ..ProptestConfig::default()
    });
    let result = runner.run(&any_ops(), |ops| runtime.block_on(delivery.run(&ops)));
    runtime.block_on(delivery.database.drop_database()).unwrap();
    if let Err(err) = result {
        panic!("{err}");
    }
}
