//! What the command and expiry consumers and the sweep of a participant share once it runs: its
//! settings, database pool, publisher, assembled statements and the group-commit writer (with
//! the write it runs).

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
    pub(crate) statements: Statements,
    /// Reserves and assigns, with group commit.
    pub(crate) writes: GroupCommit<CommandWrite>,
    /// Stops in-place retries at shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Messages that may have crashed the process run alone (write); others share (read).
    pub(crate) suspects: tokio::sync::RwLock<()>,
}

/// A reserve, an assign or a cancel, as one statement that does the work and records the reply;
/// run with group commit. A group's assigns run as one statement
/// ([`Statements::assign_set`]); its reserves do not, since each must see the items the others
/// took (`SKIP LOCKED` does not skip rows that its own transaction locked, and one statement
/// reads one snapshot).
pub(crate) struct CommandWrite {
    statement: Arc<str>,
    binds: Binds,
}

enum Binds {
    Reserve {
        txn_id: TxnId,
        order_id: OrderId,
        ttl: Duration,
        key: Key,
    },
    Assign {
        txn_id: TxnId,
        order_id: OrderId,
        items: Vec<i64>,
        /// [`Statements::assign_set`], for a group's assigns.
        set_statement: Arc<str>,
    },
    Cancel {
        txn_id: TxnId,
        order_id: OrderId,
    },
}

impl CommandWrite {
    /// A reserve with [`Statements::reserve`].
    pub(crate) fn reserve(
        statement: Arc<str>,
        txn_id: TxnId,
        order_id: OrderId,
        ttl: Duration,
        key: Key,
    ) -> Self {
        Self {
            statement,
            binds: Binds::Reserve {
                txn_id,
                order_id,
                ttl,
                key,
            },
        }
    }

    /// An assign with [`Statements::assign`] (and [`Statements::assign_set`] in a group).
    pub(crate) fn assign(
        statements: &Statements,
        txn_id: TxnId,
        order_id: OrderId,
        items: Vec<i64>,
    ) -> Self {
        Self {
            statement: statements.assign.clone(),
            binds: Binds::Assign {
                txn_id,
                order_id,
                items,
                set_statement: statements.assign_set.clone(),
            },
        }
    }
}

impl CommandWrite {
    /// A cancel with [`Statements::cancel`].
    pub(crate) fn cancel(statement: Arc<str>, txn_id: TxnId, order_id: OrderId) -> Self {
        Self {
            statement,
            binds: Binds::Cancel { txn_id, order_id },
        }
    }
}

impl Write for CommandWrite {
    type Output = Recorded;

    fn order_key(&self) -> u128 {
        match &self.binds {
            Binds::Reserve { txn_id, .. }
            | Binds::Assign { txn_id, .. }
            | Binds::Cancel { txn_id, .. } => txn_id.0.as_u128(),
        }
    }

    fn set_kind(&self) -> Option<u8> {
        match self.binds {
            Binds::Assign { .. } => Some(0),
            Binds::Reserve { .. } | Binds::Cancel { .. } => None,
        }
    }

    fn run_set<'c>(writes: &'c [&'c Self], conn: &'c mut PgConnection) -> SetFuture<'c, Self> {
        let mut statement = None;
        let (mut txns, mut orders) = (Vec::new(), Vec::new());
        let (mut item_of, mut items) = (Vec::new(), Vec::new());
        for write in writes {
            if let Binds::Assign {
                txn_id,
                order_id,
                items: ids,
                set_statement,
            } = &write.binds
            {
                statement.get_or_insert_with(|| set_statement.clone());
                txns.push(txn_id.0);
                orders.push(order_id.0);
                // At most a group's worth of commands, so it fits.
                let place = i32::try_from(txns.len()).unwrap_or(i32::MAX);
                item_of.extend(ids.iter().map(|_| place));
                items.extend(ids.iter().copied());
            }
        }
        Box::pin(async move {
            let statement = statement.ok_or_else(|| {
                sqlx::Error::Protocol("a set of assigns without an assign".to_owned())
            })?;
            let rows: Vec<RecordedFor> = sqlx::query_as(AssertSqlSafe(statement))
                .bind(&txns)
                .bind(orders)
                .bind(item_of)
                .bind(items)
                .fetch_all(conn)
                .await?;
            let mut rows: std::collections::HashMap<_, _> = rows
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
        })
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<Recorded, sqlx::Error>> + Send + 'c>> {
        let query = sqlx::query_as::<_, Recorded>(AssertSqlSafe(self.statement.clone()));
        let query = match &self.binds {
            Binds::Reserve {
                txn_id,
                order_id,
                ttl,
                key,
            } => query
                .bind(*txn_id)
                .bind(*order_id)
                .bind(*ttl)
                .bind(key.hub)
                .bind(key.kinds.clone())
                .bind(key.quantities.clone()),
            Binds::Assign {
                txn_id,
                order_id,
                items,
                ..
            } => query.bind(*txn_id).bind(*order_id).bind(items.clone()),
            Binds::Cancel { txn_id, order_id } => query.bind(*txn_id).bind(*order_id),
        };
        Box::pin(query.fetch_one(conn))
    }
}
