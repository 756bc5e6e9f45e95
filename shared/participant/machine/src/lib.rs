//! The life of a participant's items as a value: what the SQL of [`barrier`](crate::barrier) and
//! [`inventory`](crate::inventory) does to the items table and the barrier table, one command at
//! a time, without a database or a clock. The model checker (`tools/model`) runs the protocol on
//! it, and the property test of this crate drives random commands through it and through the real
//! statements and compares the two.
//!
//! ```text
//!             reserve                 assign          pick-up, once placed (delivery)
//! available ───────────> reserved ──────────> assigned ─────────────────────> delivering
//!    ^  ^                  │  │                 │  │                              │
//!    │  └──release, expiry─┘  │                 │  └─cancel (not once picked up)  │
//!    │                        └─compensate──────┴──compensate                     │
//!    └─────────────────────────────────────────────────────────────delivered──────┘
//! ```
//!
//! The rules, each kept by the statements:
//! - **Barrier.** Each (transaction, [`Operation`]) is applied at most once; a repeat gets the
//!   recorded reply and changes nothing.
//! - **Empty rollback and anti-hanging.** A release records refusals for the reserve and the
//!   assign of its transaction first: a reserve that arrives after its release holds nothing
//!   (`aborted`), and an assign after it is refused (`released`).
//! - **What a release may undo.** A release for a retry or an abort frees only what is
//!   *reserved*: an abort never undoes an assignment (a recovered driver may have assigned the
//!   transaction's items after the abort was sent). Only compensation, which the coordinator
//!   sends after a recorded failure of phase 2, frees what is assigned. Neither frees what a rider
//!   holds (`delivering`).
//! - **Expiry.** A reservation past its expiry can be taken by another reserve and can no longer
//!   be assigned; the sweep (or its timer) frees it.
//! - **Cancel** frees what the transaction was assigned, all or nothing, and is refused once any
//!   of it is out with a rider.
//! - **Pick-up only once placed.** Delivery takes a rider's pick-up only for an order whose
//!   `order.placed` event it has consumed, and only while the agent is still assigned to it: an
//!   agent assigned while the store's assign is under way (or failing) cannot leave with it.

use std::collections::{BTreeMap, BTreeSet};

use protocol::command::{AssignRefusal, CancelRefusal, ReleaseReason, Shortage};
use protocol::ids::{ItemId, OrderId, TxnId};

/// Where an item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemState {
    /// Free for any reserve.
    Available,
    /// Held for a transaction until its expiry.
    Reserved {
        /// The transaction.
        txn: TxnId,
        /// Its order.
        order: OrderId,
        /// Whether the expiry has passed (the item may then go to another reserve).
        expired: bool,
    },
    /// Given to the order.
    Assigned {
        /// The transaction.
        txn: TxnId,
        /// Its order.
        order: OrderId,
    },
    /// Out with the rider (delivery's agents only).
    Delivering {
        /// The transaction.
        txn: TxnId,
        /// Its order.
        order: OrderId,
    },
}

impl ItemState {
    /// The transaction that holds the item, if any.
    pub fn txn(self) -> Option<TxnId> {
        match self {
            ItemState::Available => None,
            ItemState::Reserved { txn, .. }
            | ItemState::Assigned { txn, .. }
            | ItemState::Delivering { txn, .. } => Some(txn),
        }
    }

    /// The order that holds the item, if any.
    pub fn order(self) -> Option<OrderId> {
        match self {
            ItemState::Available => None,
            ItemState::Reserved { order, .. }
            | ItemState::Assigned { order, .. }
            | ItemState::Delivering { order, .. } => Some(order),
        }
    }
}

/// The barrier's operations: a command of a transaction is applied once per operation.
/// Compensation has a row of its own, apart from the release of a retry or an abort, since it
/// may come after one of those and must still undo the assignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Reserve.
    Reserve,
    /// Assign.
    Assign,
    /// Release for a retry or an abort.
    Release,
    /// Release after a failed phase 2.
    Compensate,
    /// Cancel the assignment of a placed order.
    Cancel,
}

impl Operation {
    /// The barrier row a release for `reason` claims.
    pub fn of_release(reason: ReleaseReason) -> Self {
        match reason {
            ReleaseReason::Retry | ReleaseReason::Abort => Operation::Release,
            ReleaseReason::Compensate => Operation::Compensate,
        }
    }

    /// As the barrier table spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Reserve => "reserve",
            Operation::Assign => "assign",
            Operation::Release => "release",
            Operation::Compensate => "compensate",
            Operation::Cancel => "cancel",
        }
    }
}

/// A recorded reply: what a command came to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Reserved these items.
    Reserved(Vec<ItemId>),
    /// Every item that would do is held by other unfinished transactions for now.
    Busy,
    /// Too few items, held or free.
    Unavailable(Shortage),
    /// The transaction was released before its reserve arrived.
    Aborted,
    /// Assigned these items.
    Assigned(Vec<ItemId>),
    /// The assign was refused.
    AssignRefused(AssignRefusal),
    /// Freed these items.
    Released(Vec<ItemId>),
    /// Freed these assigned items.
    Cancelled(Vec<ItemId>),
    /// The cancel was refused.
    CancelRefused(CancelRefusal),
}

