//! Group commit: single-statement writes that arrive together share one database transaction.
//!
//! A busy service issues many small writes at once (a reserve for one order, an assign for
//! another, …). Committing each on its own costs a transaction each, and on PostgreSQL the cost
//! of a write is mostly the cost of its transaction. [`GroupCommit`] sends each write to one of a
//! few workers; a worker takes every write waiting at that moment, yields to the runtime a few
//! times to take those that the tasks ready to run add meanwhile (no timer: at low load a write
//! runs alone at once, as one autocommitted statement), and runs them in one transaction.
//! Callers get their results only after the commit, so nothing is acted on before it is durable.
//!
//! If any write of a group fails, the group's transaction is rolled back and the group runs again
//! in one transaction with a savepoint around each write: a write that fails (an expected error
//! such as the unique violation of a repeated command) fails alone, and the others still share
//! one commit. Only if that fails too (the connection, or the commit) does every write run again
//! on its own. Savepoints cost two more statements per write, so only the retry uses them.
//!
//! A write type may also run several writes of one kind as one statement ([`Write::set_kind`],
//! [`Write::run_set`]: arrays bound and `unnest`ed): PostgreSQL then starts its executor, checks
//! its constraints' expressions and answers once per kind in the group, not once per write. Only
//! a group's first, all-or-nothing run does that; the retries run the writes one by one.
//!
//! Every call to the database is bounded on the client side too (`bound`, a little more than the
//! server's `statement_timeout`): a server or connection that freezes would never enforce its own
//! timeout. A call past the bound fails as a lost connection (transient, so callers retry), and
//! its connection is closed rather than returned to the pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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

    /// Writes of a group with the same kind run as one statement, with [`Write::run_set`];
    /// `None` (the default) runs the write on its own statement.
    fn set_kind(&self) -> Option<u8> {
        None
    }

    /// Runs `writes` (two or more of one [`Write::set_kind`], in the group's order) as one
    /// statement in the caller's transaction, and returns one output per write, in that order.
    /// The outputs must be those that running the writes one by one would give: in that order,
    /// or, for writes whose outcome depends on which runs first (reserves that compete for
    /// items), in some order. A set may run some of its writes on statements of their own (a
    /// reserve that its set statement could not take).
    /// Group commit only asks this of writes whose [`Write::order_key`]s differ from those of
    /// every other write in the group, so the writes of a set never touch the same row.
    fn run_set<'c>(_writes: &'c [&'c Self], _conn: &'c mut PgConnection) -> SetFuture<'c, Self>
    where
        Self: Sized,
    {
        unreachable_set()
    }
}

/// What [`Write::run_set`] returns: the outputs of the set, in its order.
pub type SetFuture<'c, W> =
    Pin<Box<dyn Future<Output = Result<Vec<<W as Write>::Output>, sqlx::Error>> + Send + 'c>>;

/// [`Write::run_set`] of a type that has no set statement: never called (its writes have no
/// [`Write::set_kind`]), and an error if it were.
fn unreachable_set<'c, T: Send + 'c>()
-> Pin<Box<dyn Future<Output = Result<Vec<T>, sqlx::Error>> + Send + 'c>> {
    Box::pin(std::future::ready(Err(sqlx::Error::Protocol(
        "a write type with a set kind but no set statement".to_owned(),
    ))))
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

/// `call`, or a lost-connection error if it takes longer than `bound`.
async fn bounded<T>(
    bound: Duration,
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(bound, call)
        .await
        .unwrap_or_else(|_| Err(no_answer(bound)))
}

/// The error of a call that got no answer within `bound`.
fn no_answer(bound: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no answer from the database within {bound:?}"),
    ))
}

/// Whether `err` is a call that got no answer within the bound.
fn is_no_answer(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(err) if err.kind() == std::io::ErrorKind::TimedOut)
}

/// Whether `result` failed on the client-side bound (its connection must not be reused).
fn timed_out<T>(result: &Result<T, sqlx::Error>) -> bool {
    result.as_ref().err().is_some_and(is_no_answer)
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
    /// Starts `workers` workers on `tracker`; they stop when every handle is dropped. Each call
    /// to the database that takes longer than `bound` fails.
    pub fn start(pool: PgPool, workers: usize, bound: Duration, tracker: &TaskTracker) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel::<Pending<W>>();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tracker.spawn(worker(pool.clone(), bound, Arc::clone(&receiver)));
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

async fn worker<W: Write>(
    pool: PgPool,
    bound: Duration,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending<W>>>>,
) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut group = vec![first];
            // What waits, and what the tasks ready to run add meanwhile.
            messaging::gather::gather(&mut receiver, &mut group, MAX_GROUP).await;
            group
        };
        metrics::histogram!(crate::metrics::GROUP_COMMIT_SIZE).record(group.len() as f64);
        run_group(&pool, bound, group).await;
    }
}

