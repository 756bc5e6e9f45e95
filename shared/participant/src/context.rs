//! What the command and expiry consumers and the sweep of a participant share once it runs: its
//! settings, database pool, publisher, assembled statements and the group-commit writer (with
//! the write it runs).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use messaging::{Publisher, TimerWindow};
use protocol::ids::{OrderId, TxnId};
use protocol::topology::Topology;
use service_kit::group_commit::{GroupCommit, SetFuture, Write};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::barrier::{Recorded, RecordedFor, Statements};
use crate::inventory::{Inventory, Key};

/// Tunables of a participant.
#[derive(Clone, Debug)]
pub struct ParticipantSettings {
    /// How long a reservation holds its items.
    pub reservation_ttl: Duration,
    /// How long after expiry the sweep frees a reservation whose timer did not.
    pub expiry_grace: Duration,
    /// How often the sweep runs.
    pub sweep_interval: Duration,
    /// Commands handled concurrently per queue (the consumer prefetch).
    pub prefetch: u16,
    /// How long barrier rows are kept.
    pub barrier_retention: Duration,
    /// How long expiry timers are collected before being published as one message.
    pub timer_window: Duration,
}

pub(crate) struct Shared<I: Inventory> {
    pub(crate) inventory: I,
    pub(crate) pool: PgPool,
    /// Publishes replies without waiting for confirms: a lost reply is asked for again, and the
    /// command is acked as soon as its reply is handed to the connection.
    pub(crate) replies: Publisher,
    pub(crate) topology: Topology,
    pub(crate) settings: ParticipantSettings,
    pub(crate) expiries: TimerWindow<TxnId>,
    /// The command statements, assembled once.
    pub(crate) statements: Arc<Statements>,
    /// Reserves and assigns, with group commit.
    pub(crate) writes: GroupCommit<CommandWrite>,
    /// Stops in-place retries at shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Messages that may have crashed the process run alone (write); others share (read).
    pub(crate) suspects: tokio::sync::RwLock<()>,
}

/// A reserve, an assign or a cancel, as one statement that does the work and records the reply;
/// run with group commit. A group's reserves run as one statement ([`reserve_set`]), and so do its
/// assigns ([`Statements::assign_set`]).
pub(crate) struct CommandWrite {
    statements: Arc<Statements>,
    binds: Binds,
}

enum Binds {
    Reserve(Reserve),
    Assign {
        txn_id: TxnId,
        order_id: OrderId,
        items: Vec<i64>,
    },
    Cancel {
        txn_id: TxnId,
        order_id: OrderId,
    },
}

/// What a reserve is bound to.
#[derive(Clone, Debug)]
pub struct Reserve {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its order.
    pub order_id: OrderId,
    /// How long the reservation holds its items.
    pub ttl: Duration,
    /// What it asks for.
    pub key: Key,
}

/// The set kinds of [`CommandWrite`].
const RESERVES: u8 = 0;
const ASSIGNS: u8 = 1;

impl CommandWrite {
    /// A reserve.
    pub(crate) fn reserve(statements: Arc<Statements>, reserve: Reserve) -> Self {
        Self {
            statements,
            binds: Binds::Reserve(reserve),
        }
    }

    /// An assign.
    pub(crate) fn assign(
        statements: Arc<Statements>,
        txn_id: TxnId,
        order_id: OrderId,
        items: Vec<i64>,
    ) -> Self {
        Self {
            statements,
            binds: Binds::Assign {
                txn_id,
                order_id,
                items,
            },
        }
    }

    /// A cancel.
    pub(crate) fn cancel(statements: Arc<Statements>, txn_id: TxnId, order_id: OrderId) -> Self {
        Self {
            statements,
            binds: Binds::Cancel { txn_id, order_id },
        }
    }
}

impl Write for CommandWrite {
    type Output = Recorded;

    fn order_key(&self) -> u128 {
        match &self.binds {
            Binds::Reserve(Reserve { txn_id, .. })
            | Binds::Assign { txn_id, .. }
            | Binds::Cancel { txn_id, .. } => txn_id.0.as_u128(),
        }
    }

    fn set_kind(&self) -> Option<u8> {
        match self.binds {
            Binds::Reserve(_) => Some(RESERVES),
            Binds::Assign { .. } => Some(ASSIGNS),
            Binds::Cancel { .. } => None,
        }
    }

