//! The single-database baseline: the same orders, with the same clients, as one PostgreSQL
//! transaction each (insert the order, take and assign a packet, take and assign an agent,
//! commit), in one database with the same tables and indexes as the services. Synchronous commit
//! stays on, as in the services.

use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::RunArgs;
use crate::distributed::Checked;
use crate::load::{self, Record};
use crate::scenario::Plan;

/// Connections of the baseline's pool at most.
const BASELINE_CONNECTIONS: usize = 48;

const SCHEMA: &[&str] = &[
    "DROP TABLE IF EXISTS orders, packets, agents, foods",
    "CREATE TABLE foods (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE packets (
         id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         food_id BIGINT NOT NULL REFERENCES foods (id),
         state TEXT NOT NULL DEFAULT 'available',
         order_id UUID,
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX packets_available ON packets (food_id, id) WHERE state = 'available'",
    "CREATE UNIQUE INDEX packets_one_per_order ON packets (order_id) WHERE state = 'assigned'",
    "CREATE TABLE agents (
         id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
         state TEXT NOT NULL DEFAULT 'available',
         order_id UUID,
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX agents_available ON agents (id) WHERE state = 'available'",
    "CREATE UNIQUE INDEX agents_one_per_order ON agents (order_id) WHERE state = 'assigned'",
    "CREATE TABLE orders (
         id UUID PRIMARY KEY,
         customer_id TEXT NOT NULL,
         food_id BIGINT NOT NULL,
         state TEXT NOT NULL,
         reason TEXT,
         packet_id BIGINT,
         agent_id BIGINT,
         created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
         finished_at TIMESTAMPTZ)",
];

async fn prepare(url: &str, clients: usize) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options
        .get_database()
        .unwrap_or("bench_baseline")
        .to_owned();
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await?;
    }
    admin.close().await?;
    // As many connections as the three services hold together by default (3 x 16): more clients
    // than that wait for a connection, as they would on any server with a connection limit.
    let connections = clients.min(BASELINE_CONNECTIONS) + 1;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(connections).unwrap_or(49))
        .connect_with(options.disable_statement_logging())
        .await?;
    for statement in SCHEMA {
        sqlx::query(*statement).execute(&pool).await?;
    }
    Ok(pool)
}

async fn seed(pool: &PgPool, plan: &Plan) -> anyhow::Result<Vec<i64>> {
    let mut foods = Vec::new();
    for (i, packets) in plan.foods.iter().enumerate() {
        let id: i64 = sqlx::query_scalar("INSERT INTO foods (name) VALUES ($1) RETURNING id")
            .bind(format!("baseline {i}"))
            .fetch_one(pool)
            .await?;
        sqlx::query("INSERT INTO packets (food_id) SELECT $1 FROM generate_series(1, $2)")
            .bind(id)
            .bind(packets)
            .execute(pool)
            .await?;
        foods.push(id);
    }
    sqlx::query("INSERT INTO agents (state) SELECT 'available' FROM generate_series(1, $1)")
        .bind(plan.agents)
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE packets").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE agents").execute(pool).await?;
    Ok(foods)
}

/// One order as one transaction. `SKIP LOCKED` finding nothing while unassigned rows exist
/// means other transactions hold them for the moment: try again, as the distributed flow does.
async fn place(pool: &PgPool, food: i64) -> Result<Record, sqlx::Error> {
    loop {
        let order = Uuid::now_v7();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, customer_id, food_id, state) VALUES ($1, 'bench', $2, 'pending')",
        )
        .bind(order)
        .bind(food)
        .execute(&mut *tx)
        .await?;
        let packet: Option<i64> = sqlx::query_scalar(
            "UPDATE packets SET state = 'assigned', order_id = $1, updated_at = now()
             WHERE id = (SELECT id FROM packets WHERE food_id = $2 AND state = 'available'
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id",
        )
        .bind(order)
        .bind(food)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(packet) = packet else {
            tx.rollback().await?;
            if busy(
                pool,
                "SELECT EXISTS (SELECT 1 FROM packets WHERE food_id = $1 AND state = 'available')",
                Some(food),
            )
            .await?
            {
                continue;
            }
            return not_placed(pool, order, food, "food_unavailable").await;
        };
        let agent: Option<i64> = sqlx::query_scalar(
            "UPDATE agents SET state = 'assigned', order_id = $1, updated_at = now()
             WHERE id = (SELECT id FROM agents WHERE state = 'available'
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id",
        )
        .bind(order)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(agent) = agent else {
            tx.rollback().await?;
            if busy(
                pool,
                "SELECT EXISTS (SELECT 1 FROM agents WHERE state = 'available')",
                None,
            )
            .await?
            {
                continue;
            }
            return not_placed(pool, order, food, "agent_unavailable").await;
        };
        sqlx::query(
            "UPDATE orders SET state = 'placed', packet_id = $2, agent_id = $3, finished_at = now()
             WHERE id = $1",
        )
        .bind(order)
        .bind(packet)
        .bind(agent)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Record {
            label: "placed".to_owned(),
            order_id: Some(order.to_string()),
            packet: Some(packet),
            agent: Some(agent),
        });
    }
}