/// A command of the coordinator's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    /// Reserve `wanted` items for the transaction, all or nothing.
    Reserve {
        /// The transaction.
        txn: TxnId,
        /// Its order.
        order: OrderId,
        /// How many items.
        wanted: usize,
    },
    /// Assign these reserved items to the order.
    Assign {
        /// The transaction.
        txn: TxnId,
        /// Its order.
        order: OrderId,
        /// The items the reserve gave.
        items: Vec<ItemId>,
    },
    /// Release the transaction.
    Release {
        /// The transaction.
        txn: TxnId,
        /// Why.
        reason: ReleaseReason,
    },
    /// Cancel the transaction's assignment.
    Cancel {
        /// The transaction.
        txn: TxnId,
    },
}

impl Command {
    /// The transaction the command is for.
    pub fn txn(&self) -> TxnId {
        match self {
            Command::Reserve { txn, .. }
            | Command::Assign { txn, .. }
            | Command::Release { txn, .. }
            | Command::Cancel { txn } => *txn,
        }
    }

    /// The barrier row it claims.
    pub fn operation(&self) -> Operation {
        match self {
            Command::Reserve { .. } => Operation::Reserve,
            Command::Assign { .. } => Operation::Assign,
            Command::Release { reason, .. } => Operation::of_release(*reason),
            Command::Cancel { .. } => Operation::Cancel,
        }
    }
}

/// Why a pick-up was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotPickedUp {
    /// No item is assigned to the order (never, or no longer).
    NotAssigned,
    /// An item is assigned to it, but the order is not known to be placed yet.
    NotPlacedYet,
}

/// A participant's items and its barrier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Items {
    items: BTreeMap<ItemId, ItemState>,
    barrier: BTreeMap<(TxnId, Operation), Outcome>,
    /// The orders delivered (delivery's `deliveries`).
    delivered: BTreeSet<OrderId>,
    /// The orders whose placement was seen while an item was theirs (delivery's
    /// `agents.placed_order_id`, which only counts while it equals the agent's `order_id`).
    placed: BTreeSet<OrderId>,
}

impl Items {
    /// `count` available items, numbered from 1.
    pub fn new(count: i64) -> Self {
        Self {
            items: (1..=count)
                .map(|id| (ItemId(id), ItemState::Available))
                .collect(),
            barrier: BTreeMap::new(),
            delivered: BTreeSet::new(),
            placed: BTreeSet::new(),
        }
    }

