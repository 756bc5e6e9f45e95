//! Checks the invariants of the order's life across the three databases.
//!
//! 1. Every order that holds its items (`placed`, `picked_up`, `delivered`) is assigned exactly
//!    the packets it names, and they are the packets of its lines (food and quantity), all from
//!    its hub.
//! 2. Its agent: a `placed` order has exactly one agent, `assigned` to it, the one it names, from
//!    its hub; a `picked_up` order has it `delivering`; a `delivered` or `cancelled` order has
//!    none.
//! 3. No packet or agent is held for an order in any other state (or that does not exist); a
//!    `cancelled` order holds no packet; an off-duty agent holds nothing.
//! 4. No item is reserved past its expiry plus a grace; no order is being placed past its
//!    deadline plus a grace.
//! 5. The counts per hub agree: packets assigned at a hub = the packets of the orders of that
//!    hub that hold them; agents assigned or delivering at a hub = the hub's placed and
//!    picked-up orders. Every hub of an agent exists in the store.
//! 6. The outboxes: every order has exactly one event for each step it went through (within the
//!    outbox's retention), and nothing stays unsent past the grace, in the coordinator's outbox
//!    and in delivery's.
//! 7. The barriers: no item is reserved by a transaction that was released (an abort applied after
//!    the assign leaves the assignment, as it must), and nothing is held by one that was
//!    compensated.
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
    /// An order that holds its items is not assigned exactly the packets of its lines from its
    /// hub, or not the packets it names.
    OrderPackets {
        /// The order.
        order_id: Uuid,
        /// Its state.
        state: String,
        /// The packets assigned to it, as (packet, food, hub).
        packets: Vec<(i64, i64, i64)>,
        /// The packets the order names.
        expected: Vec<i64>,
    },
    /// An order's agent is not as its state requires.
    OrderAgent {
        /// The order.
        order_id: Uuid,
        /// Its state.
        state: String,
        /// The agents held for it, as (agent, state, hub).
        agents: Vec<(i64, String, i64)>,
        /// The agent the order names.
        expected: Option<i64>,
    },
    /// A packet assigned to an order that does not hold its items (or does not exist).
    PacketOfUnplacedOrder {
        /// The packet.
        packet_id: i64,
        /// The order.
        order_id: Uuid,
        /// The order's state, if it exists.
        order_state: Option<String>,
    },
    /// An agent held for an order that cannot have it (or does not exist).
    AgentOfUnplacedOrder {
        /// The agent.
        agent_id: i64,
        /// The order.
        order_id: Uuid,
        /// The order's state, if it exists.
        order_state: Option<String>,
    },
    /// An off-duty agent that holds something, or an agent with a delivery under way that is not
    /// out delivering it.
    OffDutyAgentHolds {
        /// The agent.
        agent_id: i64,
    },
    /// An item still reserved long after its expiry.
    StaleReservation {
        /// `packet` or `agent`.
        item: String,
        /// Its id.
        id: i64,
    },
    /// An order still being placed long after its deadline.
    OverdueOrder {
        /// The order.
        order_id: Uuid,
        /// Its state.
        state: String,
    },
    /// The counts of one hub differ.
    CountsDisagree {
        /// The hub.
        hub_id: i64,
        /// Packets of the hub's orders that hold them.
        order_packets: i64,
        /// Packets assigned at the hub.
        assigned_packets: i64,
        /// The hub's placed and picked-up orders.
        orders_with_agents: i64,
        /// Agents assigned or delivering at the hub.
        busy_agents: i64,
    },
    /// Agents of a hub that the store does not know.
    UnknownHub {
        /// The hub.
        hub_id: i64,
    },
    /// An order's events are not one per step it went through.
    OrderEvents {
        /// The order.
        order_id: Uuid,
        /// Its state.
        state: String,
        /// The routing keys of its events in the outbox, with how many of each.
        events: Vec<(String, i64)>,
    },
    /// Messages left unsent in an outbox past the grace.
    UnsentOutbox {
        /// `order` or `delivery`.
        service: String,
        /// How many.
        count: i64,
    },
    /// An item reserved by a transaction whose release was applied, or held by one whose
    /// compensation was.
    HeldAfterRelease {
        /// `packet` or `agent`.
        item: String,
        /// Its id.
        id: i64,
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

/// An order as the audit reads it.
#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    state: String,
    hub_id: i64,
    lines: sqlx::types::Json<Vec<Line>>,
    packet_ids: Option<Vec<i64>>,
    agent_id: Option<i64>,
}

