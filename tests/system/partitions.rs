//! A coordinator cut off from the broker while it still reaches its database.

use std::time::Duration;

use crate::helpers::proxy;
use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_coordinator_cut_off_from_the_broker_hands_its_order_over() {
    // The store stalls each assign, so that the order is still being assigned when its
    // coordinator loses the broker.
    let system = TestSystem::start_with(
        Options::fast().store("FAULT_POINTS", "participant.before_assign=2s"),
    )
    .await;
    let (link, through_proxy) =
        proxy::for_url(&format!("{}?heartbeat=5", system.infra.amqp_url)).await;
    let mut cut_off = system.another_order_service();
    cut_off.set_env("AMQP_URL", &through_proxy);
    cut_off.set_env("AMQP_CONFIRM_TIMEOUT", "1s");
    cut_off.start().await;
    let food = system.create_food("Khichdi", 1).await;
    system.create_agents(1).await;

    let placing = {
        let (http, url) = (system.http().clone(), cut_off.url("/orders"));
        tokio::spawn(async move {
            http.post(url)
                .json(&serde_json::json!({ "food_id": food, "customer_id": "c-42" }))
                .send()
                .await
        })
    };
    eventually("the store is assigning the order", FINISH, || async {
        system.store.logged("fault point reached: pausing")
    })
    .await;
    // The cut-off coordinator still reaches PostgreSQL, so it could renew its lease for ever;
    // it must give the order to the coordinator that reaches the broker instead.
    link.freeze();
    eventually("the order is placed", FINISH, || async {
        system.infra.order_states().await == [("placed".to_owned(), 1)].into()
    })
    .await;
    assert_eq!(system.food(food).await["assigned"], 1);
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    placing.abort();
}
