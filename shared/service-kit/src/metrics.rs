//! Prometheus metrics: one recorder per process, rendered by `GET /metrics`.
//!
//! Libraries record through the `metrics` facade (a no-op until a recorder is installed); `main`
//! installs the recorder once with [`install`], which also describes the metrics of this crate
//! and of `messaging` (each crate that records metrics spells their names once, as constants,
//! and describes them in a `describe` function; the services call the others' at start-up).

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: 1 while the service is ready (what `/readyz` answers with 200), else 0.
pub const SERVICE_READY: &str = "service_ready";
/// Gauge: 1 while the service's database answers, else 0.
pub const DATABASE_UP: &str = "database_up";
/// Gauge, by `component`: 1 while that broker component (publisher, each consumer) is connected.
pub const BROKER_COMPONENT_UP: &str = "broker_component_up";
/// Gauge, by `state` (`idle`, `open`): connections of the database pool.
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
/// Histogram: writes that shared one database transaction.
pub const GROUP_COMMIT_SIZE: &str = "group_commit_size";
/// Counter, by `how` (`savepoints`, `alone`): groups that failed together and were run again.
pub const GROUP_COMMIT_RETRIES: &str = "group_commit_retries_total";

/// Describes the metrics of this crate and of `messaging`, and registers the counters whose
/// labels are known in advance at zero (so that rates start from the process's start).
fn describe() {
    describe_gauge!(
        SERVICE_READY,
        Unit::Count,
        "1 while the service is ready (its database answers and every broker component is connected: what /readyz answers 200 to), else 0. Sampled at each scrape."
    );
    describe_gauge!(
        DATABASE_UP,
        Unit::Count,
        "1 while the service's database answers, else 0. Sampled at each scrape."
    );
    describe_gauge!(
        BROKER_COMPONENT_UP,
        Unit::Count,
        "1 while a broker component (the publisher, each consumer) is connected, else 0, by component."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Unit::Count,
        "Connections of the database pool, by state (idle, open)."
    );
    describe_histogram!(
        GROUP_COMMIT_SIZE,
        Unit::Count,
        "Writes that shared one database transaction (group commit)."
    );
    describe_counter!(
        GROUP_COMMIT_RETRIES,
        Unit::Count,
        "Groups of writes that failed together and were run again, by how (savepoints: one savepoint per write; alone: one transaction per write)."
    );
    for how in ["savepoints", "alone"] {
        ::metrics::counter!(GROUP_COMMIT_RETRIES, "how" => how).increment(0);
    }
    messaging::metrics::describe();
}

/// Histogram buckets for durations, in seconds: 1 ms to 30 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process's recorder (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    ::metrics::set_global_recorder(recorder).map_err(|e| MetricsError(e.to_string()))?;
    let _ = HANDLE.set(handle.clone());
    describe();
    // Histograms and idle metrics need periodic maintenance.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(handle)
}

/// The installed recorder's handle, if any.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}
