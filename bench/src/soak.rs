//! The `soak` scenario: the delivery day of [`crate::day`] lived through faults, and the checker
//! that holds every answer against the order's record.
//!
//! The day is the `day` scenario's, with the habits of real apps on a bad network: every order
//! carries an `Idempotency-Key` and is sent again with it (to any copy of the order service)
//! until it is answered; every request that may be repeated is tried again for `--patience`;
//! some riders report out of order and twice, and some send a pick-up (and their customer a
//! cancel) while the order is still being placed; an operator lists the orders stuck longer than
//! a few seconds (`GET /admin/orders`) and aborts or retries some of them, racing their drivers.
//! Packets are scarce (`--soak-foods` foods share `--stock`, and a food is restocked with a
//! dozen packets only once fewer than three are left at a hub, so that orders keep fighting over
//! the last ones), and so are riders.
//!
//! Faults come from outside: a nemesis (the system test `soak`, or a person) injects them while
//! the soak runs and writes each one to `--fault-log`, a line `<start> <end> <name>` per fault
//! (Unix milliseconds). The checks, after the day's own and the audit:
//! - every answer agrees with the order's record: `201` ends placed or later, `409` ends
//!   `not_placed`, `202` ends final; every order id answered exists and is its key's one order
//!   (lost 0, duplicated 0, false placed 0, false not placed 0);
//! - every order ends (`not_placed`, `delivered` or `cancelled`) and every order is answered;
//! - an order the operator aborted (`200`) ended `not_placed`;
//! - every refusal is counted by reason, and a `timeout` refusal is only allowed when the order's
//!   life (from its first request to its answer) meets a fault's window: the fault's span and
//!   `--fault-window` after it. Each window is printed with its count.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::day::{Answer, Day, Rules};
use crate::distributed::Checked;
use crate::soak_stats::{Stats, Window};
use crate::{RunArgs, Target};

/// How long orders may take after the day to become final.
const SETTLE: Duration = Duration::from_secs(90);
/// How often the operator looks for stuck orders, at most.
const OPERATOR_EVERY: Duration = Duration::from_secs(2);
/// The operator's idea of stuck: unfinished for longer than this.
const STUCK: &str = "3s";
/// The fraction of riders who report out of order and twice, and of orders answered `pending`
/// whose rider and customer act before the placement.
const ODD: f64 = 0.1;
/// How often the store looks at its shelves, at most.
const RESTOCK_EVERY: Duration = Duration::from_secs(3);
/// A food with fewer packets available than this at a hub is restocked…
const RESTOCK_BELOW: i64 = 3;
/// …with this many.
const RESTOCK: i64 = 12;

/// Seeds, runs the day under whatever faults the nemesis injects, and checks it.
pub(crate) async fn run(target: &Target, args: &RunArgs) -> anyhow::Result<Checked> {
    let rules = Rules {
        patience: args.patience,
        keyed: true,
        odd_reports: ODD,
        foods: args.soak_foods,
    };
    let day = Day::start(target, args, rules).await?;
    let (stop, stopped) = watch::channel(false);
    let operator = tokio::spawn(operate(Arc::clone(&day), stopped.clone()));
    let restocker = tokio::spawn(restock(Arc::clone(&day), stopped));
    let ran = Arc::clone(&day).orders(args).await?;
    let _ = stop.send(true);
    let mut operated = operator.await.unwrap_or_default();
    operated.restocks = restocker.await.unwrap_or_default();
    let mut checked = day.end(target, ran).await?;
    let answers = day.answers.lock().await.clone();
    let stats = check(target, args, &answers, operated, &mut checked.violations).await?;
    checked.soak = Some(stats);
    Ok(checked)
}

/// What the operator did: each action's answers, and the orders it aborted.
#[derive(Debug, Default)]
struct Operated {
    /// `<action> <status>` and how many.
    counts: BTreeMap<String, u64>,
    /// Orders whose abort was answered `200`.
    aborted: Vec<String>,
    /// Restocks that surely added their packets.
    restocks: u64,
}

