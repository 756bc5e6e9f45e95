//! The `day` scenario: a delivery day at several hubs, through the services' public APIs.
//!
//! It seeds `--hubs` new hubs, [`FOODS`] foods with packets at every hub (`--stock` shared out
//! over the foods and hubs) and `--agents-per-hub` agents at each hub: plenty of packets, few
//! agents, so that the orders placed depend on agents coming back from their deliveries. Orders
//! then arrive for the run's length, closed or open loop as in the other scenarios: baskets of 1
//! to 3 lines of 1 or 2 packets, at a random hub. Every placed order gets a rider, who reports
//! the pick-up to delivery `--pickup-delay` after the placement and the delivery
//! `--deliver-delay` after that; the agent is then free for the next order. `--cancel-rate` of
//! the placed orders are cancelled by their customer at a random moment up to 1.5 times the
//! pick-up delay after the placement, racing the rider: either the cancel wins (`200`, and the
//! pick-up is refused with `404`) or the pick-up does (`200`, and the cancel is refused with
//! `409 already_picked_up`), never both, never neither.
//!
//! When the orders stop, the riders finish the orders still under way, and the checks run once
//! every order is final (`not_placed`, `delivered` or `cancelled`):
//! - each order ended as its rider and its customer saw (delivered, or cancelled), and each
//!   cancel and pick-up pair ended exactly one way;
//! - each placed order holds one packet per unit of its lines and an agent of its own hub;
//! - no agent (and no packet) was held by two orders at once: each order's holding is known to
//!   cover at least the span from its placement's answer to the request that freed it (the
//!   delivery, or the cancel; a delivered order keeps its packets), and these spans must not
//!   overlap;
//! - each hub has all its agents free again and nothing reserved, and the store's count of
//!   assigned packets of each food at each hub is that of the delivered orders;
//! - no `POST /orders` was answered with an error;
//! - and the audit of the three databases (which knows hubs, baskets, deliveries and cancels).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::day_stats::Stats;
use crate::distributed::{self, Api, Checked};
use crate::load::{self, Measured, Record};
use crate::scenario::FOODS;
use crate::{RunArgs, Target};

/// How long orders may take after the run to become final (pending ones decided, cancels ended,
/// deliveries recorded by the coordinator, reservations released).
const SETTLE: Duration = Duration::from_secs(90);
/// How often an order (or a hub) not yet as expected is asked again.
const POLL: Duration = Duration::from_millis(100);
/// How long a rider asks again for a pick-up refused because delivery has not seen the order
/// placed yet.
const PLACED_SEEN: Duration = Duration::from_secs(10);
/// Tries of a request that may be repeated (a pick-up, a delivery, a cancel, a read) when the
/// connection fails or the service answers `503`.
const ATTEMPTS: u32 = 5;
/// Customers the orders are spread over.
const CUSTOMERS: u32 = 1_000;
/// Most packets one seeding request adds (the store's limit).
const PACKET_CHUNK: i64 = 100_000;
/// Orders answered at once at most, in open loop.
const MAX_IN_FLIGHT: usize = 4_096;

/// A span an order is known to have held an item for: from, until (`None`: still, or for
/// good), and the order.
type Span<'a> = (Instant, Option<Instant>, &'a str);

/// A seeded hub.
#[derive(Debug)]
struct Hub {
    /// Its id.
    id: i64,
    /// Its agents.
    agents: Vec<i64>,
}

/// What a placed order holds, as its answer said.
#[derive(Debug)]
struct Placed {
    /// When the answer came.
    at: Instant,
    /// Its packets.
    packets: Vec<i64>,
    /// Its agent.
    agent: i64,
}

/// How a customer's cancel ended.
#[derive(Debug, PartialEq, Eq)]
enum CancelOutcome {
    /// Cancelled.
    Won,
    /// Refused: the rider had picked the order up.
    Lost,
    /// Anything else (an answer the API does not give for a placed order, or none).
    Other(String),
}

