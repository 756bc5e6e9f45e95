//! Wiring: the consumers and the sweep of a participant.

use std::sync::Arc;
use std::time::Duration;

use messaging::consumer::{self, AckMode, ConsumerSpec};
use messaging::{Outgoing, Publisher, TimerWindow};
use protocol::command::Operation;
use protocol::envelope::Envelope;
use protocol::ids::TxnId;
use protocol::timer::ParticipantTimer;
use protocol::topology::{Declarations, Topology};
use service_kit::app::Foundation;
use service_kit::config::SettingsError;
use service_kit::group_commit::GroupCommit;

use crate::barrier::Statements;
use crate::commands::CommandHandler;
pub use crate::context::ParticipantSettings;
use crate::context::Shared;
use crate::expiry::{ExpiryHandler, sweep_loop};
use crate::inventory::Inventory;

/// Group-commit workers: each runs one transaction at a time, so this many transactions of
/// reserves and assigns can be in flight at once.
const WRITERS: usize = 4;

/// Starts the command and expiry consumers, the sweep of participant `I`, and the sampling of
/// its dead-letter queues (every `sample_interval`) on the service's task tracker. They run until
/// the service shuts down. Returns how to consume any other queue the participant declares.
pub fn start<I: Inventory>(
    inventory: I,
    foundation: &Foundation,
    topology: Topology,
    settings: ParticipantSettings,
    sample_interval: Duration,
) -> Consumers {
    let Foundation {
        pool,
        broker,
        publisher,
        tracker,
        stop_background: shutdown,
        ..
    } = foundation;
    let (pool, broker, publisher) = (pool.clone(), broker.clone(), publisher.clone());
    let participant = I::PARTICIPANT;
    // Timers fire a moment after the reservations they name expire (they are published up to
    // one window after the first reservation of the batch), so that they find them expired.
    let wait = settings.reservation_ttl + settings.timer_window + Duration::from_millis(500);
    let declarations = Arc::new(topology.participant(participant, wait));
    foundation.watch_dead_letter_queues(&declarations, sample_interval);
    let timers = topology.timers_exchange(participant.as_str());
    let wait_key = Topology::timer_wait_routing_key(wait);
    let expiries = TimerWindow::spawn(
        publisher.clone(),
        settings.timer_window,
        move |txn_ids: Vec<TxnId>| {
            let envelope = Envelope::new(ParticipantTimer::Expiries { txn_ids });
            Outgoing::new(&envelope, timers.clone(), wait_key.clone())
        },
        shutdown.clone(),
        tracker,
    );
    let consumers = Consumers {
        declarations,
        dead_letters: topology.dead_letter_exchange(participant.as_str()),
        prefetch: settings.prefetch,
    };
    let command_queues: Vec<String> = Operation::ALL
        .iter()
        .map(|op| topology.command_queue(participant, *op))
        .collect();
    let expiry_queue = topology.expiry_queue(participant);
    let sweep_interval = settings.sweep_interval;
    let writes = GroupCommit::start(pool.clone(), WRITERS, foundation.db_call_bound, tracker);
    let shared = Arc::new(Shared {
        inventory,
        pool,
        replies: Publisher::without_confirms(broker.clone()),
        topology,
        settings,
        expiries,
        statements: Arc::new(Statements::of::<I>()),
        writes,
        shutdown: shutdown.clone(),
        suspects: tokio::sync::RwLock::new(()),
    });
    let commands = Arc::new(CommandHandler::new(Arc::clone(&shared)));
    for queue in command_queues {
        tracker.spawn(consumer::run(
            broker.clone(),
            publisher.clone(),
            consumers.spec(queue),
            Arc::clone(&commands),
            shutdown.clone(),
        ));
    }
    tracker.spawn(consumer::run(
        broker,
        publisher,
        consumers.spec(expiry_queue),
        Arc::new(ExpiryHandler::new(Arc::clone(&shared))),
        shutdown.clone(),
    ));
    tracker.spawn(sweep_loop(shared, sweep_interval, shutdown.clone()));
    consumers
}

/// How a participant consumes its queues: with the declarations of all of them (each consumer
/// declares them all before consuming) and its dead-letter exchange.
#[derive(Clone, Debug)]
pub struct Consumers {
    declarations: Arc<Declarations>,
    dead_letters: String,
    prefetch: u16,
}

