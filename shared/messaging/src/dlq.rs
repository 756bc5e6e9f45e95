//! Parked messages: reading a dead-letter queue without taking anything out of it, and moving
//! its messages back to the queue they were parked from, once what made them fail is fixed.
//!
//! A message is parked either by a consumer (unreadable, invalid, or its handler panicked: the
//! reason is in `x-dead-letter-reason`, the queue in `x-dead-letter-queue`) or by the broker
//! (a quorum queue's delivery limit: `x-first-death-reason` and `x-first-death-queue`). Either
//! way the copy keeps the message's own properties, so that a message moved back is handled
//! like the first time (its reply, if any, goes where the first would have gone).
//!
//! Moving back goes to the queue the operator's configuration names for the dead-letter queue
//! (its topology), never to one a message's headers name, and leaves in place the messages
//! parked longer ago than a bound (a command replayed after its transaction's idempotency
//! records are gone could act again): see [`replay`].
//!
//! Moving back is at least once: each message is published to its queue (with a confirm)
//! before it is acked in the dead-letter queue, so a crash in between leaves it in both, and
//! the consumers' idempotency (the participants' barrier) makes the second harmless.

use std::time::Duration;

use deadpool_lapin::lapin::{
    BasicProperties as AMQPProperties, Channel,
    message::BasicGetMessage,
    options::{BasicAckOptions, BasicGetOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable},
};
use protocol::headers;
use protocol::topology::Topology;

use crate::broker::{Broker, BrokerError, Role};
use crate::publisher::{Outgoing, Publisher};

/// Headers about the parking itself, left out of a message moved back.
const PARKING_HEADERS: [&str; 5] = [
    headers::DEAD_LETTER_REASON,
    headers::DEAD_LETTER_QUEUE,
    headers::PARKED_AT,
    headers::DELIVERY_COUNT,
    "x-death",
];
/// The prefixes of the broker's own dead-lettering headers (`x-first-death-queue`, …).
const BROKER_DEATH_PREFIXES: [&str; 2] = ["x-first-death-", "x-last-death-"];

/// A parked message, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked {
    /// The queue it was parked from, where it goes back.
    pub queue: String,
    /// Why it was parked.
    pub reason: String,
    /// Its type (`reserve`, `command_batch`, …), if it has one.
    pub kind: Option<String>,
    /// The order it is about, if it says.
    pub order_id: Option<String>,
    /// Its message id.
    pub message_id: Option<String>,
    /// The body, as text (lossy), cut to [`PREVIEW`] bytes.
    pub preview: String,
    /// The size of the body, in bytes.
    pub size: usize,
    /// How long ago it was parked, if it says (`x-parked-at`, or the broker's `x-death`).
    pub age: Option<Duration>,
}

/// How much of a body [`Parked::preview`] shows.
pub const PREVIEW: usize = 200;
/// How long one `basic.get` may take.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

fn text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn parked(dlq: &str, data: &[u8], properties: &AMQPProperties) -> Parked {
    let headers = properties.headers().as_ref();
    let queue = text(headers, headers::DEAD_LETTER_QUEUE)
        .or_else(|| text(headers, "x-first-death-queue"))
        .unwrap_or_else(|| {
            Topology::source_of_dead_letter_queue(dlq)
                .unwrap_or(dlq)
                .to_owned()
        });
    let reason = text(headers, headers::DEAD_LETTER_REASON)
        .or_else(|| text(headers, "x-first-death-reason"))
        .unwrap_or_else(|| "unknown".to_owned());
    let shown = &data[..data.len().min(PREVIEW)];
    Parked {
        queue,
        reason,
        kind: properties.kind().as_ref().map(|k| k.as_str().to_owned()),
        order_id: text(headers, headers::ORDER_ID),
        message_id: properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned()),
        preview: String::from_utf8_lossy(shown).into_owned(),
        size: data.len(),
        age: parked_at(headers).map(|at| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            now.saturating_sub(at)
        }),
    }
}

