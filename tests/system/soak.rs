//! A soak with a nemesis: orders placed by clients that retry with their idempotency keys, while
//! a fault is injected every few seconds (kill -9 of any service, a process paused, broker
//! connections closed, database backends terminated, the network between delivery and the
//! broker cut). At the end the checker holds every answer
//! against the database and the audit checks every invariant: nothing lost, nothing
//! duplicated, nothing placed falsely, no violation.
//!
//! `SOAK_DURATION` (default 40s) sets how long the nemesis runs, `SOAK_SEED` its random
//! choices. The long run is documented in `docs/failure-handling.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::helpers::infra::rabbitmqctl;
use crate::helpers::load::Load;
use crate::helpers::proxy;
use crate::helpers::service::Service;
use crate::helpers::{Options, TestSystem, eventually_explained};

const FINISH: Duration = Duration::from_secs(120);

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Kills `service` with SIGKILL and starts it again after `down`.
async fn crash(service: &mut Service, down: Duration) {
    service.kill().await;
    tokio::time::sleep(down).await;
    service.start().await;
}

#[tokio::test]
async fn a_soak_with_a_nemesis_loses_nothing_duplicates_nothing_and_places_nothing_falsely() {
    let duration = setting("SOAK_DURATION")
        .map(|d| humantime::parse_duration(&d).expect("SOAK_DURATION is a duration"))
        .unwrap_or(Duration::from_secs(40));
    let seed = setting("SOAK_SEED")
        .map(|s| s.parse().expect("SOAK_SEED is a number"))
        .unwrap_or(0x50a4);
    let mut system = TestSystem::start_with(Options::fast()).await;
    // Delivery reaches the broker through a path the nemesis can cut.
    let (link, through_proxy) =
        proxy::for_url(&format!("{}?heartbeat=5", system.infra.amqp_url)).await;
    system.delivery.kill().await;
    system.delivery.set_env("AMQP_URL", &through_proxy);
    system.delivery.start().await;
    let mut second = system.another_order_service();
    second.start().await;
    // Enough packets and agents for every order of the run (nothing is delivered here), so that
    // orders are still placed at the end.
    let stock = i64::try_from(duration.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_mul(100)
        .clamp(50_000, 1_000_000);
    // At most 100,000 packets a request.
    let food = system.create_food("Soak", 0).await;
    let mut left = stock;
    while left > 0 {
        let n = left.min(100_000);
        system.add_packets(food, 1, n).await;
        left -= n;
    }
    for _ in 0..(stock + 99_999) / 100_000 {
        system.create_agents(stock.min(100_000)).await;
    }
    let load = Load::start(vec![system.order.url(""), second.url("")], food, 8);
    load.wait_placed(20, FINISH).await;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1_500..4_000))).await;
        let down = Duration::from_millis(rng.random_range(0..1_500));
        let fault = match rng.random_range(0..8) {
            0 => {
                crash(&mut system.order, down).await;
                "kill -9 order"
            }
            1 => {
                crash(&mut second, down).await;
                "kill -9 second order"
            }
            2 => {
                crash(&mut system.store, down).await;
                "kill -9 store"
            }
            3 => {
                crash(&mut system.delivery, down).await;
                "kill -9 delivery"
            }
            4 => {
                rabbitmqctl(&[
                    "close_all_connections",
                    "--vhost",
                    &system.infra.vhost,
                    "--limit",
                    "1000",
                    "soak: connections closed",
                ])
                .await;
                "broker connections closed"
            }
            5 => {
                system.infra.terminate_backends().await;
                "database backends terminated"
            }
            6 => {
                link.freeze();
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
                link.thaw();
                "delivery cut off from the broker"
            }
            _ => {
                let victim = match rng.random_range(0..3) {
                    0 => &system.store,
                    1 => &system.delivery,
                    _ => &second,
                };
                victim.signal("STOP").await;
                tokio::time::sleep(down.max(Duration::from_millis(500))).await;
                victim.signal("CONT").await;
                "a process paused"
            }
        };
        *faults.entry(fault).or_default() += 1;
        // A restarted coordinator listens on a new port.
        load.set_targets(vec![system.order.url(""), second.url("")]);
    }

    // Everything comes back, and orders are placed again.
    for service in [&system.order, &second, &system.store, &system.delivery] {
        eventually_explained("every service ready", FINISH, || service.readiness()).await;
    }
    load.wait_placed(20, FINISH).await;
    let checked = system.finish_and_check(load, FINISH).await;
    println!("soak: {duration:?}, seed {seed}, faults {faults:?}; {checked}; violations 0");
    assert!(checked.placed > 0, "{checked}");
}
