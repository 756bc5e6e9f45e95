//! The driver: carries out what the machine decides, step by step, until the order is final.
//!
//! Each turn asks `machine::rules::next_step` what to do with the order as it stands, does it
//! (sends commands, waits for answers), asks the rule of that phase what the answers come to,
//! and records the resulting event (the machine's transition, written by
//! `repo::Orders::record`). New orders, take-overs after a crash and fired timers all go through
//! this loop, run by a [`Driver`]: what one order's driver holds besides the order (its lease
//! token, how it came to drive, its phase 1); only [`Driving`] differs.
//!
//! - **Phase 1** asks the store and delivery to reserve at once. Both held: the commit decision
//!   is recorded (`assigning`) before any assign is sent. A final refusal: whatever may be held
//!   is released, then `not_placed`. Items only held by other unfinished transactions: release,
//!   back off with jitter, and try again with a new transaction until the order's deadline.
//!   Releasing before retrying means two orders never wait on each other. A new order is not
//!   recorded during its phase 1 (presumed abort): its outcome, the decision or `not_placed`, is
//!   its first record (`placement::record_first`), unless phase 1 outlasts its request's budget.
//! - **Phase 2** asks both to assign, asking sides that did not answer again until the
//!   reservations' expiry plus a grace. Both assigned: `placed`. Otherwise: `compensating`.
//! - **Compensation** releases both sides (a release undoes an assignment) until both confirm,
//!   then `not_placed`.
//! - **Cancellation** (of a placed order) asks delivery to cancel: refused if the agent has
//!   picked the order up (`picked_up`), else the agent is free and the store is asked to return
//!   the packets, then `cancelled`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use messaging::Backoff;
use protocol::command::{CancelReply, ReleaseReason};
use protocol::ids::{AgentId, PacketId, TxnId};
use protocol::sides::Sides;
use protocol::topology::Participant;
use service_kit::fault;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::coordinator::{Coordinator, Stop};
use crate::machine::rules::{self, AfterReserve, CancelAnswer, Driving, Reservation, Step};
use crate::machine::{self, Event, NotPlacedReason, Order};
use crate::participants::order_span;
use crate::phase1::Phase1;
use crate::repo::LeaseToken;

impl Coordinator {
    /// Drives an order taken over from another driver (by a fired timer or the sweep), in the
    /// background, holding one slot of recovery room until it stops.
    pub fn resume(self: &Arc<Self>, order: Order, token: LeaseToken, slot: OwnedSemaphorePermit) {
        // Runs to its end on its own; nobody waits for it.
        drop(self.drive_taken(order, token, Driving::TakenOver, slot));
    }

    /// Drives an order whose lease was just taken (`token`), as `driving` says, on a recovery
    /// slot; the handle gives the order as it ends up.
    pub(crate) fn drive_taken(
        self: &Arc<Self>,
        order: Order,
        token: LeaseToken,
        driving: Driving,
        slot: OwnedSemaphorePermit,
    ) -> tokio::task::JoinHandle<Order> {
        let span = order_span(&order);
        let this = Arc::clone(self);
        self.tracker.spawn(
            async move {
                info!(state = %order.state, attempt = order.attempt, ?driving, "taking the order over");
                // A taken-over order runs no phase 1, so it has no phase-1 deadline of its own.
                let order = this
                    .drive(order, token, driving, Phase1::until(Instant::now()), None)
                    .await;
                drop(slot);
                order
            }
            .instrument(span),
        )
    }

    /// Moves `order` on until it is final, another driver takes it, or a wait is cut short by
    /// shutdown (an order being driven when the signal comes is finished if its replies come;
    /// only waits stop). Phase 1, if it runs, ends at `phase1.ends`. Each recorded state is sent
    /// to `progress`.
    pub(crate) async fn drive(
        &self,
        order: Order,
        token: LeaseToken,
        driving: Driving,
        phase1: Phase1,
        progress: Option<watch::Sender<Order>>,
    ) -> Order {
        metrics::gauge!(crate::metrics::ORDERS_IN_FLIGHT).increment(1.0);
        let driver = Driver {
            coordinator: self,
            token,
            driving,
            phase1,
            progress,
        };
        let order = driver.run(order).await;
        metrics::gauge!(crate::metrics::ORDERS_IN_FLIGHT).decrement(1.0);
        order
    }
}

