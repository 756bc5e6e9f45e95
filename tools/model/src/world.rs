//! What may happen next in the model's world, and what each thing does: the actions of
//! customers, riders, operators, the network, the clock and the faults, as a stateright
//! [`Model`].

use order_machine::rules::{self, Driving, Report};
use order_machine::{Event, OrderState, Writer, transition};
use participant_machine::{Command, ItemState, Items, Operation, Outcome};
use protocol::command::ReleaseReason;
use protocol::ids::{ItemId, TxnId};
use protocol::topology::Participant;
use stateright::{Model, Property};

use crate::state::{AT, Client, Driver, Msg, Phase, Slot, State, draft, txn_id};
use crate::{OrderModel, properties};
use crate::{answers, driver, table};

/// One thing that happens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The customer sends the order; a coordinator takes it (phase 1 begins). `ack_lost`: the
    /// first record of its commit decision will commit, but the driver will not learn it.
    Submit {
        /// The order.
        order: usize,
        /// The fault of a lost acknowledgement.
        ack_lost: bool,
    },
    /// A message arrives (a command's reply reaches its driver at once).
    Receive(Msg),
    /// A command is lost on its way (a transient message lost with its broker node).
    LoseCommand(Msg),
    /// A command arrives and is applied, but its reply is lost.
    LoseReply(Msg),
    /// A message is delivered twice.
    Duplicate(Msg),
    /// The coordinator driving the order dies.
    Crash(usize),
    /// Another coordinator takes the order over (its driver died, or stalled past its lease).
    TakeOver(usize),
    /// Phase 1's deadline passes for a driver.
    Deadline {
        /// The order.
        order: usize,
        /// Its driver's lease token.
        token: u8,
    },
    /// Phase 2 stops asking (the reservations' expiry and the grace passed).
    GiveUp {
        /// The order.
        order: usize,
        /// Its driver's lease token.
        token: u8,
    },
    /// A driver asks again what went unanswered (its reply timeout).
    Resend {
        /// The order.
        order: usize,
        /// Its driver's lease token.
        token: u8,
    },
    /// Phase 1 outlasts the response budget: the new order is recorded `reserving`.
    RecordReserving(usize),
    /// An operator aborts an undecided order.
    OperatorAbort(usize),
    /// The customer, told nothing final (its coordinator died, or its request was answered
    /// `503`), sends the order again with its idempotency key.
    Replay(usize),
    /// The customer cancels the placed order.
    Cancel(usize),
    /// The order's rider reports the pick-up.
    PickUp(usize),
    /// The order's rider reports the delivery.
    Deliver(usize),
    /// A reservation's expiry passes, and its timer (or the sweep) frees the item.
    Expire(Participant, ItemId),
    /// A driver in phase 1, told `busy`, sends `release(abort)` for a reservation in its way
    /// whose order can never assign it (`rules::is_orphan` on the holder's record).
    ReleaseOrphan {
        /// The side that named the holder.
        side: Participant,
        /// The holder's order.
        order: usize,
        /// The holder's transaction.
        txn: TxnId,
    },
}

const SIDES: [Participant; 2] = [Participant::Store, Participant::Delivery];