#[derive(Debug, serde::Deserialize)]
struct Line {
    food_id: i64,
    quantity: i64,
}

/// States of an order that holds its packets.
const HOLDS_PACKETS: [&str; 3] = ["placed", "picked_up", "delivered"];

/// Runs every check. `grace` is how far past an expiry or deadline something may still be
/// pending before it counts as stuck.
pub async fn audit(db: &Databases, grace: Duration) -> Result<Report, sqlx::Error> {
    let grace_secs = grace.as_secs_f64();
    let orders: Vec<OrderRow> = sqlx::query_as(
        "SELECT id, state, hub_id, lines, packet_ids, agent_id FROM orders
         WHERE state IN ('placed', 'picked_up', 'delivered', 'cancelling', 'cancelled')",
    )
    .fetch_all(&db.order)
    .await?;
    let packets: Vec<(i64, i64, i64, Uuid)> = sqlx::query_as(
        "SELECT id, food_id, hub_id, order_id FROM packets WHERE state = 'assigned'",
    )
    .fetch_all(&db.store)
    .await?;
    let agents: Vec<(i64, String, i64, Uuid)> = sqlx::query_as(
        "SELECT id, state, hub_id, order_id FROM agents WHERE state IN ('assigned', 'delivering')",
    )
    .fetch_all(&db.delivery)
    .await?;

    let mut report = Report {
        orders: counts(&db.order, "orders").await?,
        packets: counts(&db.store, "packets").await?,
        agents: counts(&db.delivery, "agents").await?,
        violations: Vec::new(),
    };

    let mut packets_by_order: HashMap<Uuid, Vec<(i64, i64, i64)>> = HashMap::new();
    for (id, food, hub, order) in &packets {
        packets_by_order
            .entry(*order)
            .or_default()
            .push((*id, *food, *hub));
    }
    let mut agents_by_order: HashMap<Uuid, Vec<(i64, String, i64)>> = HashMap::new();
    for (id, state, hub, order) in &agents {
        agents_by_order
            .entry(*order)
            .or_default()
            .push((*id, state.clone(), *hub));
    }
    let by_id: HashMap<Uuid, &OrderRow> = orders.iter().map(|o| (o.id, o)).collect();

    #[derive(Default)]
    struct HubCounts {
        order_packets: i64,
        assigned_packets: i64,
        orders_with_agents: i64,
        busy_agents: i64,
    }
    let mut hubs: HashMap<i64, HubCounts> = HashMap::new();
    for (_, _, hub, _) in &packets {
        hubs.entry(*hub).or_default().assigned_packets += 1;
    }
    for (_, _, hub, _) in &agents {
        hubs.entry(*hub).or_default().busy_agents += 1;
    }

    for order in &orders {
        let state = order.state.as_str();
        let its_packets = packets_by_order.get(&order.id).cloned().unwrap_or_default();
        let expected = order.packet_ids.clone().unwrap_or_default();
        let packets_ok = if HOLDS_PACKETS.contains(&state) {
            hubs.entry(order.hub_id).or_default().order_packets +=
                i64::try_from(expected.len()).unwrap_or(i64::MAX);
            holds_its_lines(order, &its_packets, &expected)
        } else if state == "cancelled" {
            its_packets.is_empty()
        } else {
            // Cancelling: either, while the cancel runs.
            true
        };
        if !packets_ok {
            report.violations.push(Violation::OrderPackets {
                order_id: order.id,
                state: order.state.clone(),
                packets: its_packets,
                expected,
            });
        }
        let its_agents = agents_by_order.get(&order.id).cloned().unwrap_or_default();
        let wanted_agent_state = match state {
            "placed" => Some("assigned"),
            "picked_up" => Some("delivering"),
            _ => None,
        };
        if wanted_agent_state.is_some() {
            hubs.entry(order.hub_id).or_default().orders_with_agents += 1;
        }
        let agent_ok = match (state, wanted_agent_state, its_agents.as_slice()) {
            (_, Some(wanted), [(id, agent_state, hub)]) => {
                Some(*id) == order.agent_id && agent_state == wanted && *hub == order.hub_id
            }
            (_, Some(_), _) => false,
            ("cancelling", None, []) => true,
            // Cancelling: the agent may still be the order's, until delivery frees it.
            ("cancelling", None, [(id, _, hub)]) => {
                Some(*id) == order.agent_id && *hub == order.hub_id
            }
            (_, None, agents) => agents.is_empty(),
        };
        if !agent_ok {
            report.violations.push(Violation::OrderAgent {
                order_id: order.id,
                state: order.state.clone(),
                agents: its_agents,
                expected: order.agent_id,
            });
        }
    }

    let holds = |order: &Uuid, may: &[&str]| {
        by_id
            .get(order)
            .is_some_and(|o| may.contains(&o.state.as_str()))
    };
    let unplaced_packets: Vec<(i64, Uuid)> = packets
        .iter()
        .filter(|(_, _, _, order)| {
            !holds(order, &["placed", "picked_up", "delivered", "cancelling"])
        })
        .map(|(id, _, _, order)| (*id, *order))
        .collect();
    let unplaced_agents: Vec<(i64, Uuid)> = agents
        .iter()
        .filter(|(_, state, _, order)| {
            let may: &[&str] = if state == "assigned" {
                &["placed", "cancelling"]
            } else {
                &["picked_up", "cancelling"]
            };
            !holds(order, may)
        })
        .map(|(id, _, _, order)| (*id, *order))
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

    let off_duty_holding: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM agents
         WHERE state = 'off_duty' AND (txn_id IS NOT NULL OR order_id IS NOT NULL)
            OR id IN (SELECT agent_id FROM deliveries WHERE delivered_at IS NULL)
               AND state <> 'delivering'
         ORDER BY id",
    )
    .fetch_all(&db.delivery)
    .await?;
    report.violations.extend(
        off_duty_holding
            .into_iter()
            .map(|agent_id| Violation::OffDutyAgentHolds { agent_id }),
    );

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

    let mut hub_ids: Vec<&i64> = hubs.keys().collect();
    hub_ids.sort();
    for hub_id in hub_ids {
        let c = &hubs[hub_id];
        if c.order_packets != c.assigned_packets || c.orders_with_agents != c.busy_agents {
            report.violations.push(Violation::CountsDisagree {
                hub_id: *hub_id,
                order_packets: c.order_packets,
                assigned_packets: c.assigned_packets,
                orders_with_agents: c.orders_with_agents,
                busy_agents: c.busy_agents,
            });
        }
    }
    let agent_hubs: Vec<i64> = sqlx::query_scalar("SELECT id FROM hubs ORDER BY id")
        .fetch_all(&db.delivery)
        .await?;
    let store_hubs: Vec<i64> = sqlx::query_scalar("SELECT id FROM hubs WHERE id = ANY($1)")
        .bind(&agent_hubs)
        .fetch_all(&db.store)
        .await?;
    report.violations.extend(
        agent_hubs
            .into_iter()
            .filter(|hub| !store_hubs.contains(hub))
            .map(|hub_id| Violation::UnknownHub { hub_id }),
    );
    check_outboxes(db, grace_secs, &mut report).await?;
    for (pool, table, item) in [
        (&db.store, "packets", "packet"),
        (&db.delivery, "agents", "agent"),
    ] {
        let held: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT DISTINCT i.id FROM txn_barrier b JOIN {table} i ON i.txn_id = b.txn_id
             WHERE (b.operation = 'release' AND i.state = 'reserved')
                OR b.operation = 'compensate'
             ORDER BY i.id"
        )))
        .fetch_all(pool)
        .await?;
        report
            .violations
            .extend(held.into_iter().map(|id| Violation::HeldAfterRelease {
                item: item.to_owned(),
                id,
            }));
    }
    Ok(report)
}

