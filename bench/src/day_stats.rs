//! What a delivery day came to, as `bench day` prints and records it.

use std::collections::BTreeMap;

use serde::Serialize;

/// What a delivery day came to.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Stats {
    /// Hubs seeded.
    pub(crate) hubs: usize,
    /// Agents seeded, over every hub.
    pub(crate) agents: i64,
    /// Seconds the orders arrived for.
    pub(crate) order_seconds: f64,
    /// Seconds from the first order to the end of the last one's life (its delivery or its
    /// cancel), the riders' work after the last order included.
    pub(crate) day_seconds: f64,
    /// Orders placed (pending ones that were placed later included).
    pub(crate) placed: u64,
    /// Orders placed per second of `order_seconds`.
    pub(crate) placed_per_second: f64,
    /// Orders delivered.
    pub(crate) delivered: u64,
    /// Orders delivered per second of `day_seconds`.
    pub(crate) delivered_per_second: f64,
    /// Orders not placed, by reason (pending ones refused later included).
    pub(crate) not_placed: BTreeMap<String, u64>,
    /// Cancels sent.
    pub(crate) cancels_sent: u64,
    /// Cancels that won the race with the pick-up.
    pub(crate) cancels_won: u64,
    /// Cancels refused because the rider had picked the order up.
    pub(crate) cancels_lost: u64,
    /// Reports that odd riders sent again, each answered the same (`soak`).
    pub(crate) reports_repeated: u64,
    /// Orders whose rider reported the pick-up and whose customer cancelled while the order was
    /// still being placed (`soak`).
    pub(crate) sent_while_placing: u64,
    /// Deliveries per agent, the mean over every seeded agent.
    pub(crate) cycles_per_agent: f64,
    /// Deliveries of the agent with the fewest.
    pub(crate) cycles_min: u64,
    /// Deliveries of the agent with the most.
    pub(crate) cycles_max: u64,
    /// Latency of the `201 placed` answers, from the request's send, milliseconds: median.
    pub(crate) placed_p50_ms: f64,
    /// 99th percentile.
    pub(crate) placed_p99_ms: f64,
}

impl Stats {
    /// The day in a few lines of text.
    pub(crate) fn summary(&self) -> Vec<String> {
        let not_placed: Vec<String> = self
            .not_placed
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        vec![
            format!(
                "{} hubs, {} agents; orders for {:.1} s, day {:.1} s (to the last delivery or cancel)",
                self.hubs, self.agents, self.order_seconds, self.day_seconds
            ),
            format!(
                "placed {} ({:.1}/s), delivered {} ({:.1}/s), not placed {}",
                self.placed,
                self.placed_per_second,
                self.delivered,
                self.delivered_per_second,
                if not_placed.is_empty() {
                    "0".to_owned()
                } else {
                    not_placed.join(" ")
                }
            ),
            format!(
                "cancels sent {}: won {}, lost to the pick-up {}; reports repeated {}, a pick-up \
                 and a cancel sent while placing {}",
                self.cancels_sent,
                self.cancels_won,
                self.cancels_lost,
                self.reports_repeated,
                self.sent_while_placing
            ),
            format!(
                "agent cycles per agent {:.1} (min {}, max {})",
                self.cycles_per_agent, self.cycles_min, self.cycles_max
            ),
            format!(
                "placement latency of placed orders p50 {:.1} ms, p99 {:.1} ms",
                self.placed_p50_ms, self.placed_p99_ms
            ),
        ]
    }
}
