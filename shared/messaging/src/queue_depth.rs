//! How many messages wait in a service's dead-letter queues, read from the broker every few
//! seconds for the `dead_letter_queue_messages` gauge.
//!
//! Each round asks the broker for every queue with a passive `queue.declare` (which changes
//! nothing and answers the queue's message count) on one channel of the consuming connection,
//! kept from round to round. A round is skipped while any broker component of the service is down
//! (so the sampler never competes with the consumers for a connection being made again), and a
//! request that fails or hangs ends its round (each is bounded by the connection timeout). The
//! gauges keep their last values meanwhile; readiness says that the broker is out of reach.

use std::time::Duration;

use deadpool_lapin::lapin::{Channel, options::QueueDeclareOptions, types::FieldTable};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::{Broker, BrokerError, Role};

/// Samples the depth of `queues` every `interval` (the first time one interval after the call,
/// when the service has declared them) until `shutdown`.
pub async fn sample_dead_letter_queues(
    broker: Broker,
    queues: Vec<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    if queues.is_empty() {
        return;
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut channel = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        if !broker.health().all_up() {
            continue;
        }
        let sampled = tokio::select! {
            sampled = sample(&broker, &mut channel, &queues) => sampled,
            () = shutdown.cancelled() => break,
        };
        match sampled {
            Ok(()) => {
                if failing {
                    info!("dead-letter queue depths are read again");
                }
                failing = false;
            }
            Err(err) => {
                // A failed request closes the channel (a missing queue) or comes from a lost
                // connection: open a fresh channel next round.
                channel = None;
                if failing {
                    debug!(error = %err, "dead-letter queue depths still unknown");
                } else {
                    warn!(error = %err, "cannot read dead-letter queue depths; trying again every round");
                }
                failing = true;
            }
        }
    }
    if let Some(channel) = channel {
        // Closing can only fail if the channel is already gone.
        let _ = channel.close(200, "stopping".into()).await;
    }
}

/// One round: every queue's depth, on `channel` (opened if there is none or it closed).
async fn sample(
    broker: &Broker,
    channel: &mut Option<Channel>,
    queues: &[String],
) -> Result<(), BrokerError> {
    let open = match channel.take() {
        Some(open) if open.status().connected() => open,
        _ => broker.open_channel(Role::Consume).await?,
    };
    let channel = channel.insert(open);
    let timeout = broker.config().connect_timeout;
    for queue in queues {
        let count = message_count(channel, queue, timeout).await?;
        ::metrics::gauge!(crate::metrics::DEAD_LETTER_QUEUE_MESSAGES, "queue" => queue.clone())
            .set(f64::from(count));
    }
    Ok(())
}

/// How many messages `queue` holds (ready, not being handled): a passive declaration on
/// `channel`, bounded by `timeout`. A queue that does not exist is an error that closes the
/// channel (`NOT_FOUND`).
pub(crate) async fn message_count(
    channel: &Channel,
    queue: &str,
    timeout: Duration,
) -> Result<u32, BrokerError> {
    let declared = tokio::time::timeout(
        timeout,
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|_| BrokerError::Timeout {
        what: "a passive queue declaration",
        after: timeout,
    })??;
    Ok(declared.message_count())
}
