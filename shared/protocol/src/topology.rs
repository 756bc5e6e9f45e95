//! Every exchange, queue and routing key, spelled once.
//!
//! All names take an optional prefix so that several deployments (or test runs) can share a
//! virtual host. With an empty prefix the store's names are:
//!
//! | name | kind | what it is |
//! |---|---|---|
//! | `store.commands` | direct exchange | commands to the store, routing key = operation |
//! | `store.reserve`, `store.assign`, `store.release` | quorum queues | one per operation |
//! | `store.reserve.dlq`, … | quorum queues | messages that could not be handled, with the reason |
//! | `store.dead-letter` | direct exchange | routes to the `.dlq` queues, routing key = source queue |
//! | `store.timers` | direct exchange | routes expiry timers into the wait queue and out of it |
//! | `store.expiry.wait.<ttl>ms` | quorum queue, TTL, no consumer | expiry timers wait here |
//! | `store.expiry` | quorum queue | expired timers, consumed by the store |
//!
//! delivery has the same set under `delivery.`, and `delivery.placed` (quorum queue, + `.dlq`)
//! bound to `order.events` for `order.placed`: a rider may pick an order up only once delivery has
//! seen it placed. The coordinator has `order.replies` (exchange) with
//! one exclusive `order.replies.<instance>` queue per running coordinator, `order.timers`,
//! `order.timeouts.wait.<ttl>`, `order.timeouts` (+ `.dlq`) and the topic exchange `order.events`.
//!
//! The TTL is part of a wait queue's name because RabbitMQ refuses to redeclare a queue with other
//! arguments: changing the TTL makes a new wait queue, and the old one drains by itself.

use std::fmt;
use std::time::Duration;

use crate::command::Operation;
use crate::event::OrderEventKind;
use crate::ids::InstanceId;

/// A participant of the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Participant {
    /// The store: food packets.
    Store,
    /// Delivery: delivery agents.
    Delivery,
}

impl Participant {
    /// Both participants.
    pub const ALL: [Participant; 2] = [Participant::Store, Participant::Delivery];

    /// The name used in queue names and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Participant::Store => "store",
            Participant::Delivery => "delivery",
        }
    }
}

impl fmt::Display for Participant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The routing key with which a wait queue dead-letters expired timers into the owner's queue.
const FIRED_ROUTING_KEY: &str = "fired";
/// What a dead-letter queue's name adds to the name of the queue beside it.
const DEAD_LETTER_SUFFIX: &str = ".dlq";
/// How many times a message is delivered before RabbitMQ parks it in the dead-letter queue. A
/// message whose handling crashes the consumer comes back this many times, then stops.
pub const DELIVERY_LIMIT: u32 = 10;

/// An exchange kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routing key equals binding key.
    Direct,
    /// Routing key matches a binding pattern.
    Topic,
}

/// A durable exchange to declare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Its name.
    pub name: String,
    /// Direct or topic.
    pub kind: ExchangeKind,
}

/// How a queue lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    /// Durable and replicated (a quorum queue): commands, timers, dead letters.
    Quorum,
    /// Exclusive to one connection and deleted with it: a coordinator's reply queue. Replies are
    /// only useful to the process that waits for them.
    Exclusive,
}

/// A queue to declare, with its arguments and bindings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Its name.
    pub name: String,
    /// Durable quorum queue or exclusive reply queue.
    pub kind: QueueKind,
    /// Per-queue message TTL (wait queues only).
    pub message_ttl: Option<Duration>,
    /// Where messages go when they expire, are rejected or exceed the delivery limit:
    /// (exchange, routing key).
    pub dead_letter: Option<(String, String)>,
    /// Dead-letter at least once (the message stays until the dead-letter queue has it) rather
    /// than at most once. On for consumed queues, where a parked command must not vanish; off for
    /// timer wait queues, whose messages are only accelerators.
    pub reliable_dead_letter: bool,
    /// Deliveries before a message is dead-lettered.
    pub delivery_limit: Option<u32>,
    /// (exchange, routing key) pairs to bind.
    pub bindings: Vec<(String, String)>,
}

/// What one service declares at start (and again after every reconnection). Declarations are
/// idempotent; every service declares what it consumes and the exchanges it publishes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declarations {
    /// Exchanges.
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues with their bindings.
    pub queues: Vec<QueueSpec>,
}

