//! Crash points for fault-injection tests.
//!
//! `FAULT_POINTS=coordinator.after_commit_decision` makes the process abort (like `kill -9`:
//! no destructors, no graceful shutdown) the first time it reaches that point. Unarmed points
//! cost one read of a set that is empty in production.

use std::collections::HashSet;
use std::sync::OnceLock;

static ARMED: OnceLock<HashSet<String>> = OnceLock::new();

/// Arms the points named in `spec` (comma-separated). Call once, from `main`.
pub fn arm(spec: &str) {
    let points: HashSet<String> = spec
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if !points.is_empty() {
        tracing::warn!(
            ?points,
            "fault points armed: this process will abort when it reaches them"
        );
    }
    let _ = ARMED.set(points);
}

/// Aborts the process if `name` is armed.
pub fn point(name: &str) {
    if ARMED.get().is_some_and(|armed| armed.contains(name)) {
        tracing::error!(point = name, "fault point reached: aborting");
        std::process::abort();
    }
}
