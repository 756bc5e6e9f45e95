//! The metrics of the order service, each name spelled once, their descriptions, and the
//! sampling of the age of the oldest unfinished orders.

use std::time::Duration;

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use sqlx::PgPool;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::machine::OrderState;
use crate::repo;

/// Counter, by `outcome` (the state reached) and `reason`: orders that reached a final state.
pub const ORDERS: &str = "orders_total";
/// Histogram: from an order's creation to the end of its placement (placed or not).
pub const ORDER_DURATION: &str = "order_duration_seconds";
/// Histogram, by `phase` (the state the step started from): one step of a driver.
pub const ORDER_PHASE_SECONDS: &str = "order_phase_seconds";
/// Gauge: orders being driven by this process.
pub const ORDERS_IN_FLIGHT: &str = "orders_in_flight";
/// Gauge, by `state`: age of the oldest order in each unfinished state.
pub const OLDEST_UNFINISHED_AGE: &str = "orders_oldest_unfinished_age_seconds";
/// Counter, by `phase`: phase-1 attempts that were retried because items were held by others.
pub const ORDER_RETRIES: &str = "order_retries_total";
/// Counter: orders a driver handed over because it could not reach the broker for a whole lease.
pub const ORDERS_HANDED_OVER: &str = "orders_handed_over_total";
/// Counter: deadline-timer messages handled.
pub const DEADLINE_TIMERS: &str = "deadline_timers_total";
/// Counter, by `via` (`timer`, `sweep`): orders whose driver stopped, taken over by recovery.
pub const ORDERS_RECOVERED: &str = "orders_recovered_total";

/// Counter, by `participant`: reservations released because their order can never be placed
/// (its coordinator died in phase 1), found in another order's way.
pub const ORPHANS_RELEASED: &str = "orphan_reservations_released_total";

/// The states of an unfinished order (those a driver moves on), in declaration order.
fn unfinished_states() -> impl Iterator<Item = OrderState> {
    OrderState::ALL.iter().copied().filter(|s| !s.is_final())
}

/// Describes every metric of the order service, and registers the series whose labels are known
/// in advance at zero (so that they are exported, and rates start, from the process's start).
pub fn describe() {
    describe_counter!(
        ORDERS,
        Unit::Count,
        "Orders that reached a state in which no transaction of the coordinator is under way, by outcome (placed, not_placed, picked_up, delivered, cancelled) and reason (why not placed; empty otherwise)."
    );
    describe_histogram!(
        ORDER_DURATION,
        Unit::Seconds,
        "Time from an order's creation to the end of its placement (placed or not placed)."
    );
    describe_histogram!(
        ORDER_PHASE_SECONDS,
        Unit::Seconds,
        "Time one step of an order's driver took, by phase (the state it started from: reserving, assigning, compensating, cancelling)."
    );
    describe_gauge!(
        ORDERS_IN_FLIGHT,
        Unit::Count,
        "Orders being driven by this process now."
    );
    describe_gauge!(
        OLDEST_UNFINISHED_AGE,
        Unit::Seconds,
        "Age (since its creation) of the oldest order in each unfinished state (reserving, assigning, compensating, cancelling), 0 if there is none; read from the order database every few seconds, the same in every coordinator."
    );
    describe_counter!(
        ORDER_RETRIES,
        Unit::Count,
        "Phase-1 attempts retried with a new transaction because the items were held by other orders, by phase."
    );
    describe_counter!(
        ORDERS_HANDED_OVER,
        Unit::Count,
        "Orders a driver gave up to other coordinators because this process could not reach the broker for a whole lease."
    );
    describe_counter!(
        DEADLINE_TIMERS,
        Unit::Count,
        "Deadline-timer messages handled (each names the orders of one timer window)."
    );
    describe_counter!(
        ORDERS_RECOVERED,
        Unit::Count,
        "Unfinished orders whose lease ran out, taken over by this coordinator, by via (timer: a deadline timer; sweep: the recovery sweep)."
    );
    describe_counter!(
        ORPHANS_RELEASED,
        Unit::Count,
        "Reservations released because their order can never be placed (never recorded: its coordinator died in phase 1; or not placed, its release lost), found in another order's way, by participant."
    );
    ::metrics::gauge!(ORDERS_IN_FLIGHT).increment(0.0);
    for participant in ["store", "delivery"] {
        ::metrics::counter!(ORPHANS_RELEASED, "participant" => participant).increment(0);
    }
    ::metrics::counter!(ORDER_RETRIES, "phase" => "reserve").increment(0);
    ::metrics::counter!(ORDERS_HANDED_OVER).increment(0);
    ::metrics::counter!(DEADLINE_TIMERS).increment(0);
    for via in ["timer", "sweep"] {
        ::metrics::counter!(ORDERS_RECOVERED, "via" => via).increment(0);
    }
}

/// Every `interval` until `shutdown`: the age of the oldest order in each unfinished state, from
/// the order table (one index lookup per state). A failed read leaves the last values.
pub async fn sample_oldest_unfinished(
    pool: PgPool,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let read = tokio::select! {
            read = repo::oldest_unfinished(&pool) => read,
            () = shutdown.cancelled() => return,
        };
        match read {
            Ok(ages) => {
                failing = false;
                for state in unfinished_states() {
                    let age = ages
                        .iter()
                        .find(|(s, _)| *s == state)
                        .map_or(0.0, |(_, age)| age.as_secs_f64());
                    ::metrics::gauge!(OLDEST_UNFINISHED_AGE, "state" => state.as_str()).set(age);
                }
            }
            Err(err) if failing => {
                debug!(error = %err, "oldest unfinished orders still unknown");
            }
            Err(err) => {
                warn!(error = %err, "cannot read the oldest unfinished orders; trying again every round");
                failing = true;
            }
        }
    }
}
