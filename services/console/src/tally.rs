//! What the order events say: each hub's outcomes over the last hour, its refusals by reason over
//! the last minutes, and orders per second by outcome.
//!
//! The console binds one queue of its own (exclusive) to `order.events` and counts each event
//! once (by `event_id`: an event published twice is counted once) in the second it arrives.
//! Counting starts when the console starts: the page says since when.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use messaging::{Disposition, Handler, Incoming};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

/// How long outcomes are counted back.
pub const HOUR: Duration = Duration::from_secs(3_600);
/// How long refusals are counted back.
pub const REFUSALS: Duration = Duration::from_secs(600);
/// Over how long orders per second are measured.
pub const RATE: Duration = Duration::from_secs(10);
/// Event ids remembered to count a repeated event once.
const REMEMBERED: usize = 100_000;

/// The fields of an event the console counts by.
#[derive(Debug, Deserialize)]
struct Event {
    event_id: Uuid,
    kind: String,
    hub_id: i64,
    reason: Option<String>,
}

/// What happened in one second.
#[derive(Default)]
struct Second {
    /// Unix seconds.
    at: i64,
    /// Events by hub, kind and (for `not_placed`) reason.
    counts: HashMap<(i64, String, Option<String>), u64>,
}

/// Each hub's outcomes over the last hour (`placed`, `not_placed`, `picked_up`, `delivered`,
/// `cancelled`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcomes(pub BTreeMap<String, u64>);

/// The events counted so far.
pub struct Tally {
    since: DateTime<Utc>,
    seconds: VecDeque<Second>,
    seen: HashSet<Uuid>,
    order_seen: VecDeque<Uuid>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    /// Nothing counted, from now.
    pub fn new() -> Self {
        Self {
            since: Utc::now(),
            seconds: VecDeque::new(),
            seen: HashSet::new(),
            order_seen: VecDeque::new(),
        }
    }

    /// When counting started.
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// Counts one event (read from its JSON body) at `now`; false if unreadable or seen before.
    pub fn count(&mut self, body: &[u8], now: DateTime<Utc>) -> bool {
        let Ok(event) = serde_json::from_slice::<Event>(body) else {
            return false;
        };
        if !self.seen.insert(event.event_id) {
            return false;
        }
        self.order_seen.push_back(event.event_id);
        if self.order_seen.len() > REMEMBERED
            && let Some(old) = self.order_seen.pop_front()
        {
            self.seen.remove(&old);
        }
        let at = now.timestamp();
        if self.seconds.back().is_none_or(|s| s.at != at) {
            self.seconds.push_back(Second {
                at,
                ..Second::default()
            });
        }
        let reason = (event.kind == "not_placed")
            .then_some(event.reason)
            .flatten();
        if let Some(second) = self.seconds.back_mut() {
            *second
                .counts
                .entry((event.hub_id, event.kind, reason))
                .or_default() += 1;
        }
        let horizon = at - HOUR.as_secs() as i64;
        while self.seconds.front().is_some_and(|s| s.at <= horizon) {
            self.seconds.pop_front();
        }
        true
    }

    /// The counts of the seconds within `window` before `now`.
    fn within(
        &self,
        window: Duration,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = (&(i64, String, Option<String>), &u64)> {
        let from = now.timestamp() - window.as_secs() as i64;
        self.seconds
            .iter()
            .filter(move |s| s.at > from)
            .flat_map(|s| s.counts.iter())
    }

    /// `hub`'s events of the last hour, by kind.
    pub fn outcomes(&self, hub: i64, now: DateTime<Utc>) -> Outcomes {
        let mut outcomes = BTreeMap::new();
        for ((h, kind, _), n) in self.within(HOUR, now) {
            if *h == hub {
                *outcomes.entry(kind.clone()).or_default() += n;
            }
        }
        Outcomes(outcomes)
    }

    /// `hub`'s refusals (`not_placed`) of the last [`REFUSALS`], by reason.
    pub fn refusals(&self, hub: i64, now: DateTime<Utc>) -> BTreeMap<String, u64> {
        let mut refusals = BTreeMap::new();
        for ((h, kind, reason), n) in self.within(REFUSALS, now) {
            if *h == hub && kind == "not_placed" {
                let reason = reason.clone().unwrap_or_else(|| "unknown".to_owned());
                *refusals.entry(reason).or_default() += n;
            }
        }
        refusals
    }

    /// Events per second over the last [`RATE`], by kind, every hub together.
    pub fn rates(&self, now: DateTime<Utc>) -> BTreeMap<String, f64> {
        let mut rates: BTreeMap<String, f64> = BTreeMap::new();
        for ((_, kind, _), n) in self.within(RATE, now) {
            *rates.entry(kind.clone()).or_default() += *n as f64 / RATE.as_secs_f64();
        }
        rates
    }
}

/// The consumer of the console's queue of events: counts each, and wakes the reader.
pub struct Tap {
    tally: Arc<Mutex<Tally>>,
    changed: Arc<Notify>,
}

impl Tap {
    /// Counts into `tally` and wakes `changed`.
    pub fn new(tally: Arc<Mutex<Tally>>, changed: Arc<Notify>) -> Self {
        Self { tally, changed }
    }
}

impl Handler for Tap {
    async fn handle(&self, message: &Incoming) -> Disposition {
        let counted = self
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count(message.data(), Utc::now());
        if counted {
            self.changed.notify_one();
        }
        // Automatic acks: an unreadable event is only not counted.
        Disposition::Ack
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(id: Uuid, kind: &str, hub: i64, reason: Option<&str>) -> Vec<u8> {
        json!({"event_id": id, "kind": kind, "hub_id": hub, "reason": reason, "order_id": Uuid::new_v4()})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn each_event_counts_once_at_its_hub_and_ages_out() {
        let mut tally = Tally::new();
        let t0 = Utc::now();
        let placed = Uuid::new_v4();
        assert!(tally.count(&event(placed, "placed", 1, None), t0));
        assert!(
            !tally.count(&event(placed, "placed", 1, None), t0),
            "a repeat"
        );
        assert!(tally.count(&event(Uuid::new_v4(), "not_placed", 1, Some("timeout")), t0));
        assert!(tally.count(
            &event(Uuid::new_v4(), "not_placed", 2, Some("food_unavailable")),
            t0
        ));
        assert!(!tally.count(b"not json", t0));

        assert_eq!(tally.outcomes(1, t0).0.get("placed"), Some(&1));
        assert_eq!(tally.outcomes(1, t0).0.get("not_placed"), Some(&1));
        assert_eq!(tally.outcomes(2, t0).0.get("placed"), None);
        assert_eq!(tally.refusals(1, t0).get("timeout"), Some(&1));
        assert_eq!(tally.refusals(1, t0).get("food_unavailable"), None);
        assert!((tally.rates(t0)["not_placed"] - 0.2).abs() < 1e-9);

        // Refusals leave after ten minutes, outcomes after an hour, rates after ten seconds.
        let later = t0 + chrono::Duration::seconds(11);
        assert!(tally.rates(later).is_empty());
        let later = t0 + chrono::Duration::seconds(601);
        assert!(tally.refusals(1, later).is_empty());
        assert_eq!(tally.outcomes(1, later).0.get("placed"), Some(&1));
        let later = t0 + chrono::Duration::seconds(3_601);
        assert!(tally.outcomes(1, later).0.is_empty());
    }
}