impl Declarations {
    fn exchange(&mut self, name: String, kind: ExchangeKind) {
        if !self.exchanges.iter().any(|e| e.name == name) {
            self.exchanges.push(ExchangeSpec { name, kind });
        }
    }

    /// The dead-letter queues among these: the `.dlq` of each consumed queue declared here. The
    /// service that declares (and consumes) a queue owns its dead-letter queue and watches it.
    pub fn dead_letter_queues(&self) -> Vec<String> {
        self.queues
            .iter()
            .filter(|q| q.delivery_limit.is_some())
            .map(|q| Topology::dead_letter_queue(&q.name))
            .filter(|dlq| self.queues.iter().any(|q| q.name == *dlq))
            .collect()
    }
}

/// The names of everything, under a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix` (empty in production; tests may use a random one).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn name(&self, rest: fmt::Arguments<'_>) -> String {
        format!("{}{}", self.prefix, rest)
    }

    /// Direct exchange for the commands to a participant; routing key = operation.
    pub fn commands_exchange(&self, participant: Participant) -> String {
        self.name(format_args!("{participant}.commands"))
    }

    /// The routing key of an operation on its participant's commands exchange.
    pub fn command_routing_key(operation: Operation) -> &'static str {
        operation.as_str()
    }

    /// The queue of one operation of a participant, e.g. `store.reserve`.
    pub fn command_queue(&self, participant: Participant, operation: Operation) -> String {
        self.name(format_args!("{participant}.{operation}"))
    }

    /// Direct exchange for replies; routing key = the coordinator instance (the `reply_to`).
    pub fn replies_exchange(&self) -> String {
        self.name(format_args!("order.replies"))
    }

    /// The routing key that reaches the reply queue of a coordinator instance.
    pub fn reply_routing_key(instance: InstanceId) -> String {
        instance.to_string()
    }

    /// The reply queue of a coordinator instance.
    pub fn reply_queue(&self, instance: InstanceId) -> String {
        self.name(format_args!("order.replies.{instance}"))
    }

    /// The exclusive queue of every order event that a coordinator instance binds for the
    /// streams of `GET /orders/{id}/events` (gone with the instance).
    pub fn live_queue(&self, instance: impl fmt::Display) -> String {
        self.name(format_args!("order.live.{instance}"))
    }

    /// The exclusive queue of every order event of a console process (gone with it).
    pub fn console_queue(&self, instance: impl fmt::Display) -> String {
        self.name(format_args!("console.events.{instance}"))
    }

    /// Direct exchange of an owner's timers (`order`, `store` or `delivery`).
    pub fn timers_exchange(&self, owner: &str) -> String {
        self.name(format_args!("{owner}.timers"))
    }

    /// The routing key that puts a timer into its owner's wait queue of `ttl`. The TTL is in the
    /// key as in the queue's name: after a change of TTL, the old wait queue stays bound with the
    /// old key, gets no new timers, and drains.
    pub fn timer_wait_routing_key(ttl: Duration) -> String {
        format!("wait.{}ms", ttl.as_millis())
    }

    /// The queue that the coordinator's deadline timers wait in.
    pub fn order_timeouts_wait(&self, ttl: Duration) -> String {
        self.name(format_args!("order.timeouts.wait.{}ms", ttl.as_millis()))
    }

    /// The queue of fired deadline timers, consumed by every coordinator.
    pub fn order_timeouts(&self) -> String {
        self.name(format_args!("order.timeouts"))
    }

    /// The queue that a participant's expiry timers wait in.
    pub fn expiry_wait(&self, participant: Participant, ttl: Duration) -> String {
        self.name(format_args!(
            "{participant}.expiry.wait.{}ms",
            ttl.as_millis()
        ))
    }

    /// The queue of fired expiry timers of a participant.
    pub fn expiry_queue(&self, participant: Participant) -> String {
        self.name(format_args!("{participant}.expiry"))
    }

    /// Direct exchange that routes an owner's dead letters to `<queue>.dlq`; routing key = the
    /// source queue's name.
    pub fn dead_letter_exchange(&self, owner: &str) -> String {
        self.name(format_args!("{owner}.dead-letter"))
    }

    /// The dead-letter queue beside `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}{DEAD_LETTER_SUFFIX}")
    }

    /// The queue whose dead letters `dead_letter_queue` holds (the one beside it), if it is a
    /// dead-letter queue's name.
    pub fn source_of_dead_letter_queue(dead_letter_queue: &str) -> Option<&str> {
        dead_letter_queue
            .strip_suffix(DEAD_LETTER_SUFFIX)
            .filter(|source| !source.is_empty())
    }

    /// Every dead-letter queue: the one beside each queue that a service consumes (each
    /// participant's commands and expiry timers, the coordinator's timeouts and reports), from
    /// what the services declare.
    pub fn dead_letter_queues(&self) -> Vec<String> {
        // The TTLs only name the timers' wait queues, which nobody consumes.
        let any = Duration::from_secs(1);
        [
            self.participant(Participant::Store, any),
            self.participant(Participant::Delivery, any),
            self.coordinator(any),
        ]
        .iter()
        .flat_map(Declarations::dead_letter_queues)
        .collect()
    }

    /// Topic exchange of delivery's progress reports (routing keys `delivery.picked_up`,
    /// `delivery.delivered`), declared by the coordinator like its replies exchange.
    pub fn progress_exchange(&self) -> String {
        self.name(format_args!("order.progress"))
    }

    /// The queue of delivery's progress reports, consumed by every coordinator.
    pub fn progress_queue(&self) -> String {
        self.name(format_args!("order.progress"))
    }

    /// Topic exchange of order events (`order.placed`, `order.not_placed`).
    pub fn events_exchange(&self) -> String {
        self.name(format_args!("order.events"))
    }

    /// Delivery's queue of `order.placed` events: an agent may leave with an order only once
    /// delivery has seen it placed.
    pub fn placed_queue(&self) -> String {
        self.name(format_args!("delivery.placed"))
    }

    /// A consumed durable queue with its dead-letter queue, both added to `decl`.
    fn consumed_queue(
        &self,
        decl: &mut Declarations,
        owner: &str,
        name: String,
        bindings: Vec<(String, String)>,
    ) {
        let dlx = self.dead_letter_exchange(owner);
        decl.exchange(dlx.clone(), ExchangeKind::Direct);
        decl.queues.push(QueueSpec {
            name: Self::dead_letter_queue(&name),
            kind: QueueKind::Quorum,
            message_ttl: None,
            dead_letter: None,
            reliable_dead_letter: false,
            delivery_limit: None,
            bindings: vec![(dlx.clone(), name.clone())],
        });
        decl.queues.push(QueueSpec {
            dead_letter: Some((dlx, name.clone())),
            reliable_dead_letter: true,
            name,
            kind: QueueKind::Quorum,
            message_ttl: None,
            delivery_limit: Some(DELIVERY_LIMIT),
            bindings,
        });
    }

    /// A wait queue (TTL, no consumer) that fires into `fired_queue`, and `fired_queue` itself.
    fn timer_queues(
        &self,
        decl: &mut Declarations,
        owner: &str,
        wait_queue: String,
        ttl: Duration,
        fired_queue: String,
    ) {
        let timers = self.timers_exchange(owner);
        decl.exchange(timers.clone(), ExchangeKind::Direct);
        decl.queues.push(QueueSpec {
            name: wait_queue,
            kind: QueueKind::Quorum,
            message_ttl: Some(ttl),
            dead_letter: Some((timers.clone(), FIRED_ROUTING_KEY.to_owned())),
            reliable_dead_letter: false,
            delivery_limit: None,
            bindings: vec![(timers.clone(), Self::timer_wait_routing_key(ttl))],
        });
        self.consumed_queue(
            decl,
            owner,
            fired_queue,
            vec![(timers, FIRED_ROUTING_KEY.to_owned())],
        );
    }

    /// What a participant declares: its own commands exchange and queues and its expiry timers.
    /// (It replies through `order.replies`, which the coordinator that sent the command has
    /// declared.)
    pub fn participant(&self, participant: Participant, expiry_ttl: Duration) -> Declarations {
        let owner = participant.as_str();
        let mut decl = Declarations::default();
        let commands = self.commands_exchange(participant);
        decl.exchange(commands.clone(), ExchangeKind::Direct);
        for operation in Operation::ALL {
            self.consumed_queue(
                &mut decl,
                owner,
                self.command_queue(participant, operation),
                vec![(
                    commands.clone(),
                    Self::command_routing_key(operation).to_owned(),
                )],
            );
        }
        self.timer_queues(
            &mut decl,
            owner,
            self.expiry_wait(participant, expiry_ttl),
            expiry_ttl,
            self.expiry_queue(participant),
        );
        if participant == Participant::Delivery {
            // Declared with the command queues, so that it exists (and takes every placed
            // event) before the first assign is consumed.
            let events = self.events_exchange();
            decl.exchange(events.clone(), ExchangeKind::Topic);
            self.consumed_queue(
                &mut decl,
                owner,
                self.placed_queue(),
                vec![(events, OrderEventKind::Placed.routing_key().to_owned())],
            );
        }
        decl
    }

    /// What the coordinator declares: its replies exchange, its deadline timers and the events
    /// exchange. It publishes commands to the participants' exchanges, which the participants
    /// declare (so a coordinator needs no right to configure them). Its reply queue is declared
    /// separately ([`Topology::reply_queue_spec`]) because it belongs to one connection.
    pub fn coordinator(&self, deadline_ttl: Duration) -> Declarations {
        let mut decl = Declarations::default();
        decl.exchange(self.replies_exchange(), ExchangeKind::Direct);
        decl.exchange(self.events_exchange(), ExchangeKind::Topic);
        let progress = self.progress_exchange();
        decl.exchange(progress.clone(), ExchangeKind::Topic);
        self.consumed_queue(
            &mut decl,
            "order",
            self.progress_queue(),
            vec![(progress, "delivery.#".to_owned())],
        );
        self.timer_queues(
            &mut decl,
            "order",
            self.order_timeouts_wait(deadline_ttl),
            deadline_ttl,
            self.order_timeouts(),
        );
        decl
    }

    /// What a consumer of order events declares: the events exchange, and an exclusive queue of
    /// its own (deleted when it disconnects) bound with `pattern` (`order.#` for every event).
    pub fn events_tap(&self, queue: String, pattern: &str) -> Declarations {
        let events = self.events_exchange();
        Declarations {
            exchanges: vec![ExchangeSpec {
                name: events.clone(),
                kind: ExchangeKind::Topic,
            }],
            queues: vec![QueueSpec {
                name: queue,
                kind: QueueKind::Exclusive,
                message_ttl: None,
                dead_letter: None,
                reliable_dead_letter: false,
                delivery_limit: None,
                bindings: vec![(events, pattern.to_owned())],
            }],
        }
    }

    /// The exclusive reply queue of a coordinator instance.
    pub fn reply_queue_spec(&self, instance: InstanceId) -> QueueSpec {
        QueueSpec {
            name: self.reply_queue(instance),
            kind: QueueKind::Exclusive,
            message_ttl: None,
            dead_letter: None,
            reliable_dead_letter: false,
            delivery_limit: None,
            bindings: vec![(self.replies_exchange(), Self::reply_routing_key(instance))],
        }
    }
}

