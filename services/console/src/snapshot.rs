//! One picture of the whole day, read from the services for every page at once.
//!
//! [`Reader::run`] reads the store, delivery and the order service's operator API when an
//! order event arrives (at most every `CONSOLE_MIN_REFRESH`) and every `CONSOLE_REFRESH`
//! otherwise, and publishes the [`Snapshot`] to every open page through one `watch` channel: a
//! thousand open pages cost the services what one does. Each read is bounded: the hubs, each
//! hub's stock (one row per food), its agents counted by state, its orders in flight (counted
//! by state and the oldest few, through an index of the orders in flight), the orders stuck
//! longer than `CONSOLE_STUCK_AFTER` (through an index of the unfinished ones), and the depth
//! of each dead-letter queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use messaging::{Broker, dlq};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::services::Services;
use crate::tally::{Outcomes, Tally};

/// The orders in flight listed per hub (all are counted).
const IN_FLIGHT_LISTED: usize = 12;
/// The stuck orders listed.
const STUCK_LISTED: usize = 50;
/// How often the dead-letter queues are counted (a passive declaration each).
const DEAD_LETTERS_EVERY: Duration = Duration::from_secs(5);

/// The day as the console last read it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// When it was read.
    pub at: Option<DateTime<Utc>>,
    /// Since when events are counted (the console's start).
    pub counted_since: Option<DateTime<Utc>>,
    /// Every hub.
    pub hubs: Vec<HubDay>,
    /// Events per second over the last ten seconds, by kind, every hub together.
    pub rates: BTreeMap<String, f64>,
    /// Unfinished orders older than `CONSOLE_STUCK_AFTER`, oldest first, as the operator API
    /// lists them.
    pub stuck: Vec<Value>,
    /// Each dead-letter queue and how many messages it holds (`null`: not declared yet).
    pub dead_letters: Vec<DeadLetters>,
    /// What could not be read this time (the rest is shown).
    pub problems: Vec<String>,
}

/// One hub's day.
#[derive(Clone, Debug, Serialize)]
pub struct HubDay {
    /// The hub.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Each food it has: `{"food_id", "name", "available", "reserved", "assigned"}`.
    pub stock: Vec<Value>,
    /// Its agents by state: `{"available", "reserved", "assigned", "delivering", "off_duty"}`.
    pub riders: Value,
    /// Its orders in flight by state.
    pub in_flight: Value,
    /// The oldest of them: `{"order_id", "state", "agent_id", "age_seconds"}`.
    pub orders: Vec<Value>,
    /// Its events of the last hour, by kind.
    pub last_hour: Outcomes,
    /// Its refusals of the last ten minutes, by reason.
    pub refusals: BTreeMap<String, u64>,
}

/// A dead-letter queue's depth.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetters {
    /// The queue.
    pub queue: String,
    /// Messages parked in it.
    pub depth: Option<u32>,
}

/// Reads the services into snapshots.
pub struct Reader {
    /// The services' APIs.
    pub services: Arc<Services>,
    /// The broker (dead-letter queue depths).
    pub broker: Broker,
    /// The dead-letter queues of the topology.
    pub dead_letter_queues: Vec<String>,
    /// The events counted.
    pub tally: Arc<Mutex<Tally>>,
    /// Woken by each event counted.
    pub changed: Arc<Notify>,
    /// Unfinished longer than this: stuck.
    pub stuck_after: Duration,
    /// The longest time without a read.
    pub refresh: Duration,
    /// The shortest time between reads.
    pub min_refresh: Duration,
}

impl Reader {
    /// Reads until `stop`, publishing each snapshot on `snapshots`.
    pub async fn run(self, snapshots: watch::Sender<Arc<Snapshot>>, stop: CancellationToken) {
        let mut dead_letters: Vec<DeadLetters> = Vec::new();
        let mut dead_letters_read: Option<Instant> = None;
        loop {
            let started = Instant::now();
            if dead_letters_read.is_none_or(|at| at.elapsed() >= DEAD_LETTERS_EVERY) {
                dead_letters = self.dead_letters().await;
                dead_letters_read = Some(Instant::now());
            }
            let mut snapshot = self.read().await;
            snapshot.dead_letters = dead_letters.clone();
            snapshots.send_replace(Arc::new(snapshot));
            // At most every `min_refresh`; then at the next event, or after `refresh`.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(started + self.min_refresh) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.changed.notified() => {}
                () = tokio::time::sleep_until(started + self.refresh) => {}
            }
        }
    }

    /// One snapshot (without the dead-letter queues).
    pub async fn read(&self) -> Snapshot {
        let mut problems = Vec::new();
        let hubs = match self.services.hubs().await {
            Ok(hubs) => hubs,
            Err(err) => {
                problems.push(format!("hubs: {err}"));
                Vec::new()
            }
        };
        let days = futures::future::join_all(
            hubs.iter()
                .map(|(id, name)| self.hub_day(*id, name.clone())),
        )
        .await;
        let mut hub_days = Vec::with_capacity(days.len());
        for (day, mut hub_problems) in days {
            hub_days.push(day);
            problems.append(&mut hub_problems);
        }
        let stuck = match self.services.stuck(self.stuck_after, STUCK_LISTED).await {
            Ok(stuck) => stuck,
            Err(err) => {
                problems.push(format!("stuck orders: {err}"));
                Vec::new()
            }
        };
        let now = Utc::now();
        let tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        for day in &mut hub_days {
            day.last_hour = tally.outcomes(day.id, now);
            day.refusals = tally.refusals(day.id, now);
        }
        Snapshot {
            at: Some(now),
            counted_since: Some(tally.since()),
            hubs: hub_days,
            rates: tally.rates(now),
            stuck,
            dead_letters: Vec::new(),
            problems,
        }
    }

    /// One hub, and what of it could not be read.
    async fn hub_day(&self, id: i64, name: String) -> (HubDay, Vec<String>) {
        let (stock, riders, in_flight) = tokio::join!(
            self.services.stock(id),
            self.services.riders(id),
            self.services.in_flight(id, IN_FLIGHT_LISTED),
        );
        let mut problems = Vec::new();
        let mut day = HubDay {
            id,
            name,
            stock: Vec::new(),
            riders: Value::Null,
            in_flight: Value::Null,
            orders: Vec::new(),
            last_hour: Outcomes::default(),
            refusals: BTreeMap::new(),
        };
        match stock {
            Ok(stock) => day.stock = stock,
            Err(err) => problems.push(format!("hub {id} stock: {err}")),
        }
        match riders {
            Ok(riders) => day.riders = riders,
            Err(err) => problems.push(format!("hub {id} riders: {err}")),
        }
        match in_flight {
            Ok((counts, orders)) => {
                day.in_flight = counts;
                day.orders = orders;
            }
            Err(err) => problems.push(format!("hub {id} orders: {err}")),
        }
        (day, problems)
    }

    async fn dead_letters(&self) -> Vec<DeadLetters> {
        let mut found = Vec::with_capacity(self.dead_letter_queues.len());
        for queue in &self.dead_letter_queues {
            let depth = match dlq::depth(&self.broker, queue).await {
                Ok(depth) => depth,
                Err(err) => {
                    debug!(%queue, %err, "dead-letter queue not counted");
                    None
                }
            };
            found.push(DeadLetters {
                queue: queue.clone(),
                depth,
            });
        }
        found
    }
}
