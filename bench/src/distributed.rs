//! The distributed run: seed through the APIs, order through `POST /orders`, then check.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::breakdown::{self, Mean, Scrape};
use crate::load::{self, Measured, Record};
use crate::scenario::{Plan, Scenario};
use crate::{RunArgs, Target};

/// Most packets and agents per seeding request (the services' limits).
const SEED_CHUNK: i64 = 100_000;
/// How long orders may take to settle after the run (pending ones finish, releases land).
const SETTLE: Duration = Duration::from_secs(90);

/// A measured run and what its checks found.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The measurements.
    pub(crate) measured: Measured,
    /// Orders answered `pending` that were final by the end of the check.
    pub(crate) finished_later: u64,
    /// Broken invariants; empty for a correct run.
    pub(crate) violations: Vec<String>,
    /// CPU per order while the orders ran, if asked for.
    pub(crate) cpu: Option<crate::cpu::Usage>,
    /// The services' histogram means over the run, by service, if asked for.
    pub(crate) breakdown: Option<Vec<(String, Vec<Mean>)>>,
    /// What a delivery day came to (`day` and `soak`).
    pub(crate) day: Option<crate::day_stats::Stats>,
    /// What the soak's checker found (`soak` only).
    pub(crate) soak: Option<crate::soak_stats::Stats>,
}

/// The services' HTTP APIs.
pub(crate) struct Api {
    /// The client, shared by every request.
    pub(crate) http: reqwest::Client,
    /// The copies of the order service (`--order-url` may list several).
    orders: Vec<String>,
    /// The copies of the store.
    stores: Vec<String>,
    /// The copies of delivery.
    deliveries: Vec<String>,
    /// Signs each party's token, when the services verify them.
    tokens: Option<Tokens>,
}

