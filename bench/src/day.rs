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
//!
//! [`Rules`] say how patient the customers and riders are and what else they do: the plain day's,
//! or the soak's (keyed retries, odd reports; [`crate::soak`]). An order's life after its answer
//! is in [`life`], the checks and the figures in [`check`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::distributed::{self, Api, Checked};
use crate::load::{self, Measured, Record};
use crate::scenario::FOODS;
use crate::{RunArgs, Target};

mod check;
mod life;

use life::Life;

/// How long orders may take after the run to become final (pending ones decided, cancels ended,
/// deliveries recorded by the coordinator, reservations released).
const SETTLE: Duration = Duration::from_secs(90);
/// How often an order (or a hub) not yet as expected is asked again.
const POLL: Duration = Duration::from_millis(100);
/// How long a rider asks again for a pick-up refused because delivery has not seen the order
/// placed yet.
const PLACED_SEEN: Duration = Duration::from_secs(10);
/// How long the day tries again a request that may be repeated (a pick-up, a delivery, a cancel,
/// a read) when the connection fails or a service answers `5xx`: a few tries. The soak, whose
/// services are down for seconds at a time, is more patient ([`Rules::patience`]).
const PATIENCE: Duration = Duration::from_millis(1_500);
/// Customers the orders are spread over.
const CUSTOMERS: u32 = 1_000;
/// Most packets one seeding request adds (the store's limit).
const PACKET_CHUNK: i64 = 100_000;
/// Orders answered at once at most, in open loop.
const MAX_IN_FLIGHT: usize = 4_096;

/// A seeded hub.
#[derive(Debug)]
struct Hub {
    /// Its id.
    id: i64,
    /// Its agents.
    agents: Vec<i64>,
}

/// How the day's customers and riders behave, and how patient they are: the plain day, or the
/// soak's (`crate::soak`).
#[derive(Clone, Debug)]
pub(crate) struct Rules {
    /// How long a request that may be repeated is tried again (on any copy of its service) when
    /// the connection fails or the service answers `5xx`.
    pub(crate) patience: Duration,
    /// Each order carries an `Idempotency-Key` and is sent again with it until it is answered
    /// (or `patience` runs out), as a customer's app does when the connection drops.
    pub(crate) keyed: bool,
    /// The fraction of rides whose rider also reports out of order and twice: the delivery
    /// before the pick-up (refused `409`), then each report again (the same answer).
    pub(crate) odd_reports: f64,
    /// Foods, each with packets at every hub.
    pub(crate) foods: i64,
}

impl Rules {
    /// The plain day: every request answered, many foods.
    pub(crate) fn day() -> Self {
        Self {
            patience: PATIENCE,
            keyed: false,
            odd_reports: 0.0,
            foods: FOODS,
        }
    }
}

/// What a customer was told when placing an order: the checker holds it against the order's
/// record.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    /// The order's `Idempotency-Key`, if it had one.
    pub(crate) key: Option<String>,
    /// The order's customer.
    pub(crate) customer: String,
    /// The order id in the answer (none if no answer came).
    pub(crate) order_id: Option<String>,
    /// The outcome, as in the run's outcomes (`placed`, `not_placed:<reason>`, `pending`,
    /// `error:<what>`).
    pub(crate) label: String,
    /// When the first request was sent, and when the last was answered (wall clock, to compare
    /// with the nemesis's fault log).
    pub(crate) span: (std::time::SystemTime, std::time::SystemTime),
    /// Requests sent for it, retries included.
    pub(crate) requests: u32,
}

/// The day's shared state.
pub(crate) struct Day {
    /// The services.
    api: Api,
    /// The hubs.
    hubs: Vec<Hub>,
    /// The foods (each with packets at every hub).
    foods: Vec<i64>,
    /// Packets of each food seeded at each hub.
    per_hub: i64,
    /// Packets added since, by (hub, food): surely, and perhaps (requests that got no answer).
    restocked: std::sync::Mutex<HashMap<(i64, i64), (i64, i64)>>,
    /// This run's tag, in names.
    tag: String,
    /// From placement to pick-up.
    pickup_delay: Duration,
    /// From pick-up to delivery.
    deliver_delay: Duration,
    /// The fraction of placed orders cancelled.
    cancel_rate: f64,
    /// How the customers and riders behave.
    rules: Rules,
    /// What every customer was told.
    pub(crate) answers: Mutex<Vec<Answer>>,
    /// Every order's life under way (orders answered `placed` or `pending`).
    lives: Mutex<Vec<JoinHandle<Life>>>,
    /// Latency of the `201` answers, microseconds.
    placed_latency: Mutex<Histogram<u64>>,
}

