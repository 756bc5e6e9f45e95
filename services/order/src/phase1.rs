//! Phase 1 of an order as a driver runs it: when it ends, and, for a new order, the request that
//! waits for its first record. Shared by `placement` (which starts it), `driver` (which runs it)
//! and `cancellation` and recovery (which drive orders without one).

use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::machine::Order;
use crate::repo::RepoError;

/// What the task that records a new order reports to the request that asked for it.
#[derive(Debug)]
pub(crate) enum Started {
    /// Recorded; the driver sends each recorded state here.
    New(watch::Receiver<Order>),
    /// The customer's order with the same idempotency key.
    Existing(Box<Order>),
}

/// A new order whose phase 1 runs: it is not recorded yet, and its request waits for the first
/// record.
#[derive(Debug)]
pub(crate) struct Unrecorded {
    /// The client's key for it, if it sent one.
    pub(crate) idempotency_key: Option<String>,
    /// Where the request waits.
    pub(crate) started: oneshot::Sender<Result<Started, RepoError>>,
    /// When to record it even if phase 1 goes on, so that the request can answer `202 pending`
    /// within its budget.
    pub(crate) record_by: Instant,
}

impl Unrecorded {
    /// Whether nobody wants the order any more: its request gave up (it answered `503`), and
    /// nobody can ask for it again (no idempotency key). Such an order is not placed.
    pub(crate) fn unwanted(&self) -> bool {
        self.started.is_closed() && self.idempotency_key.is_none()
    }
}

/// How phase 1 of an order runs, if it does.
#[derive(Debug)]
pub(crate) struct Phase1 {
    /// When it ends (the order is then not placed, `timeout`).
    pub(crate) ends: Instant,
    /// A new order, not recorded yet: its request waits for its first record, at the end of
    /// phase 1 (or sooner, if phase 1 outlasts the request's budget).
    pub(crate) unrecorded: Option<Unrecorded>,
    /// Recorded in phase 1 after its request gave up, and nobody can ask for it again: it is
    /// not placed.
    pub(crate) unwanted: bool,
}

impl Phase1 {
    /// Phase 1 of a recorded order, ending at `ends`.
    pub(crate) fn until(ends: Instant) -> Self {
        Self {
            ends,
            unrecorded: None,
            unwanted: false,
        }
    }

    /// Whether nobody wants the order any more (see [`Unrecorded::unwanted`]).
    pub(crate) fn unwanted(&self) -> bool {
        self.unwanted || self.unrecorded.as_ref().is_some_and(Unrecorded::unwanted)
    }
}
