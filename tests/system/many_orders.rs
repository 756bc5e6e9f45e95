//! Many orders across several foods: every placed order has one packet and one agent pointing
//! back to it, and the three services agree.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use reqwest::StatusCode;

use crate::helpers::{Options, TestSystem};

#[tokio::test]
async fn every_placed_order_has_one_packet_and_one_agent_pointing_back() {
    let system = TestSystem::start_with(Options::patient()).await;
    let mut foods = Vec::new();
    for (name, packets) in [
        ("Dosa", 30),
        ("Poha", 25),
        ("Thali", 20),
        ("Chai", 15),
        ("Lassi", 10),
    ] {
        foods.push((system.create_food(name, packets).await, packets));
    }
    // Agents are plentiful here: only food runs out.
    system.create_agents(150).await;

    let choices: Vec<i64> = {
        let mut rng = rand::rng();
        (0..150)
            .map(|_| foods[rng.random_range(0..foods.len())].0)
            .collect()
    };
    let answers = join_all(choices.iter().map(|food| system.place_order(*food))).await;

    let mut placed_per_food: HashMap<i64, i64> = HashMap::new();
    for (status, body) in &answers {
        match *status {
            StatusCode::CREATED => {
                let food = body["food_id"].as_i64().unwrap();
                *placed_per_food.entry(food).or_default() += 1;
                let order = body["order_id"].as_str().unwrap();
                let packet = body["packet_id"].as_i64().unwrap();
                let agent = body["agent_id"].as_i64().unwrap();
                let (_, p) = system
                    .get(&system.store, &format!("/packets/{packet}"))
                    .await;
                assert_eq!(
                    (
                        p["state"].as_str(),
                        p["order_id"].as_str(),
                        p["food_id"].as_i64()
                    ),
                    (Some("assigned"), Some(order), Some(food))
                );
                let (_, a) = system
                    .get(&system.delivery, &format!("/agents/{agent}"))
                    .await;
                assert_eq!(
                    (a["state"].as_str(), a["order_id"].as_str()),
                    (Some("assigned"), Some(order))
                );
            }
            StatusCode::CONFLICT => assert_eq!(body["reason"], "food_unavailable", "{body}"),
            other => panic!("unexpected answer {other}: {body}"),
        }
    }

    // Per food: placed orders = assigned packets, and never more than its stock.
    for (food, stock) in &foods {
        let counts = system.food(*food).await;
        let placed = placed_per_food.get(food).copied().unwrap_or(0);
        assert_eq!(counts["assigned"].as_i64(), Some(placed), "{counts}");
        assert!(placed <= *stock);
    }
    let total: i64 = placed_per_food.values().sum();
    assert_eq!(
        system.agents_summary().await["assigned"].as_i64(),
        Some(total)
    );
    assert_eq!(
        system.infra.order_states().await.get("placed").copied(),
        Some(total)
    );
    system
        .assert_nothing_reserved(Duration::from_secs(10))
        .await;
    system.assert_audit_clean(Duration::from_secs(10)).await;
}
