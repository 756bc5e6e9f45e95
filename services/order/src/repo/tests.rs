use crate::machine::{NotPlacedReason, OrderState};

/// The names inside `CHECK (column IN (...))`, from every migration in order (a later
/// migration's list replaces an earlier one).
fn check_list(column: &str) -> Vec<String> {
    let needle = format!("CHECK ({column} IN (");
    let mut list = Vec::new();
    for migration in crate::MIGRATOR.iter() {
        let sql = migration.sql.as_str();
        for (at, _) in sql.match_indices(&needle) {
            let rest = &sql[at + needle.len()..];
            let Some(end) = rest.find(')') else { continue };
            let names: Vec<String> = rest[..end]
                .split(',')
                .map(|name| name.trim().trim_matches('\'').to_owned())
                .collect();
            list = names;
        }
    }
    list
}

#[test]
fn the_database_checks_the_names_the_machine_spells() {
    let states: Vec<&str> = OrderState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(check_list("state"), states);
    let reasons: Vec<&str> = NotPlacedReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(check_list("reason"), reasons);
    let unfinished: Vec<&str> = OrderState::ALL
        .iter()
        .filter(|s| !s.is_final())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        super::leases::UNFINISHED,
        format!("('{}')", unfinished.join("', '"))
    );
    // The index that the oldest-order gauge reads holds exactly the unfinished orders.
    let by_age = crate::MIGRATOR
        .iter()
        .find(|m| {
            m.sql
                .as_str()
                .contains("CREATE INDEX orders_unfinished_by_age")
        })
        .expect("the migration of orders_unfinished_by_age");
    assert!(
        by_age
            .sql
            .as_str()
            .contains(&format!("WHERE state IN {}", super::leases::UNFINISHED)),
        "{}",
        by_age.sql.as_str()
    );
}

#[tokio::test]
async fn the_oldest_unfinished_orders_are_read_from_an_index_among_many_finished_ones() {
    let database = service_kit::testing::ScratchDatabase::create("order_repo_test")
        .await
        .unwrap();
    crate::MIGRATOR.run(database.pool()).await.unwrap();
    let pool = database.pool().clone();
    // Many finished orders, all older than the unfinished ones; a pile of orders still being
    // placed (the oldest 90 s old); one cancel under way, of an order made 30 minutes ago.
    sqlx::raw_sql(
        "INSERT INTO orders (id, customer_id, hub_id, lines, state, reason, txn_id, deadline,
                             created_at, finished_at)
         SELECT gen_random_uuid(), 'c-1', 1, '[{\"food_id\": 1, \"quantity\": 1}]',
                'not_placed', 'timeout', gen_random_uuid(), now(), now() - interval '2 hours',
                now() - interval '2 hours'
         FROM generate_series(1, 20000);
         INSERT INTO orders (id, customer_id, hub_id, lines, state, txn_id, deadline, created_at)
         SELECT gen_random_uuid(), 'c-2', 1, '[{\"food_id\": 1, \"quantity\": 1}]',
                'reserving', gen_random_uuid(), now(),
                now() - interval '90 seconds' + g * interval '10 milliseconds'
         FROM generate_series(0, 1999) g;
         INSERT INTO orders (id, customer_id, hub_id, lines, state, txn_id, deadline, created_at,
                             finished_at, packet_ids, agent_id, reserved_until)
         VALUES (gen_random_uuid(), 'c-3', 1, '[{\"food_id\": 1, \"quantity\": 1}]',
                 'cancelling', gen_random_uuid(), now(), now() - interval '30 minutes',
                 now() - interval '29 minutes', ARRAY[7]::bigint[], 3, now());
         ANALYZE orders;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        super::oldest_unfinished_sql()
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let ages = super::oldest_unfinished(&pool).await.unwrap();
    database.drop_database().await.unwrap();

    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert_eq!(
        plan.matches("orders_unfinished_by_age").count(),
        4,
        "one index lookup per unfinished state:\n{plan}"
    );
    let age = |state| {
        ages.iter()
            .find(|(s, _)| *s == state)
            .map(|(_, age)| age.as_secs())
    };
    assert!(
        age(OrderState::Reserving).is_some_and(|s| (90..120).contains(&s)),
        "{ages:?}"
    );
    assert!(
        age(OrderState::Cancelling).is_some_and(|s| (1800..1830).contains(&s)),
        "{ages:?}"
    );
    assert_eq!(age(OrderState::Assigning), None, "{ages:?}");
    assert_eq!(age(OrderState::Compensating), None, "{ages:?}");
}
