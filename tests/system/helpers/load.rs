//! A stream of orders from concurrent clients, for the fault tests: faults are injected while it
//! runs, and every order it started must finish. Each order carries an `Idempotency-Key`, and a
//! request that gets no answer (the service is down, or answers `503`) is sent again with the
//! same key, as a careful client would; the checker (`super::checker`) then holds every answer
//! against the database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::eventually;

/// What one order got: every attempt, with one idempotency key.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The customer.
    pub customer: String,
    /// The idempotency key of every attempt.
    pub key: String,
    /// Each attempt's HTTP status (`None` if the request failed: connection refused or reset)
    /// and body (`Null` if none), in order.
    pub attempts: Vec<(Option<u16>, Value)>,
    /// The last attempt's status.
    pub status: Option<u16>,
    /// The last attempt's body.
    pub body: Value,
}

impl Outcome {
    /// The order id, if the service answered with one.
    pub fn order_id(&self) -> Option<&str> {
        self.body["order_id"].as_str()
    }
}

/// Attempts per order before a client gives up on it (about 8 seconds of pauses: longer than a
/// service's restart).
const ATTEMPTS: usize = 14;

/// Clients placing orders in a loop until stopped.
pub struct Load {
    stop: CancellationToken,
    clients: Vec<JoinHandle<Vec<Outcome>>>,
    targets: Arc<RwLock<Vec<String>>>,
    answered: Arc<AtomicUsize>,
    placed: Arc<AtomicUsize>,
}

impl Load {
    /// Starts `clients` clients ordering `food` from the order services at `targets` (base
    /// URLs, used in turn).
    pub fn start(targets: Vec<String>, food: i64, clients: usize) -> Self {
        let stop = CancellationToken::new();
        let targets = Arc::new(RwLock::new(targets));
        let answered = Arc::new(AtomicUsize::new(0));
        let placed = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let clients = (0..clients)
            .map(|client| {
                let (stop, targets) = (stop.clone(), Arc::clone(&targets));
                let (answered, placed, http) =
                    (Arc::clone(&answered), Arc::clone(&placed), http.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    let mut n = client;
                    while !stop.is_cancelled() {
                        n += 1;
                        let customer = format!("load-{client}");
                        let key = format!("order-{n}");
                        let body = json!({ "food_id": food, "customer_id": customer });
                        let mut attempts = Vec::new();
                        let mut pause = Duration::from_millis(50);
                        for attempt in 0..ATTEMPTS {
                            // A retry goes to the next coordinator: the first may be down.
                            let target = {
                                let targets = targets.read().expect("targets");
                                targets[(n + attempt) % targets.len()].clone()
                            };
                            let sent = http
                                .post(format!("{target}/orders"))
                                .header("idempotency-key", &key)
                                .json(&body)
                                .send()
                                .await;
                            let attempt = match sent {
                                Ok(response) => (
                                    Some(response.status().as_u16()),
                                    response.json().await.unwrap_or(Value::Null),
                                ),
                                Err(_) => (None, Value::Null),
                            };
                            let answered_it = matches!(attempt.0, Some(s) if s != 503);
                            attempts.push(attempt);
                            if answered_it || stop.is_cancelled() {
                                break;
                            }
                            // The service is down: do not spin on it.
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(800));
                        }
                        let (status, body) =
                            attempts.last().cloned().unwrap_or((None, Value::Null));
                        let outcome = Outcome {
                            customer,
                            key,
                            attempts,
                            status,
                            body,
                        };
                        answered.fetch_add(1, Ordering::Relaxed);
                        if outcome.status == Some(201) {
                            placed.fetch_add(1, Ordering::Relaxed);
                        }
                        outcomes.push(outcome);
                    }
                    outcomes
                })
            })
            .collect();
        Self {
            stop,
            clients,
            targets,
            answered,
            placed,
        }
    }

    /// Sends the next requests to these order services.
    pub fn set_targets(&self, targets: Vec<String>) {
        *self.targets.write().expect("targets") = targets;
    }

    /// Orders placed so far.
    pub fn placed(&self) -> usize {
        self.placed.load(Ordering::Relaxed)
    }

    /// Requests answered (or failed) so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until `more` further orders are placed.
    pub async fn wait_placed(&self, more: usize, timeout: Duration) {
        let target = self.placed() + more;
        eventually(&format!("{target} orders placed"), timeout, || async {
            self.placed() >= target
        })
        .await;
    }

    /// Waits until `more` further requests are answered.
    pub async fn wait_answered(&self, more: usize, timeout: Duration) {
        let target = self.answered() + more;
        eventually(&format!("{target} orders answered"), timeout, || async {
            self.answered() >= target
        })
        .await;
    }

    /// Stops the clients and returns every outcome.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.cancel();
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.expect("load client"));
        }
        all
    }
}