/// When the message was parked, since the Unix epoch: our consumers' `x-parked-at`, or the
/// `time` of the broker's first `x-death` entry.
fn parked_at(headers: Option<&FieldTable>) -> Option<Duration> {
    if let Some(millis) = text(headers, headers::PARKED_AT).and_then(|t| t.parse::<u64>().ok()) {
        return Some(Duration::from_millis(millis));
    }
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("time")? {
        AMQPValue::Timestamp(seconds) => Some(Duration::from_secs(*seconds)),
        _ => None,
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The messages moved back.
    pub moved: Vec<Parked>,
    /// The messages left in the dead-letter queue, each with why.
    pub left: Vec<(Parked, String)>,
}

/// Which parked messages a replay moves back.
#[derive(Clone, Copy, Debug)]
pub struct ReplayLimits {
    /// At most this many messages are looked at.
    pub limit: usize,
    /// Messages parked longer ago than this (or whose parking time is unknown) are left, unless
    /// `force`.
    pub max_age: Duration,
    /// Moves old messages (and those of unknown age) too.
    pub force: bool,
}

impl ReplayLimits {
    /// Why `message` stays parked, if it does.
    pub fn refuses(&self, message: &Parked) -> Option<String> {
        if self.force {
            return None;
        }
        match message.age {
            None => Some("its parking time is unknown (move it with force)".to_owned()),
            Some(age) if age > self.max_age => Some(format!(
                "parked {} ago, longer than {} (move it with force)",
                humanize(age),
                humanize(self.max_age)
            )),
            Some(_) => None,
        }
    }
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3_600),
    }
}

/// The message's properties without the headers of its parking.
fn as_before(properties: &AMQPProperties) -> AMQPProperties {
    let mut kept = FieldTable::default();
    if let Some(headers) = properties.headers() {
        for (name, value) in headers.inner() {
            let name_text = name.as_str();
            let parking = PARKING_HEADERS.contains(&name_text)
                || BROKER_DEATH_PREFIXES
                    .iter()
                    .any(|p| name_text.starts_with(p));
            if !parking {
                kept.insert(name.clone(), value.clone());
            }
        }
    }
    properties.clone().with_headers(kept)
}

async fn get(channel: &Channel, dlq: &str) -> Result<Option<BasicGetMessage>, BrokerError> {
    tokio::time::timeout(
        GET_TIMEOUT,
        channel.basic_get(dlq.into(), BasicGetOptions { no_ack: false }),
    )
    .await
    .map_err(|_| BrokerError::Timeout {
        what: "basic.get",
        after: GET_TIMEOUT,
    })?
    .map_err(BrokerError::from)
}

/// How many messages `queue` holds (ready, not being handled), or `None` if it does not exist.
/// A passive declaration, on a channel of its own (a missing queue closes it).
pub async fn depth(broker: &Broker, queue: &str) -> Result<Option<u32>, BrokerError> {
    let channel = broker.open_channel(Role::Consume).await?;
    let depth = match crate::queue_depth::message_count(&channel, queue, GET_TIMEOUT).await {
        Ok(count) => Some(count),
        Err(BrokerError::Amqp(err)) if is_not_found(&err) => None,
        Err(err) => return Err(err),
    };
    let _ = channel.close(200, "counted".into()).await;
    Ok(depth)
}

/// Whether the broker answered `404 NOT_FOUND` (the channel is closed then).
fn is_not_found(err: &deadpool_lapin::lapin::Error) -> bool {
    matches!(
        err.kind(),
        deadpool_lapin::lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404
    )
}

/// Up to `limit` messages of `dlq`, oldest first, left in it: they are taken unacked, and the
/// channel is closed after, which puts them back.
pub async fn peek(broker: &Broker, dlq: &str, limit: usize) -> Result<Vec<Parked>, BrokerError> {
    let channel = broker.open_channel(Role::Consume).await?;
    let mut found = Vec::new();
    let read = async {
        while found.len() < limit {
            let Some(message) = get(&channel, dlq).await? else {
                break;
            };
            found.push(parked(
                dlq,
                &message.delivery.data,
                &message.delivery.properties,
            ));
        }
        Ok::<_, BrokerError>(())
    }
    .await;
    // Closing returns every unacked message to the queue, in its place.
    let _ = channel.close(200, "peeked".into()).await;
    read.map(|()| found)
}

