//! Group commit: single-statement writes that arrive together share one database transaction.
//!
//! A busy service issues many small writes at once (a reserve for one order, an assign for
//! another, …). Committing each on its own costs a transaction each, and on PostgreSQL the cost
//! of a write is mostly the cost of its transaction. [`GroupCommit`] sends each write to one of a
//! few workers; a worker takes every write waiting at that moment (no waiting for more: at low
//! load a write runs alone, as one autocommitted statement) and runs them in one transaction.
//! Callers get their results only after the commit, so nothing is acted on before it is durable.
//!
//! If any write of a group fails, the group's transaction is rolled back and every write of it
//! runs again on its own, so each caller gets its own result (an expected error such as a unique
//! violation on an idempotency key then only affects its own write).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::task::TaskTracker;

/// Writes taken into one transaction at most.
const MAX_GROUP: usize = 64;

/// A write: one statement (or a few that must stay together) on the given connection. It may
/// run twice (once in a group that fails, once alone), so it must not change anything but the
/// database.
pub trait Write: Send + Sync + 'static {
    /// What the write returns.
    type Output: Send + 'static;

    /// Writes of a group run in the order of this key. Writes that lock rows (an assign locks the
    /// items of its transaction) then take locks in one order in every group, and two groups never
    /// wait for each other crosswise.
    fn order_key(&self) -> u128 {
        0
    }

    /// Runs the write.
    fn run<'c>(
        &'c self,
        conn: &'c mut PgConnection,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Output, sqlx::Error>> + Send + 'c>>;
}

type Pending<W> = (
    W,
    oneshot::Sender<Result<<W as Write>::Output, sqlx::Error>>,
);

/// Runs writes of type `W` with group commit. Cheap to clone.
pub struct GroupCommit<W: Write> {
    sender: mpsc::UnboundedSender<Pending<W>>,
}

impl<W: Write> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<W: Write> std::fmt::Debug for GroupCommit<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// Why a write got no result.
fn stopped() -> sqlx::Error {
    sqlx::Error::PoolClosed
}

impl<W: Write> GroupCommit<W> {
    /// Starts `workers` workers on `tracker`; they stop when every handle is dropped.
    pub fn start(pool: PgPool, workers: usize, tracker: &TaskTracker) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel::<Pending<W>>();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tracker.spawn(worker(pool.clone(), Arc::clone(&receiver)));
        }
        Self { sender }
    }

    /// Runs `write`, in a group if others are waiting, and returns its result after the commit.
    pub async fn run(&self, write: W) -> Result<W::Output, sqlx::Error> {
        let (done, result) = oneshot::channel();
        self.sender.send((write, done)).map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

async fn worker<W: Write>(pool: PgPool, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending<W>>>>) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            group
        };
        metrics::histogram!("group_commit_size").record(group.len() as f64);
        run_group(&pool, group).await;
    }
}

async fn run_group<W: Write>(pool: &PgPool, mut group: Vec<Pending<W>>) {
    group.sort_by_key(|(write, _)| write.order_key());
    if group.len() > 1 {
        match together(pool, &group).await {
            Ok(outputs) => {
                for ((_, done), output) in group.into_iter().zip(outputs) {
                    let _ = done.send(Ok(output));
                }
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, size = group.len(), "group failed; running its writes one by one");
            }
        }
    }
    for (write, done) in group {
        let result = match pool.acquire().await {
            Ok(mut conn) => write.run(&mut conn).await,
            Err(err) => Err(err),
        };
        let _ = done.send(result);
    }
}

/// Runs every write of `group` in one transaction; all or none.
async fn together<W: Write>(
    pool: &PgPool,
    group: &[Pending<W>],
) -> Result<Vec<W::Output>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let mut outputs = Vec::with_capacity(group.len());
    for (write, _) in group {
        outputs.push(write.run(&mut tx).await?);
    }
    tx.commit().await?;
    Ok(outputs)
}