/// One order's driver: the coordinator it works for, and what it holds besides the order
/// itself: its lease token (presented with every record), how it came to drive the order, the
/// order's phase 1 (its end, and for a new order the request that waits), and where each
/// recorded state goes.
pub(crate) struct Driver<'c> {
    coordinator: &'c Coordinator,
    token: LeaseToken,
    driving: Driving,
    phase1: Phase1,
    progress: Option<watch::Sender<Order>>,
}

impl Driver<'_> {
    /// The loop: what the machine says to do next, done, until the order is final or the driver
    /// must stop.
    async fn run(mut self, mut order: Order) -> Order {
        let c = self.coordinator;
        if self.driving == Driving::TakenOver && c.shutdown.is_cancelled() {
            // Stopping: leave it to the next coordinator rather than start now.
            return order;
        }
        loop {
            let phase_started = Instant::now();
            let phase = order.state;
            let step = match rules::next_step(&order, self.driving) {
                Step::Done => return order,
                Step::Inconsistent => {
                    warn!(state = %order.state, "decided order without its items; leaving it to the audit");
                    return order;
                }
                Step::Reserve => self.reserve(&order).await,
                Step::Abort { reason, release } => self.abort(&order, release, reason).await,
                Step::Assign {
                    packets,
                    agent,
                    until,
                } => self.assign(&order, &packets, agent, until).await,
                Step::Compensate => self.compensate(&order).await,
                Step::Cancel => self.cancel(&order).await,
            };
            metrics::histogram!(crate::metrics::ORDER_PHASE_SECONDS, "phase" => phase.as_str())
                .record(phase_started.elapsed().as_secs_f64());
            match step {
                Ok(next) => {
                    if next.state.is_final() {
                        info!(
                            state = %next.state,
                            reason = next.reason.map_or("", |r| r.as_str()),
                            "order finished"
                        );
                    }
                    order = next;
                    if let Some(progress) = &self.progress {
                        progress.send_replace(order.clone());
                    }
                }
                Err(Stop::Lost(current)) => {
                    debug!(state = %current.state, "another driver has the order");
                    return *current;
                }
                Err(Stop::Interrupted) => return order,
            }
        }
    }

    /// Records `event` as this driver (a save under its lease).
    async fn record(&self, order: &Order, event: Event) -> Result<Order, Stop> {
        self.coordinator.record(order, event, self.token).await
    }

    /// Phase 1, with its retries, until the commit decision or an abort is recorded. It ends at
    /// `phase1.ends`, on the monotonic clock: the wall clocks of this process and of the
    /// database may differ. A new order is recorded at its end (presumed abort), or when its
    /// request's budget is about to run out.
    async fn reserve(&mut self, order: &Order) -> Result<Order, Stop> {
        let c = self.coordinator;
        let mut order = order.clone();
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(250));
        let ends = self.phase1.ends;
        let time_until_end = || ends.saturating_duration_since(Instant::now());
        loop {
            let left = time_until_end();
            let answers = if left.is_zero() {
                Sides::both(Reservation::NoAnswer)
            } else {
                let reserve = c.participants.reserve(&order, left);
                let (answers, recorded) = self.in_phase1(&order, reserve).await?;
                order = recorded.unwrap_or(order);
                answers
            };
            let time_left = !time_until_end().is_zero();
            let wanted = order.packets_wanted();
            let outcome =
                rules::after_reserve(&answers, wanted, time_left, c.settings.phase2_grace);
            match outcome {
                AfterReserve::Commit(_) if self.phase1.unwanted() => {
                    info!("its request gave up, and nobody can ask for it again: not placed");
                    return self
                        .abort(&order, Sides::both(true), NotPlacedReason::Timeout)
                        .await;
                }
                AfterReserve::Commit(decided) => {
                    fault::point("coordinator.before_commit_decision");
                    let order = self.record_phase1(&order, decided).await?;
                    info!(
                        packet_ids = ?order.packet_ids,
                        agent_id = ?order.agent_id,
                        reserved_until = ?order.reserved_until,
                        "both reserved: commit decided"
                    );
                    fault::point("coordinator.after_commit_decision");
                    return Ok(order);
                }
                AfterReserve::Abort { reason, release } => {
                    return self.abort(&order, release, reason).await;
                }
                AfterReserve::Retry { release } => {
                    metrics::counter!(crate::metrics::ORDER_RETRIES, "phase" => "reserve")
                        .increment(1);
                    debug!(attempt = order.attempt, store = ?answers.store, delivery = ?answers.delivery, "held by others for now; retrying");
                    let released =
                        c.participants
                            .release_now(&order, release, ReleaseReason::Retry);
                    // Reservations in the way whose orders can never be placed are released too.
                    let orphans = c.release_orphans(&answers);
                    let pause = backoff.next_delay().min(time_until_end());
                    let released_and_paused = async {
                        tokio::join!(released, orphans);
                        c.pause(pause).await
                    };
                    let (paused, recorded) = self.in_phase1(&order, released_and_paused).await?;
                    paused?;
                    order = recorded.unwrap_or(order);
                    let retried = Event::Retried { txn: TxnId::new() };
                    order = match self.phase1.unrecorded {
                        // Not recorded yet: the first record says which attempt it ended with.
                        Some(_) => machine::apply(&order, retried, fault::now())
                            .map_err(|_| Stop::Interrupted)?,
                        None => self.record(&order, retried).await?,
                    };
                }
            }
        }
    }

    /// Runs `work`, a step of phase 1. If the order is not recorded yet and its request's budget
    /// is about to run out first, records the order as it is (`reserving`), so that the request
    /// can answer `202 pending`; then `work` goes on. Returns what `work` did, and the order as
    /// recorded if it was recorded meanwhile.
    async fn in_phase1<T>(
        &mut self,
        order: &Order,
        work: impl std::future::Future<Output = T>,
    ) -> Result<(T, Option<Order>), Stop> {
        let Some(record_by) = self.phase1.unrecorded.as_ref().map(|u| u.record_by) else {
            return Ok((work.await, None));
        };
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => return Ok((out, None)),
            () = tokio::time::sleep_until(record_by) => {}
        }
        debug!("phase 1 outlasts the response budget: recording the order now");
        let recorded = self.record_first(order, None).await?;
        Ok((work.await, Some(recorded)))
    }

    /// The first record of a new order: the end of its phase 1 (`event`), or the order as it is.
    async fn record_first(&mut self, order: &Order, event: Option<Event>) -> Result<Order, Stop> {
        let progress = self.progress.as_ref();
        self.coordinator
            .record_first(order, event, self.token, &mut self.phase1, progress)
            .await
    }

    /// Records the outcome of phase 1: the first record of a new order, or a save.
    async fn record_phase1(&mut self, order: &Order, event: Event) -> Result<Order, Stop> {
        match self.phase1.unrecorded {
            Some(_) => self.record_first(order, Some(event)).await,
            None => self.record(order, event).await,
        }
    }

    /// Releases the sides that may hold something (the release is durable in the participant's
    /// queue once confirmed; its reply is not awaited), then records `not_placed`. Releasing
    /// first means a crash in between leaves an order that recovery aborts again. A release that
    /// the broker does not take (it is down) is sent again in the background until it does.
    async fn abort(
        &mut self,
        order: &Order,
        release: Sides<bool>,
        reason: NotPlacedReason,
    ) -> Result<Order, Stop> {
        let c = self.coordinator;
        let aborted = Event::Aborted { reason };
        if self.phase1.unrecorded.is_some() {
            // Nobody else can have it: no lease to keep.
            c.participants
                .release_now(order, release, ReleaseReason::Abort)
                .await;
            return self.record_phase1(order, aborted).await;
        }
        // Keeps its lease meanwhile: under a herd of take-overs the releases and the save can
        // take longer than a lease.
        c.keeping_lease(order, self.token, async {
            c.participants
                .release_now(order, release, ReleaseReason::Abort)
                .await;
            self.record(order, aborted).await
        })
        .await?
    }

    /// Phase 2.
    async fn assign(
        &self,
        order: &Order,
        packets: &[PacketId],
        agent: AgentId,
        until: DateTime<Utc>,
    ) -> Result<Order, Stop> {
        let c = self.coordinator;
        // After the reservations expire an assign can only be refused, so stop asking a little
        // after that: a side that never answered is then compensated like a refusal. `until`
        // comes from the participants' clocks; the floor below keeps a coordinator whose own
        // clock runs ahead asking long enough to be answered.
        // A driver that takes the order over late (all coordinators were down) still asks for a
        // few reply timeouts: the assigns may have been applied, and their recorded replies say
        // so.
        let give_up_at = deadline_at(until).max(Instant::now() + c.settings.reply_timeout * 3);
        let assigned = c.participants.assign(order, packets, agent, give_up_at);
        let answers = c.keeping_lease(order, self.token, assigned).await?;
        let event = rules::after_assign(&answers);
        if let Event::AssignFailed { side, failure } = &event {
            warn!(%side, ?failure, store = ?answers.store, delivery = ?answers.delivery, "assign failed: compensating");
        }
        self.record(order, event).await
    }

    /// Releases both sides (undoing any assignment) until both confirm, then `not_placed`.
    async fn compensate(&self, order: &Order) -> Result<Order, Stop> {
        let c = self.coordinator;
        // No deadline: "not placed" may only be said once nothing is assigned to the order.
        let forever = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let released = c.participants.release(order, forever);
        let released = c.keeping_lease(order, self.token, released).await?;
        // A coordinator that dies here leaves both sides released and the order `compensating`
        // (tests only): whoever drives it next releases again, answered from the barriers.
        fault::point("coordinator.compensated_before_record");
        match rules::after_release(&released) {
            Some(compensated) => self.record(order, compensated).await,
            None => Err(Stop::Interrupted),
        }
    }

    /// Cancellation: delivery first, since only it knows whether the agent has picked the order
    /// up (its answer decides); if it freed the agent, the store returns the packets. Each is
    /// asked until it answers: the same command every time, applied once.
    async fn cancel(&self, order: &Order) -> Result<Order, Stop> {
        let c = self.coordinator;
        let forever = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let event = c
            .keeping_lease(order, self.token, async {
                let delivery = match c
                    .participants
                    .cancel(Participant::Delivery, order, forever)
                    .await
                {
                    Some(CancelReply::Cancelled { .. }) => CancelAnswer::Cancelled,
                    Some(CancelReply::Refused { reason }) => {
                        info!(?reason, "cancel refused: the agent has the order");
                        CancelAnswer::PickedUp
                    }
                    None => return None,
                };
                if let Some(refused) = rules::after_cancel(delivery, false) {
                    return Some(refused);
                }
                fault::point("coordinator.cancel_after_delivery");
                match c
                    .participants
                    .cancel(Participant::Store, order, forever)
                    .await
                {
                    Some(CancelReply::Cancelled { items }) => {
                        debug!(?items, "packets back in stock");
                    }
                    Some(CancelReply::Refused { reason }) => {
                        warn!(?reason, "the store holds none of the order's packets");
                    }
                    None => return None,
                }
                rules::after_cancel(delivery, true)
            })
            .await?;
        match event {
            Some(event) => self.record(order, event).await,
            None => Err(Stop::Interrupted),
        }
    }
}

/// The monotonic instant of a wall-clock time (now if it has passed), by this process's clock.
fn deadline_at(instant: DateTime<Utc>) -> Instant {
    Instant::now() + (instant - fault::now()).to_std().unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
