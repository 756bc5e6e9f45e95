//! The holders named in busy replies: the reservations in a request's way, for the coordinator
//! to release those whose order can never be placed (`services/order/src/orphans.rs`).
//!
//! Reading them takes a connection and a query, and under contention most replies are busy: so
//! each kind of request (its [`Key`]) reads them at most once per [`FRESH`], and the busy replies
//! in between name what that read found, each holder aged by the time since. The first busy
//! reply of a window reads; the others of the same window name nothing until the read is back.
//! A holder matters only once it is older than a whole phase 1 (seconds), so a list up to
//! [`FRESH`] old is as good as a new one, and one that names a holder released since only
//! leads to a release that changes nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::command::Holder;
use tracing::debug;

use crate::context::Shared;
use crate::inventory::{Inventory, Key};

/// How long a read of the holders of one kind of request serves.
pub const FRESH: Duration = Duration::from_millis(500);

/// Kinds of request remembered at most; past it, the memory starts again.
const MAX_KEYS: usize = 1024;

/// The last read of the holders of each kind of request.
#[derive(Debug, Default)]
pub(crate) struct Holders {
    read: Mutex<HashMap<Key, (Instant, Vec<Holder>)>>,
}

impl Holders {
    /// The holders in the way of a busy request for `key`.
    pub(crate) async fn of<I: Inventory>(&self, shared: &Shared<I>, key: Key) -> Vec<Holder> {
        {
            let Ok(mut read) = self.read.lock() else {
                return Vec::new();
            };
            if let Some((at, holders)) = read.get(&key)
                && at.elapsed() < FRESH
            {
                return aged(holders, at.elapsed());
            }
            if read.len() >= MAX_KEYS {
                read.clear();
            }
            // Claims this window: concurrent busy replies name nothing until the read is back.
            read.insert(key.clone(), (Instant::now(), Vec::new()));
        }
        let found = async {
            let mut conn = shared.pool.acquire().await?;
            I::TABLE
                .holders(&mut conn, I::HOLDERS, &key, shared.settings.reservation_ttl)
                .await
        };
        let holders = match found.await {
            Ok(holders) => holders,
            Err(err) => {
                debug!(error = %err, "holders of a busy reserve not read");
                return Vec::new();
            }
        };
        if let Ok(mut read) = self.read.lock() {
            read.insert(key, (Instant::now(), holders.clone()));
        }
        holders
    }
}

/// `holders` as read `since` ago.
fn aged(holders: &[Holder], since: Duration) -> Vec<Holder> {
    let since = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
    holders
        .iter()
        .map(|holder| Holder {
            held_ms: holder.held_ms.saturating_add(since),
            ..holder.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use protocol::ids::{OrderId, TxnId};

    use super::*;

    #[test]
    fn a_holder_named_from_an_earlier_read_is_older_by_the_time_since() {
        let holder = Holder {
            txn_id: TxnId::new(),
            order_id: OrderId::new(),
            held_ms: 7_000,
        };
        let aged = aged(std::slice::from_ref(&holder), Duration::from_millis(250));
        assert_eq!(aged[0].held_ms, 7_250);
        assert_eq!(aged[0].txn_id, holder.txn_id);
    }
}
