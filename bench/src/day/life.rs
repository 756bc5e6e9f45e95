//! One order's life after its answer: decided if it was answered `pending`, ridden by its rider
//! (picked up, delivered), perhaps cancelled by its customer on the way; and what each of them
//! was told.

use std::sync::Arc;

use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Day, PLACED_SEEN, POLL, SETTLE};

/// What a placed order holds, as its answer said.
#[derive(Debug)]
pub(super) struct Placed {
    /// When the answer came.
    pub(super) at: Instant,
    /// Its packets.
    pub(super) packets: Vec<i64>,
    /// Its agent.
    pub(super) agent: i64,
}

/// How a customer's cancel ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CancelOutcome {
    /// Cancelled.
    Won,
    /// Refused: the rider had picked the order up.
    Lost,
    /// Anything else (an answer the API does not give for a placed order, or none).
    Other(String),
}

/// A customer's cancel.
#[derive(Debug)]
pub(super) struct Cancel {
    /// When it was first sent.
    pub(super) sent: Instant,
    /// How it ended.
    pub(super) outcome: CancelOutcome,
}

/// What a rider's two reports came to.
#[derive(Debug, Default)]
pub(super) struct Ride {
    /// The pick-up's answer: `Some(true)` for `200`, `Some(false)` for `404`; `None` if it got
    /// neither (a problem says what).
    pub(super) picked_up: Option<bool>,
    /// When the delivery was sent, and when it was answered `200`.
    pub(super) delivered: Option<(Instant, Instant)>,
    /// Reports sent again and answered the same (odd riders).
    pub(super) repeats: u32,
    /// What went wrong.
    pub(super) problems: Vec<String>,
}

/// One order from its answer to the end of its life.
#[derive(Debug, Default)]
pub(super) struct Life {
    /// Its id.
    pub(super) order_id: String,
    /// Its customer.
    pub(super) customer: String,
    /// Its hub.
    pub(super) hub: i64,
    /// Its lines, as (food, quantity).
    pub(super) lines: Vec<(i64, u32)>,
    /// What it holds, once placed.
    pub(super) placed: Option<Placed>,
    /// The reason, for an order answered `pending` and not placed later.
    pub(super) not_placed: Option<String>,
    /// Whether it was answered `pending` first and decided later.
    pub(super) finished_later: bool,
    /// The rider's reports.
    pub(super) ride: Ride,
    /// The customer's cancel, if any.
    pub(super) cancel: Option<Cancel>,
    /// The answers to a pick-up and a cancel sent while the order was still being placed
    /// (answered `pending`), by an odd rider and customer.
    pub(super) early: Option<(String, String)>,
    /// When its life ended here (the rider's and the customer's last answer).
    pub(super) ended: Option<Instant>,
    /// What went wrong.
    pub(super) problems: Vec<String>,
}

impl Life {
    /// The state the order must end in, from what the rider and the customer were told.
    pub(super) fn expected_end(&self) -> Option<&'static str> {
        match (&self.cancel, self.ride.picked_up) {
            (Some(cancel), Some(false)) if cancel.outcome == CancelOutcome::Won => {
                Some("cancelled")
            }
            (_, Some(true)) if self.ride.delivered.is_some() => Some("delivered"),
            _ => None,
        }
    }
}

/// An answer (or the failure to get one), for a problem's text.
pub(super) fn shown(answer: &anyhow::Result<(u16, Value)>) -> String {
    match answer {
        Ok((status, body)) => format!("{status} {body}"),
        Err(err) => format!("nothing ({err:#})"),
    }
}