/// A customer's cancel.
#[derive(Debug)]
struct Cancel {
    /// When it was first sent.
    sent: Instant,
    /// How it ended.
    outcome: CancelOutcome,
}

/// What a rider's two reports came to.
#[derive(Debug, Default)]
struct Ride {
    /// The pick-up's answer: `Some(true)` for `200`, `Some(false)` for `404`; `None` if it got
    /// neither (a problem says what).
    picked_up: Option<bool>,
    /// When the delivery was sent, and when it was answered `200`.
    delivered: Option<(Instant, Instant)>,
    /// What went wrong.
    problems: Vec<String>,
}

/// One order from its answer to the end of its life.
#[derive(Debug, Default)]
struct Life {
    /// Its id.
    order_id: String,
    /// Its customer.
    customer: String,
    /// Its hub.
    hub: i64,
    /// Its lines, as (food, quantity).
    lines: Vec<(i64, u32)>,
    /// What it holds, once placed.
    placed: Option<Placed>,
    /// The reason, for an order answered `pending` and not placed later.
    not_placed: Option<String>,
    /// Whether it was answered `pending` first and decided later.
    finished_later: bool,
    /// The rider's reports.
    ride: Ride,
    /// The customer's cancel, if any.
    cancel: Option<Cancel>,
    /// When its life ended here (the rider's and the customer's last answer).
    ended: Option<Instant>,
    /// What went wrong.
    problems: Vec<String>,
}

impl Life {
    /// The state the order must end in, from what the rider and the customer were told.
    fn expected_end(&self) -> Option<&'static str> {
        match (&self.cancel, self.ride.picked_up) {
            (Some(cancel), Some(false)) if cancel.outcome == CancelOutcome::Won => {
                Some("cancelled")
            }
            (_, Some(true)) if self.ride.delivered.is_some() => Some("delivered"),
            _ => None,
        }
    }
}

/// The day's shared state.
struct Day {
    /// The services.
    api: Api,
    /// The hubs.
    hubs: Vec<Hub>,
    /// The foods (each with packets at every hub).
    foods: Vec<i64>,
    /// This run's tag, in names.
    tag: String,
    /// From placement to pick-up.
    pickup_delay: Duration,
    /// From pick-up to delivery.
    deliver_delay: Duration,
    /// The fraction of placed orders cancelled.
    cancel_rate: f64,
    /// Every order's life under way (orders answered `placed` or `pending`).
    lives: Mutex<Vec<JoinHandle<Life>>>,
    /// Latency of the `201` answers, microseconds.
    placed_latency: Mutex<Histogram<u64>>,
}

