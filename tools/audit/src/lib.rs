//! Checks the invariants of the order transaction across the three databases.
//!
//! 1. Every placed order has exactly one assigned packet of its food and exactly one assigned
//!    agent, both pointing back to it (and they are the ones the order names).
//! 2. No packet or agent is assigned to an order that is not placed.
//! 3. No item is reserved past its expiry plus a grace.
//! 4. No order is unfinished past its deadline plus a grace.
//! 5. The counts agree: placed orders = assigned packets = assigned agents.
//!
//! The audit reads each database once, without locks, so on a busy system it can see one
//! database a moment after another; run it on a quiet system, or expect transient reports that
//! a second run does not repeat.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The three databases.
#[derive(Clone, Debug)]
pub struct Databases {
    /// The order service's.
    pub order: PgPool,
    /// The store's.
    pub store: PgPool,
    /// Delivery's.
    pub delivery: PgPool,
}

impl Databases {
    /// Connects to the three databases (a small pool each).
    pub async fn connect(order: &str, store: &str, delivery: &str) -> Result<Self, sqlx::Error> {
        let pool = |url: &str| {
            let url = url.to_owned();
            async move {
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&url)
                    .await
            }
        };
        Ok(Self {
            order: pool(order).await?,
            store: pool(store).await?,
            delivery: pool(delivery).await?,
        })
    }
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// A placed order without exactly one assigned packet of its food pointing back to it.
    PlacedOrderPackets {
        /// The order.
        order_id: Uuid,
        /// The packets assigned to it (with their food).
        packets: Vec<(i64, i64)>,
        /// The packet the order names.
        expected: Option<i64>,
    },
    /// A placed order without exactly one assigned agent pointing back to it.
    PlacedOrderAgents {
        /// The order.
        order_id: Uuid,
        /// The agents assigned to it.
        agents: Vec<i64>,
        /// The agent the order names.
        expected: Option<i64>,
    },
    /// A packet assigned to an order that is not placed (or does not exist).
    PacketOfUnplacedOrder {
        /// The packet.
        packet_id: i64,
        /// The order.
        order_id: Uuid,
        /// The order's state, if it exists.
        order_state: Option<String>,
    },
    /// An agent assigned to an order that is not placed (or does not exist).
    AgentOfUnplacedOrder {
        /// The agent.
        agent_id: i64,
        /// The order.
        order_id: Uuid,
        /// The order's state, if it exists.
        order_state: Option<String>,
    },
    /// An item still reserved long after its expiry.
    StaleReservation {
        /// `packet` or `agent`.
        item: String,
        /// Its id.
        id: i64,
    },
    /// An order still unfinished long after its deadline.
    OverdueOrder {
        /// The order.
        order_id: Uuid,
        /// Its state.
        state: String,
    },
    /// The three counts differ.
    CountsDisagree {
        /// Placed orders.
        placed_orders: i64,
        /// Assigned packets.
        assigned_packets: i64,
        /// Assigned agents.
        assigned_agents: i64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(json) => f.write_str(&json),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

/// What the audit found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Orders by state.
    pub orders: HashMap<String, i64>,
    /// Packets by state.
    pub packets: HashMap<String, i64>,
    /// Agents by state.
    pub agents: HashMap<String, i64>,
    /// Every broken invariant.
    pub violations: Vec<Violation>,
}

