//! The store and delivery in process, for the driver's tests: the participant machine answering
//! at once, with the faults a test scripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use participant_machine::{Command, ItemState, Items, Outcome};
use protocol::command::{CancelReply, Holder, ReleaseReason};
use protocol::ids::{AgentId, ItemId, PacketId};
use protocol::sides::Sides;
use protocol::topology::Participant;
use tokio::time::Instant;

use crate::machine::Order;
use crate::machine::rules::{AssignAnswer, Reservation};
use crate::participants::Participants;

/// What the fake does besides answering as the machine says.
#[derive(Debug, Default)]
pub(super) struct Script {
    /// Reserves answered with nothing (a lost reply), per side, before the others.
    pub(super) silent_reserves: usize,
    /// Every reserve of the store expires before its assign arrives.
    pub(super) store_expires_before_assign: bool,
    /// Busy answers name their holders as this old.
    pub(super) holders_held_ms: u64,
}

/// The store and delivery in process.
pub(super) struct Fake {
    pub(super) store: Mutex<Items>,
    pub(super) delivery: Mutex<Items>,
    script: Mutex<Script>,
    /// Every command sent, as `side operation`.
    sent: Mutex<Vec<String>>,
}

impl Fake {
    pub(super) fn new(packets: i64, agents: i64, script: Script) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(Items::new(packets)),
            delivery: Mutex::new(Items::new(agents)),
            script: Mutex::new(script),
            sent: Mutex::new(Vec::new()),
        })
    }

    fn side(&self, side: Participant) -> &Mutex<Items> {
        match side {
            Participant::Store => &self.store,
            Participant::Delivery => &self.delivery,
        }
    }

    pub(super) fn apply(&self, side: Participant, command: &Command) -> Outcome {
        let operation = command.operation();
        self.sent
            .lock()
            .unwrap()
            .push(format!("{side} {operation:?}"));
        self.side(side).lock().unwrap().apply(command)
    }

    pub(super) fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }

    /// The states of the items of `side`, in item order.
    pub(super) fn states(&self, side: Participant) -> Vec<ItemState> {
        self.side(side)
            .lock()
            .unwrap()
            .items()
            .map(|(_, s)| s)
            .collect()
    }

    fn reservation(&self, side: Participant, outcome: Outcome) -> Reservation {
        match outcome {
            Outcome::Reserved(items) => Reservation::Held {
                items,
                expires_at: chrono::Utc::now() + chrono::Duration::seconds(30),
            },
            Outcome::Busy => {
                let held_ms = self.script.lock().unwrap().holders_held_ms;
                let holders = self
                    .side(side)
                    .lock()
                    .unwrap()
                    .items()
                    .filter_map(|(_, state)| match state {
                        ItemState::Reserved { txn, order, .. } => Some(Holder {
                            txn_id: txn,
                            order_id: order,
                            held_ms,
                        }),
                        _ => None,
                    })
                    .collect();
                Reservation::Busy { holders }
            }
            Outcome::Unavailable(shortage) => Reservation::Unavailable(shortage),
            Outcome::Aborted => Reservation::Aborted,
            _ => Reservation::NoAnswer,
        }
    }
}

impl Participants for Fake {
    fn reserve<'a>(
        &'a self,
        order: &'a Order,
        _wait: Duration,
    ) -> BoxFuture<'a, Sides<Reservation>> {
        Box::pin(async move {
            let silent = {
                let mut script = self.script.lock().unwrap();
                let silent = script.silent_reserves > 0;
                script.silent_reserves = script.silent_reserves.saturating_sub(1);
                silent
            };
            Sides::both(()).map(|side, ()| {
                let wanted = match side {
                    Participant::Store => order.packets_wanted(),
                    Participant::Delivery => 1,
                };
                let command = Command::Reserve {
                    txn: order.txn_id,
                    order: order.id,
                    wanted,
                };
                let outcome = self.apply(side, &command);
                if silent {
                    return Reservation::NoAnswer;
                }
                self.reservation(side, outcome)
            })
        })
    }

    fn assign<'a>(
        &'a self,
        order: &'a Order,
        packets: &'a [PacketId],
        agent: AgentId,
        _until: Instant,
    ) -> BoxFuture<'a, Sides<AssignAnswer>> {
        Box::pin(async move {
            if self.script.lock().unwrap().store_expires_before_assign {
                let mut store = self.store.lock().unwrap();
                for packet in packets {
                    store.expire(ItemId(packet.0));
                }
            }
            let items = Sides::new(
                packets.iter().map(|p| ItemId(p.0)).collect::<Vec<_>>(),
                vec![ItemId(agent.0)],
            );
            items.map(|side, items| {
                let command = Command::Assign {
                    txn: order.txn_id,
                    order: order.id,
                    items,
                };
                match self.apply(side, &command) {
                    Outcome::Assigned(_) => AssignAnswer::Assigned,
                    Outcome::AssignRefused(refusal) => AssignAnswer::Refused(refusal),
                    _ => AssignAnswer::NoAnswer,
                }
            })
        })
    }

    fn release<'a>(&'a self, order: &'a Order, _until: Instant) -> BoxFuture<'a, Sides<bool>> {
        Box::pin(async move {
            Sides::both(()).map(|side, ()| {
                let command = Command::Release {
                    txn: order.txn_id,
                    reason: ReleaseReason::Compensate,
                };
                matches!(self.apply(side, &command), Outcome::Released(_))
            })
        })
    }

    fn cancel<'a>(
        &'a self,
        side: Participant,
        order: &'a Order,
        _until: Instant,
    ) -> BoxFuture<'a, Option<CancelReply>> {
        Box::pin(async move {
            let command = Command::Cancel { txn: order.txn_id };
            match self.apply(side, &command) {
                Outcome::Cancelled(items) => Some(CancelReply::Cancelled { items }),
                Outcome::CancelRefused(reason) => Some(CancelReply::Refused { reason }),
                _ => None,
            }
        })
    }

    fn release_now<'a>(
        &'a self,
        order: &'a Order,
        which: Sides<bool>,
        reason: ReleaseReason,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for (side, wanted) in which.iter() {
                if *wanted {
                    let command = Command::Release {
                        txn: order.txn_id,
                        reason,
                    };
                    self.apply(side, &command);
                }
            }
        })
    }

    fn release_orphan<'a>(&'a self, side: Participant, holder: &'a Holder) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let command = Command::Release {
                txn: holder.txn_id,
                reason: ReleaseReason::Abort,
            };
            self.apply(side, &command);
            true
        })
    }
}