/// Seeds, runs the day, and checks it.
pub(crate) async fn run(target: &Target, args: &RunArgs) -> anyhow::Result<Checked> {
    if args.hubs == 0 || args.agents_per_hub < 1 {
        bail!("a day needs at least one hub and one agent per hub");
    }
    if !(0.0..=1.0).contains(&args.cancel_rate) {
        bail!("--cancel-rate must be between 0 and 1");
    }
    let api = Api::new(target)?;
    if !args.no_vacuum {
        distributed::vacuum(target).await?;
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (hubs, foods, per_hub) = seed(&api, args, &tag).await?;
    let day = Arc::new(Day {
        api,
        hubs,
        foods,
        tag,
        pickup_delay: args.pickup_delay,
        deliver_delay: args.deliver_delay,
        cancel_rate: args.cancel_rate,
        lives: Mutex::new(Vec::new()),
        placed_latency: Mutex::new(load::histogram()?),
    });

    let order = {
        let day = Arc::clone(&day);
        move || {
            let day = Arc::clone(&day);
            async move { day.order().await }
        }
    };
    let amount = args.amount();
    let scraped = if args.breakdown {
        day.api.scrape_or_warn().await
    } else {
        None
    };
    let started = Instant::now();
    let cpu = crate::cpu::start(args.cpu);
    let measured = match args.rate {
        Some(rate) => load::open(rate, amount, MAX_IN_FLIGHT, "day", order).await?,
        None => load::closed(args.clients, amount, "day", order).await?,
    };
    // The riders finish what is under way: the day ends with the last order's life.
    let mut violations = Vec::new();
    let mut lives = Vec::new();
    let handles = std::mem::take(&mut *day.lives.lock().await);
    for handle in handles {
        match handle.await {
            Ok(life) => lives.push(life),
            Err(err) => violations.push(format!("an order's life ended abnormally: {err}")),
        }
    }
    let ended = lives
        .iter()
        .filter_map(|life| life.ended)
        .max()
        .unwrap_or(started)
        .max(started + measured.elapsed);
    let cpu = crate::cpu::finish(cpu, measured.orders());
    let breakdown = day.api.breakdown_since(scraped).await;

    let finals = day
        .check(&measured, &lives, per_hub, &mut violations)
        .await?;
    let stats = day.stats(&measured, &lives, &finals, ended - started).await;
    let db = audit::Databases::connect(
        &target.order_database_url,
        &target.store_database_url,
        &target.delivery_database_url,
    )
    .await
    .context("the audit needs the three databases (ORDER_DATABASE_URL, …)")?;
    let report = audit::audit(&db, Duration::from_secs(10)).await?;
    violations.extend(report.violations.iter().map(|v| format!("audit: {v}")));
    Ok(Checked {
        finished_later: lives.iter().filter(|life| life.finished_later).count() as u64,
        measured,
        violations,
        cpu,
        breakdown,
        day: Some(stats),
    })
}

/// Creates the hubs with their agents, and the foods with packets at every hub. Returns the
/// hubs, the foods, and the packets of each food at each hub.
async fn seed(api: &Api, args: &RunArgs, tag: &str) -> anyhow::Result<(Vec<Hub>, Vec<i64>, i64)> {
    let (store, delivery) = (&api.target.store_url, &api.target.delivery_url);
    let mut hubs = Vec::new();
    for i in 0..args.hubs {
        let hub = api
            .post(
                format!("{store}/hubs"),
                json!({ "name": format!("bench day {tag} {i}") }),
            )
            .await
            .context("cannot create a hub (is the store service up?)")?;
        let id = hub["id"].as_i64().context("hub id")?;
        let created = api
            .post(
                format!("{delivery}/agents"),
                json!({ "count": args.agents_per_hub, "hub_id": id }),
            )
            .await
            .context("cannot create agents (is the delivery service up?)")?;
        let agents: Vec<i64> = created["ids"]
            .as_array()
            .context("agent ids")?
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        if i64::try_from(agents.len()).ok() != Some(args.agents_per_hub) {
            bail!(
                "asked for {} agents at hub {id}, got {created}",
                args.agents_per_hub
            );
        }
        hubs.push(Hub { id, agents });
    }
    let per_hub = (args.stock / FOODS / i64::try_from(hubs.len()).unwrap_or(i64::MAX)).max(1);
    let mut foods = Vec::new();
    for i in 0..FOODS {
        let first = hubs.first().map_or(1, |hub| hub.id);
        let food = api
            .post(
                format!("{store}/foods"),
                json!({ "name": format!("bench day {tag} {i}"), "packets": 0, "hub_id": first }),
            )
            .await?;
        let id = food["id"].as_i64().context("food id")?;
        for hub in &hubs {
            let mut left = per_hub;
            while left > 0 {
                let n = left.min(PACKET_CHUNK);
                api.post(
                    format!("{store}/foods/{id}/packets"),
                    json!({ "count": n, "hub_id": hub.id }),
                )
                .await?;
                left -= n;
            }
        }
        foods.push(id);
    }
    Ok((hubs, foods, per_hub))
}

/// Whether `status` ends an order's life.
fn is_final(status: &str) -> bool {
    matches!(status, "not_placed" | "delivered" | "cancelled")
}

impl Day {
    /// A random basket at a random hub, and its customer.
    fn basket(&self) -> (i64, Vec<(i64, u32)>, String) {
        let mut rng = rand::rng();
        let hub = self.hubs[rng.random_range(0..self.hubs.len())].id;
        let n = rng.random_range(1..=3).min(self.foods.len());
        let lines = rand::seq::index::sample(&mut rng, self.foods.len(), n)
            .into_iter()
            .map(|i| (self.foods[i], rng.random_range(1..=2)))
            .collect();
        let customer = format!("day-{}-{}", self.tag, rng.random_range(0..CUSTOMERS));
        (hub, lines, customer)
    }

    /// Sends one order; a placed (or pending) one lives on in a task of its own.
    async fn order(self: Arc<Self>) -> Record {
        let (hub, lines, customer) = self.basket();
        let body = json!({
            "customer_id": customer,
            "hub_id": hub,
            "lines": lines
                .iter()
                .map(|(food, quantity)| json!({ "food_id": food, "quantity": quantity }))
                .collect::<Vec<_>>(),
        });
        let url = format!("{}/orders", self.api.target.order_url);
        let sent = Instant::now();
        let (status, body) = match self.api.http.post(&url).json(&body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(err) => {
                let what = if err.is_timeout() {
                    "timeout"
                } else {
                    "connection"
                };
                return Record {
                    label: format!("error:{what}"),
                    ..Record::default()
                };
            }
        };
        let mut life = Life {
            order_id: body["order_id"].as_str().unwrap_or_default().to_owned(),
            customer,
            hub,
            lines,
            ..Life::default()
        };
        let label = match (status, body["status"].as_str()) {
            (201, Some("placed")) => {
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.placed_latency
                    .lock()
                    .await
                    .saturating_record(micros.max(1));
                self.take_placed(&mut life, &body);
                "placed".to_owned()
            }
            (409, Some("not_placed")) => {
                format!("not_placed:{}", body["reason"].as_str().unwrap_or("?"))
            }
            (202, Some("pending")) => "pending".to_owned(),
            (status, _) => format!("error:{status}"),
        };
        let record = Record {
            order_id: body["order_id"].as_str().map(str::to_owned),
            agent: life.placed.as_ref().map(|placed| placed.agent),
            label,
            packet: None,
        };
        if matches!(record.label.as_str(), "placed" | "pending") {
            if life.order_id.is_empty() {
                life.problems
                    .push(format!("answer without an order id: {body}"));
            }
            let handle = tokio::spawn(Arc::clone(&self).live(life));
            self.lives.lock().await.push(handle);
        }
        record
    }

    /// Reads what a placed order holds from its answer, and checks it against its basket.
    fn take_placed(&self, life: &mut Life, body: &Value) {
        let packets: Vec<i64> = body["packet_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        let Some(agent) = body["agent_id"].as_i64() else {
            life.problems
                .push(format!("placed order without an agent: {body}"));
            return;
        };
        let units: u32 = life.lines.iter().map(|(_, quantity)| quantity).sum();
        if packets.len() != units as usize {
            life.problems.push(format!(
                "placed with {} packets for {units} units: {body}",
                packets.len()
            ));
        }
        if body["hub_id"].as_i64() != Some(life.hub) {
            life.problems
                .push(format!("placed at another hub than {}: {body}", life.hub));
        }
        let hub = self.hubs.iter().find(|hub| hub.id == life.hub);
        if !hub.is_some_and(|hub| hub.agents.contains(&agent)) {
            life.problems.push(format!(
                "agent {agent} is not one of hub {}'s agents",
                life.hub
            ));
        }
        life.placed = Some(Placed {
            at: Instant::now(),
            packets,
            agent,
        });
    }

    /// One order's life after its answer: decided if pending, then ridden, and perhaps
    /// cancelled on the way.
    async fn live(self: Arc<Self>, mut life: Life) -> Life {
        if life.placed.is_none() && !life.order_id.is_empty() {
            self.await_placement(&mut life).await;
        }
        let Some(placed_at) = life.placed.as_ref().map(|placed| placed.at) else {
            return life;
        };
        let cancel_after = {
            let mut rng = rand::rng();
            rng.random_bool(self.cancel_rate)
                .then(|| self.pickup_delay.mul_f64(rng.random_range(0.0..=1.5)))
        };
        let (ride, cancel) = tokio::join!(self.ride(&life.order_id, placed_at), async {
            match cancel_after {
                Some(after) => Some(
                    self.cancel(&life.order_id, &life.customer, placed_at + after)
                        .await,
                ),
                None => None,
            }
        });
        life.ride = ride;
        life.cancel = cancel;
        life.ended = Some(Instant::now());
        life
    }

    /// Polls an order answered `pending` until it is decided.
    async fn await_placement(&self, life: &mut Life) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let body = match self.order_now(&life.order_id).await {
                Ok(body) => body,
                Err(err) => {
                    life.problems.push(format!("{err:#}"));
                    return;
                }
            };
            match body["status"].as_str() {
                Some("pending") => {}
                Some("placed") => {
                    life.finished_later = true;
                    self.take_placed(life, &body);
                    return;
                }
                Some("not_placed") => {
                    life.finished_later = true;
                    life.not_placed = Some(body["reason"].as_str().unwrap_or("?").to_owned());
                    return;
                }
                _ => {
                    life.problems.push(format!("a pending order became {body}"));
                    return;
                }
            }
            if Instant::now() > deadline {
                life.problems
                    .push(format!("still pending {SETTLE:?} after its answer"));
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The rider: picks the order up `pickup_delay` after its placement, delivers it
    /// `deliver_delay` later.
    async fn ride(&self, order_id: &str, placed_at: Instant) -> Ride {
        let mut ride = Ride::default();
        let base = format!("{}/deliveries/{order_id}", self.api.target.delivery_url);
        tokio::time::sleep_until(placed_at + self.pickup_delay).await;
        let url = format!("{base}/picked-up");
        // Delivery takes a pick-up once it has seen the order placed: `409` until then.
        let seen_by = Instant::now() + PLACED_SEEN;
        let picked_up = loop {
            let answer = self
                .send(|| self.api.request(self.api.http.post(&url)))
                .await;
            match answer {
                Ok((409, _)) if Instant::now() < seen_by => tokio::time::sleep(POLL).await,
                answer => break answer,
            }
        };
        match picked_up {
            Ok((200, _)) => ride.picked_up = Some(true),
            Ok((404, _)) => {
                ride.picked_up = Some(false);
                return ride;
            }
            Ok((status, body)) => {
                ride.problems
                    .push(format!("pick-up answered {status} {body}"));
                return ride;
            }
            Err(err) => {
                ride.problems.push(format!("pick-up: {err:#}"));
                return ride;
            }
        }
        tokio::time::sleep(self.deliver_delay).await;
        let url = format!("{base}/delivered");
        let sent = Instant::now();
        match self
            .send(|| self.api.request(self.api.http.post(&url)))
            .await
        {
            Ok((200, _)) => ride.delivered = Some((sent, Instant::now())),
            Ok((status, body)) => ride
                .problems
                .push(format!("delivery answered {status} {body}")),
            Err(err) => ride.problems.push(format!("delivery: {err:#}")),
        }
        ride
    }

    /// The customer cancels the order at `at`, and waits for the cancel to end.
    async fn cancel(&self, order_id: &str, customer: &str, at: Instant) -> Cancel {
        tokio::time::sleep_until(at).await;
        let url = format!("{}/orders/{order_id}/cancel", self.api.target.order_url);
        let body = json!({ "customer_id": customer });
        let sent = Instant::now();
        let outcome = match self.send(|| self.api.http.post(&url).json(&body)).await {
            Ok((200, body)) if body["status"] == "cancelled" => CancelOutcome::Won,
            Ok((409, body)) if body["reason"] == "already_picked_up" => CancelOutcome::Lost,
            Ok((202, _)) => self.await_cancel(order_id).await,
            Ok((status, body)) => CancelOutcome::Other(format!("{status} {body}")),
            Err(err) => CancelOutcome::Other(format!("{err:#}")),
        };
        Cancel { sent, outcome }
    }

    /// Polls an order whose cancel was answered `202` until the cancel has ended.
    async fn await_cancel(&self, order_id: &str) -> CancelOutcome {
        let deadline = Instant::now() + SETTLE;
        loop {
            let body = match self.order_now(order_id).await {
                Ok(body) => body,
                Err(err) => return CancelOutcome::Other(format!("{err:#}")),
            };
            match body["status"].as_str() {
                Some("cancelled") => return CancelOutcome::Won,
                Some("picked_up" | "delivered") => return CancelOutcome::Lost,
                Some("cancelling" | "placed") => {}
                _ => return CancelOutcome::Other(format!("a cancelling order became {body}")),
            }
            if Instant::now() > deadline {
                return CancelOutcome::Other(format!("still {body} {SETTLE:?} after the cancel"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The order as the coordinator has it now.
    async fn order_now(&self, order_id: &str) -> anyhow::Result<Value> {
        let url = format!("{}/orders/{order_id}", self.api.target.order_url);
        match self.send(|| self.api.http.get(&url)).await? {
            (200, body) => Ok(body),
            (status, body) => bail!("GET {url}: {status} {body}"),
        }
    }

    /// Sends a request that may be repeated (built by `request`), again when the connection
    /// fails or the service answers `503`, and returns the status and the JSON answer.
    async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        let mut last = anyhow!("not sent");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(POLL * attempt).await;
            }
            match request().send().await {
                Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    last = anyhow!("503 {}", response.text().await.unwrap_or_default());
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    return Ok((status, response.json().await.unwrap_or(Value::Null)));
                }
                Err(err) => last = err.into(),
            }
        }
        Err(last)
    }

    /// Waits until every order is final, then checks the day; returns the final state of every
    /// order that lived on after its answer.
    async fn check(
        &self,
        measured: &Measured,
        lives: &[Life],
        per_hub: i64,
        violations: &mut Vec<String>,
    ) -> anyhow::Result<HashMap<String, String>> {
        for (label, n) in &measured.outcomes {
            if label.starts_with("error:") {
                violations.push(format!("{n} orders answered {label}"));
            }
        }
        for life in lives {
            let id = &life.order_id;
            violations.extend(
                life.problems
                    .iter()
                    .chain(&life.ride.problems)
                    .map(|problem| format!("order {id}: {problem}")),
            );
            if life.placed.is_none() {
                continue;
            }
            let cancel = life.cancel.as_ref().map(|cancel| &cancel.outcome);
            match (cancel, life.ride.picked_up) {
                (None, Some(false)) => violations.push(format!(
                    "order {id}: never cancelled, but its pick-up was refused (404)"
                )),
                (Some(CancelOutcome::Won), Some(true)) => violations.push(format!(
                    "order {id}: the cancel won (200) and the pick-up succeeded (200)"
                )),
                (Some(CancelOutcome::Lost), Some(false)) => violations.push(format!(
                    "order {id}: the cancel lost (409 already_picked_up) and the pick-up was \
                     refused (404)"
                )),
                (Some(CancelOutcome::Other(what)), _) => {
                    violations.push(format!("order {id}: the cancel ended with {what}"));
                }
                _ => {}
            }
        }

        let finals = self.await_final(lives, violations).await?;
        self.check_holdings(lives, &finals, violations);
        self.check_hubs(lives, &finals, per_hub, violations).await?;
        Ok(finals)
    }

    /// Polls every placed order until the coordinator has it final, and checks that it ended
    /// as its rider and customer were told.
    async fn await_final(
        &self,
        lives: &[Life],
        violations: &mut Vec<String>,
    ) -> anyhow::Result<HashMap<String, String>> {
        let deadline = Instant::now() + SETTLE;
        let mut finals = HashMap::new();
        let mut waiting: Vec<&Life> = lives
            .iter()
            .filter(|life| life.placed.is_some() && !life.order_id.is_empty())
            .collect();
        loop {
            let mut still = Vec::new();
            for life in waiting {
                let body = self.order_now(&life.order_id).await?;
                let status = body["status"].as_str().unwrap_or("?").to_owned();
                if !is_final(&status) {
                    if Instant::now() > deadline {
                        violations.push(format!(
                            "order {} still {status} {SETTLE:?} after the run",
                            life.order_id
                        ));
                    } else {
                        still.push(life);
                    }
                    continue;
                }
                if let Some(expected) = life.expected_end()
                    && expected != status
                {
                    violations.push(format!(
                        "order {} ended {status}, but its rider and customer were told it would \
                         be {expected}",
                        life.order_id
                    ));
                }
                finals.insert(life.order_id.clone(), status);
            }
            if still.is_empty() {
                return Ok(finals);
            }
            waiting = still;
            tokio::time::sleep(POLL).await;
        }
    }

    /// No agent and no packet held by two orders at once. What each order is known to have held
    /// its items for: from its placement's answer to the request that freed them (the delivery
    /// frees the agent, the cancel frees both; a delivered order keeps its packets), a part of
    /// the time it truly held them, so two of these spans of one item may not overlap.
    fn check_holdings(
        &self,
        lives: &[Life],
        finals: &HashMap<String, String>,
        violations: &mut Vec<String>,
    ) {
        let mut agents: HashMap<i64, Vec<Span<'_>>> = HashMap::new();
        let mut packets: HashMap<i64, Vec<Span<'_>>> = HashMap::new();
        for life in lives {
            let Some(placed) = &life.placed else { continue };
            let id = life.order_id.as_str();
            let (agent_end, packets_end) = match finals.get(id).map(String::as_str) {
                Some("delivered") => match life.ride.delivered {
                    Some((sent, _)) => (Some(sent), None),
                    // Delivered, but not by this rider's report: it held its agent until now.
                    None => (None, None),
                },
                Some("cancelled") => {
                    let sent = life.cancel.as_ref().map(|cancel| cancel.sent);
                    (sent, sent)
                }
                _ => (None, None),
            };
            agents
                .entry(placed.agent)
                .or_default()
                .push((placed.at, agent_end, id));
            for packet in &placed.packets {
                packets
                    .entry(*packet)
                    .or_default()
                    .push((placed.at, packets_end, id));
            }
        }
        for (what, spans) in [("agent", &mut agents), ("packet", &mut packets)] {
            for (item, held) in spans.iter_mut() {
                held.sort_by_key(|(start, _, _)| *start);
                for pair in held.windows(2) {
                    let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
                    if end.is_none_or(|end| end > start) {
                        violations.push(format!(
                            "{what} {item} held by orders {first} and {second} at once"
                        ));
                    }
                }
            }
        }
    }

    /// Every hub ends with all its agents free and nothing reserved, and with as many packets
    /// of each food assigned as its delivered orders hold.
    async fn check_hubs(
        &self,
        lives: &[Life],
        finals: &HashMap<String, String>,
        per_hub: i64,
        violations: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut assigned: HashMap<(i64, i64), i64> = HashMap::new();
        for life in lives {
            if finals.get(&life.order_id).map(String::as_str) == Some("delivered") {
                for (food, quantity) in &life.lines {
                    *assigned.entry((life.hub, *food)).or_default() += i64::from(*quantity);
                }
            }
        }
        let deadline = Instant::now() + SETTLE;
        for hub in &self.hubs {
            let agents = i64::try_from(hub.agents.len()).unwrap_or(i64::MAX);
            loop {
                let summary = self
                    .api
                    .get(format!(
                        "{}/agents/summary?hub_id={}",
                        self.api.target.delivery_url, hub.id
                    ))
                    .await?;
                let busy: i64 = ["reserved", "assigned", "delivering", "off_duty"]
                    .iter()
                    .map(|state| summary[state].as_i64().unwrap_or(0))
                    .sum();
                if summary["available"].as_i64() == Some(agents) && busy == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    violations.push(format!(
                        "hub {}: agents {summary} after the day, expected {agents} available",
                        hub.id
                    ));
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
            loop {
                let stock = self
                    .api
                    .get(format!("{}/hubs/{}", self.api.target.store_url, hub.id))
                    .await?;
                let rows = stock["foods"].as_array().cloned().unwrap_or_default();
                let mut wrong = Vec::new();
                for food in &self.foods {
                    let row = rows
                        .iter()
                        .find(|row| row["food_id"].as_i64() == Some(*food));
                    let count =
                        |state: &str| row.and_then(|row| row[state].as_i64()).unwrap_or_default();
                    let expected = assigned.get(&(hub.id, *food)).copied().unwrap_or(0);
                    let (available, reserved, taken) =
                        (count("available"), count("reserved"), count("assigned"));
                    if reserved != 0 || taken != expected || available + taken != per_hub {
                        wrong.push(format!(
                            "food {food}: available {available}, reserved {reserved}, assigned \
                             {taken}; expected {} available, {expected} assigned",
                            per_hub - expected
                        ));
                    }
                }
                if wrong.is_empty() {
                    break;
                }
                if Instant::now() > deadline {
                    violations.extend(
                        wrong
                            .into_iter()
                            .map(|what| format!("hub {} after the day: {what}", hub.id)),
                    );
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    /// The day's figures.
    async fn stats(
        &self,
        measured: &Measured,
        lives: &[Life],
        finals: &HashMap<String, String>,
        day: Duration,
    ) -> Stats {
        let mut not_placed = BTreeMap::new();
        for (label, n) in &measured.outcomes {
            if let Some(reason) = label.strip_prefix("not_placed:") {
                *not_placed.entry(reason.to_owned()).or_insert(0) += n;
            }
        }
        for reason in lives.iter().filter_map(|life| life.not_placed.as_ref()) {
            *not_placed.entry(reason.clone()).or_insert(0) += 1;
        }
        let mut cycles: HashMap<i64, u64> = HashMap::new();
        for life in lives {
            if let Some(placed) = &life.placed
                && finals.get(&life.order_id).map(String::as_str) == Some("delivered")
            {
                *cycles.entry(placed.agent).or_default() += 1;
            }
        }
        let every_agent: Vec<u64> = self
            .hubs
            .iter()
            .flat_map(|hub| &hub.agents)
            .map(|agent| cycles.get(agent).copied().unwrap_or(0))
            .collect();
        let agents = every_agent.len();
        let placed = lives.iter().filter(|life| life.placed.is_some()).count() as u64;
        let delivered: u64 = every_agent.iter().sum();
        let cancels = lives.iter().filter_map(|life| life.cancel.as_ref());
        let count = |outcome: CancelOutcome| {
            cancels
                .clone()
                .filter(|cancel| cancel.outcome == outcome)
                .count() as u64
        };
        let order_seconds = measured.elapsed.as_secs_f64();
        let day_seconds = day.as_secs_f64();
        let per = |n: u64, seconds: f64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        let latency = self.placed_latency.lock().await;
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        Stats {
            hubs: self.hubs.len(),
            agents: i64::try_from(agents).unwrap_or(i64::MAX),
            order_seconds,
            day_seconds,
            placed,
            placed_per_second: per(placed, order_seconds),
            delivered,
            delivered_per_second: per(delivered, day_seconds),
            not_placed,
            cancels_sent: cancels.clone().count() as u64,
            cancels_won: count(CancelOutcome::Won),
            cancels_lost: count(CancelOutcome::Lost),
            cycles_per_agent: per(delivered, agents as f64),
            cycles_min: every_agent.iter().copied().min().unwrap_or(0),
            cycles_max: every_agent.iter().copied().max().unwrap_or(0),
            placed_p50_ms: ms(0.50),
            placed_p99_ms: ms(0.99),
        }
    }
}
