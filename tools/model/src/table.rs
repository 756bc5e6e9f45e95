//! The order table of the model: [`write`] records a [`Transition`] the order machine computed,
//! under the guard of its writer, as `services/order`'s `repo::Orders::record` does, and keeps
//! the events it publishes (the outbox). The outbox relay is a message: the `order.placed` event
//! travels to delivery like any other.

use order_machine::{Lease, Transition, Writer};
use protocol::event::OrderEventKind;

use crate::state::{Msg, Record, State};

/// Writes transition `t` of order `o` for the writer with lease token `token`, if its guard
/// holds:
/// - a first record: the order is not recorded yet (no row with its id or idempotency key);
/// - a driver: the order is as it saw it (state and transaction) and the lease is its own;
/// - a report: the order is as it saw it;
/// - a customer: the order is as it saw it, and nobody holds its lease.
///
/// Returns whether it was written.
pub(crate) fn write(state: &mut State, o: usize, t: &Transition, token: u8) -> bool {
    let slot = &mut state.orders[o];
    let as_seen = |record: &Record| {
        record.order.state == t.before.state && record.order.txn_id == t.before.txn_id
    };
    let allowed = match (&slot.record, t.writer) {
        (None, Writer::First) => true,
        (None, _) | (Some(_), Writer::First) => false,
        (Some(record), Writer::Driver) => as_seen(record) && record.lease == Some(token),
        (Some(record), Writer::Report) => as_seen(record),
        (Some(record), Writer::Customer) => as_seen(record) && record.lease.is_none(),
    };
    if !allowed {
        return false;
    }
    let mut events = slot
        .record
        .take()
        .map(|record| record.events)
        .unwrap_or_default();
    events.extend(t.publish);
    slot.record = Some(Record {
        order: t.after.clone(),
        lease: match t.lease {
            Lease::Hold | Lease::Take => Some(token),
            Lease::End => None,
        },
        events,
    });
    if t.publish == Some(OrderEventKind::Placed) {
        // The record's transaction writes the `order.placed` event to the outbox; the relay
        // publishes it, and delivery consumes it.
        state.send(Msg::Placed { order: o });
    }
    true
}
