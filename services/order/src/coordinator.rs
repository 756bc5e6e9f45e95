//! The coordinator: what the HTTP handlers, the timeout consumer and recovery share, and the
//! two things every driver does between steps: record what the machine computed, and keep its
//! lease. How an order is driven is in `driver`; how a new one is taken in, in `placement`.
//!
//! Every save presents the driver's lease token, so a driver that lost its lease (another
//! coordinator took the order over) can change nothing; it stops and reports what is recorded.

use std::sync::Arc;
use std::time::Duration;

use messaging::{Backoff, Health, TimerWindow};
use protocol::ids::OrderId;
use service_kit::db::Transient;
use service_kit::fault;
use sqlx::PgPool;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span, warn};

use crate::machine::{self, Event, Order, OrderState, Writer};
use crate::participants::Participants;
use crate::repo::{self, LeaseToken, Orders, Recorded};

/// Tunables of the coordinator.
#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    /// Phase 1 must decide within this time, or the order is not placed (`timeout`).
    pub order_deadline: Duration,
    /// How long `POST /orders` waits for a final answer before answering `pending`.
    pub response_budget: Duration,
    /// How long a phase-2 or compensation request waits for its reply before it is sent again.
    pub reply_timeout: Duration,
    /// How long a driver's lease lasts beyond the point it was last renewed. After it, another
    /// coordinator may take the order over.
    pub lease: Duration,
    /// How long after the reservations expire phase 2 keeps asking before compensating.
    pub phase2_grace: Duration,
}

/// The coordinator, shared by the HTTP handlers, the timeout consumer and recovery.
pub struct Coordinator {
    /// The order database.
    pub(crate) orders: Orders,
    /// The store and delivery.
    pub(crate) participants: Arc<dyn Participants>,
    /// Tunables.
    pub(crate) settings: CoordinatorSettings,
    /// Deadline timers.
    pub(crate) deadlines: TimerWindow<OrderId>,
    /// Notified after each final save, for the outbox relay.
    pub(crate) events: Arc<Notify>,
    /// Where drivers run (drained at shutdown while the consumers still run).
    pub(crate) tracker: TaskTracker,
    /// Cancelled at shutdown: drivers stop waiting.
    pub(crate) shutdown: CancellationToken,
    /// Whether this process reaches the broker (its publishers and consumers report here). A
    /// driver that cannot talk to the participants hands its order over instead of keeping it.
    pub(crate) broker: Health,
    /// How many taken-over orders may be driven at once (`RECOVERY_CONCURRENCY`).
    pub(crate) recovery_slots: Arc<Semaphore>,
    /// Which new orders are taken on (orders in flight, per-customer rate).
    pub(crate) admission: crate::admission::Admission,
    /// Wakes the streams of `GET /orders/{id}/events` when an order's event goes by.
    pub(crate) live: crate::live::Live,
}

/// Why a driver stopped before the order was final.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Another driver holds the order now; this is how it is.
    Lost(Box<Order>),
    /// The database failed (after retries), or shutdown: the lease will expire and recovery will
    /// finish the order.
    Interrupted,
}

