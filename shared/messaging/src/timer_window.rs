//! The timer window: timer ids gathered for a short window and published as one timer message.
//!
//! Timers are accelerators (the database is the truth and a sweep is the backstop), so they are
//! collected for a short window and published as one message: a handful of timer messages per
//! second instead of one per order, whatever the load.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::broker::BrokerError;
use crate::publisher::{Outgoing, Publisher};

/// Ids in one timer message at most: a full window is published at once.
const MAX_IDS: usize = 1_000;
/// Ids that may wait in memory; beyond this (broker down for long) new ids are dropped and left
/// to the sweep.
const CAPACITY: usize = 100_000;

/// Gathers ids and publishes each window of them as one timer message. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TimerWindow<T> {
    sender: mpsc::Sender<T>,
}

impl<T: Send + 'static> TimerWindow<T> {
    /// Starts the flushing task on `tracker`. `build` turns a window's ids into a message. A
    /// window is published `window` after its first id arrived (or when full), and at shutdown.
    pub fn spawn<F>(
        publisher: Publisher,
        window: Duration,
        build: F,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self
    where
        F: Fn(Vec<T>) -> Result<Outgoing, BrokerError> + Send + Sync + 'static,
    {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        tracker.spawn(flush_loop(publisher, window, build, receiver, shutdown));
        Self { sender }
    }

    /// Adds an id to the current window. Never waits: if the buffer is full, the id is left to the
    /// sweep.
    pub fn push(&self, item: T) {
        if self.sender.try_send(item).is_err() {
            debug!("timer buffer full or closed; the sweep will handle this one");
        }
    }
}

async fn flush_loop<T, F>(
    publisher: Publisher,
    window: Duration,
    build: F,
    mut receiver: mpsc::Receiver<T>,
    shutdown: CancellationToken,
) where
    F: Fn(Vec<T>) -> Result<Outgoing, BrokerError> + Sync,
{
    loop {
        let first = tokio::select! {
            item = receiver.recv() => item,
            () = shutdown.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut ids = vec![first];
        let deadline = Instant::now() + window;
        while ids.len() < MAX_IDS {
            tokio::select! {
                item = receiver.recv() => match item {
                    Some(item) => ids.push(item),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = shutdown.cancelled() => break,
            }
        }
        publish(&publisher, &build, ids).await;
    }
    // Shutdown: publish what is left.
    let mut rest = Vec::new();
    while let Ok(item) = receiver.try_recv() {
        rest.push(item);
    }
    if !rest.is_empty() {
        publish(&publisher, &build, rest).await;
    }
}

async fn publish<T, F>(publisher: &Publisher, build: &F, ids: Vec<T>)
where
    F: Fn(Vec<T>) -> Result<Outgoing, BrokerError> + Sync,
{
    let size = ids.len();
    let result = match build(ids) {
        Ok(message) => publisher.publish(&message).await,
        Err(err) => Err(err),
    };
    if let Err(err) = result {
        warn!(error = %err, size, "timer message not published; the sweep will handle it");
    }
}