    /// The items and their states.
    pub fn items(&self) -> impl Iterator<Item = (ItemId, ItemState)> + '_ {
        self.items.iter().map(|(id, state)| (*id, *state))
    }

    /// The state of `item`, if it exists.
    pub fn state(&self, item: ItemId) -> Option<ItemState> {
        self.items.get(&item).copied()
    }

    /// The reply recorded for (`txn`, `operation`), if the command was applied.
    pub fn recorded(&self, txn: TxnId, operation: Operation) -> Option<&Outcome> {
        self.barrier.get(&(txn, operation))
    }

    /// Applies `command`, or answers a repeat from the barrier; returns the reply.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let key = (command.txn(), command.operation());
        if let Some(recorded) = self.barrier.get(&key) {
            return recorded.clone();
        }
        let outcome = match command {
            Command::Reserve { txn, order, wanted } => self.reserve(*txn, *order, *wanted),
            Command::Assign { txn, items, .. } => self.assign(*txn, items),
            Command::Release { txn, reason } => self.release(*txn, *reason),
            Command::Cancel { txn } => self.cancel(*txn),
        };
        self.barrier.insert(key, outcome.clone());
        outcome
    }

    fn reserve(&mut self, txn: TxnId, order: OrderId, wanted: usize) -> Outcome {
        // Free items first, then reservations past their expiry (as the participants' picks).
        let free = |state: &ItemState| matches!(state, ItemState::Available);
        let expired =
            |state: &ItemState| matches!(state, ItemState::Reserved { expired: true, .. });
        let takeable: Vec<ItemId> = (self.items.iter().filter(|(_, s)| free(s)))
            .chain(self.items.iter().filter(|(_, s)| expired(s)))
            .map(|(id, _)| *id)
            .take(wanted)
            .collect();
        if wanted > 0 && takeable.len() == wanted {
            for id in &takeable {
                self.items.insert(
                    *id,
                    ItemState::Reserved {
                        txn,
                        order,
                        expired: false,
                    },
                );
            }
            return Outcome::Reserved(takeable);
        }
        let held = self
            .items
            .values()
            .filter(|state| matches!(state, ItemState::Available | ItemState::Reserved { .. }))
            .count();
        if held >= wanted && wanted > 0 {
            Outcome::Busy
        } else {
            // The store says which food; the machine has one kind of item.
            Outcome::Unavailable(Shortage::FoodUnavailable)
        }
    }

    fn assign(&mut self, txn: TxnId, items: &[ItemId]) -> Outcome {
        let all_held = !items.is_empty()
            && items.iter().all(|id| {
                matches!(
                    self.items.get(id),
                    Some(ItemState::Reserved { txn: t, expired: false, .. }) if *t == txn
                )
            });
        if !all_held {
            return Outcome::AssignRefused(AssignRefusal::Expired);
        }
        for id in items {
            if let Some(ItemState::Reserved { txn, order, .. }) = self.items.get(id).copied() {
                self.items.insert(*id, ItemState::Assigned { txn, order });
            }
        }
        Outcome::Assigned(items.to_vec())
    }

    fn release(&mut self, txn: TxnId, reason: ReleaseReason) -> Outcome {
        self.barrier
            .entry((txn, Operation::Reserve))
            .or_insert(Outcome::Aborted);
        self.barrier
            .entry((txn, Operation::Assign))
            .or_insert(Outcome::AssignRefused(AssignRefusal::Released));
        let undoes_assignment = Operation::of_release(reason) == Operation::Compensate;
        let freed = self.free(|state| match state {
            ItemState::Reserved { txn: t, .. } => t == txn,
            ItemState::Assigned { txn: t, .. } => t == txn && undoes_assignment,
            ItemState::Available | ItemState::Delivering { .. } => false,
        });
        Outcome::Released(freed)
    }

    fn cancel(&mut self, txn: TxnId) -> Outcome {
        let held: Vec<ItemState> = self
            .items
            .values()
            .filter(|state| state.txn() == Some(txn))
            .copied()
            .collect();
        let cancellable =
            !held.is_empty() && held.iter().all(|s| matches!(s, ItemState::Assigned { .. }));
        if !cancellable {
            return Outcome::CancelRefused(CancelRefusal::PickedUp);
        }
        Outcome::Cancelled(self.free(|state| state.txn() == Some(txn)))
    }

    /// Frees the items whose state passes `test`; returns them.
    fn free(&mut self, test: impl Fn(ItemState) -> bool) -> Vec<ItemId> {
        let mut freed = Vec::new();
        for (id, state) in &mut self.items {
            if test(*state) {
                *state = ItemState::Available;
                freed.push(*id);
            }
        }
        freed
    }

    /// The clock passes the expiry of `item`'s reservation: from now on another reserve may take
    /// it and its assign is refused. False if it is not reserved (nothing to expire).
    pub fn expire(&mut self, item: ItemId) -> bool {
        match self.items.get_mut(&item) {
            Some(ItemState::Reserved { expired, .. }) if !*expired => {
                *expired = true;
                true
            }
            _ => false,
        }
    }

    /// The expiry timer (or the sweep) frees `item`'s reservation, if it expired. False if
    /// there was nothing to free.
    pub fn sweep(&mut self, item: ItemId) -> bool {
        match self.items.get_mut(&item) {
            Some(state @ ItemState::Reserved { expired: true, .. }) => {
                *state = ItemState::Available;
                true
            }
            _ => false,
        }
    }

    /// The `order.placed` event of `order` arrived: marks the item assigned to it (or out with
    /// it), as delivery's statement does; none after a cancel freed it, nor one only reserved.
    /// Returns whether one was marked; a repeated event changes nothing.
    pub fn mark_placed(&mut self, order: OrderId) -> bool {
        let held = self.items.values().any(|s| {
            matches!(s, ItemState::Assigned { order: o, .. } | ItemState::Delivering { order: o, .. }
                if *o == order)
        });
        if held {
            self.placed.insert(order);
        }
        held
    }

    /// The rider of `order` picked it up: the item assigned to it goes out. Returns it, or why
    /// not: no item is assigned to `order`, or its placement has not been seen yet (delivery
    /// assigns its agent before the coordinator knows that the store's packets are assigned too,
    /// and the store's assign may still fail).
    pub fn pick_up(&mut self, order: OrderId) -> Result<ItemId, NotPickedUp> {
        let (id, state) = self
            .items
            .iter_mut()
            .find(|(_, s)| matches!(s, ItemState::Assigned { order: o, .. } if *o == order))
            .ok_or(NotPickedUp::NotAssigned)?;
        if !self.placed.contains(&order) {
            return Err(NotPickedUp::NotPlacedYet);
        }
        if let ItemState::Assigned { txn, order } = *state {
            *state = ItemState::Delivering { txn, order };
        }
        Ok(*id)
    }

    /// `order` is delivered: its rider is free again. Returns the item, or `None` if no item is
    /// out with `order`.
    pub fn deliver(&mut self, order: OrderId) -> Option<ItemId> {
        let (id, state) = self
            .items
            .iter_mut()
            .find(|(_, s)| matches!(s, ItemState::Delivering { order: o, .. } if *o == order))?;
        *state = ItemState::Available;
        let id = *id;
        self.delivered.insert(order);
        Some(id)
    }

    /// Whether `order` was delivered.
    pub fn was_delivered(&self, order: OrderId) -> bool {
        self.delivered.contains(&order)
    }
}

#[cfg(test)]
mod tests;
