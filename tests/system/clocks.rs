//! Clocks that disagree: the coordinator's wall clock against its database's.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Options, TestSystem};

const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_coordinator_whose_clock_runs_ahead_of_its_database_still_places_orders() {
    // The coordinator's wall clock reads a minute ahead: more than the whole phase-1 deadline
    // (20 s by default) from the moment the database records an order.
    let system =
        TestSystem::start_with(Options::default().order("FAULT_POINTS", "clock.ahead=60s")).await;
    let food = system.create_food("Upma", 2).await;
    system.create_agents(2).await;

    for _ in 0..2 {
        let (status, body) = system.place_order(food).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["status"], "placed", "{body}");
    }
    assert_eq!(system.food(food).await["assigned"], 2);
    system.assert_nothing_reserved(SETTLE).await;
    system.assert_audit_clean(SETTLE).await;
}
