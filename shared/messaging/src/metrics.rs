//! The metrics this crate records, each name spelled once, and their descriptions.
//!
//! The services describe them at start-up ([`describe`], called by `service-kit` once the
//! recorder is installed), so that `/metrics` has a `# HELP` line for each.

use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counter, by `queue`: a consumer lost its channel or subscription and subscribed again.
pub const CONSUMER_RESTARTS: &str = "consumer_restarts_total";
/// Counter, by `queue`: handlers that panicked (their message is parked in the dead-letter queue).
pub const HANDLER_PANICS: &str = "handler_panics_total";
/// Counter, by `queue`: messages that this process parked in the queue's dead-letter queue.
pub const MESSAGES_DEAD_LETTERED: &str = "messages_dead_lettered_total";
/// Counter: requests sent again because their reply had not come in time.
pub const RPC_RESENDS: &str = "rpc_resends_total";
/// Histogram: requests that travelled in one message.
pub const RPC_BATCH_SIZE: &str = "rpc_batch_size";
/// Gauge, by `queue`: messages in a dead-letter queue, as the broker last answered.
pub const DEAD_LETTER_QUEUE_MESSAGES: &str = "dead_letter_queue_messages";

/// Describes every metric of this crate to the installed recorder, and registers the counters
/// that have no labels at zero (so that they are exported before their first event).
pub fn describe() {
    describe_counter!(
        CONSUMER_RESTARTS,
        Unit::Count,
        "Times a consumer lost its channel or subscription and subscribed again, by queue."
    );
    describe_counter!(
        HANDLER_PANICS,
        Unit::Count,
        "Message handlers that panicked, by queue; their messages are parked in the dead-letter queue."
    );
    describe_counter!(
        MESSAGES_DEAD_LETTERED,
        Unit::Count,
        "Messages this process parked in a dead-letter queue (unreadable, or their handler gave up), by source queue."
    );
    describe_counter!(
        RPC_RESENDS,
        Unit::Count,
        "Requests to a participant sent again because no reply came in time."
    );
    describe_histogram!(
        RPC_BATCH_SIZE,
        Unit::Count,
        "Requests to one participant queue that travelled in one message."
    );
    describe_gauge!(
        DEAD_LETTER_QUEUE_MESSAGES,
        Unit::Count,
        "Messages waiting in a dead-letter queue of this service, sampled from the broker every few seconds (the last value stays while the broker is out of reach)."
    );
    ::metrics::counter!(RPC_RESENDS).increment(0);
}

/// Registers the counters of the consumer of `queue` at zero.
pub(crate) fn register_consumer(queue: &str) {
    for name in [CONSUMER_RESTARTS, HANDLER_PANICS, MESSAGES_DEAD_LETTERED] {
        ::metrics::counter!(name, "queue" => queue.to_owned()).increment(0);
    }
}
