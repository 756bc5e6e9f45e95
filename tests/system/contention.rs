//! Many orders for one food at once: exactly as many are placed as the scarcer of packets and
//! agents allows, nothing is given twice, nothing stays reserved.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;

use crate::helpers::{Options, TestSystem};

async fn run(packets: i64, agents: i64, orders: usize) {
    // Every order must end with a final answer while hundreds wait on each other's reservations,
    // with the production defaults (a 5 s deadline, a 6 s response budget): none may end
    // `timeout`. Alone: the deadlines assume the machine's cores for this system.
    let system = TestSystem::start_with(Options::default().alone()).await;
    let food = system.create_food("Biryani", packets).await;
    system.create_agents(agents).await;

    let answers = join_all((0..orders).map(|_| system.place_order(food))).await;

    let placed = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CREATED)
        .count();
    let not_placed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::CONFLICT)
        .collect();
    let expected = usize::try_from(packets.min(agents)).unwrap();
    assert_eq!(placed, expected, "placed");
    assert_eq!(
        placed + not_placed.len(),
        orders,
        "every order got a final answer"
    );
    let scarce = if packets < agents {
        "food_unavailable"
    } else {
        "agent_unavailable"
    };
    for (_, body) in &not_placed {
        assert_eq!(body["reason"], scarce, "{body}");
    }

    // No packet and no agent was given twice (also checked by the database's unique indexes and
    // by the audit below).
    let mut packets_seen: Vec<i64> = answers
        .iter()
        .filter_map(|(_, b)| b["packet_id"].as_i64())
        .collect();
    let mut agents_seen: Vec<i64> = answers
        .iter()
        .filter_map(|(_, b)| b["agent_id"].as_i64())
        .collect();
    packets_seen.sort_unstable();
    packets_seen.dedup();
    agents_seen.sort_unstable();
    agents_seen.dedup();
    assert_eq!(
        (packets_seen.len(), agents_seen.len()),
        (expected, expected)
    );

    system
        .assert_nothing_reserved(Duration::from_secs(10))
        .await;
    system.assert_audit_clean(Duration::from_secs(10)).await;
    let stock = system.food(food).await;
    assert_eq!(
        stock["assigned"],
        i64::try_from(expected).unwrap(),
        "{stock}"
    );
}

#[tokio::test]
async fn scarce_packets_place_exactly_as_many_orders_as_packets() {
    run(50, 80, 200).await;
}

#[tokio::test]
async fn scarce_agents_place_exactly_as_many_orders_as_agents() {
    run(80, 50, 200).await;
}
