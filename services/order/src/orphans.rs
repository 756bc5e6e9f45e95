//! Releasing the reservations of orders that can never be placed, when they stand in the way of
//! another order.
//!
//! A coordinator that dies in phase 1 before recording its order (a new order is recorded only
//! at the end of its phase 1) leaves reservations that nobody will release: until they expire
//! (`RESERVATION_TTL`), every order for those last items would be answered `busy`, and refused
//! `timeout` at its deadline. So a participant's `busy` answer names the oldest reservations in
//! the way, with how long each has held its items. A driver that is told `busy` looks up the
//! order of each holder older than a whole phase 1 (the order deadline plus
//! [`ORPHAN_MARGIN`]): if the machine's [`rules::is_orphan`] says it can never be assigned (never
//! recorded, moved on to another transaction, or not placed), the driver sends that participant
//! a `release(abort)` for the holder's transaction and retries as it would anyway.
//!
//! Safe whatever the clocks say: a release frees only what is reserved, and refuses the
//! transaction's later assign, so a holder whose coordinator was only slow ends not placed,
//! never half assigned (checked by the model: `tools/model`, action `ReleaseOrphan`).

use std::collections::HashSet;
use std::time::Duration;

use tracing::{debug, warn};

use crate::coordinator::Coordinator;
use crate::machine::rules::{self, Reservation};
use crate::repo;
use protocol::sides::Sides;

/// How much older than a whole phase 1 (the order deadline) a reservation must be before its
/// order is presumed aborted if it is not recorded: room for the commit of its first record.
pub const ORPHAN_MARGIN: Duration = Duration::from_secs(2);

impl Coordinator {
    /// Releases the holders named by `answers` whose orders can never assign them (each
    /// transaction once per side). Without waiting for the releases' replies: the caller retries
    /// its reserve after its back-off anyway.
    pub(crate) async fn release_orphans(&self, answers: &Sides<Reservation>) {
        let orphaned_after = self.settings.order_deadline + ORPHAN_MARGIN;
        let stale = rules::stale_holders(answers, orphaned_after);
        let mut seen = HashSet::new();
        for (side, holder) in stale {
            if !seen.insert((side, holder.txn_id)) {
                continue;
            }
            let record = match repo::load(self.pool(), holder.order_id).await {
                Ok(record) => record,
                Err(err) => {
                    debug!(error = %err, "holder's order not read; leaving it to its expiry");
                    continue;
                }
            };
            if !rules::is_orphan(holder.txn_id, record.as_ref()) {
                continue;
            }
            warn!(
                participant = %side,
                holder_order_id = %holder.order_id,
                holder_txn_id = %holder.txn_id,
                held_ms = holder.held_ms,
                "releasing a reservation whose order can never be placed"
            );
            if self.participants.release_orphan(side, holder).await {
                metrics::counter!(crate::metrics::ORPHANS_RELEASED, "participant" => side.as_str())
                    .increment(1);
            }
        }
    }
}