/// Seeds, runs the day, and checks it.
pub(crate) async fn run(target: &Target, args: &RunArgs) -> anyhow::Result<Checked> {
    let day = Day::start(target, args, Rules::day()).await?;
    let ran = Arc::clone(&day).orders(args).await?;
    day.end(target, ran).await
}

/// The orders of a day, sent: what the checks need of them.
pub(crate) struct Ran {
    /// The measurements.
    measured: Measured,
    /// When the first order was sent.
    started: Instant,
    /// CPU use, if asked for.
    cpu: Option<crate::cpu::Usage>,
    /// The services' histograms before the run, if a breakdown was asked for.
    scraped: Option<Vec<(&'static str, crate::breakdown::Scrape)>>,
}

impl Day {
    /// Seeds a day (hubs, agents, foods and packets) with `rules`.
    pub(crate) async fn start(
        target: &Target,
        args: &RunArgs,
        rules: Rules,
    ) -> anyhow::Result<Arc<Self>> {
        if args.hubs == 0 || args.agents_per_hub < 1 || rules.foods < 1 {
            bail!("a day needs at least one hub, one agent per hub and one food");
        }
        if !(0.0..=1.0).contains(&args.cancel_rate) || !(0.0..=1.0).contains(&rules.odd_reports) {
            bail!("rates must be between 0 and 1");
        }
        let api = Api::new(target)?;
        if !args.no_vacuum {
            distributed::vacuum(target).await?;
        }
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (hubs, foods, per_hub) = seed(&api, args, rules.foods, &tag).await?;
        Ok(Arc::new(Self {
            api,
            hubs,
            foods,
            per_hub,
            restocked: std::sync::Mutex::new(HashMap::new()),
            tag,
            pickup_delay: args.pickup_delay,
            deliver_delay: args.deliver_delay,
            cancel_rate: args.cancel_rate,
            rules,
            answers: Mutex::new(Vec::new()),
            lives: Mutex::new(Vec::new()),
            placed_latency: Mutex::new(load::histogram()?),
        }))
    }

    /// The services' APIs.
    pub(crate) fn api(&self) -> &Api {
        &self.api
    }

    /// The hubs' ids.
    pub(crate) fn hub_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.hubs.iter().map(|hub| hub.id)
    }

    /// Adds `count` packets of `food` at `hub`, as a dark store's delivery from its warehouse.
    /// Sent once: adding packets is not idempotent, so a request that got no answer (or a
    /// `5xx`) may have added them or not, and the checks allow for both.
    pub(crate) async fn restock(&self, hub: i64, food: i64, count: i64) -> bool {
        let url = format!("{}/foods/{food}/packets", self.api.store());
        let body = json!({ "count": count, "hub_id": hub });
        let sent = self
            .api
            .as_operator(self.api.http.post(url).json(&body))
            .send()
            .await;
        let (sure, unsure) = match &sent {
            Ok(response) if response.status().is_success() => (count, 0),
            Ok(response) if response.status().is_client_error() => (0, 0),
            _ => (0, count),
        };
        if let Ok(mut restocked) = self.restocked.lock() {
            let entry = restocked.entry((hub, food)).or_default();
            entry.0 += sure;
            entry.1 += unsure;
        }
        sure > 0
    }

    /// Sends the day's orders (closed or open loop, as `args` says); placed ones live on in
    /// tasks of their own.
    pub(crate) async fn orders(self: Arc<Self>, args: &RunArgs) -> anyhow::Result<Ran> {
        let order = {
            let day = Arc::clone(&self);
            move || {
                let day = Arc::clone(&day);
                async move { day.order().await }
            }
        };
        let amount = args.amount();
        let scraped = if args.breakdown {
            self.api.scrape_or_warn().await
        } else {
            None
        };
        let started = Instant::now();
        let cpu = crate::cpu::start(args.cpu);
        let measured = match args.rate {
            Some(rate) => load::open(rate, amount, MAX_IN_FLIGHT, "day", order).await?,
            None => load::closed(args.clients, amount, "day", order).await?,
        };
        let cpu = crate::cpu::finish(cpu, measured.orders());
        Ok(Ran {
            measured,
            started,
            cpu,
            scraped,
        })
    }