/// The routing keys of the events an order in `state` has published, in order.
fn events_of(state: &str) -> &'static [&'static str] {
    match state {
        "placed" | "cancelling" => &["order.placed"],
        "not_placed" => &["order.not_placed"],
        "picked_up" => &["order.placed", "order.picked_up"],
        "delivered" => &["order.placed", "order.picked_up", "order.delivered"],
        "cancelled" => &["order.placed", "order.cancelled"],
        _ => &[],
    }
}

/// How long the outbox keeps sent events (the relay's retention is 24 hours): orders younger
/// than this (in seconds) are checked.
const OUTBOX_CHECKED_SECS: f64 = 23.0 * 3600.0;

async fn check_outboxes(
    db: &Databases,
    grace_secs: f64,
    report: &mut Report,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(Uuid, String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT o.id, o.state, e.routing_key, count(e.id)
         FROM orders o LEFT JOIN outbox e ON e.order_id = o.id
         WHERE o.created_at > now() - make_interval(secs => $1)
           AND o.state NOT IN ('reserving', 'assigning', 'compensating')
         GROUP BY o.id, o.state, e.routing_key
         ORDER BY o.id",
    )
    .bind(OUTBOX_CHECKED_SECS)
    .fetch_all(&db.order)
    .await?;
    let mut by_order: HashMap<Uuid, (String, Vec<(String, i64)>)> = HashMap::new();
    for (id, state, key, count) in rows {
        let entry = by_order.entry(id).or_insert_with(|| (state, Vec::new()));
        if let (Some(key), Some(count)) = (key, count) {
            entry.1.push((key, count));
        }
    }
    let mut ids: Vec<&Uuid> = by_order.keys().collect();
    ids.sort();
    for id in ids {
        let (state, events) = &by_order[id];
        let mut got: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        got.sort_unstable();
        let mut want = events_of(state).to_vec();
        want.sort_unstable();
        if got != want || events.iter().any(|(_, n)| *n != 1) {
            report.violations.push(Violation::OrderEvents {
                order_id: *id,
                state: state.clone(),
                events: events.clone(),
            });
        }
    }
    for (pool, service) in [(&db.order, "order"), (&db.delivery, "delivery")] {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox
             WHERE sent_at IS NULL AND created_at < now() - make_interval(secs => $1)",
        )
        .bind(grace_secs)
        .fetch_one(pool)
        .await?;
        if count > 0 {
            report.violations.push(Violation::UnsentOutbox {
                service: service.to_owned(),
                count,
            });
        }
    }
    Ok(())
}

/// Whether `packets` (packet, food, hub) are exactly the order's `expected` packets and the
/// packets of its lines, all from its hub.
fn holds_its_lines(order: &OrderRow, packets: &[(i64, i64, i64)], expected: &[i64]) -> bool {
    let mut ids: Vec<i64> = packets.iter().map(|p| p.0).collect();
    ids.sort_unstable();
    let mut named = expected.to_vec();
    named.sort_unstable();
    if ids != named || packets.iter().any(|p| p.2 != order.hub_id) {
        return false;
    }
    let mut per_food: HashMap<i64, i64> = HashMap::new();
    for (_, food, _) in packets {
        *per_food.entry(*food).or_default() += 1;
    }
    per_food.len() == order.lines.len()
        && order
            .lines
            .iter()
            .all(|line| per_food.get(&line.food_id) == Some(&line.quantity))
}
