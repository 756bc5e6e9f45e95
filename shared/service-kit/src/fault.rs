//! Fault points for fault-injection tests.
//!
//! `FAULT_POINTS` is a comma-separated list. A bare name (`coordinator.after_commit_decision`)
//! makes the process abort, like `kill -9` (no destructors, no graceful shutdown), when it
//! reaches [`point`] with that name. `name=3s` makes [`pause`] with that name wait that long,
//! like a worker that stalls, and `name=panic` makes the task that reaches it panic, like a bug.
//! `name=drop` makes [`drop_once`] say "drop it" the first time it is asked, like a network that
//! loses one message.
//! `name@key` arms a point for one key only (e.g. one order id, at [`point_for`]).
//! `clock.ahead=30s` makes the process's wall clock ([`now`]) read
//! that much ahead of the real one, like a machine whose clock has drifted. `clock.step=20s` lets
//! the clock be stepped while the process runs, as NTP steps a clock: each `SIGUSR1` puts it that
//! much further ahead, and `SIGUSR2` puts it back to the real time (a step back). Unarmed points
//! cost one lookup in a map that is empty in production.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Fault {
    Abort,
    Pause(Duration),
    Panic,
    DropOnce,
}

static ARMED: OnceLock<HashMap<String, Fault>> = OnceLock::new();

/// How far `clock.step` has stepped the clock ahead, milliseconds.
static STEPPED_MS: AtomicI64 = AtomicI64::new(0);

/// Why a fault spec was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid fault point {entry:?}: {reason}")]
pub struct FaultSpecError {
    entry: String,
    reason: String,
}

/// Arms the points named in `spec`. Call once, from `main`.
pub fn arm(spec: &str) -> Result<(), FaultSpecError> {
    let mut points = HashMap::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, fault) = match entry.split_once('=') {
            None => (entry, Fault::Abort),
            Some((name, "panic")) => (name, Fault::Panic),
            Some((name, "drop")) => (name, Fault::DropOnce),
            Some((name, delay)) => {
                let delay = humantime::parse_duration(delay).map_err(|e| FaultSpecError {
                    entry: entry.to_owned(),
                    reason: e.to_string(),
                })?;
                (name, Fault::Pause(delay))
            }
        };
        points.insert(name.to_owned(), fault);
    }
    if !points.is_empty() {
        tracing::warn!(?points, "fault points armed: for tests only");
    }
    let _ = ARMED.set(points);
    Ok(())
}

fn armed(name: &str) -> Option<Fault> {
    ARMED.get()?.get(name).copied()
}

/// Aborts the process if `name` is armed to abort; panics if it is armed to panic.
pub fn point(name: &str) {
    match armed(name) {
        Some(Fault::Abort) => {
            tracing::error!(point = name, "fault point reached: aborting");
            std::process::abort();
        }
        Some(Fault::Panic) => panic_at(name),
        Some(Fault::Pause(_) | Fault::DropOnce) | None => {}
    }
}

/// The points armed to drop that have dropped their message already.
static DROPPED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Whether to drop the message at `name` (or at `name@key`, a point armed for one key): true
/// the first time a point armed with `=drop` is reached, false ever after and for any other.
pub fn drop_once(name: &str, key: &str) -> bool {
    if ARMED.get().is_none_or(HashMap::is_empty) {
        return false;
    }
    let keyed = format!("{name}@{key}");
    let Some(point) = [name, keyed.as_str()]
        .into_iter()
        .find(|point| matches!(armed(point), Some(Fault::DropOnce)))
    else {
        return false;
    };
    let Ok(mut dropped) = DROPPED.lock() else {
        return false;
    };
    let first = dropped
        .get_or_insert_with(HashSet::new)
        .insert(point.to_owned());
    if first {
        tracing::warn!(point, "fault point reached: dropping the message");
    }
    first
}

/// [`point`] for `name`, and for `name@key` (a point armed for this key only).
pub fn point_for(name: &str, key: &str) {
    if ARMED.get().is_none_or(HashMap::is_empty) {
        return;
    }
    point(name);
    point(&format!("{name}@{key}"));
}

#[allow(clippy::panic)]
fn panic_at(name: &str) -> ! {
    tracing::error!(point = name, "fault point reached: panicking");
    panic!("fault point {name} armed to panic");
}

/// The wall clock, as this process reads it: ahead by `clock.ahead` if that is armed, and by
/// the steps of `clock.step` so far.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    let ahead = match armed("clock.ahead") {
        Some(Fault::Pause(ahead)) => chrono::Duration::from_std(ahead).unwrap_or_default(),
        Some(Fault::Abort | Fault::Panic | Fault::DropOnce) | None => chrono::Duration::zero(),
    };
    let stepped = chrono::Duration::milliseconds(STEPPED_MS.load(Ordering::Relaxed));
    now.checked_add_signed(ahead + stepped).unwrap_or(now)
}

/// With `clock.step` armed, steps the clock on `SIGUSR1` (ahead by the armed amount, again
/// each time) and `SIGUSR2` (back to the real time), until the process ends. Call once, from
/// the runtime.
pub fn step_clock_on_signals() {
    let Some(Fault::Pause(step)) = armed("clock.step") else {
        return;
    };
    let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut ahead), Ok(mut back)) = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("clock.step armed, but its signals cannot be received");
            return;
        };
        loop {
            let stepped_ms = tokio::select! {
                Some(()) = ahead.recv() => STEPPED_MS.fetch_add(step_ms, Ordering::Relaxed) + step_ms,
                Some(()) = back.recv() => {
                    STEPPED_MS.store(0, Ordering::Relaxed);
                    0
                }
                else => return,
            };
            tracing::warn!(stepped_ms, "fault: the clock was stepped");
        }
    });
    #[cfg(not(unix))]
    let _ = step_ms;
}

/// Waits if `name` is armed with a delay; panics if it is armed to panic.
pub async fn pause(name: &str) {
    match armed(name) {
        Some(Fault::Pause(delay)) => {
            tracing::warn!(point = name, ?delay, "fault point reached: pausing");
            tokio::time::sleep(delay).await;
        }
        Some(Fault::Panic) => panic_at(name),
        Some(Fault::Abort | Fault::DropOnce) | None => {}
    }
}