impl Day {
    /// Reads what a placed order holds from its answer, and checks it against its basket.
    pub(super) fn take_placed(&self, life: &mut Life, body: &Value) {
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
    pub(super) async fn live(self: Arc<Self>, mut life: Life) -> Life {
        if life.placed.is_none() && !life.order_id.is_empty() {
            // (A rider learns of an order only once its agent holds it: with identity on, no
            // rider can report an order still being placed.)
            if !self.api.identity_on() && rand::rng().random_bool(self.rules.odd_reports) {
                // An order still being placed: a pick-up is refused (`409` not placed yet, or
                // `404` no agent) unless the order is placed by now; a cancel is refused
                // (`409 not_placed_yet`) and changes nothing.
                let sent = Instant::now();
                let (pick_up, cancel) = tokio::join!(
                    self.report(&life.order_id, None, "picked-up"),
                    self.send(|| {
                        let url = format!("{}/orders/{}/cancel", self.api.order(), life.order_id);
                        self.api.as_customer(
                            self.api
                                .http
                                .post(url)
                                .json(&json!({ "customer_id": life.customer })),
                            &life.customer,
                        )
                    })
                );
                // Placed in the meantime, the order may have been cancelled after all.
                let outcome = match &cancel {
                    Ok((409, body)) if body["reason"] == "not_placed_yet" => None,
                    Ok((409, body)) if body["reason"] == "already_picked_up" => {
                        Some(CancelOutcome::Lost)
                    }
                    Ok((200, body)) if body["status"] == "cancelled" => Some(CancelOutcome::Won),
                    Ok((202, _)) => Some(self.await_cancel(&life.order_id).await),
                    answer => Some(CancelOutcome::Other(shown(answer))),
                };
                life.cancel = outcome.map(|outcome| Cancel { sent, outcome });
                life.early = Some((shown(&pick_up), shown(&cancel)));
            }
            self.await_placement(&mut life).await;
        }
        let Some(placed_at) = life.placed.as_ref().map(|placed| placed.at) else {
            return life;
        };
        let cancel_after = {
            let mut rng = rand::rng();
            (life.cancel.is_none() && rng.random_bool(self.cancel_rate))
                .then(|| self.pickup_delay.mul_f64(rng.random_range(0.0..=1.5)))
        };
        let agent = life.placed.as_ref().map(|placed| placed.agent);
        let (ride, cancel) = tokio::join!(self.ride(&life.order_id, agent, placed_at), async {
            match cancel_after {
                Some(after) => Some(
                    self.cancel(&life.order_id, &life.customer, placed_at + after)
                        .await,
                ),
                None => None,
            }
        });
        life.ride = ride;
        if cancel.is_some() {
            life.cancel = cancel;
        }
        life.ended = Some(Instant::now());
        life
    }

    /// Polls an order answered `pending` until it is decided.
    pub(super) async fn await_placement(&self, life: &mut Life) {
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
                // Placed, or further on already: a pick-up sent while the order was being
                // placed is taken once delivery has seen it placed, which may come before this
                // poll. The rider then reports it again (answered from the record) and delivers.
                Some("placed" | "picked_up" | "delivered") => {
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

    /// A rider's report (`picked-up` or `delivered`) of `order_id`, to any copy of delivery: as
    /// the rider of `agent` (the order's, once it is placed).
    pub(super) async fn report(
        &self,
        order_id: &str,
        agent: Option<i64>,
        step: &str,
    ) -> anyhow::Result<(u16, Value)> {
        self.send(|| {
            let url = format!("{}/deliveries/{order_id}/{step}", self.api.delivery());
            let request = self.api.http.post(url);
            match agent {
                Some(agent) => self.api.as_rider(request, agent),
                None => request,
            }
        })
        .await
    }

    /// The rider: picks the order up `pickup_delay` after its placement, delivers it
    /// `deliver_delay` later. An odd rider (the rules' `odd_reports`) first reports the
    /// delivery, out of order, and then sends each report twice.
    pub(super) async fn ride(
        &self,
        order_id: &str,
        agent: Option<i64>,
        placed_at: Instant,
    ) -> Ride {
        let mut ride = Ride::default();
        let odd = rand::rng().random_bool(self.rules.odd_reports);
        tokio::time::sleep_until(placed_at + self.pickup_delay).await;
        if odd {
            // Refused: not picked up (or, once cancelled, no agent assigned any more).
            match self.report(order_id, agent, "delivered").await {
                Ok((409 | 404, _)) => {}
                answer => ride.problems.push(format!(
                    "a delivery reported before the pick-up answered {}",
                    shown(&answer)
                )),
            }
        }
        // Delivery takes a pick-up once it has seen the order placed: `409` until then.
        let seen_by = Instant::now() + PLACED_SEEN.max(self.rules.patience);
        let picked_up = loop {
            match self.report(order_id, agent, "picked-up").await {
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
            answer => {
                ride.problems
                    .push(format!("pick-up answered {}", shown(&answer)));
                return ride;
            }
        }
        if odd {
            self.repeat(order_id, agent, "picked-up", &mut ride).await;
        }
        tokio::time::sleep(self.deliver_delay).await;
        let sent = Instant::now();
        match self.report(order_id, agent, "delivered").await {
            Ok((200, _)) => ride.delivered = Some((sent, Instant::now())),
            answer => ride
                .problems
                .push(format!("delivery answered {}", shown(&answer))),
        }
        if odd && ride.delivered.is_some() {
            self.repeat(order_id, agent, "delivered", &mut ride).await;
            self.repeat(order_id, agent, "picked-up", &mut ride).await;
        }
        ride
    }

    /// Sends a report that was already taken again: the same answer, `200`.
    pub(super) async fn repeat(
        &self,
        order_id: &str,
        agent: Option<i64>,
        step: &str,
        ride: &mut Ride,
    ) {
        match self.report(order_id, agent, step).await {
            Ok((200, _)) => ride.repeats += 1,
            answer => ride
                .problems
                .push(format!("a repeated {step} answered {}", shown(&answer))),
        }
    }

    /// The customer cancels the order at `at`, and waits for the cancel to end.
    pub(super) async fn cancel(&self, order_id: &str, customer: &str, at: Instant) -> Cancel {
        tokio::time::sleep_until(at).await;
        let body = json!({ "customer_id": customer });
        let sent = Instant::now();
        let cancel = || {
            let url = format!("{}/orders/{order_id}/cancel", self.api.order());
            self.api
                .as_customer(self.api.http.post(url).json(&body), customer)
        };
        let outcome = match self.send(cancel).await {
            Ok((200, body)) if body["status"] == "cancelled" => CancelOutcome::Won,
            Ok((409, body)) if body["reason"] == "already_picked_up" => CancelOutcome::Lost,
            Ok((202, _)) => self.await_cancel(order_id).await,
            Ok((status, body)) => CancelOutcome::Other(format!("{status} {body}")),
            Err(err) => CancelOutcome::Other(format!("{err:#}")),
        };
        Cancel { sent, outcome }
    }

    /// Polls an order whose cancel was answered `202` until the cancel has ended.
    pub(super) async fn await_cancel(&self, order_id: &str) -> CancelOutcome {
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
}
