//! The signal that starts a graceful shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// A token cancelled on Ctrl-C or SIGTERM. Every long-running loop selects on it.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// Closes `tracker` and waits for its tasks to finish, at most `within`; `what` names them in
/// the warning logged when they do not (`then` says what happens to them).
pub async fn drain(tracker: &TaskTracker, within: Duration, what: &str, then: &str) {
    tracker.close();
    if tokio::time::timeout(within, tracker.wait()).await.is_err() {
        warn!("{what} still running after {within:?}; {then}");
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