async fn run_group<W: Write>(pool: &PgPool, bound: Duration, mut group: Vec<Pending<W>>) {
    group.sort_by_key(|(write, _)| write.order_key());
    if group.len() > 1 {
        match together(pool, bound, &group).await {
            Ok(outputs) => {
                for ((_, done), output) in group.into_iter().zip(outputs) {
                    let _ = done.send(Ok(output));
                }
                return;
            }
            Err(err) if is_no_answer(&err) => {
                // The database does not answer: running the writes again would only wait again.
                for (_, done) in group {
                    let _ = done.send(Err(no_answer(bound)));
                }
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, size = group.len(), "group failed; running it again with a savepoint per write");
            }
        }
        match apart(pool, bound, &group).await {
            Ok(results) => {
                metrics::counter!(crate::metrics::GROUP_COMMIT_RETRIES, "how" => "savepoints")
                    .increment(1);
                for ((_, done), result) in group.into_iter().zip(results) {
                    let _ = done.send(result);
                }
                return;
            }
            Err(err) => {
                tracing::debug!(error = %err, size = group.len(), "group failed again; running its writes one by one");
            }
        }
        metrics::counter!(crate::metrics::GROUP_COMMIT_RETRIES, "how" => "alone").increment(1);
    }
    for (write, done) in group {
        let result = match pool.acquire().await {
            Ok(mut conn) => {
                // Alone, a write is its statement's own transaction: dying before it runs is
                // dying before its commit.
                crate::fault::point("group_commit.before_commit");
                let result = bounded(bound, write.run(&mut conn)).await;
                if timed_out(&result) {
                    drop(conn.detach());
                }
                result
            }
            Err(err) => Err(err),
        };
        let _ = done.send(result);
    }
}

/// Runs every write of `group` in one transaction, each in a savepoint of its own: a write that
/// fails is rolled back alone and gets its error; the others commit together.
async fn apart<W: Write>(
    pool: &PgPool,
    bound: Duration,
    group: &[Pending<W>],
) -> Result<Vec<Result<W::Output, sqlx::Error>>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let result = async {
        let mut tx = bounded(bound, conn.begin()).await?;
        let mut results = Vec::with_capacity(group.len());
        for (write, _) in group {
            let mut savepoint = bounded(bound, tx.begin()).await?;
            let result = bounded(bound, write.run(&mut savepoint)).await;
            if timed_out(&result) {
                return result.map(|_| Vec::new());
            }
            match result {
                Ok(output) => {
                    bounded(bound, savepoint.commit()).await?;
                    results.push(Ok(output));
                }
                Err(err) => {
                    bounded(bound, savepoint.rollback()).await?;
                    results.push(Err(err));
                }
            }
        }
        // A process that dies with its group uncommitted (tests only).
        crate::fault::point("group_commit.before_commit");
        bounded(bound, tx.commit()).await?;
        Ok(results)
    }
    .await;
    if timed_out(&result) {
        drop(conn.detach());
    }
    result
}

/// Runs every write of `group` in one transaction; all or none.
async fn together<W: Write>(
    pool: &PgPool,
    bound: Duration,
    group: &[Pending<W>],
) -> Result<Vec<W::Output>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let result = async {
        let mut tx = bounded(bound, conn.begin()).await?;
        let mut outputs: Vec<Option<W::Output>> = group.iter().map(|_| None).collect();
        for step in plan(group) {
            match step {
                Step::One(i) => {
                    outputs[i] = Some(bounded(bound, group[i].0.run(&mut tx)).await?);
                }
                Step::Set(members) => {
                    let writes: Vec<&W> = members.iter().map(|&i| &group[i].0).collect();
                    let results = bounded(bound, W::run_set(&writes, &mut tx)).await?;
                    if results.len() != members.len() {
                        return Err(sqlx::Error::Protocol(format!(
                            "a set of {} writes returned {} outputs",
                            members.len(),
                            results.len()
                        )));
                    }
                    for (i, output) in members.into_iter().zip(results) {
                        outputs[i] = Some(output);
                    }
                }
            }
        }
        let outputs = outputs.into_iter().flatten().collect::<Vec<_>>();
        crate::fault::point("group_commit.before_commit");
        bounded(bound, tx.commit()).await?;
        Ok(outputs)
    }
    .await;
    if timed_out(&result) {
        drop(conn.detach());
    }
    result
}