async fn busy(pool: &PgPool, sql: &'static str, food: Option<i64>) -> Result<bool, sqlx::Error> {
    let query = sqlx::query_scalar(sql);
    let query = match food {
        Some(food) => query.bind(food),
        None => query,
    };
    query.fetch_one(pool).await
}

async fn not_placed(
    pool: &PgPool,
    order: Uuid,
    food: i64,
    reason: &str,
) -> Result<Record, sqlx::Error> {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, food_id, state, reason, finished_at)
         VALUES ($1, 'bench', $2, 'not_placed', $3, now())",
    )
    .bind(order)
    .bind(food)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(Record {
        label: format!("not_placed:{reason}"),
        order_id: Some(order.to_string()),
        ..Record::default()
    })
}

/// Prepares the baseline database, runs the scenario in it and checks the result.
pub(crate) async fn run(url: &str, args: &RunArgs) -> anyhow::Result<Checked> {
    let pool = prepare(url, args.clients)
        .await
        .context("the baseline database (BASELINE_DATABASE_URL)")?;
    let plan = Plan::of(args);
    let foods = Arc::new(seed(&pool, &plan).await?);
    let order = {
        let (pool, foods, plan) = (pool.clone(), Arc::clone(&foods), plan.clone());
        move || {
            let (pool, foods, plan) = (pool.clone(), Arc::clone(&foods), plan.clone());
            async move {
                match place(&pool, foods[plan.pick_food()]).await {
                    Ok(record) => record,
                    Err(err) => Record {
                        label: format!(
                            "error:{}",
                            err.as_database_error()
                                .and_then(|e| e.code())
                                .unwrap_or_default()
                        ),
                        ..Record::default()
                    },
                }
            }
        }
    };
    let amount = args.amount();
    let cpu = crate::cpu::start(args.cpu);
    let measured = match args.rate {
        Some(rate) => load::open(rate, amount, 4_096, "baseline", order).await?,
        None => load::closed(args.clients, amount, "baseline", order).await?,
    };
    let cpu = crate::cpu::finish(cpu, measured.orders());

    let mut violations = Vec::new();
    let (placed, packets, agents, broken): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE state = 'placed'),
                (SELECT count(*) FROM packets WHERE state = 'assigned'),
                (SELECT count(*) FROM agents WHERE state = 'assigned'),
                (SELECT count(*) FROM orders o WHERE state = 'placed' AND NOT (
                     EXISTS (SELECT 1 FROM packets p WHERE p.id = o.packet_id AND p.order_id = o.id
                                                          AND p.food_id = o.food_id)
                     AND EXISTS (SELECT 1 FROM agents a WHERE a.id = o.agent_id AND a.order_id = o.id)))",
    )
    .fetch_one(&pool)
    .await?;
    if placed != packets || placed != agents {
        violations.push(format!(
            "baseline counts disagree: {placed} placed, {packets} packets, {agents} agents assigned"
        ));
    }
    if broken > 0 {
        violations.push(format!(
            "baseline: {broken} placed orders without their items"
        ));
    }
    let sent = i64::try_from(measured.records.len()).unwrap_or(i64::MAX);
    let expected = sent.min(plan.capacity.min(plan.agents));
    if placed != expected {
        violations.push(format!(
            "baseline placed {placed}, expected exactly {expected}"
        ));
    }
    pool.close().await;
    Ok(Checked {
        measured,
        finished_later: 0,
        violations,
        cpu,
        breakdown: None,
        day: None,
        soak: None,
    })
}