/// RabbitMQ permissions of a service: regular expressions over exchange and queue names (see
/// <https://www.rabbitmq.com/docs/access-control>). Each service may configure (declare) and read
/// only its own names, and write to its own names plus the exchanges it publishes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Declare and delete.
    pub configure: String,
    /// Publish to an exchange, bind a queue.
    pub write: String,
    /// Consume from a queue, bind from an exchange.
    pub read: String,
}

impl Topology {
    /// The permissions of `service` (`order`, `store` or `delivery`).
    pub fn permissions(&self, service: &str) -> Permissions {
        let p = regex_escape(&self.prefix);
        // Delivery also declares the events exchange (as the coordinator does) and binds its
        // queue of placed orders to it.
        let own = match service {
            "delivery" => format!("^{p}(delivery\\.|order\\.events$)"),
            service => format!("^{p}{service}\\."),
        };
        let write = match service {
            "order" => format!("^{p}(order\\.|store\\.commands$|delivery\\.commands$)"),
            "delivery" => format!("^{p}(delivery\\.|order\\.replies$|order\\.progress$)"),
            participant => format!("^{p}({participant}\\.|order\\.replies$)"),
        };
        Permissions {
            configure: own.clone(),
            write,
            read: own,
        }
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumed_queue_has_its_dead_letter_queue_listed() {
        let t = Topology::new("p.");
        let dlqs = t.dead_letter_queues();
        for operation in Operation::ALL {
            for participant in [Participant::Store, Participant::Delivery] {
                let queue = t.command_queue(participant, operation);
                assert!(
                    dlqs.contains(&Topology::dead_letter_queue(&queue)),
                    "{queue}"
                );
            }
        }
        for queue in [
            t.expiry_queue(Participant::Store),
            t.expiry_queue(Participant::Delivery),
            t.order_timeouts(),
            t.progress_queue(),
        ] {
            assert!(
                dlqs.contains(&Topology::dead_letter_queue(&queue)),
                "{queue}"
            );
        }
        assert!(
            dlqs.iter()
                .all(|q| q.starts_with("p.") && q.ends_with(".dlq"))
        );
        let mut unique = dlqs.clone();
        unique.dedup();
        assert_eq!(unique.len(), dlqs.len());
    }

    #[test]
    fn names_carry_the_prefix() {
        let t = Topology::new("t1.");
        assert_eq!(
            t.command_queue(Participant::Store, Operation::Reserve),
            "t1.store.reserve"
        );
        assert_eq!(
            t.expiry_wait(Participant::Delivery, Duration::from_secs(30)),
            "t1.delivery.expiry.wait.30000ms"
        );
        assert_eq!(
            Topology::dead_letter_queue("t1.store.assign"),
            "t1.store.assign.dlq"
        );
    }

    #[test]
    fn permissions_cover_own_names_only() {
        let t = Topology::new("");
        let store = t.permissions("store");
        assert_eq!(store.configure, "^store\\.");
        assert_eq!(store.write, "^(store\\.|order\\.replies$)");
        let order = Topology::new("a.b").permissions("order");
        assert_eq!(order.read, "^a\\.border\\.");
        let delivery = t.permissions("delivery");
        assert_eq!(delivery.read, "^(delivery\\.|order\\.events$)");
    }

    #[test]
    fn delivery_takes_placed_events_in_a_queue_declared_with_its_commands() {
        let t = Topology::new("p.");
        let delivery = t.participant(Participant::Delivery, Duration::from_secs(30));
        let placed = delivery
            .queues
            .iter()
            .find(|q| q.name == "p.delivery.placed")
            .expect("delivery declares its queue of placed orders");
        assert_eq!(
            placed.bindings,
            [("p.order.events".to_owned(), "order.placed".to_owned())]
        );
        assert!(
            delivery
                .dead_letter_queues()
                .contains(&"p.delivery.placed.dlq".to_owned())
        );
        let store = t.participant(Participant::Store, Duration::from_secs(30));
        assert!(!store.queues.iter().any(|q| q.name.ends_with(".placed")));
    }

    #[test]
    fn each_service_owns_the_dead_letter_queues_of_the_queues_it_consumes() {
        let t = Topology::new("p.");
        let store = t.participant(Participant::Store, Duration::from_secs(30));
        assert_eq!(
            store.dead_letter_queues(),
            [
                "p.store.reserve.dlq",
                "p.store.assign.dlq",
                "p.store.release.dlq",
                "p.store.cancel.dlq",
                "p.store.expiry.dlq",
            ]
        );
        assert_eq!(
            t.coordinator(Duration::from_secs(5)).dead_letter_queues(),
            ["p.order.progress.dlq", "p.order.timeouts.dlq"]
        );
        let tap = t.events_tap("p.tap".into(), "order.#");
        assert!(tap.dead_letter_queues().is_empty());
    }

    #[test]
    fn every_consumed_queue_has_a_dead_letter_queue() {
        let t = Topology::new("");
        let mut all = t.participant(Participant::Store, Duration::from_secs(30));
        all.queues
            .extend(t.coordinator(Duration::from_secs(5)).queues);
        for q in all.queues.iter().filter(|q| q.delivery_limit.is_some()) {
            let dlq = Topology::dead_letter_queue(&q.name);
            assert!(
                all.queues.iter().any(|d| d.name == dlq),
                "{} has no dlq",
                q.name
            );
            assert!(q.dead_letter.is_some());
        }
    }

    #[test]
    fn a_dead_letter_queue_names_the_queue_beside_it() {
        let dlq = Topology::dead_letter_queue("p.store.assign");
        assert_eq!(
            Topology::source_of_dead_letter_queue(&dlq),
            Some("p.store.assign")
        );
        assert_eq!(
            Topology::source_of_dead_letter_queue("p.store.assign"),
            None
        );
        assert_eq!(Topology::source_of_dead_letter_queue(".dlq"), None);
    }
}