/// One statement of a group's all-or-nothing run.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The write at this index, on its own.
    One(usize),
    /// The writes at these indexes (of one set kind), as one statement.
    Set(Vec<usize>),
}

/// The statements that run a group (sorted by order key): each set kind with two or more writes as one
/// statement, where the first of them was, and every other write on its own, in the group's
/// order. If two writes of the group share an order key, every write runs on its own (a set's
/// writes must not touch the rows of another write of the group).
fn plan<W: Write>(group: &[Pending<W>]) -> Vec<Step> {
    let shared_key = group
        .windows(2)
        .any(|pair| pair[0].0.order_key() == pair[1].0.order_key());
    if shared_key {
        return (0..group.len()).map(Step::One).collect();
    }
    let mut steps = Vec::new();
    // Each set kind met so far, and the step that runs its set.
    let mut sets: Vec<(u8, usize)> = Vec::new();
    for (i, (write, _)) in group.iter().enumerate() {
        let Some(kind) = write.set_kind() else {
            steps.push(Step::One(i));
            continue;
        };
        match sets.iter().find(|(k, _)| *k == kind) {
            Some(&(_, at)) => {
                if let Step::Set(members) = &mut steps[at] {
                    members.push(i);
                }
            }
            None => {
                sets.push((kind, steps.len()));
                steps.push(Step::Set(vec![i]));
            }
        }
    }
    // A set of one is a write on its own.
    for step in &mut steps {
        if let Step::Set(members) = step
            && let [only] = members[..]
        {
            *step = Step::One(only);
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    use super::*;

    /// Inserts a key; returns the id of the transaction it ran in.
    struct Insert(i32);

    impl Write for Insert {
        type Output = i64;

        fn run<'c>(
            &'c self,
            conn: &'c mut PgConnection,
        ) -> Pin<Box<dyn Future<Output = Result<i64, sqlx::Error>> + Send + 'c>> {
            Box::pin(
                sqlx::query_scalar("INSERT INTO keys VALUES ($1) RETURNING txid_current()")
                    .bind(self.0)
                    .fetch_one(conn),
            )
        }
    }

    /// A key inserted by a write of a kind (`Some`: with the others of its kind in a group, as
    /// one statement); returns the key and whether it ran in a set.
    struct Keyed {
        key: i32,
        kind: Option<u8>,
    }

    impl Write for Keyed {
        type Output = (i32, &'static str);

        fn order_key(&self) -> u128 {
            self.key.unsigned_abs().into()
        }

        fn set_kind(&self) -> Option<u8> {
            self.kind
        }

        fn run_set<'c>(writes: &'c [&'c Self], conn: &'c mut PgConnection) -> SetFuture<'c, Self> {
            let keys: Vec<i32> = writes.iter().map(|w| w.key).collect();
            Box::pin(async move {
                let inserted: Vec<i32> = sqlx::query_scalar(
                    "INSERT INTO keys SELECT k FROM unnest($1::int[]) WITH ORDINALITY AS v(k, n)
                     ORDER BY n RETURNING k",
                )
                .bind(&keys)
                .fetch_all(conn)
                .await?;
                Ok(inserted.into_iter().map(|k| (k, "set")).collect())
            })
        }

        fn run<'c>(
            &'c self,
            conn: &'c mut PgConnection,
        ) -> Pin<Box<dyn Future<Output = Result<Self::Output, sqlx::Error>> + Send + 'c>> {
            Box::pin(async move {
                let key: i32 = sqlx::query_scalar("INSERT INTO keys VALUES ($1) RETURNING k")
                    .bind(self.key)
                    .fetch_one(conn)
                    .await?;
                Ok((key, "one"))
            })
        }
    }

    /// A scratch database with a table of keys.
    async fn keys_database() -> crate::testing::ScratchDatabase {
        let database = crate::testing::ScratchDatabase::create("group_commit_test")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE keys (k INT PRIMARY KEY)")
            .execute(database.pool())
            .await
            .unwrap();
        database
    }

    /// Runs `writes` as one group and returns each one's result.
    async fn run_as_group<W: Write>(
        pool: &PgPool,
        writes: impl IntoIterator<Item = W>,
    ) -> Vec<Result<W::Output, sqlx::Error>> {
        let (group, receivers): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .map(|write| {
                let (done, result) = oneshot::channel();
                ((write, done), result)
            })
            .unzip();
        run_group(pool, Duration::from_secs(10), group).await;
        let mut results = Vec::new();
        for receiver in receivers {
            results.push(receiver.await.unwrap());
        }
        results
    }

    fn pending(writes: Vec<(i32, Option<u8>)>) -> Vec<Pending<Keyed>> {
        writes
            .into_iter()
            .map(|(key, kind)| (Keyed { key, kind }, oneshot::channel().0))
            .collect()
    }

    #[test]
    fn a_plan_runs_each_kind_of_two_or_more_as_one_statement_where_its_first_write_was() {
        let group = pending(vec![
            (1, None),
            (2, Some(7)),
            (3, Some(8)),
            (4, Some(7)),
            (5, None),
            (6, Some(7)),
        ]);
        assert_eq!(
            plan(&group),
            vec![
                Step::One(0),
                Step::Set(vec![1, 3, 5]),
                Step::One(2),
                Step::One(4)
            ]
        );
        // Two writes with one order key: every write on its own.
        let group = pending(vec![(1, Some(7)), (2, Some(7)), (2, Some(7))]);
        assert_eq!(plan(&group), vec![Step::One(0), Step::One(1), Step::One(2)]);
    }

    #[tokio::test]
    async fn a_set_returns_each_write_its_own_output_in_the_group_order() {
        let database = keys_database().await;
        let pool = database.pool().clone();
        let writes = [(3, Some(1)), (1, None), (2, Some(1)), (4, Some(1))]
            .map(|(key, kind)| Keyed { key, kind });
        let results: Vec<_> = run_as_group(&pool, writes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let keys: Vec<i32> = sqlx::query_scalar("SELECT k FROM keys ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        database.drop_database().await.unwrap();

        assert_eq!(
            results,
            vec![(3, "set"), (1, "one"), (2, "set"), (4, "set")]
        );
        assert_eq!(keys, vec![1, 2, 3, 4]);
    }

    fn server() -> PgConnectOptions {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        PgConnectOptions::from_str(&url).unwrap()
    }

    #[tokio::test]
    async fn a_failing_write_fails_alone_and_the_others_still_share_one_commit() {
        let database = keys_database().await;
        let pool = database.pool().clone();
        // Ten keys and a repeat of one of them, in one group.
        let results = run_as_group(&pool, (1..=10).chain([5]).map(Insert)).await;
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM keys")
            .fetch_one(&pool)
            .await
            .unwrap();
        database.drop_database().await.unwrap();

        let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(failed.len(), 1, "{results:?}");
        assert!(
            matches!(failed[0], sqlx::Error::Database(db) if db.code().as_deref() == Some("23505")),
            "{failed:?}"
        );
        let mut transactions: Vec<i64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .copied()
            .collect();
        transactions.dedup();
        assert_eq!(
            transactions.len(),
            1,
            "the ten other writes share one commit: {results:?}"
        );
        assert_eq!(rows, 10);
    }

    #[tokio::test]
    async fn a_write_on_a_frozen_connection_fails_within_the_bound() {
        let server = server();
        let proxy = crate::testing::Proxy::start(server.get_host(), server.get_port())
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            // The connection freezes between acquire and statement, as it may in production
            // (where the check before acquire is itself bounded by the acquire timeout).
            .test_before_acquire(false)
            .connect_with(server.clone().port(proxy.port()).database("postgres"))
            .await
            .unwrap();
        let tracker = TaskTracker::new();
        let writes = GroupCommit::start(pool.clone(), 1, Duration::from_millis(500), &tracker);

        // A write that touches nothing: the transaction id it runs in.
        struct Txid;
        impl Write for Txid {
            type Output = i64;
            fn run<'c>(
                &'c self,
                conn: &'c mut PgConnection,
            ) -> Pin<Box<dyn Future<Output = Result<i64, sqlx::Error>> + Send + 'c>> {
                Box::pin(sqlx::query_scalar("SELECT txid_current()").fetch_one(conn))
            }
        }
        writes.run(Txid).await.expect("a write through the proxy");
        // The pool checks a connection when it comes back: freeze only once it is idle again.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pool.num_idle() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection never came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        proxy.freeze();
        let frozen = tokio::time::timeout(Duration::from_secs(20), writes.run(Txid))
            .await
            .expect("a write on a frozen connection ends");
        let err = frozen.expect_err("no answer from a frozen server");
        assert!(crate::db::is_transient(&err), "{err}");
        assert!(
            err.to_string().contains("no answer from the database"),
            "{err}"
        );
    }
}
