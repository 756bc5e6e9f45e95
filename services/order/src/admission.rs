//! Admission: which new orders this coordinator takes on, before anything is recorded or
//! reserved for them.
//!
//! - **Orders in flight** (`MAX_ORDERS_IN_FLIGHT`): a new order takes a slot until its driver
//!   ends (final, or handed over). With every slot taken, `POST /orders` is answered `503` with
//!   `Retry-After` at once: a quick "try again" beats a `timeout` after the whole order deadline
//!   for every customer in the queue. Keyed repeats of an order (answered from its record) and
//!   taken-over orders (recovery has its own bound) take no slot.
//! - **Per customer** (`CUSTOMER_ORDER_RATE`, `CUSTOMER_ORDER_BURST`): a token bucket per
//!   customer id; a customer past it gets `429` with `Retry-After`. The buckets are this
//!   process's own: with N coordinators behind a load balancer a customer may place up to N
//!   times the rate. It guards the order path against a flood from one account, not a quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Buckets kept before the full ones (customers idle long enough to be back at the burst) are
/// dropped.
const PRUNE_ABOVE: usize = 10_000;

/// Why a new order is not taken on now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Every slot for orders in flight is taken.
    #[error("this coordinator has {0} orders in flight, its most; try again in a moment")]
    Busy(usize),
    /// The customer placed orders faster than the rate allows.
    #[error("too many orders from this customer; try again in {0:?}")]
    TooFast(Duration),
}

/// The admission of new orders (shared by the request handlers).
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A slot for one order in flight, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `max_in_flight` new orders at once, and per customer `rate` orders a second with
    /// bursts of `burst` (`rate` 0: no per-customer limit).
    pub fn new(max_in_flight: usize, rate: f64, burst: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `customer` may place an order now (taking one token from their bucket).
    pub fn customer(&self, customer: &str) -> Result<(), Refused> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < burst);
        }
        let bucket = buckets.entry(customer.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled = self.rate * now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + refilled).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err(Refused::TooFast(Duration::from_secs_f64(wait)))
        }
    }

    /// A slot for a new order in flight, or `Busy` at once.
    pub fn slot(&self) -> Result<Slot, Refused> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map(|permit| Slot { _permit: permit })
            .map_err(|_| Refused::Busy(self.max_in_flight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_gets_the_burst_then_the_rate_and_others_are_not_held_back() {
        let admission = Admission::new(10, 1.0, 3);
        for _ in 0..3 {
            assert_eq!(admission.customer("c-1"), Ok(()));
        }
        let Err(Refused::TooFast(wait)) = admission.customer("c-1") else {
            panic!("the fourth order within the burst's time is refused");
        };
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(
            admission.customer("c-2"),
            Ok(()),
            "another customer is not held back"
        );
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let admission = Admission::new(10, 0.0, 1);
        for _ in 0..100 {
            assert_eq!(admission.customer("c-1"), Ok(()));
        }
    }

    #[test]
    fn slots_are_given_back_when_their_order_ends() {
        let admission = Admission::new(2, 0.0, 1);
        let first = admission.slot().map_err(|_| "a slot");
        let second = admission.slot().map_err(|_| "a slot");
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(admission.slot().err(), Some(Refused::Busy(2)));
        drop(first);
        assert!(admission.slot().is_ok(), "the slot is free again");
    }
}
