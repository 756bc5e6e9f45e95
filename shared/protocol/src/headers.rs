//! AMQP header names. Ids are repeated in headers (besides the body) so that a consumer can put
//! them on its log lines before, and even without, parsing the body.

/// The order a message is about.
pub const ORDER_ID: &str = "order-id";
/// The transaction a message is about.
pub const TXN_ID: &str = "txn-id";
/// Why a message was moved to a dead-letter queue by a consumer (the broker's own dead-lettering
/// adds `x-death` instead).
pub const DEAD_LETTER_REASON: &str = "x-dead-letter-reason";
/// The queue a dead-lettered message was consumed from.
pub const DEAD_LETTER_QUEUE: &str = "x-dead-letter-queue";
/// When a consumer parked the message: milliseconds since the Unix epoch (the broker's own
/// dead-lettering records the time in `x-death` instead).
pub const PARKED_AT: &str = "x-parked-at";
/// How many times a quorum queue has delivered the message before (set by RabbitMQ).
pub const DELIVERY_COUNT: &str = "x-delivery-count";
/// W3C trace context of the sender's span.
pub const TRACEPARENT: &str = "traceparent";