impl Model for OrderModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let c = &self.config;
        vec![State {
            store: Items::new(c.packets),
            delivery: Items::new(c.agents),
            orders: (0..c.orders)
                .map(|_| Slot {
                    client: Client::Idle,
                    record: None,
                    drivers: Vec::new(),
                    tokens: 0,
                    txns: 0,
                    refused_while_free: false,
                    replayed: false,
                    replay_reserved: false,
                })
                .collect(),
            net: Vec::new(),
            faults: c.faults,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let c = &self.config;
        let faults = state.faults;
        for (o, slot) in state.orders.iter().enumerate() {
            if slot.client == Client::Idle {
                actions.push(Action::Submit {
                    order: o,
                    ack_lost: false,
                });
                if faults.lost_acks > 0 {
                    actions.push(Action::Submit {
                        order: o,
                        ack_lost: true,
                    });
                }
            }
            for (d, drv) in slot.drivers.iter().enumerate() {
                let (order, token) = (o, drv.token);
                match &drv.phase {
                    _ if !c.deadlines => {}
                    Phase::Reserving(_) if !drv.deadline_passed => {
                        actions.push(Action::Deadline { order, token });
                    }
                    Phase::Assigning {
                        answers,
                        gave_up: false,
                    } if answers.store.is_none() || answers.delivery.is_none() => {
                        actions.push(Action::GiveUp { order, token });
                    }
                    _ => {}
                }
                let lost = answers::unanswered(state, c, o, d)
                    .into_iter()
                    .any(|(to, cmd)| {
                        !state.net.iter().any(|m| match m {
                            Msg::Command { to: t, command, .. } => *t == to && *command == cmd,
                            Msg::Report { .. } | Msg::Placed { .. } => false,
                        })
                    });
                if lost {
                    actions.push(Action::Resend { order, token });
                }
                if c.operator && drv.unrecorded && matches!(drv.phase, Phase::Reserving(_)) {
                    actions.push(Action::RecordReserving(o));
                }
            }
            if c.replays && !slot.replayed && slot.client == Client::Unanswered {
                actions.push(Action::Replay(o));
            }
            if !slot.drivers.is_empty() && faults.crashes > 0 {
                actions.push(Action::Crash(o));
            }
            if let Some(record) = &slot.record {
                let driven = !record.order.state.is_final();
                if driven && (slot.drivers.is_empty() || faults.stalls > 0) {
                    actions.push(Action::TakeOver(o));
                }
                let aborting = slot
                    .drivers
                    .iter()
                    .any(|d| d.driving == Driving::OperatorAbort);
                if c.operator && record.order.state == OrderState::Reserving && !aborting {
                    actions.push(Action::OperatorAbort(o));
                }
                if c.cancels && record.order.state == OrderState::Placed {
                    actions.push(Action::Cancel(o));
                }
            }
            // A rider reports a pick-up whenever delivery has assigned the agent, placed or not
            // (an app that is early, or a rider who is wrong); delivery decides.
            if c.riders {
                let id = crate::state::order_id(o);
                for (_, item) in state.delivery.items() {
                    match item {
                        ItemState::Assigned { order, .. } if order == id => {
                            actions.push(Action::PickUp(o));
                        }
                        ItemState::Delivering { order, .. } if order == id => {
                            actions.push(Action::Deliver(o));
                        }
                        _ => {}
                    }
                }
            }
        }
        for (i, msg) in state.net.iter().enumerate() {
            if i > 0 && state.net[i - 1] == *msg {
                continue;
            }
            actions.push(Action::Receive(msg.clone()));
            if matches!(msg, Msg::Command { .. }) {
                if faults.lost_replies > 0 {
                    actions.push(Action::LoseReply(msg.clone()));
                }
                if faults.lost_commands > 0 {
                    actions.push(Action::LoseCommand(msg.clone()));
                }
            }
            if faults.duplicates > 0 {
                actions.push(Action::Duplicate(msg.clone()));
            }
        }
        for side in SIDES {
            for (item, s) in state.side(side).items() {
                if let ItemState::Reserved { expired: false, .. } = s {
                    actions.push(Action::Expire(side, item));
                }
            }
        }
        if c.orphans {
            orphans(state, actions);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        let c = &self.config;
        match action {
            Action::Submit { order, ack_lost } => {
                if ack_lost {
                    state.faults.lost_acks = state.faults.lost_acks.checked_sub(1)?;
                }
                let slot = &mut state.orders[order];
                slot.client = Client::Waiting;
                slot.tokens += 1;
                slot.drivers.push(Driver {
                    token: slot.tokens,
                    driving: Driving::Fresh,
                    order: draft(order, c.packets_per_order),
                    unrecorded: true,
                    deadline_passed: false,
                    phase: Phase::Start,
                    request: true,
                    ack_lost,
                    replays_recorded: false,
                });
            }
            Action::Receive(msg) => {
                state.take(&msg)?;
                receive(&mut state, msg);
            }
            Action::LoseCommand(msg) => {
                state.take(&msg)?;
                state.faults.lost_commands = state.faults.lost_commands.checked_sub(1)?;
            }
            Action::LoseReply(msg) => {
                state.take(&msg)?;
                state.faults.lost_replies = state.faults.lost_replies.checked_sub(1)?;
                if let Msg::Command { to, command, .. } = msg {
                    state.side_mut(to).apply(&command);
                }
            }
            Action::Duplicate(msg) => {
                state.faults.duplicates = state.faults.duplicates.checked_sub(1)?;
                state.send(msg);
            }
            Action::Crash(o) => {
                state.faults.crashes = state.faults.crashes.checked_sub(1)?;
                state.orders[o].drivers.clear();
                driver::tell_nothing(&mut state, o);
            }
            Action::TakeOver(o) => {
                if !state.orders[o].drivers.is_empty() {
                    state.faults.stalls = state.faults.stalls.checked_sub(1)?;
                }
                take(&mut state, o, Driving::TakenOver)?;
            }
            Action::Deadline { order, token } => {
                let d = driver::find(&state, order, token)?;
                state.orders[order].drivers[d].deadline_passed = true;
            }
            Action::GiveUp { order, token } => {
                let d = driver::find(&state, order, token)?;
                if let Phase::Assigning { gave_up, .. } = &mut state.orders[order].drivers[d].phase
                {
                    *gave_up = true;
                }
            }
            Action::Resend { order, token } => {
                let d = driver::find(&state, order, token)?;
                for (to, command) in answers::unanswered(&state, c, order, d) {
                    driver::send(&mut state, order, to, command);
                }
            }
            Action::RecordReserving(o) => {
                let slot = &mut state.orders[o];
                let d = slot.drivers.iter().position(|d| d.unrecorded)?;
                if slot.record.is_some() {
                    return None;
                }
                let driver = slot.drivers[d].clone();
                let t = transition(&driver.order, None, Writer::First, AT).ok()?;
                if !table::write(&mut state, o, &t, driver.token) {
                    return None;
                }
                state.orders[o].drivers[d].unrecorded = false;
            }
            Action::Replay(o) => {
                let slot = &mut state.orders[o];
                slot.replayed = true;
                let recorded = slot.record.as_ref().map(|r| r.order.clone());
                match recorded {
                    // The key's order, as recorded: a final answer if it has one.
                    Some(order) if c.key_lookup => {
                        if let Some(answer) = driver::answer_of(&order) {
                            slot.client = Client::Answered(answer);
                        }
                    }
                    // Not recorded yet: a phase 1 of its own (a new order id and transaction),
                    // whose first record finds the key taken if the first request recorded its
                    // order meanwhile.
                    recorded => {
                        slot.tokens += 1;
                        slot.txns += 1;
                        let mut order = draft(o, c.packets_per_order);
                        order.txn_id = txn_id(o, slot.txns);
                        slot.client = Client::Waiting;
                        slot.drivers.push(Driver {
                            token: slot.tokens,
                            driving: Driving::Fresh,
                            order,
                            unrecorded: true,
                            deadline_passed: false,
                            phase: Phase::Start,
                            request: true,
                            ack_lost: false,
                            replays_recorded: recorded.is_some(),
                        });
                    }
                }
            }
            Action::OperatorAbort(o) => take(&mut state, o, Driving::OperatorAbort)?,
            Action::Cancel(o) => {
                let record = state.orders[o].record.as_ref()?;
                let asked = Some(Event::CancelAsked);
                let t = transition(&record.order, asked, Writer::Customer, AT).ok()?;
                let token = state.orders[o].tokens + 1;
                if !table::write(&mut state, o, &t, token) {
                    return None;
                }
                let slot = &mut state.orders[o];
                slot.tokens = token;
                slot.drivers.push(Driver {
                    token,
                    driving: Driving::Fresh,
                    order: t.after,
                    unrecorded: false,
                    deadline_passed: false,
                    phase: Phase::Start,
                    request: false,
                    ack_lost: false,
                    replays_recorded: false,
                });
            }
            Action::PickUp(o) => {
                state.delivery.pick_up(crate::state::order_id(o)).ok()?;
                state.send(Msg::Report {
                    order: o,
                    report: Report::PickedUp,
                });
            }
            Action::Deliver(o) => {
                state.delivery.deliver(crate::state::order_id(o))?;
                state.send(Msg::Report {
                    order: o,
                    report: Report::Delivered,
                });
            }
            Action::ReleaseOrphan { side, order, txn } => {
                let release = Command::Release {
                    txn,
                    reason: ReleaseReason::Abort,
                };
                state.send(Msg::Command {
                    to: side,
                    order,
                    command: release,
                });
            }
            Action::Expire(side, item) => {
                // An expired reservation that is not swept yet behaves as a free item would (any
                // reserve may take it, its assign is refused, its release frees nothing more),
                // so the sweep follows at once: fewer states, the same behaviours.
                let items = state.side_mut(side);
                if !(items.expire(item) && items.sweep(item)) {
                    return None;
                }
            }
        }
        driver::settle(&mut state, c);
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}

/// The releases of orphans that a driver may send while it pauses before its next attempt of
/// phase 1, because a side answered its last attempt `busy`: for each reservation on that side
/// of another order that the machine says can never be assigned, and whose phase 1 is over (the
/// service waits until the holder is older than a whole phase 1: its driver died, or its deadline
/// passed though the driver may still be running), once per transaction and side, unless one is
/// on its way already.
fn orphans(state: &State, actions: &mut Vec<Action>) {
    // Whether order `o` has a driver in phase 1 whose previous attempt `side` answered `busy`.
    let told_busy = |o: usize, side: Participant| {
        let slot = &state.orders[o];
        slot.drivers.iter().any(|d| {
            matches!(d.phase, Phase::Reserving(_))
                && (0..slot.txns).any(|n| {
                    txn_id(o, n + 1) == d.order.txn_id
                        && state.side(side).recorded(txn_id(o, n), Operation::Reserve)
                            == Some(&Outcome::Busy)
                })
        })
    };
    let phase_1_over = |o: usize| {
        state.orders[o]
            .drivers
            .iter()
            .all(|d| !matches!(d.phase, Phase::Reserving(_)) || d.deadline_passed)
    };
    let mut named: Vec<(Participant, usize, TxnId)> = Vec::new();
    for side in SIDES {
        for (_, item) in state.side(side).items() {
            let ItemState::Reserved { txn, order, .. } = item else {
                continue;
            };
            let Some(holder) = state.slot_of(order) else {
                continue;
            };
            let record = state.orders[holder].record.as_ref().map(|r| &r.order);
            // One release of a holder on its way at a time (one more would change nothing).
            let sent = state.net.iter().any(|m| {
                matches!(m, Msg::Command { to, command: Command::Release { txn: t, .. }, .. }
                    if *to == side && *t == txn)
            });
            if (0..state.orders.len()).any(|o| o != holder && told_busy(o, side))
                && phase_1_over(holder)
                && !sent
                && rules::is_orphan(txn, record)
                && !named.contains(&(side, holder, txn))
            {
                named.push((side, holder, txn));
            }
        }
    }
    actions.extend(
        named
            .into_iter()
            .map(|(side, order, txn)| Action::ReleaseOrphan { side, order, txn }),
    );
}

/// A coordinator takes the lease of a recorded order and drives it as `driving` says.
fn take(state: &mut State, o: usize, driving: Driving) -> Option<()> {
    let slot = &mut state.orders[o];
    slot.tokens += 1;
    let token = slot.tokens;
    let record = slot.record.as_mut()?;
    record.lease = Some(token);
    let order = record.order.clone();
    slot.drivers.push(Driver {
        token,
        driving,
        order,
        unrecorded: false,
        deadline_passed: false,
        phase: Phase::Start,
        request: false,
        ack_lost: false,
        replays_recorded: false,
    });
    Some(())
}

/// A message arrives where it is going.
fn receive(state: &mut State, msg: Msg) {
    match msg {
        Msg::Command { to, order, command } => {
            let decided_now = state
                .side(to)
                .recorded(command.txn(), command.operation())
                .is_none();
            let outcome = state.side_mut(to).apply(&command);
            if decided_now && !answers::truly_short(state.side(to), &command, &outcome) {
                state.orders[order].refused_while_free = true;
            }
            answers::on_reply(state, order, to, &command, &outcome);
        }
        Msg::Report { order, report } => answers::on_report(state, order, report),
        Msg::Placed { order } => {
            state.delivery.mark_placed(crate::state::order_id(order));
        }
    }
}