/// The bench's tokens: one per party, minted once and kept.
struct Tokens {
    issuer: identity::Issuer,
    minted: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// How long the bench's tokens are valid: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(48 * 3600);

impl Tokens {
    fn token(
        &self,
        party: &str,
        mint: impl FnOnce(&identity::Issuer) -> Result<String, identity::IdentityError>,
    ) -> Option<String> {
        let mut minted = self.minted.lock().ok()?;
        if let Some(token) = minted.get(party) {
            return Some(token.clone());
        }
        let token = mint(&self.issuer).ok()?;
        minted.insert(party.to_owned(), token.clone());
        Some(token)
    }
}

/// The copies of a service in a comma-separated list of base URLs.
fn copies(list: &str) -> anyhow::Result<Vec<String>> {
    let copies: Vec<String> = list
        .split(',')
        .map(|url| url.trim().trim_end_matches('/').to_owned())
        .filter(|url| !url.is_empty())
        .collect();
    if copies.is_empty() {
        bail!("no service URL in {list:?}");
    }
    Ok(copies)
}

/// One of `copies`, at random: requests are spread over the copies of a service, and a request
/// tried again may reach another copy.
fn any(copies: &[String]) -> &str {
    &copies[rand::rng().random_range(0..copies.len())]
}

impl Api {
    /// A client for `target`'s services.
    pub(crate) fn new(target: &Target) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(1024)
                .build()?,
            orders: copies(&target.order_url)?,
            stores: copies(&target.store_url)?,
            deliveries: copies(&target.delivery_url)?,
            tokens: match &target.signing_key_file {
                None => None,
                Some(path) => Some(Tokens {
                    issuer: identity::Issuer::from_pem_file(
                        path,
                        &target.auth_issuer,
                        &target.auth_audience,
                    )?,
                    minted: std::sync::Mutex::new(std::collections::HashMap::new()),
                }),
            },
        })
    }

    /// Whether the bench sends tokens (the services verify them).
    pub(crate) fn identity_on(&self) -> bool {
        self.tokens.is_some()
    }

    fn with(
        &self,
        request: reqwest::RequestBuilder,
        party: &str,
        mint: impl FnOnce(&identity::Issuer) -> Result<String, identity::IdentityError>,
    ) -> reqwest::RequestBuilder {
        match self
            .tokens
            .as_ref()
            .and_then(|tokens| tokens.token(party, mint))
        {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `request` as an operator's.
    pub(crate) fn as_operator(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.with(request, "operator", |issuer| {
            issuer.operator("bench", TOKEN_TTL)
        })
    }

    /// `request` as `customer`'s.
    pub(crate) fn as_customer(
        &self,
        request: reqwest::RequestBuilder,
        customer: &str,
    ) -> reqwest::RequestBuilder {
        self.with(request, &format!("customer {customer}"), |issuer| {
            issuer.customer(customer, TOKEN_TTL)
        })
    }

    /// `request` as the rider of `agent`'s.
    pub(crate) fn as_rider(
        &self,
        request: reqwest::RequestBuilder,
        agent: i64,
    ) -> reqwest::RequestBuilder {
        self.with(request, &format!("rider {agent}"), |issuer| {
            issuer.rider(agent, TOKEN_TTL)
        })
    }

    /// The base URL of a copy of the order service.
    pub(crate) fn order(&self) -> &str {
        any(&self.orders)
    }

    /// The base URL of a copy of the store.
    pub(crate) fn store(&self) -> &str {
        any(&self.stores)
    }

    /// The base URL of a copy of delivery.
    pub(crate) fn delivery(&self) -> &str {
        any(&self.deliveries)
    }

    /// POSTs `body` to `url` and returns the answer, which must be a
    /// success.
    pub(crate) async fn post(&self, url: String, body: Value) -> anyhow::Result<Value> {
        let response = self
            .as_operator(self.http.post(&url).json(&body))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {url}: {status} {body}");
        }
        Ok(body)
    }

    /// The JSON at `url`.
    pub(crate) async fn get(&self, url: String) -> anyhow::Result<Value> {
        Ok(self
            .as_operator(self.http.get(&url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The histograms of each service, by name.
    async fn scrape(&self) -> anyhow::Result<Vec<(&'static str, Scrape)>> {
        let mut scrapes = Vec::new();
        for (name, base) in [
            ("order", &self.orders[0]),
            ("store", &self.stores[0]),
            ("delivery", &self.deliveries[0]),
        ] {
            let url = format!("{base}/metrics");
            let response = self.http.get(&url).send().await?;
            let status = response.status();
            if !status.is_success() {
                bail!("GET {url}: {status}");
            }
            scrapes.push((name, Scrape::parse(&response.text().await?)));
        }
        Ok(scrapes)
    }

    /// The services' histograms now, or a warning (the figures are an extra, not the run).
    pub(crate) async fn scrape_or_warn(&self) -> Option<Vec<(&'static str, Scrape)>> {
        self.scrape()
            .await
            .inspect_err(|err| eprintln!("warning: no breakdown: {err:#}"))
            .ok()
    }

    /// The means of the services' histograms since `before` (from [`Self::scrape_or_warn`]), by
    /// service; `None` without a scrape before or after.
    pub(crate) async fn breakdown_since(
        &self,
        before: Option<Vec<(&'static str, Scrape)>>,
    ) -> Option<Vec<(String, Vec<Mean>)>> {
        let before = before?;
        self.scrape_or_warn().await.map(|after| {
            before
                .iter()
                .zip(&after)
                .map(|((name, b), (_, a))| ((*name).to_owned(), breakdown::means(b, a)))
                .collect()
        })
    }
}

/// Seeds, runs and checks.
pub(crate) async fn run(target: &Target, args: &RunArgs) -> anyhow::Result<Checked> {
    let api = Arc::new(Api::new(target)?);
    let plan = Plan::of(args);
    if !args.no_vacuum {
        vacuum(target).await?;
    }
    let agents_before = api
        .get(format!("{}/agents/summary", api.delivery()))
        .await
        .context("the delivery service is not reachable")?["available"]
        .as_i64()
        .unwrap_or(0);
    if args.scenario == Scenario::ScarceAgents && agents_before > 0 {
        eprintln!(
            "note: {agents_before} agents were already free; agents are only scarce on a \
             delivery database without free agents"
        );
    }
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut foods = Vec::new();
    for (i, packets) in plan.foods.iter().enumerate() {
        let food = api
            .post(
                format!("{}/foods", api.store()),
                json!({ "name": format!("bench {tag} {i}"), "packets": 0 }),
            )
            .await?;
        let id = food["id"].as_i64().context("food id")?;
        let mut left = *packets;
        while left > 0 {
            let n = left.min(SEED_CHUNK);
            api.post(
                format!("{}/foods/{id}/packets", api.store()),
                json!({ "count": n }),
            )
            .await?;
            left -= n;
        }
        foods.push(id);
    }
    let mut left = plan.agents;
    while left > 0 {
        let n = left.min(SEED_CHUNK);
        api.post(format!("{}/agents", api.delivery()), json!({ "count": n }))
            .await?;
        left -= n;
    }
    let foods = Arc::new(foods);

    let order = {
        let (api, foods, plan) = (Arc::clone(&api), Arc::clone(&foods), plan.clone());
        move || {
            let (api, foods, plan) = (Arc::clone(&api), Arc::clone(&foods), plan.clone());
            async move {
                let food = foods[plan.pick_food()];
                let url = format!("{}/orders", api.order());
                // A customer per order, as in a rush of many customers (the per-customer rate
                // limit is not what the bench measures).
                let customer = format!("bench-{}", uuid::Uuid::new_v4());
                let body = json!({ "food_id": food, "customer_id": customer });
                let request = api.as_customer(api.http.post(&url).json(&body), &customer);
                match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body: Value = response.json().await.unwrap_or(Value::Null);
                        record(status, &body)
                    }
                    Err(err) => Record {
                        label: format!(
                            "error:{}",
                            if err.is_timeout() {
                                "timeout"
                            } else {
                                "connection"
                            }
                        ),
                        ..Record::default()
                    },
                }
            }
        }
    };
    let amount = args.amount();
    let scraped = if args.breakdown {
        api.scrape_or_warn().await
    } else {
        None
    };
    let cpu = crate::cpu::start(args.cpu);
    let measured = match args.rate {
        Some(rate) => load::open(rate, amount, 4_096, "distributed", order).await?,
        None => load::closed(args.clients, amount, "distributed", order).await?,
    };
    let cpu = crate::cpu::finish(cpu, measured.orders());
    let breakdown = api.breakdown_since(scraped).await;
    let mut checked = check(&api, target, args, &plan, &foods, agents_before, measured).await?;
    checked.cpu = cpu;
    checked.breakdown = breakdown;
    Ok(checked)
}

/// The audit of the three databases: its violations, each a line.
pub(crate) async fn audit(target: &Target) -> anyhow::Result<Vec<String>> {
    let db = audit::Databases::connect(
        &target.order_database_url,
        &target.store_database_url,
        &target.delivery_database_url,
    )
    .await
    .context("the audit needs the three databases (ORDER_DATABASE_URL, …)")?;
    let report = audit::audit(&db, Duration::from_secs(10)).await?;
    Ok(report
        .violations
        .iter()
        .map(|v| format!("audit: {v}"))
        .collect())
}

/// Vacuums the services' busiest tables (outside any transaction, as VACUUM requires).
pub(crate) async fn vacuum(target: &Target) -> anyhow::Result<()> {
    for (url, tables) in [
        (&target.order_database_url, "orders, outbox"),
        (&target.store_database_url, "packets, txn_barrier"),
        (&target.delivery_database_url, "agents, txn_barrier"),
    ] {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .with_context(|| format!("vacuum: cannot connect to {url}"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("VACUUM (ANALYZE) {tables}")))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

fn record(status: u16, body: &Value) -> Record {
    let label = match (status, body["status"].as_str()) {
        (201, Some("placed")) => "placed".to_owned(),
        (409, Some("not_placed")) => {
            format!("not_placed:{}", body["reason"].as_str().unwrap_or("?"))
        }
        (202, _) => "pending".to_owned(),
        (status, _) => format!("error:{status}"),
    };
    Record {
        label,
        order_id: body["order_id"].as_str().map(str::to_owned),
        packet: body["packet_id"].as_i64(),
        agent: body["agent_id"].as_i64(),
    }
}

async fn check(
    api: &Api,
    target: &Target,
    args: &RunArgs,
    plan: &Plan,
    foods: &[i64],
    agents_before: i64,
    measured: Measured,
) -> anyhow::Result<Checked> {
    let deadline = Instant::now() + SETTLE;
    let mut violations = Vec::new();
    let mut placed: Vec<Record> = Vec::new();
    let mut finished_later = 0;
    for record in &measured.records {
        let mut record = record.clone();
        if record.label == "pending"
            && let Some(id) = record.order_id.clone()
        {
            loop {
                let body = api.get(format!("{}/orders/{id}", api.order())).await?;
                if body["status"] != "pending" {
                    let status = if body["status"] == "placed" { 201 } else { 409 };
                    record = self::record(status, &body);
                    finished_later += 1;
                    break;
                }
                if Instant::now() > deadline {
                    violations.push(format!("order {id} still pending after the run"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if record.label == "placed" {
            placed.push(record);
        }
    }

    let mut packets = HashSet::new();
    let mut agents = HashSet::new();
    for record in &placed {
        if !record.packet.is_some_and(|p| packets.insert(p)) {
            violations.push(format!("packet {:?} given twice or missing", record.packet));
        }
        if !record.agent.is_some_and(|a| agents.insert(a)) {
            violations.push(format!("agent {:?} given twice or missing", record.agent));
        }
    }

    let sent = i64::try_from(measured.records.len()).unwrap_or(i64::MAX);
    // Agents are shared by every food: those free before the run count too.
    let packets: i64 = plan.foods.iter().sum();
    let expected = match args.scenario {
        // `day` runs in `crate::day`, not here; as `uniform` if it ever came here.
        Scenario::Uniform | Scenario::Hot | Scenario::Day | Scenario::Soak => {
            sent.min(plan.capacity)
        }
        Scenario::ScarceAgents => sent.min(packets.min(agents_before + plan.agents)),
    };
    let n_placed = i64::try_from(placed.len()).unwrap_or(i64::MAX);
    if n_placed != expected {
        violations.push(format!(
            "{n_placed} orders placed, expected exactly {expected} ({sent} sent, capacity {})",
            plan.capacity
        ));
    }

    // Nothing stays reserved once the run is over.
    loop {
        let mut reserved = 0;
        for food in foods {
            reserved += api.get(format!("{}/foods/{food}", api.store())).await?["reserved"]
                .as_i64()
                .unwrap_or(0);
        }
        reserved += api
            .get(format!("{}/agents/summary", api.delivery()))
            .await?["reserved"]
            .as_i64()
            .unwrap_or(0);
        if reserved == 0 {
            break;
        }
        if Instant::now() > deadline {
            violations.push(format!("{reserved} items still reserved after the run"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    violations.extend(audit(target).await?);
    Ok(Checked {
        measured,
        finished_later,
        violations,
        cpu: None,
        breakdown: None,
        day: None,
        soak: None,
    })
}