    fn run_set<'c>(writes: &'c [&'c Self], conn: &'c mut PgConnection) -> SetFuture<'c, Self> {
        Box::pin(async move {
            let Some(first) = writes.first() else {
                return Ok(Vec::new());
            };
            let statements = &first.statements;
            let mut reserves = Vec::new();
            let mut assigns = Vec::new();
            for write in writes {
                match &write.binds {
                    Binds::Reserve(reserve) => reserves.push(reserve),
                    Binds::Assign {
                        txn_id,
                        order_id,
                        items,
                    } => assigns.push((*txn_id, *order_id, items.as_slice())),
                    Binds::Cancel { .. } => {}
                }
            }
            match (reserves.len(), assigns.len()) {
                (n, 0) if n == writes.len() => reserve_set(conn, statements, &reserves).await,
                (0, n) if n == writes.len() => assign_set(conn, statements, &assigns).await,
                _ => Err(sqlx::Error::Protocol(
                    "a set of commands of more than one kind".to_owned(),
                )),
            }
        })
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<Recorded, sqlx::Error>> + Send + 'c>> {
        let statements = &self.statements;
        match &self.binds {
            Binds::Reserve(reserve) => Box::pin(reserve_one(conn, statements, reserve)),
            Binds::Assign {
                txn_id,
                order_id,
                items,
            } => Box::pin(
                sqlx::query_as(AssertSqlSafe(statements.assign.clone()))
                    .bind(*txn_id)
                    .bind(*order_id)
                    .bind(items.clone())
                    .fetch_one(conn),
            ),
            Binds::Cancel { txn_id, order_id } => Box::pin(
                sqlx::query_as(AssertSqlSafe(statements.cancel.clone()))
                    .bind(*txn_id)
                    .bind(*order_id)
                    .fetch_one(conn),
            ),
        }
    }
}

/// Runs `reserve` on its own statement ([`Statements::reserve`]).
pub async fn reserve_one(
    conn: &mut PgConnection,
    statements: &Statements,
    reserve: &Reserve,
) -> Result<Recorded, sqlx::Error> {
    sqlx::query_as(AssertSqlSafe(statements.reserve.clone()))
        .bind(reserve.txn_id)
        .bind(reserve.order_id)
        .bind(reserve.ttl)
        .bind(reserve.key.hub)
        .bind(&reserve.key.kinds)
        .bind(&reserve.key.quantities)
        .fetch_one(conn)
        .await
}

/// Runs the reserves of distinct transactions in the caller's transaction: as one statement
/// ([`Statements::reserve_set`]), then one by one, in their order, those it did not take (short,
/// busy, or after an item that another of them picked too), each seeing what the set took. The
/// replies are those of running them one by one with the taken ones first; one reply per
/// reserve, in their order.
pub async fn reserve_set(
    conn: &mut PgConnection,
    statements: &Statements,
    reserves: &[&Reserve],
) -> Result<Vec<Recorded>, sqlx::Error> {
    let mut txns = Vec::with_capacity(reserves.len());
    let (mut orders, mut ttls, mut hubs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut line_of, mut kinds, mut quantities) = (Vec::new(), Vec::new(), Vec::new());
    for (place, reserve) in (1_i32..).zip(reserves) {
        txns.push(reserve.txn_id.0);
        orders.push(reserve.order_id.0);
        ttls.push(reserve.ttl);
        hubs.push(reserve.key.hub);
        for (kind, quantity) in reserve.key.kinds.iter().zip(&reserve.key.quantities) {
            line_of.push(place);
            kinds.push(*kind);
            quantities.push(*quantity);
        }
    }
    let rows: Vec<RecordedFor> = sqlx::query_as(AssertSqlSafe(statements.reserve_set.clone()))
        .bind(&txns)
        .bind(orders)
        .bind(ttls)
        .bind(hubs)
        .bind(line_of)
        .bind(kinds)
        .bind(quantities)
        .fetch_all(&mut *conn)
        .await?;
    let mut taken: HashMap<_, _> = rows
        .into_iter()
        .map(|row| (row.txn_id, row.recorded))
        .collect();
    let mut replies = Vec::with_capacity(reserves.len());
    for reserve in reserves {
        let reply = match taken.remove(&reserve.txn_id.0) {
            Some(reply) => reply,
            None => {
                ::metrics::counter!(crate::metrics::RESERVES_ALONE).increment(1);
                reserve_one(conn, statements, reserve).await?
            }
        };
        replies.push(reply);
    }
    Ok(replies)
}

/// Runs the assigns of distinct transactions (transaction, order, items) as one statement
/// ([`Statements::assign_set`]) in the caller's transaction: one reply per assign, in their
/// order.
async fn assign_set(
    conn: &mut PgConnection,
    statements: &Statements,
    assigns: &[(TxnId, OrderId, &[i64])],
) -> Result<Vec<Recorded>, sqlx::Error> {
    let mut txns = Vec::with_capacity(assigns.len());
    let mut orders = Vec::with_capacity(assigns.len());
    let (mut item_of, mut items) = (Vec::new(), Vec::new());
    for (place, (txn_id, order_id, ids)) in (1_i32..).zip(assigns) {
        txns.push(txn_id.0);
        orders.push(order_id.0);
        item_of.extend(ids.iter().map(|_| place));
        items.extend(ids.iter().copied());
    }
    let rows: Vec<RecordedFor> = sqlx::query_as(AssertSqlSafe(statements.assign_set.clone()))
        .bind(&txns)
        .bind(orders)
        .bind(item_of)
        .bind(items)
        .fetch_all(conn)
        .await?;
    let mut rows: HashMap<_, _> = rows
        .into_iter()
        .map(|row| (row.txn_id, row.recorded))
        .collect();
    txns.iter()
        .map(|txn| {
            rows.remove(txn).ok_or_else(|| {
                sqlx::Error::Protocol(format!("no reply recorded for the assign of {txn}"))
            })
        })
        .collect()
}
