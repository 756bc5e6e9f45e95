//! The promise in the model's words.
//!
//! Safety, in every reachable state (`always`):
//! - a placed order holds every packet of its lines and its agent (until the agent delivers it);
//! - nothing is assigned to an order that is not placed (not recorded, refused or cancelled);
//! - no order is refused, cancelled or undecided while its rider has it;
//! - every final answer a customer was given is the order's recorded end;
//! - every order's events (its outbox) are the steps of its recorded life, each once, in order;
//! - an order is refused for a shortage only when its items are truly short. (A `timeout`
//!   refusal is bounded by phase 1's deadline, which the model lets pass at any moment.);
//! - a replayed idempotency key whose order is recorded holds nothing.
//!
//! Liveness, once the faults (which are bounded) are spent (`eventually`, checked on every path
//! to a state where nothing more can happen): every order ends, and nothing stays reserved.
//!
//! Reachability (`sometimes`), so that a model that cannot place, refuse, deliver or cancel does
//! not pass for want of trying.

use order_machine::OrderState;
use order_machine::effects::events_until;
use participant_machine::ItemState;
use protocol::ids::{AgentId, ItemId, OrderId};
use stateright::Property;

use crate::OrderModel;
use crate::state::{Answer, Client, State, order_id};

/// Names of the properties, for tests that look for one.
pub mod names {
    /// A placed order holds every packet of its lines and its agent.
    pub const PLACED_HOLDS: &str = "a placed order holds every packet and its agent";
    /// Nothing is assigned to an order that is not placed.
    pub const NOTHING_FOR_UNPLACED: &str = "nothing is assigned to an order that is not placed";
    /// No order is refused, cancelled or undecided while its rider has it.
    pub const RIDER_HAS_PLACED: &str = "a rider only ever has a placed order";
    /// Every final answer is the order's recorded end.
    pub const ANSWERS_AGREE: &str = "every answer is the order's recorded end";
    /// Every order's events are the steps of its recorded life.
    pub const EVENTS_AGREE: &str = "every order's events are the steps of its recorded life";
    /// An order is refused for a shortage only when its items are truly short.
    pub const SHORT_WHEN_REFUSED: &str = "an order is refused for a shortage only when truly short";
    /// A replay of a recorded order sends no reserve.
    pub const REPLAY_HOLDS_NOTHING: &str = "a replayed idempotency key holds nothing";
    /// Every order ends and nothing stays reserved.
    pub const EVERY_ORDER_ENDS: &str = "every order ends and nothing stays reserved";
}

/// Every property of the model.
pub fn all() -> Vec<Property<OrderModel>> {
    vec![
        Property::always(names::PLACED_HOLDS, |_, s| {
            placed_orders_hold_their_items(s)
        }),
        Property::always(names::NOTHING_FOR_UNPLACED, |_, s| {
            nothing_assigned_to_unplaced(s)
        }),
        Property::always(names::RIDER_HAS_PLACED, |_, s| riders_have_placed_orders(s)),
        Property::always(names::ANSWERS_AGREE, |_, s| answers_agree(s)),
        Property::always(names::EVENTS_AGREE, |_, s| events_agree(s)),
        Property::always(names::SHORT_WHEN_REFUSED, |_, s| refused_only_when_short(s)),
        Property::always(names::REPLAY_HOLDS_NOTHING, |_, s| replays_hold_nothing(s)),
        Property::eventually(names::EVERY_ORDER_ENDS, |_, s| every_order_ended(s)),
        Property::sometimes("an order is placed", |_, s| {
            any_recorded(s, OrderState::Placed)
        }),
        Property::sometimes("an order is refused", |_, s| {
            any_recorded(s, OrderState::NotPlaced)
        }),
        Property::sometimes("an order is delivered, if riders ride", |m, s| {
            !m.config.riders || any_recorded(s, OrderState::Delivered)
        }),
        Property::sometimes("an order is cancelled, if customers cancel", |m, s| {
            !m.config.cancels || any_recorded(s, OrderState::Cancelled)
        }),
    ]
}

/// The recorded state of `order`, if it is recorded.
fn recorded(s: &State, order: OrderId) -> Option<OrderState> {
    let slot = s.slot_of(order)?;
    s.orders[slot].record.as_ref().map(|r| r.order.state)
}

fn any_recorded(s: &State, state: OrderState) -> bool {
    s.orders
        .iter()
        .any(|slot| slot.record.as_ref().is_some_and(|r| r.order.state == state))
}