impl Consumers {
    /// A consumer of `queue`, which must be one of the participant's declared queues.
    pub fn spec(&self, queue: String) -> ConsumerSpec {
        ConsumerSpec {
            queue,
            prefetch: self.prefetch,
            ack_mode: AckMode::Manual,
            dead_letter_exchange: Some(self.dead_letters.clone()),
            declarations: Arc::clone(&self.declarations),
        }
    }
}

/// The command-line/environment settings of a participant service.
#[derive(clap::Args, Clone, Debug)]
pub struct ParticipantArgs {
    /// How long a reservation holds its item. Long enough to cover transient outages between
    /// phase 1 and phase 2; after it, the item is free again whatever happens.
    #[arg(long, env = "RESERVATION_TTL", default_value = "30s", value_parser = service_kit::config::parse_positive_duration)]
    pub reservation_ttl: Duration,

    /// How long after expiry the sweep frees a reservation whose timer did not.
    #[arg(long, env = "EXPIRY_GRACE", default_value = "2s", value_parser = service_kit::config::parse_duration)]
    pub expiry_grace: Duration,

    /// How often the expiry sweep runs.
    #[arg(long, env = "SWEEP_INTERVAL", default_value = "5s", value_parser = service_kit::config::parse_positive_duration)]
    pub sweep_interval: Duration,

    /// Commands handled concurrently per queue (consumer prefetch). Keep it near the database
    /// pool size: more only queues work inside the process.
    #[arg(long, env = "COMMAND_PREFETCH", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub command_prefetch: u16,

    /// How long the idempotency records of commands are kept. More than twice
    /// `RESERVATION_TTL + EXPIRY_GRACE`: a record must outlive every command of its transaction
    /// that can still arrive, or a late assign could act again after a release.
    #[arg(long, env = "BARRIER_RETENTION", default_value = "24h", value_parser = service_kit::config::parse_positive_duration)]
    pub barrier_retention: Duration,

    /// How long expiry timers are collected before being published as one message.
    #[arg(long, env = "TIMER_WINDOW", default_value = "100ms", value_parser = service_kit::config::parse_duration)]
    pub timer_window: Duration,
}

impl ParticipantArgs {
    /// The settings these arguments describe, if they fit together.
    pub fn settings(&self) -> Result<ParticipantSettings, SettingsError> {
        let held = self.reservation_ttl.saturating_add(self.expiry_grace);
        if self.barrier_retention <= held.saturating_mul(2) {
            return Err(SettingsError(format!(
                "BARRIER_RETENTION ({}) must be more than twice RESERVATION_TTL + EXPIRY_GRACE ({})",
                humantime::format_duration(self.barrier_retention),
                humantime::format_duration(held),
            )));
        }
        Ok(self.unchecked())
    }

    fn unchecked(&self) -> ParticipantSettings {
        ParticipantSettings {
            reservation_ttl: self.reservation_ttl,
            expiry_grace: self.expiry_grace,
            sweep_interval: self.sweep_interval,
            prefetch: self.command_prefetch,
            barrier_retention: self.barrier_retention,
            timer_window: self.timer_window,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::ParticipantArgs;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        participant: ParticipantArgs,
    }

    fn settings(args: &[&str]) -> Result<(), String> {
        let args = Args::try_parse_from(std::iter::once("participant").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        args.participant
            .settings()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn barrier_records_outlive_the_commands_of_their_transaction() {
        assert_eq!(settings(&[]), Ok(()));
        assert_eq!(
            settings(&["--reservation-ttl", "1m", "--barrier-retention", "1h"]),
            Ok(())
        );
        let err = settings(&["--reservation-ttl", "1m", "--barrier-retention", "2m"]).unwrap_err();
        assert!(
            err.contains("BARRIER_RETENTION (2m) must be more than twice"),
            "{err}"
        );
    }

    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for (flag, value) in [
            ("--reservation-ttl", "0s"),
            ("--barrier-retention", "0s"),
            ("--command-prefetch", "0"),
        ] {
            assert!(settings(&[flag, value]).is_err(), "{flag} {value} accepted");
        }
    }
}