impl Report {
    /// True when no invariant is broken.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

async fn counts(pool: &PgPool, table: &'static str) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT state, count(*) FROM {table} GROUP BY state"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Runs every check. `grace` is how far past an expiry or deadline something may still be
/// pending before it counts as stuck.
pub async fn audit(db: &Databases, grace: Duration) -> Result<Report, sqlx::Error> {
    let grace_secs = grace.as_secs_f64();
    let placed: Vec<(Uuid, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT id, food_id, packet_id, agent_id FROM orders WHERE state = 'placed'",
    )
    .fetch_all(&db.order)
    .await?;
    let packets: Vec<(i64, i64, Uuid)> =
        sqlx::query_as("SELECT id, food_id, order_id FROM packets WHERE state = 'assigned'")
            .fetch_all(&db.store)
            .await?;
    let agents: Vec<(i64, Uuid)> =
        sqlx::query_as("SELECT id, order_id FROM agents WHERE state = 'assigned'")
            .fetch_all(&db.delivery)
            .await?;

    let mut report = Report {
        orders: counts(&db.order, "orders").await?,
        packets: counts(&db.store, "packets").await?,
        agents: counts(&db.delivery, "agents").await?,
        violations: Vec::new(),
    };

    let mut packets_by_order: HashMap<Uuid, Vec<(i64, i64)>> = HashMap::new();
    for (id, food, order) in &packets {
        packets_by_order
            .entry(*order)
            .or_default()
            .push((*id, *food));
    }
    let mut agents_by_order: HashMap<Uuid, Vec<i64>> = HashMap::new();
    for (id, order) in &agents {
        agents_by_order.entry(*order).or_default().push(*id);
    }
    let placed_ids: HashMap<Uuid, ()> = placed.iter().map(|o| (o.0, ())).collect();

    for (order_id, food_id, packet_id, agent_id) in &placed {
        let its_packets = packets_by_order.get(order_id).cloned().unwrap_or_default();
        let packet_ok = matches!(its_packets.as_slice(), [(id, food)] if Some(*id) == *packet_id && food == food_id);
        if !packet_ok {
            report.violations.push(Violation::PlacedOrderPackets {
                order_id: *order_id,
                packets: its_packets,
                expected: *packet_id,
            });
        }
        let its_agents = agents_by_order.get(order_id).cloned().unwrap_or_default();
        let agent_ok = matches!(its_agents.as_slice(), [id] if Some(*id) == *agent_id);
        if !agent_ok {
            report.violations.push(Violation::PlacedOrderAgents {
                order_id: *order_id,
                agents: its_agents,
                expected: *agent_id,
            });
        }
    }

    let unplaced_packets: Vec<(i64, Uuid)> = packets
        .iter()
        .filter(|(_, _, order)| !placed_ids.contains_key(order))
        .map(|(id, _, order)| (*id, *order))
        .collect();
    let unplaced_agents: Vec<(i64, Uuid)> = agents
        .iter()
        .filter(|(_, order)| !placed_ids.contains_key(order))
        .map(|(id, order)| (*id, *order))
        .collect();
    let orphan_orders: Vec<Uuid> = unplaced_packets
        .iter()
        .chain(unplaced_agents.iter())
        .map(|(_, order)| *order)
        .collect();
    let states: HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT id, state FROM orders WHERE id = ANY($1)")
            .bind(&orphan_orders)
            .fetch_all(&db.order)
            .await?
            .into_iter()
            .collect();
    for (packet_id, order_id) in unplaced_packets {
        report.violations.push(Violation::PacketOfUnplacedOrder {
            packet_id,
            order_id,
            order_state: states.get(&order_id).cloned(),
        });
    }
    for (agent_id, order_id) in unplaced_agents {
        report.violations.push(Violation::AgentOfUnplacedOrder {
            agent_id,
            order_id,
            order_state: states.get(&order_id).cloned(),
        });
    }

    for (pool, table, item) in [
        (&db.store, "packets", "packet"),
        (&db.delivery, "agents", "agent"),
    ] {
        let stale: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM {table}
             WHERE state = 'reserved'
               AND reserved_until < now() - make_interval(secs => $1)
             ORDER BY id"
        )))
        .bind(grace_secs)
        .fetch_all(pool)
        .await?;
        report
            .violations
            .extend(stale.into_iter().map(|id| Violation::StaleReservation {
                item: item.to_owned(),
                id,
            }));
    }

    let overdue: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, state FROM orders
         WHERE state IN ('reserving', 'assigning', 'compensating')
           AND deadline < now() - make_interval(secs => $1)
         ORDER BY created_at",
    )
    .bind(grace_secs)
    .fetch_all(&db.order)
    .await?;
    report.violations.extend(
        overdue
            .into_iter()
            .map(|(order_id, state)| Violation::OverdueOrder { order_id, state }),
    );

    let placed_orders = report.orders.get("placed").copied().unwrap_or(0);
    let assigned_packets = report.packets.get("assigned").copied().unwrap_or(0);
    let assigned_agents = report.agents.get("assigned").copied().unwrap_or(0);
    if placed_orders != assigned_packets || placed_orders != assigned_agents {
        report.violations.push(Violation::CountsDisagree {
            placed_orders,
            assigned_packets,
            assigned_agents,
        });
    }
    Ok(report)
}