/// The store's staff: every few seconds, restocks the foods that are nearly sold out at a hub,
/// until `stopped`. Returns how many restocks surely added their packets.
async fn restock(day: Arc<Day>, mut stopped: watch::Receiver<bool>) -> u64 {
    let mut restocks = 0;
    loop {
        let pause = RESTOCK_EVERY.mul_f64(rand::rng().random_range(0.5..1.5));
        if tokio::time::timeout(pause, stopped.changed()).await.is_ok() {
            return restocks;
        }
        for hub in day.hub_ids().collect::<Vec<_>>() {
            let api = day.api();
            let url = format!("{}/hubs/{hub}", api.store());
            // The nemesis may have the store down: the staff look again later.
            let Ok(shelves) = api.get(url).await else {
                continue;
            };
            let low: Vec<i64> = shelves["foods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|row| row["available"].as_i64().unwrap_or(0) < RESTOCK_BELOW)
                .filter_map(|row| row["food_id"].as_i64())
                .collect();
            for food in low {
                if day.restock(hub, food, RESTOCK).await {
                    restocks += 1;
                }
            }
        }
    }
}

/// The operator: every few seconds, lists the orders unfinished for longer than [`STUCK`] and
/// aborts or retries some of them, racing their drivers, until `stopped`.
async fn operate(day: Arc<Day>, mut stopped: watch::Receiver<bool>) -> Operated {
    let mut operated = Operated::default();
    let api = day.api();
    loop {
        let pause = OPERATOR_EVERY.mul_f64(rand::rng().random_range(0.5..1.5));
        if tokio::time::timeout(pause, stopped.changed()).await.is_ok() {
            return operated;
        }
        let list = format!("{}/admin/orders?older_than={STUCK}&limit=20", api.order());
        let listed = match api.as_operator(api.http.get(&list)).send().await {
            Ok(response) if response.status().is_success() => {
                response.json::<serde_json::Value>().await.ok()
            }
            // The nemesis may have the service down: the operator looks again later.
            _ => None,
        };
        let ids: Vec<String> = listed
            .as_ref()
            .and_then(|body| body["orders"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|order| order["order_id"].as_str().map(str::to_owned))
            .collect();
        for id in ids {
            let (act, abort) = {
                let mut rng = rand::rng();
                (rng.random_bool(0.5), rng.random_bool(0.5))
            };
            if !act {
                continue;
            }
            let action = if abort { "abort" } else { "retry" };
            let url = format!("{}/admin/orders/{id}/{action}", api.order());
            let status = match api.as_operator(api.http.post(&url)).send().await {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "no answer".to_owned(),
            };
            if abort && status == "200" {
                operated.aborted.push(id);
            }
            *operated
                .counts
                .entry(format!("{action} {status}"))
                .or_default() += 1;
        }
    }
}

/// An order as the coordinator recorded it.
#[derive(Debug, sqlx::FromRow)]
struct Recorded {
    customer_id: String,
    idempotency_key: Option<String>,
    id: String,
    state: String,
    reason: Option<String>,
}

/// The checks of the soak, after the day's own: every answer against the record, every order
/// ended, the operator's aborts, and the `timeout` refusals against the fault windows.
async fn check(
    target: &Target,
    args: &RunArgs,
    answers: &[Answer],
    operated: Operated,
    violations: &mut Vec<String>,
) -> anyhow::Result<Stats> {
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&target.order_database_url)
        .await
        .context("the soak's checker reads the order database (ORDER_DATABASE_URL)")?;
    let keys: Vec<String> = answers.iter().filter_map(|a| a.key.clone()).collect();
    let settle_by = Instant::now() + SETTLE;
    let records = loop {
        let records: Vec<Recorded> = sqlx::query_as(
            "SELECT customer_id, idempotency_key, id::text AS id, state, reason FROM orders \
             WHERE idempotency_key = ANY($1)",
        )
        .bind(&keys)
        .fetch_all(&db)
        .await?;
        let unfinished = records.iter().filter(|r| !is_end(&r.state)).count();
        if unfinished == 0 || Instant::now() > settle_by {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut by_key: HashMap<(&str, &str), Vec<&Recorded>> = HashMap::new();
    for record in &records {
        if let Some(key) = &record.idempotency_key {
            by_key
                .entry((record.customer_id.as_str(), key.as_str()))
                .or_default()
                .push(record);
        }
    }
    let by_id: HashMap<&str, &Recorded> = records.iter().map(|r| (r.id.as_str(), r)).collect();

    let mut stats = Stats {
        orders: answers.len() as u64,
        operator: operated.counts,
        restocks: operated.restocks,
        ..Stats::default()
    };
    let mut timeouts = Vec::new();
    for answer in answers {
        stats.requests += u64::from(answer.requests);
        *stats.answers.entry(answer.label.clone()).or_default() += 1;
        let Some(id) = &answer.order_id else {
            stats.unanswered += 1;
            violations.push(format!(
                "an order got no answer after {} requests: {}",
                answer.requests, answer.label
            ));
            continue;
        };
        let key = answer.key.as_deref().unwrap_or_default();
        let theirs = by_key
            .get(&(answer.customer.as_str(), key))
            .map_or(&[][..], Vec::as_slice);
        let Some(record) = by_id.get(id.as_str()) else {
            stats.lost += 1;
            violations.push(format!("order {id} was answered, but is not recorded"));
            continue;
        };
        if theirs.len() != 1 || theirs[0].id != *id {
            stats.duplicated += 1;
            violations.push(format!(
                "key {key} of {} has orders {:?}, and was answered {id}",
                answer.customer,
                theirs.iter().map(|r| &r.id).collect::<Vec<_>>()
            ));
        }
        let end = match &record.reason {
            Some(reason) if record.state == "not_placed" => format!("not_placed:{reason}"),
            _ => record.state.clone(),
        };
        *stats.ends.entry(end.clone()).or_default() += 1;
        if !is_end(&record.state) {
            stats.unfinished += 1;
            violations.push(format!(
                "order {id} is still {end} {SETTLE:?} after the day"
            ));
        }
        let label = answer.label.as_str();
        if label == "placed" && record.state == "not_placed" {
            stats.false_placed += 1;
            violations.push(format!("order {id} was answered placed, but ended {end}"));
        }
        if label.starts_with("not_placed") && record.state != "not_placed" {
            stats.false_not_placed += 1;
            violations.push(format!("order {id} was answered {label}, but is {end}"));
        }
        if end == "not_placed:timeout" {
            timeouts.push(answer.span);
        }
    }
    for id in &operated.aborted {
        if let Some(record) = by_id.get(id.as_str())
            && record.state != "not_placed"
        {
            violations.push(format!(
                "order {id}: the operator's abort was answered 200, but it is {}",
                record.state
            ));
        }
    }

    let faults = match &args.fault_log {
        Some(path) => read_fault_log(path)?,
        None => Vec::new(),
    };
    let after = args.fault_window.as_millis();
    let first = faults.first().map_or(0, |(start, _, _)| *start);
    let seconds = |ms: u128| ms.saturating_sub(first) as f64 / 1000.0;
    stats.windows = faults
        .into_iter()
        .map(|(start, end, fault)| Window {
            from_s: seconds(start),
            until_s: seconds(end + after),
            fault,
            timeouts: 0,
            span: (start, end + after),
        })
        .collect();
    for (sent, answered) in timeouts {
        let (sent, answered) = (unix_ms(sent), unix_ms(answered));
        let mut inside = false;
        for window in &mut stats.windows {
            if sent <= window.span.1 && answered >= window.span.0 {
                window.timeouts += 1;
                inside = true;
            }
        }
        if !inside {
            stats.timeouts_outside += 1;
        }
    }
    if stats.timeouts_outside > 0 {
        violations.push(format!(
            "{} orders refused timeout outside every fault window",
            stats.timeouts_outside
        ));
    }
    Ok(stats)
}

/// Whether an order in `state` has ended.
fn is_end(state: &str) -> bool {
    matches!(state, "not_placed" | "delivered" | "cancelled")
}

/// Milliseconds since the Unix epoch.
fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The faults of a fault log, sorted by start: `(start, end, name)` in Unix milliseconds.
fn read_fault_log(path: &str) -> anyhow::Result<Vec<(u128, u128, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut faults = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(start), Some(end), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("{path}:{}: expected `<start ms> <end ms> <fault>`", n + 1);
        };
        let start: u128 = start
            .parse()
            .with_context(|| format!("{path}:{}: start", n + 1))?;
        let end: u128 = end
            .parse()
            .with_context(|| format!("{path}:{}: end", n + 1))?;
        faults.push((start, end.max(start), name.to_owned()));
    }
    faults.sort();
    Ok(faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_log_is_read_sorted_and_a_bad_line_is_refused() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("soak-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let good = dir.join("good");
        std::fs::write(
            &good,
            "2000 2500 kill -9 store\n\n1000 900 broker restart\n",
        )?;
        let faults = read_fault_log(&good.to_string_lossy())?;
        assert_eq!(
            faults,
            vec![
                (1000, 1000, "broker restart".to_owned()),
                (2000, 2500, "kill -9 store".to_owned())
            ]
        );
        let bad = dir.join("bad");
        std::fs::write(&bad, "2000 kill\n")?;
        assert!(read_fault_log(&bad.to_string_lossy()).is_err());
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
