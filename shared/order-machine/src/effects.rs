//! What recording an event comes with: the [`Transition`]. [`transition`] computes, in one
//! place, the order after the event and everything its record carries: the event published
//! with it, what happens to the driver's lease, and the deadline timer to set. The coordinator
//! writes a transition in one statement and does nothing else with it; the model of
//! `tools/model` writes the same transitions into its own order table.
//!
//! Which commands to send next is [`rules::next_step`](crate::rules::next_step) of the recorded
//! order.

use chrono::{DateTime, Utc};
use protocol::event::OrderEventKind;

use crate::{Event, IllegalTransition, Order, OrderState, apply};

/// Who records a transition: it decides the guard of the write and the lease that comes with
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Writer {
    /// The driver of a new order, recording it for the first time: at the end of its phase 1
    /// (presumed abort: nothing is recorded before), or as it is when phase 1 outlasts its
    /// request's budget. Guard: no order with this id, nor with its idempotency key.
    First,
    /// The driver that holds the order's lease. Guard: the lease, and the state and transaction
    /// the driver saw.
    Driver,
    /// A report of delivery's progress. Guard: the state and transaction it was computed from;
    /// whatever lease there is ends (a cancel under way learns the answer from the record).
    Report,
    /// The customer asking to cancel. Guard: the state and transaction it saw, and no lease
    /// held; takes a lease for the driver of the cancel.
    Customer,
}

/// What happens to the lease on the order when the transition is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lease {
    /// Held by the writer for at least a lease from now (never shortened): the order is still
    /// driven.
    Hold,
    /// Taken by the writer: a driver starts (the customer's cancel).
    Take,
    /// Ended: nobody drives the order any more.
    End,
}

/// An event recorded: the order before and after it, and what the record carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Who records it.
    pub writer: Writer,
    /// The order as the writer saw it (the write's guard).
    pub before: Order,
    /// The order to record.
    pub after: Order,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The order event written with the record (to the outbox, in the same statement).
    pub publish: Option<OrderEventKind>,
    /// The lease after the record.
    pub lease: Lease,
    /// The deadline timer to set once recorded: at this time, the order is looked at again
    /// (taken over if its driver is gone). Set by the first record of an order still driven;
    /// later records keep it.
    pub timer: Option<DateTime<Utc>>,
}

/// The transition that recording `event` (which happened `at`) makes of `order`, for `writer`;
/// `None` records the order as it is (only a first record does that: a phase 1 that outlasts
/// its request's budget). Or why the event cannot happen to the order.
pub fn transition(
    order: &Order,
    event: Option<Event>,
    writer: Writer,
    at: DateTime<Utc>,
) -> Result<Transition, IllegalTransition> {
    let after = match event {
        Some(event) => apply(order, event, at)?,
        None => order.clone(),
    };
    let first = writer == Writer::First;
    let publish = if first || after.state != order.state {
        event_of(after.state)
    } else {
        None
    };
    let driven = !after.state.is_final();
    let lease = match (writer, driven) {
        (_, false) | (Writer::Report, true) => Lease::End,
        (Writer::Customer, true) => Lease::Take,
        (Writer::First | Writer::Driver, true) => Lease::Hold,
    };
    let timer = (first && driven).then_some(after.deadline);
    Ok(Transition {
        writer,
        before: order.clone(),
        after,
        at,
        publish,
        lease,
        timer,
    })
}

/// The event that an order publishes on reaching `state`; none for the driven states.
pub fn event_of(state: OrderState) -> Option<OrderEventKind> {
    match state {
        OrderState::Placed => Some(OrderEventKind::Placed),
        OrderState::NotPlaced => Some(OrderEventKind::NotPlaced),
        OrderState::PickedUp => Some(OrderEventKind::PickedUp),
        OrderState::Delivered => Some(OrderEventKind::Delivered),
        OrderState::Cancelled => Some(OrderEventKind::Cancelled),
        OrderState::Reserving
        | OrderState::Assigning
        | OrderState::Compensating
        | OrderState::Cancelling => None,
    }
}

/// The events an order in `state` has published, in order, if every transition that led there
/// published its own: what the outbox holds for it. An order's record and its events agree
/// when they are these.
pub fn events_until(state: OrderState) -> &'static [OrderEventKind] {
    use OrderEventKind as K;
    match state {
        OrderState::Reserving | OrderState::Assigning | OrderState::Compensating => &[],
        OrderState::NotPlaced => &[K::NotPlaced],
        OrderState::Placed | OrderState::Cancelling => &[K::Placed],
        OrderState::PickedUp => &[K::Placed, K::PickedUp],
        OrderState::Delivered => &[K::Placed, K::PickedUp, K::Delivered],
        OrderState::Cancelled => &[K::Placed, K::Cancelled],
    }
}