/// A placed order holds every packet of its lines and its agent; after the pick-up, its packets.
pub fn placed_orders_hold_their_items(s: &State) -> bool {
    s.orders.iter().enumerate().all(|(o, slot)| {
        let Some(record) = &slot.record else {
            return true;
        };
        let id = order_id(o);
        let packets_held = || {
            record.order.packet_ids.iter().all(|p| {
                matches!(s.store.state(ItemId(p.0)),
                    Some(ItemState::Assigned { order, .. }) if order == id)
            })
        };
        // The agent is the order's until it has delivered it (a report may lag behind).
        let agent_held = |agent: Option<AgentId>| {
            s.delivery.was_delivered(id)
                || agent.is_some_and(|a| {
                    matches!(s.delivery.state(ItemId(a.0)),
                    Some(ItemState::Assigned { order, .. } | ItemState::Delivering { order, .. })
                        if order == id)
                })
        };
        match record.order.state {
            OrderState::Placed => packets_held() && agent_held(record.order.agent_id),
            OrderState::PickedUp | OrderState::Delivered => packets_held(),
            _ => true,
        }
    })
}

/// Whatever is assigned (or out with a rider) belongs to an order that is decided and not
/// refused or cancelled.
pub fn nothing_assigned_to_unplaced(s: &State) -> bool {
    [&s.store, &s.delivery].into_iter().all(|items| {
        items.items().all(|(_, item)| match item {
            ItemState::Assigned { order, .. } | ItemState::Delivering { order, .. } => !matches!(
                recorded(s, order),
                None | Some(OrderState::Reserving | OrderState::NotPlaced | OrderState::Cancelled)
            ),
            ItemState::Available | ItemState::Reserved { .. } => true,
        })
    })
}

/// An agent out with an order: the order is placed (or picked up, or being cancelled, which
/// the pick-up wins).
pub fn riders_have_placed_orders(s: &State) -> bool {
    s.delivery.items().all(|(_, item)| match item {
        ItemState::Delivering { order, .. } => matches!(
            recorded(s, order),
            Some(OrderState::Placed | OrderState::PickedUp | OrderState::Cancelling)
        ),
        _ => true,
    })
}

/// A customer told `placed` has an order that was placed (whatever happened after); one told
/// `not placed` has an order recorded so, for the same reason.
pub fn answers_agree(s: &State) -> bool {
    s.orders.iter().all(|slot| {
        let record = slot
            .record
            .as_ref()
            .map(|r| (r.order.state, r.order.reason));
        match slot.client {
            Client::Answered(Answer::Placed) => matches!(
                record,
                Some((
                    OrderState::Placed
                        | OrderState::PickedUp
                        | OrderState::Delivered
                        | OrderState::Cancelling
                        | OrderState::Cancelled,
                    _
                ))
            ),
            Client::Answered(Answer::NotPlaced(reason)) => {
                record == Some((OrderState::NotPlaced, Some(reason)))
            }
            Client::Idle | Client::Waiting | Client::Unanswered => true,
        }
    })
}

/// The events written with an order's transitions are those of the states it went through:
/// `placed`, `picked_up`, `delivered` for a delivered order, `not_placed` alone for a refused
/// one, nothing yet for one being placed; none twice, none missing, none out of order.
pub fn events_agree(s: &State) -> bool {
    s.orders.iter().all(|slot| {
        slot.record
            .as_ref()
            .is_none_or(|r| r.events.as_slice() == events_until(r.order.state))
    })
}

/// No participant refused a reserve for a shortage while enough of its items could be had.
pub fn refused_only_when_short(s: &State) -> bool {
    s.orders.iter().all(|slot| !slot.refused_while_free)
}

/// No replay of an order already recorded has sent a reserve.
pub fn replays_hold_nothing(s: &State) -> bool {
    s.orders.iter().all(|slot| !slot.replay_reserved)
}

/// Every order was sent and has ended (final, or never recorded), no driver is left, and
/// nothing is reserved.
pub fn every_order_ended(s: &State) -> bool {
    let ended = s.orders.iter().all(|slot| {
        slot.client != Client::Idle
            && slot.drivers.is_empty()
            && slot
                .record
                .as_ref()
                .is_none_or(|r| r.order.state.is_final())
    });
    let reserved = [&s.store, &s.delivery].into_iter().any(|items| {
        items
            .items()
            .any(|(_, item)| matches!(item, ItemState::Reserved { .. }))
    });
    ended && !reserved
}
