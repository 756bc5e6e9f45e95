//! Closed- and open-loop drivers. Both record each order's latency (microseconds, HDR
//! histogram) and outcome label; the operation itself (an HTTP order, or a baseline transaction)
//! is a parameter.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How much work a run does.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Amount {
    /// This many orders.
    Orders(u64),
    /// For this long.
    Duration(Duration),
}

/// What one order came to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Record {
    /// `placed`, `not_placed:<reason>`, `pending`, `error:<what>`.
    pub(crate) label: String,
    /// The order id, if any.
    pub(crate) order_id: Option<String>,
    /// The packet, if placed.
    pub(crate) packet: Option<i64>,
    /// The agent, if placed.
    pub(crate) agent: Option<i64>,
}

/// A run's measurements.
#[derive(Debug)]
pub(crate) struct Measured {
    /// From the first order sent to the last answered.
    pub(crate) elapsed: Duration,
    /// Latencies in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Orders by outcome label.
    pub(crate) outcomes: BTreeMap<String, u64>,
    /// Every record (for the checks).
    pub(crate) records: Vec<Record>,
}

impl Measured {
    /// Orders answered.
    pub(crate) fn orders(&self) -> u64 {
        self.latency.len()
    }
}

struct Shared {
    latency: Mutex<Histogram<u64>>,
    records: Mutex<Vec<Record>>,
    started: AtomicU64,
}

impl Shared {
    fn new() -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            latency: Mutex::new(histogram()?),
            records: Mutex::new(Vec::new()),
            started: AtomicU64::new(0),
        }))
    }

    /// Records an answered order whose latency runs from `since`, and moves the progress bar.
    async fn add(
        &self,
        since: Instant,
        record: Record,
        amount: Amount,
        started: Instant,
        bar: &ProgressBar,
    ) {
        let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latency.lock().await.saturating_record(micros.max(1));
        self.records.lock().await.push(record);
        match amount {
            Amount::Orders(_) => bar.inc(1),
            Amount::Duration(_) => bar.set_position(started.elapsed().as_secs()),
        }
    }
}

fn progress(amount: Amount, what: &str) -> ProgressBar {
    let bar = match amount {
        Amount::Orders(n) => ProgressBar::new(n),
        Amount::Duration(d) => ProgressBar::new(d.as_secs().max(1)),
    };
    let unit = match amount {
        Amount::Orders(_) => "orders",
        Amount::Duration(_) => "s",
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what:>12} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// An empty latency histogram, in microseconds.
pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 10 min at 3 significant digits; a value outside is clamped by `saturating_record`.
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

async fn finish(shared: Arc<Shared>, started: Instant, bar: ProgressBar) -> Measured {
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let latency = shared.latency.lock().await.clone();
    let records = std::mem::take(&mut *shared.records.lock().await);
    let mut outcomes = BTreeMap::new();
    for record in &records {
        *outcomes.entry(record.label.clone()).or_insert(0) += 1;
    }
    Measured {
        elapsed,
        latency,
        outcomes,
        records,
    }
}

/// `clients` clients, each sending its next order when the last one is answered.
pub(crate) async fn closed<F, Fut>(
    clients: usize,
    amount: Amount,
    what: &str,
    op: F,
) -> anyhow::Result<Measured>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Record> + Send,
{
    let shared = Shared::new()?;
    let bar = progress(amount, what);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (shared, op, bar) = (Arc::clone(&shared), op.clone(), bar.clone());
            tokio::spawn(async move {
                loop {
                    match amount {
                        Amount::Orders(n) => {
                            if shared.started.fetch_add(1, Ordering::Relaxed) >= n {
                                return;
                            }
                        }
                        Amount::Duration(d) => {
                            if started.elapsed() >= d {
                                return;
                            }
                        }
                    }
                    let sent = Instant::now();
                    let record = op().await;
                    shared.add(sent, record, amount, started, &bar).await;
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.await;
    }
    Ok(finish(shared, started, bar).await)
}

/// Orders sent on schedule at `rate` per second, whatever the answers. Latency runs from the
/// scheduled send time, so queueing in the system (or in this generator) is counted, not hidden.
/// At most `max_in_flight` orders are outstanding; beyond that the schedule slips and the slip
/// counts as latency.
pub(crate) async fn open<F, Fut>(
    rate: f64,
    amount: Amount,
    max_in_flight: usize,
    what: &str,
    op: F,
) -> anyhow::Result<Measured>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Record> + Send,
{
    let shared = Shared::new()?;
    let bar = progress(amount, what);
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u32 = 0;
    loop {
        let scheduled = started + interval * n;
        let done = match amount {
            Amount::Orders(total) => u64::from(n) >= total,
            Amount::Duration(d) => scheduled - started >= d,
        };
        if done {
            break;
        }
        tokio::time::sleep_until(scheduled).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let (shared, op, bar) = (Arc::clone(&shared), op.clone(), bar.clone());
        tasks.spawn(async move {
            let record = op().await;
            drop(permit);
            shared.add(scheduled, record, amount, started, &bar).await;
        });
        n = n.saturating_add(1);
    }
    while tasks.join_next().await.is_some() {}
    Ok(finish(shared, started, bar).await)
}
