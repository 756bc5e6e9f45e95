//! The day's checks, once its orders are sent and their lives over, and what it came to.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::life::{CancelOutcome, Life};
use super::{Day, POLL, SETTLE, is_final};
use crate::day_stats::Stats;
use crate::load::Measured;

/// A span an order is known to have held an item for: from, until (`None`: still, or for
/// good), and the order.
type Span<'a> = (Instant, Option<Instant>, &'a str);

impl Day {
    /// Waits until every order is final, then checks the day; returns the final state of every
    /// order that lived on after its answer.
    pub(super) async fn check(
        &self,
        measured: &Measured,
        lives: &[Life],
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
            if let Some((pick_up, _)) = &life.early
                && pick_up.starts_with("200")
                && life.placed.is_none()
            {
                violations.push(format!(
                    "order {id}: a pick-up sent while it was being placed was taken ({pick_up}), \
                     but it was not placed"
                ));
            }
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
        self.check_hubs(lives, &finals, violations).await?;
        Ok(finals)
    }

    /// Polls every placed order until the coordinator has it final, and checks that it ended
    /// as its rider and customer were told.
    pub(super) async fn await_final(
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
    pub(super) fn check_holdings(
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
    pub(super) async fn check_hubs(
        &self,
        lives: &[Life],
        finals: &HashMap<String, String>,
        violations: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let per_hub = self.per_hub;
        let mut assigned: HashMap<(i64, i64), i64> = HashMap::new();
        for life in lives {
            if finals.get(&life.order_id).map(String::as_str) == Some("delivered") {
                for (food, quantity) in &life.lines {
                    *assigned.entry((life.hub, *food)).or_default() += i64::from(*quantity);
                }
            }
        }
        let restocked = self.restocked.lock().map(|r| r.clone()).unwrap_or_default();
        let deadline = Instant::now() + SETTLE;
        for hub in &self.hubs {
            let agents = i64::try_from(hub.agents.len()).unwrap_or(i64::MAX);
            loop {
                let summary = self
                    .api
                    .get(format!(
                        "{}/agents/summary?hub_id={}",
                        self.api.delivery(),
                        hub.id
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
                    .get(format!("{}/hubs/{}", self.api.store(), hub.id))
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
                    let (added, unsure) =
                        restocked.get(&(hub.id, *food)).copied().unwrap_or_default();
                    let stock = per_hub + added;
                    let (available, reserved, taken) =
                        (count("available"), count("reserved"), count("assigned"));
                    if reserved != 0
                        || taken != expected
                        || !(stock..=stock + unsure).contains(&(available + taken))
                    {
                        wrong.push(format!(
                            "food {food}: available {available}, reserved {reserved}, assigned \
                             {taken}; expected {} available (and up to {unsure} more, restocked \
                             by requests that got no answer), {expected} assigned",
                            stock - expected
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
    pub(super) async fn stats(
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
            reports_repeated: lives.iter().map(|life| u64::from(life.ride.repeats)).sum(),
            sent_while_placing: lives.iter().filter(|life| life.early.is_some()).count() as u64,
            cycles_per_agent: per(delivered, agents as f64),
            cycles_min: every_agent.iter().copied().min().unwrap_or(0),
            cycles_max: every_agent.iter().copied().max().unwrap_or(0),
            placed_p50_ms: ms(0.50),
            placed_p99_ms: ms(0.99),
        }
    }
}
