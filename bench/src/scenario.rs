//! What a scenario seeds and orders, the same for the distributed run and the baseline.

use rand::Rng;
use serde::Serialize;

use crate::RunArgs;
use crate::load::Amount;

/// A scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// Many foods, plenty of packets and agents: every order is placed.
    Uniform,
    /// One food with few packets, plenty of agents: exactly as many placed as packets.
    Hot,
    /// Plenty of packets, few agents: exactly as many placed as agents.
    ScarceAgents,
    /// A delivery day: baskets at several hubs with few agents each, riders who pick the orders
    /// up and deliver them, customers who cancel.
    Day,
    /// The delivery day under faults: scarce packets and riders, keyed retries, odd rider
    /// reports, an operator aborting and retrying stuck orders; faults injected from outside and
    /// logged to `--fault-log`.
    Soak,
}

/// Foods in the `uniform`, `scarce-agents` and `day` scenarios.
pub(crate) const FOODS: i64 = 50;

/// What to seed.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// Packets of each food to create.
    pub(crate) foods: Vec<i64>,
    /// Agents to create (`day`: at each hub).
    pub(crate) agents: i64,
    /// How many orders can be placed at most (the scarcer of packets and agents).
    pub(crate) capacity: i64,
}

impl Plan {
    /// The plan of `args`.
    pub(crate) fn of(args: &RunArgs) -> Self {
        // Enough agents for every order a run can send (or for all the stock).
        let orders_bound = match args.amount() {
            Amount::Orders(n) => i64::try_from(n).unwrap_or(i64::MAX),
            Amount::Duration(_) => args.stock,
        };
        match args.scenario {
            Scenario::Uniform => Self {
                foods: vec![args.stock / FOODS; FOODS as usize],
                agents: orders_bound.min(args.stock),
                capacity: args.stock / FOODS * FOODS,
            },
            Scenario::Hot => Self {
                foods: vec![args.packets],
                agents: orders_bound
                    .min(args.packets.saturating_mul(2))
                    .max(args.packets),
                capacity: args.packets,
            },
            Scenario::ScarceAgents => Self {
                foods: vec![args.stock / FOODS; FOODS as usize],
                agents: args.agents,
                capacity: args.agents.min(args.stock / FOODS * FOODS),
            },
            // Each food's packets are shared out over the hubs; agents come back after each
            // delivery, so no bound on the orders placed follows from the seed.
            Scenario::Day | Scenario::Soak => Self {
                foods: vec![args.stock / FOODS; FOODS as usize],
                agents: args.agents_per_hub,
                capacity: args.stock / FOODS * FOODS,
            },
        }
    }

    /// The food (index into `foods`) of the next order.
    pub(crate) fn pick_food(&self) -> usize {
        rand::rng().random_range(0..self.foods.len())
    }
}