    /// Lets the riders finish what is under way (the day ends with the last order's life),
    /// then checks the day and audits the databases.
    pub(crate) async fn end(&self, target: &Target, ran: Ran) -> anyhow::Result<Checked> {
        let Ran {
            measured,
            started,
            cpu,
            scraped,
        } = ran;
        let mut violations = Vec::new();
        let mut lives = Vec::new();
        let handles = std::mem::take(&mut *self.lives.lock().await);
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
        let breakdown = self.api.breakdown_since(scraped).await;

        let finals = self.check(&measured, &lives, &mut violations).await?;
        let stats = self
            .stats(&measured, &lives, &finals, ended - started)
            .await;
        violations.extend(distributed::audit(target).await?);
        Ok(Checked {
            finished_later: lives.iter().filter(|life| life.finished_later).count() as u64,
            measured,
            violations,
            cpu,
            breakdown,
            day: Some(stats),
            soak: None,
        })
    }
}

/// Creates the hubs with their agents, and the foods with packets at every hub. Returns the
/// hubs, the foods, and the packets of each food at each hub.
async fn seed(
    api: &Api,
    args: &RunArgs,
    food_count: i64,
    tag: &str,
) -> anyhow::Result<(Vec<Hub>, Vec<i64>, i64)> {
    let (store, delivery) = (api.store(), api.delivery());
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
    let per_hub = (args.stock / food_count / i64::try_from(hubs.len()).unwrap_or(i64::MAX)).max(1);
    let mut foods = Vec::new();
    for i in 0..food_count {
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
        let key = self.rules.keyed.then(|| uuid::Uuid::new_v4().to_string());
        let sent = Instant::now();
        let sent_wall = std::time::SystemTime::now();
        let mut requests = 0;
        // Without a key an order is sent once: a retry could place it twice. With one, the
        // customer's app sends it again until it is answered.
        let answered = loop {
            requests += 1;
            let mut request = self.api.as_customer(
                self.api
                    .http
                    .post(format!("{}/orders", self.api.order()))
                    .json(&body),
                &customer,
            );
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            let failed = match request.send().await {
                Ok(response) if !response.status().is_server_error() => {
                    let status = response.status().as_u16();
                    break Ok((status, response.json().await.unwrap_or(Value::Null)));
                }
                Ok(response) => format!("error:{}", response.status().as_u16()),
                Err(err) if err.is_timeout() => "error:timeout".to_owned(),
                Err(_) => "error:connection".to_owned(),
            };
            if key.is_none() || sent.elapsed() >= self.rules.patience {
                break Err(failed);
            }
            tokio::time::sleep(POLL).await;
        };
        let mut answer = Answer {
            key,
            customer: customer.clone(),
            order_id: None,
            label: String::new(),
            span: (sent_wall, std::time::SystemTime::now()),
            requests,
        };
        let (status, body) = match answered {
            Ok(answered) => answered,
            Err(label) => {
                answer.label.clone_from(&label);
                self.answers.lock().await.push(answer);
                return Record {
                    label,
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
        answer.order_id.clone_from(&record.order_id);
        answer.label.clone_from(&record.label);
        self.answers.lock().await.push(answer);
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

    /// The order as the coordinator has it now.
    async fn order_now(&self, order_id: &str) -> anyhow::Result<Value> {
        let read = || {
            self.api.as_operator(
                self.api
                    .http
                    .get(format!("{}/orders/{order_id}", self.api.order())),
            )
        };
        match self.send(read).await? {
            (200, body) => Ok(body),
            (status, body) => bail!("GET /orders/{order_id}: {status} {body}"),
        }
    }

    /// Sends a request that may be repeated (built by `request`, with the URL of any copy of
    /// its service), again when the connection fails or the service answers `5xx`, for as long
    /// as the rules' patience, and returns the status and the JSON answer.
    async fn send(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> anyhow::Result<(u16, Value)> {
        let giving_up = Instant::now() + self.rules.patience;
        let mut attempt = 0;
        loop {
            let last = match request().send().await {
                Ok(response) if response.status().is_server_error() => {
                    let status = response.status();
                    anyhow!("{status} {}", response.text().await.unwrap_or_default())
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    return Ok((status, response.json().await.unwrap_or(Value::Null)));
                }
                Err(err) => err.into(),
            };
            attempt += 1;
            if Instant::now() >= giving_up {
                return Err(last.context(format!("{attempt} tries")));
            }
            tokio::time::sleep((POLL * attempt).min(Duration::from_secs(1))).await;
        }
    }
}