/// Moves messages of `dlq` back to `target`, the queue the configured topology names for it
/// (whatever queue a message's headers name): each is published there (confirmed) with its own
/// properties, then acked here. Messages that `limits` refuse (too old) stay in `dlq`, in
/// their place. On the first failure the message at hand goes back to `dlq`, and the error is
/// returned with nothing more moved.
pub async fn replay(
    broker: &Broker,
    publisher: &Publisher,
    dlq: &str,
    target: &str,
    limits: ReplayLimits,
) -> Result<Replayed, BrokerError> {
    let channel = broker.open_channel(Role::Consume).await?;
    let mut replayed = Replayed::default();
    let result = async {
        while replayed.moved.len() + replayed.left.len() < limits.limit {
            let Some(message) = get(&channel, dlq).await? else {
                break;
            };
            let delivery = message.delivery;
            let info = parked(dlq, &delivery.data, &delivery.properties);
            if let Some(why) = limits.refuses(&info) {
                // Left unacked: closing the channel puts it back in its place.
                replayed.left.push((info, why));
                continue;
            }
            // Through the default exchange, straight to the queue (mandatory: a queue that no
            // longer exists is an error, not a loss).
            let copy = Outgoing::copy(
                delivery.data.clone(),
                as_before(&delivery.properties),
                "",
                target.to_owned(),
            );
            if let Err(err) = publisher.publish(&copy).await {
                let _ = channel
                    .basic_nack(
                        delivery.delivery_tag,
                        BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        },
                    )
                    .await;
                return Err(err);
            }
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await?;
            replayed.moved.push(info);
        }
        Ok(())
    }
    .await;
    let _ = channel.close(200, "replayed".into()).await;
    result.map(|()| replayed)
}

#[cfg(test)]
mod tests {
    use deadpool_lapin::lapin::types::{LongString, ShortString};

    use super::*;

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn a_consumers_parking_names_its_reason_and_queue_and_is_left_out_when_moved_back() {
        let mut headers = FieldTable::default();
        headers.insert(headers::DEAD_LETTER_REASON.into(), long("bad json"));
        headers.insert(headers::DEAD_LETTER_QUEUE.into(), long("store.assign"));
        headers.insert(headers::ORDER_ID.into(), long("o-1"));
        headers.insert("traceparent".into(), long("00-abc"));
        let properties = AMQPProperties::default()
            .with_type(ShortString::from("assign"))
            .with_reply_to(ShortString::from("order.replies.x"))
            .with_headers(headers);
        let info = parked("store.assign.dlq", b"{\"x\":1}", &properties);
        assert_eq!(info.queue, "store.assign");
        assert_eq!(info.reason, "bad json");
        assert_eq!(info.kind.as_deref(), Some("assign"));
        assert_eq!(info.order_id.as_deref(), Some("o-1"));
        assert_eq!(info.size, 7);

        let before = as_before(&properties);
        let kept = before.headers().clone().unwrap_or_default();
        assert!(kept.inner().get(headers::DEAD_LETTER_REASON).is_none());
        assert!(kept.inner().get(headers::DEAD_LETTER_QUEUE).is_none());
        assert!(kept.inner().get(headers::ORDER_ID).is_some());
        assert!(kept.inner().get("traceparent").is_some());
        assert_eq!(
            before.reply_to().as_ref().map(|r| r.as_str()),
            Some("order.replies.x")
        );
    }

    #[test]
    fn the_brokers_parking_is_read_from_its_own_headers_or_the_queue_name() {
        let mut headers = FieldTable::default();
        headers.insert("x-first-death-reason".into(), long("delivery_limit"));
        headers.insert("x-first-death-queue".into(), long("delivery.reserve"));
        headers.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let properties = AMQPProperties::default().with_headers(headers);
        let info = parked("delivery.reserve.dlq", b"", &properties);
        assert_eq!(info.reason, "delivery_limit");
        assert_eq!(info.queue, "delivery.reserve");
        let kept = as_before(&properties).headers().clone().unwrap_or_default();
        assert!(kept.inner().is_empty(), "{kept:?}");

        let bare = parked("p.store.release.dlq", b"x", &AMQPProperties::default());
        assert_eq!(bare.queue, "p.store.release");
        assert_eq!(bare.reason, "unknown");
    }
}