impl Coordinator {
    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        self.orders.pool()
    }

    /// What wakes the streams of live orders.
    pub fn live(&self) -> &crate::live::Live {
        &self.live
    }

    /// The settings.
    pub fn settings(&self) -> &CoordinatorSettings {
        &self.settings
    }

    /// Room for orders to take over now, reserved until dropped (at most `wanted`; `None` if
    /// there is none). Recovery claims no more orders than it has room for, so that a claimed
    /// order's lease does not run out while it waits for a driver.
    pub(crate) fn recovery_room(&self, wanted: usize) -> Option<(OwnedSemaphorePermit, usize)> {
        let room = self.recovery_slots.available_permits().min(wanted);
        let permits = u32::try_from(room).ok().filter(|n| *n > 0)?;
        let permit = Arc::clone(&self.recovery_slots)
            .try_acquire_many_owned(permits)
            .ok()?;
        Some((permit, room))
    }

    /// Records `event` as this driver: the transition that the machine computes from it is
    /// written (with its outbox event, and the lease it says), retrying database failures for a
    /// while. A lost lease stops the driver.
    pub(crate) async fn record(
        &self,
        order: &Order,
        event: Event,
        token: LeaseToken,
    ) -> Result<Order, Stop> {
        let recorded = machine::transition(order, Some(event), Writer::Driver, fault::now());
        let t = match recorded {
            Ok(t) => t,
            Err(err) => {
                warn!(error = %err, "illegal transition; leaving the order to recovery");
                return Err(Stop::Interrupted);
            }
        };
        let lease = self.settings.lease;
        let written = self
            .writing(t.after.state, || self.orders.record(&t, token, lease, None))
            .await?;
        match written {
            Ok(Recorded::Written(saved)) => {
                self.finished(order, &saved);
                Ok(saved)
            }
            Ok(Recorded::Changed(Some(current))) => Err(Stop::Lost(current)),
            Ok(Recorded::Changed(None) | Recorded::KeyTaken(_)) => Err(Stop::Interrupted),
            Err(err) => {
                warn!(error = %err, "database error; leaving the order to recovery");
                Err(Stop::Interrupted)
            }
        }
    }

    /// Runs `write`, a record of the order as `to`, trying it again while the database is
    /// unavailable for now (up to 10 attempts, with backoff). Returns its last result, or stops
    /// if shutdown cuts a pause short.
    pub(crate) async fn writing<T, E, F, Fut>(
        &self,
        to: OrderState,
        mut write: F,
    ) -> Result<Result<T, E>, Stop>
    where
        E: Transient + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        loop {
            match write().instrument(info_span!("save", to = %to)).await {
                Err(err) if err.is_transient() && backoff.attempts() < 10 => {
                    warn!(error = %err, %to, "database unavailable; retrying");
                    self.pause(backoff.next_delay()).await?;
                }
                other => return Ok(other),
            }
        }
    }

    /// What follows a record that made `before` into `saved`, if `saved` is final: the outcome
    /// is counted, and the outbox relay woken for its event.
    pub(crate) fn finished(&self, before: &Order, saved: &Order) {
        if !saved.state.is_final() {
            return;
        }
        metrics::counter!(
            crate::metrics::ORDERS,
            "outcome" => saved.state.as_str(),
            "reason" => saved.reason.map_or("", |r| r.as_str()),
        )
        .increment(1);
        if let (Some(finished), true) = (saved.finished_at, before.finished_at.is_none()) {
            let took = (finished - saved.created_at).to_std().unwrap_or_default();
            metrics::histogram!(crate::metrics::ORDER_DURATION).record(took.as_secs_f64());
        }
        fault::point("coordinator.after_final_state");
        self.events.notify_one();
    }

    /// Runs `work` while renewing the driver's lease in the background, so that a long phase 2
    /// (a participant that is down) keeps the order with its driver. Stops if the lease is lost
    /// or at shutdown. A driver whose process has not reached the broker for a whole lease stops
    /// too, and hands the order over at once: another coordinator may reach the participants,
    /// and renewing without progress would keep it from the order.
    pub(crate) async fn keeping_lease<T>(
        &self,
        order: &Order,
        token: LeaseToken,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Stop> {
        tokio::pin!(work);
        // The first renewal is a third of a lease from now. (Not `interval` and a first tick:
        // that tick waits for the timer wheel's next millisecond, on every phase-2 step.)
        let period = self.settings.lease / 3;
        let mut renew = tokio::time::interval_at(Instant::now() + period, period);
        let mut cut_off_since: Option<Instant> = None;
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = renew.tick() => {
                    if self.broker.all_up() {
                        cut_off_since = None;
                    } else if cut_off_since.get_or_insert_with(Instant::now).elapsed()
                        >= self.settings.lease
                    {
                        return Err(self.hand_over(order, token).await);
                    }
                    self.keep_lease(order, token).await?;
                }
                () = self.shutdown.cancelled() => return Err(Stop::Interrupted),
            }
        }
    }

    /// Ends this driver's lease now, so that a coordinator that reaches the broker takes the
    /// order over at its next sweep.
    async fn hand_over(&self, order: &Order, token: LeaseToken) -> Stop {
        warn!(
            lease = ?self.settings.lease,
            "the broker has been out of reach for a whole lease: handing the order over"
        );
        metrics::counter!(crate::metrics::ORDERS_HANDED_OVER).increment(1);
        if let Err(err) = repo::end_lease(self.orders.pool(), order.id, token).await {
            warn!(error = %err, "could not end the lease; it will run out");
        }
        Stop::Interrupted
    }

    /// Whether this process reaches the broker now (recovery claims nothing while it does not).
    pub(crate) fn reaches_broker(&self) -> bool {
        self.broker.all_up()
    }

    async fn keep_lease(&self, order: &Order, token: LeaseToken) -> Result<(), Stop> {
        match repo::renew_lease(self.orders.pool(), order.id, token, self.settings.lease).await {
            Ok(true) => Ok(()),
            Ok(false) => match repo::load(self.orders.pool(), order.id).await {
                Ok(Some(current)) => Err(Stop::Lost(Box::new(current))),
                _ => Err(Stop::Interrupted),
            },
            // Keep going: the next renewal may work, and the lease has some time left.
            Err(err) => {
                warn!(error = %err, "could not renew the lease");
                Ok(())
            }
        }
    }

    /// Sleeps, unless shutdown comes first.
    pub(crate) async fn pause(&self, duration: Duration) -> Result<(), Stop> {
        tokio::select! {
            () = tokio::time::sleep(duration) => Ok(()),
            () = self.shutdown.cancelled() => Err(Stop::Interrupted),
        }
    }
}
