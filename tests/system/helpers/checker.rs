//! The client-side checker (after Jepsen's total-queue checker): every answer a client got is
//! held against what the order database finally says.
//!
//! - every `201` ends placed (or further on: picked up, delivered, cancelled);
//! - every `409` ends not placed;
//! - every `202` ends final;
//! - every order id a client was given exists, and is the order of that client's key;
//! - one order per idempotency key, whatever the retries.

use std::collections::HashMap;
use std::fmt;

use sqlx::PgPool;

use super::load::Outcome;

/// What the checker counted.
#[derive(Debug, Default)]
pub struct Checked {
    /// Orders the clients tried to place (one key each).
    pub orders: usize,
    /// Requests sent, retries included.
    pub requests: usize,
    /// Orders whose last answer was `201`, `409`, `202`.
    pub placed: usize,
    /// See `placed`.
    pub not_placed: usize,
    /// See `placed`.
    pub pending: usize,
    /// Orders that got no answer with an id (every attempt failed).
    pub unanswered: usize,
    /// Answered order ids that do not exist.
    pub lost: usize,
    /// Keys with more than one order, or whose answers named different orders.
    pub duplicated: usize,
    /// `201` answers for an order that did not end placed.
    pub false_placed: usize,
    /// `409` answers for an order that did not end not placed.
    pub false_not_placed: usize,
    /// Orders still being placed after everything settled.
    pub unfinished: usize,
    /// What went wrong, one line each.
    pub problems: Vec<String>,
}

impl Checked {
    /// True when no answer contradicts the database.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Checked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checker: {} orders in {} requests: placed {}, not placed {}, pending {}, unanswered {}; \
             lost {}, duplicated {}, false placed {}, false not placed {}, unfinished {}",
            self.orders,
            self.requests,
            self.placed,
            self.not_placed,
            self.pending,
            self.unanswered,
            self.lost,
            self.duplicated,
            self.false_placed,
            self.false_not_placed,
            self.unfinished
        )
    }
}

const PLACED_OR_LATER: [&str; 5] = [
    "placed",
    "picked_up",
    "delivered",
    "cancelling",
    "cancelled",
];
const BEING_PLACED: [&str; 3] = ["reserving", "assigning", "compensating"];

/// Checks `outcomes` against the order database `db`. Call it once every order is final.
pub async fn check(db: &PgPool, outcomes: &[Outcome]) -> Checked {
    let rows: Vec<(uuid::Uuid, String, Option<String>, String)> =
        sqlx::query_as("SELECT id, customer_id, idempotency_key, state FROM orders")
            .fetch_all(db)
            .await
            .expect("orders read");
    let by_id: HashMap<String, (String, Option<String>, String)> = rows
        .iter()
        .map(|(id, customer, key, state)| {
            (
                id.to_string(),
                (customer.clone(), key.clone(), state.clone()),
            )
        })
        .collect();
    let mut by_key: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (id, customer, key, _) in &rows {
        if let Some(key) = key {
            by_key
                .entry((customer.clone(), key.clone()))
                .or_default()
                .push(id.to_string());
        }
    }

    let mut checked = Checked {
        orders: outcomes.len(),
        ..Checked::default()
    };
    for outcome in outcomes {
        checked.requests += outcome.attempts.len();
        match outcome.status {
            Some(201) => checked.placed += 1,
            Some(409) => checked.not_placed += 1,
            Some(202) => checked.pending += 1,
            _ => {}
        }
        let recorded = by_key
            .get(&(outcome.customer.clone(), outcome.key.clone()))
            .cloned()
            .unwrap_or_default();
        if recorded.len() > 1 {
            checked.duplicated += 1;
            checked.problems.push(format!(
                "key {} of {} has {} orders: {recorded:?}",
                outcome.key,
                outcome.customer,
                recorded.len()
            ));
        }
        let mut named: Vec<&str> = outcome
            .attempts
            .iter()
            .filter_map(|(_, body)| body["order_id"].as_str())
            .collect();
        named.dedup();
        if named.is_empty() {
            checked.unanswered += 1;
        }
        if named.len() > 1 {
            checked.duplicated += 1;
            checked
                .problems
                .push(format!("key {} was answered with {named:?}", outcome.key));
        }
        for (status, body) in &outcome.attempts {
            let Some(id) = body["order_id"].as_str() else {
                continue;
            };
            let Some((customer, key, state)) = by_id.get(id) else {
                checked.lost += 1;
                checked.problems.push(format!(
                    "order {id} was answered {status:?} but does not exist"
                ));
                continue;
            };
            if customer != &outcome.customer || key.as_deref() != Some(outcome.key.as_str()) {
                checked.duplicated += 1;
                checked.problems.push(format!(
                    "order {id} answered for key {} belongs to {customer} {key:?}",
                    outcome.key
                ));
            }
            let state = state.as_str();
            match status {
                Some(201) if !PLACED_OR_LATER.contains(&state) => {
                    checked.false_placed += 1;
                    checked
                        .problems
                        .push(format!("order {id} was answered 201 but is {state}"));
                }
                Some(409) if state != "not_placed" => {
                    checked.false_not_placed += 1;
                    checked
                        .problems
                        .push(format!("order {id} was answered 409 but is {state}"));
                }
                _ => {}
            }
        }
    }
    for (id, _, _, state) in &rows {
        if BEING_PLACED.contains(&state.as_str()) {
            checked.unfinished += 1;
            checked
                .problems
                .push(format!("order {id} is still {state}"));
        }
    }
    checked
}
