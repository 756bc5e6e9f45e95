//! The operator API (`/admin/...` on the order service): listing unfinished orders, driving a
//! stuck decided order now, aborting an undecided one, and refusing to abort a decided one.
//! Who may call it (operators only) is the matrix of `identity.rs`; here identity is off.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::service::Service;
use crate::helpers::{Options, TestSystem, eventually};

const FINISH: Duration = Duration::from_secs(60);

/// An operator request to `service`.
async fn admin(
    system: &TestSystem,
    service: &Service,
    method: reqwest::Method,
    path: &str,
) -> (StatusCode, Value) {
    let request = system.http().request(method, service.url(path));
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn list(system: &TestSystem, via: &Service, query: &str) -> Vec<Value> {
    let (status, body) = admin(
        system,
        via,
        reqwest::Method::GET,
        &format!("/admin/orders{query}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["orders"].as_array().cloned().expect("orders")
}

async fn act(system: &TestSystem, via: &Service, id: &str, action: &str) -> (StatusCode, Value) {
    admin(
        system,
        via,
        reqwest::Method::POST,
        &format!("/admin/orders/{id}/{action}"),
    )
    .await
}

#[tokio::test]
async fn an_undecided_order_is_listed_and_aborted_and_a_decided_one_is_not() {
    // Phase 1 may wait a minute: an order whose delivery side does not answer stays undecided.
    let options = Options::default()
        .order("ORDER_DEADLINE", "60s")
        .order("RESPONSE_BUDGET", "2s")
        .all("RESERVATION_TTL", "120s");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Misal", 5).await;
    system.create_agents(5).await;
    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let placed_id = placed["order_id"].as_str().unwrap().to_owned();

    // Delivery stops answering: the next order waits in phase 1.
    system.delivery.signal("STOP").await;
    let (status, pending) = system.place_order(food).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    let id = pending["order_id"].as_str().unwrap().to_owned();

    let stuck = list(&system, &system.order, "?state=reserving").await;
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0]["order_id"], id.as_str());
    assert_eq!(stuck[0]["state"], "reserving");
    assert_eq!(stuck[0]["lease_expired"], false);
    let holder = stuck[0]["lease_holder"].as_str().unwrap_or_default();
    assert!(holder.starts_with("order-service "), "{holder:?}");
    assert!(stuck[0]["age_seconds"].as_f64().is_some_and(|a| a >= 0.0));
    let table = admin_cli(&system, &["orders", "stuck", "--state", "reserving"]).await;
    assert!(
        table.contains(&id) && table.contains("1 unfinished"),
        "{table}"
    );
    // Younger than a minute: not listed as older than one.
    assert!(
        list(&system, &system.order, "?older_than=1m")
            .await
            .is_empty()
    );
    for bad in [
        "?state=placed",
        "?state=lost",
        "?older_than=soon",
        "?limit=0",
        "?x=1",
    ] {
        let (status, body) = admin(
            &system,
            &system.order,
            reqwest::Method::GET,
            &format!("/admin/orders{bad}"),
        )
        .await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }

    // Undecided: "retry" is refused (its deadline aborts it), abort ends it now.
    let (status, body) = act(&system, &system.order, &id, "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("undecided"),
        "{body}"
    );
    let (status, body) = act(&system, &system.order, &id, "abort").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "not_placed");
    assert_eq!(body["reason"], "aborted");
    let (_, order) = system.get(&system.order, &format!("/orders/{id}")).await;
    assert_eq!(order["status"], "not_placed", "{order}");
    assert_eq!(order["reason"], "aborted", "{order}");
    assert!(list(&system, &system.order, "").await.is_empty());

    // A decided order is never aborted: that could take back what it was promised.
    let (status, body) = act(&system, &system.order, &placed_id, "abort").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already placed"),
        "{body}"
    );
    let (status, body) = act(&system, &system.order, &id, "abort").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = act(&system, &system.order, &unknown.to_string(), "abort").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = act(&system, &system.order, "not-a-uuid", "retry").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Delivery wakes up: its late reserve is released; nothing stays held for the order.
    system.delivery.signal("CONT").await;
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
    let (_, order) = system.get(&system.order, &format!("/orders/{id}")).await;
    assert_eq!(order["reason"], "aborted", "{order}");
}

#[tokio::test]
async fn a_decided_order_stuck_under_a_dead_coordinators_lease_is_driven_now_by_retry() {
    // Leases and sweeps of a minute: without the operator, the order would wait that long.
    // The first coordinator dies right after recording the commit decision.
    let options = Options::default()
        .order("LEASE", "60s")
        .order("RECOVERY_INTERVAL", "60s")
        .order("FAULT_POINTS", "coordinator.after_commit_decision")
        .all("RESERVATION_TTL", "120s");
    let mut system = TestSystem::start_with(options).await;
    let mut second = system.another_order_service();
    second.remove_env("FAULT_POINTS");
    second.start().await;
    let food = system.create_food("Upma", 3).await;
    system.create_agents(3).await;

    let placing = system
        .http()
        .post(system.order.url("/orders"))
        .json(&serde_json::json!({ "food_id": food, "customer_id": "c-9" }))
        .send()
        .await;
    assert!(placing.is_err(), "the coordinator died before answering");
    system.order.wait_exit(Duration::from_secs(10)).await;

    let stuck = list(&system, &second, "").await;
    assert_eq!(stuck.len(), 1, "{stuck:?}");
    assert_eq!(stuck[0]["state"], "assigning");
    assert_eq!(
        stuck[0]["lease_expired"], false,
        "the dead coordinator's lease holds"
    );
    let id = stuck[0]["order_id"].as_str().unwrap().to_owned();
    let dead_holder = stuck[0]["lease_holder"].clone();

    // Decided: never aborted.
    let (status, body) = act(&system, &second, &id, "abort").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("commit decision"),
        "{body}"
    );

    let (status, body) = act(&system, &second, &id, "retry").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["driving"], true);
    // Placed long before the dead coordinator's lease would have run out.
    eventually("the order is placed", Duration::from_secs(30), || async {
        system.get(&second, &format!("/orders/{id}")).await.1["status"] == "placed"
    })
    .await;
    eventually("nothing left unfinished", FINISH, || async {
        list(&system, &second, "").await.is_empty()
    })
    .await;
    let holder: Option<String> =
        sqlx::query_scalar("SELECT lease_holder FROM orders WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(system.infra.order_db().await)
            .await
            .unwrap();
    assert_ne!(
        serde_json::json!(holder),
        dead_holder,
        "the second took the lease"
    );

    // Final: nothing to retry.
    let (status, body) = act(&system, &second, &id, "retry").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already placed"),
        "{body}"
    );
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
}

/// Runs `tenminute-admin` with `args` against `system`; its standard output.
async fn admin_cli(system: &TestSystem, args: &[&str]) -> String {
    let output = tokio::process::Command::new(crate::helpers::infra::binary("tenminute-admin"))
        .args(args)
        .env("AMQP_URL", &system.infra.amqp_url)
        .env("ORDER_URL", system.order.url(""))
        .output()
        .await
        .expect("tenminute-admin runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "tenminute-admin {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn a_parked_command_is_shown_with_its_reason_and_moved_back_once_fixed() {
    // Every assign makes the store's handler panic: the assign is parked, the order not placed.
    let mut system = TestSystem::start_with(
        Options::fast().store("FAULT_POINTS", "participant.before_assign=panic"),
    )
    .await;
    let food = system.create_food("Sheera", 2).await;
    system.create_agents(2).await;
    let (_, body) = system.place_order(food).await;
    let id = body["order_id"].as_str().expect("an order id").to_owned();
    let dlq = "store.assign.dlq";
    let (management, vhost) = (&system.infra.management, &system.infra.vhost);
    eventually("the assign is parked", FINISH, || async {
        management.count_messages(vhost, dlq).await >= 1
    })
    .await;
    let order = system.order_when_final(&system.order, &id).await;
    assert_eq!(order["status"], "not_placed", "{order}");
    // Each copy of the assign that phase 2 sent is parked; none comes after the order is final.
    let parked = management.count_messages(vhost, dlq).await;

    let listed = admin_cli(&system, &["dlq", "list"]).await;
    let line = listed
        .lines()
        .find(|l| l.starts_with("store.assign.dlq "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.trim_end().ends_with(&format!(" {parked}")), "{line}");
    assert!(listed.contains("order.progress.dlq"), "{listed}");
    let shown = admin_cli(&system, &["dlq", "show", dlq]).await;
    assert!(shown.contains("-> store.assign"), "{shown}");
    assert!(shown.contains("panicked"), "{shown}");
    assert!(shown.contains(&format!("{parked} shown")), "{shown}");
    assert_eq!(
        management.count_messages(vhost, dlq).await,
        parked,
        "show took nothing"
    );

    // The fix: the store without the bug.
    system.store.remove_env("FAULT_POINTS");
    system.store.kill().await;
    system.store.start().await;
    let dry = admin_cli(&system, &["dlq", "replay", dlq, "--dry-run"]).await;
    assert!(
        dry.contains(&format!(
            "{parked} would be moved back to store.assign, 0 left; nothing moved"
        )),
        "{dry}"
    );
    // Messages parked longer ago than the bound stay, in their place, unless forced.
    let old = admin_cli(&system, &["dlq", "replay", dlq, "--max-age", "1ms"]).await;
    assert!(
        old.contains(&format!("0 moved back to store.assign, {parked} left")),
        "{old}"
    );
    assert!(old.contains("longer than"), "{old}");
    assert_eq!(
        management.count_messages(vhost, dlq).await,
        parked,
        "old messages stay parked"
    );
    assert_eq!(
        management.count_messages(vhost, dlq).await,
        parked,
        "a dry run moves nothing"
    );
    let replayed = admin_cli(&system, &["dlq", "replay", dlq]).await;
    assert!(
        replayed.contains(&format!("{parked} moved back to store.assign, 0 left")),
        "{replayed}"
    );
    eventually("the dead-letter queue is empty", FINISH, || async {
        management.count_messages(vhost, dlq).await == 0
    })
    .await;
    // The store handled it this time: the order's transaction was released, so the late assign
    // is refused and assigns nothing.
    eventually(
        "the store answered the assign moved back",
        FINISH,
        || async { system.store.logged("assign refused") },
    )
    .await;
    assert_eq!(system.food(food).await["assigned"], 0);
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
}

/// An operator's abort racing the live driver: delivery is paused while an order is in phase 1
/// (recorded `reserving` once its response budget passes), then let go at the moment the abort
/// is sent, so that the driver's reserve reply and the abort arrive together. Round after round,
/// either the abort wins (`200`, the order ends `not_placed` `aborted`) or the driver decided
/// first (`409`, and the order ends placed); never both, and nothing stays held.
#[tokio::test]
async fn an_operator_abort_racing_the_live_driver_ends_one_way_and_holds_nothing() {
    let options = Options::default()
        .order("ORDER_DEADLINE", "60s")
        .order("RESPONSE_BUDGET", "300ms")
        .all("RESERVATION_TTL", "120s");
    let system = TestSystem::start_with(options).await;
    let food = system.create_food("Bhel", 20).await;
    system.create_agents(20).await;
    let (mut won, mut lost) = (0, 0);
    for _ in 0..8 {
        system.delivery.signal("STOP").await;
        let (status, pending) = system.place_order(food).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
        let id = pending["order_id"].as_str().unwrap().to_owned();
        let abort = format!("/admin/orders/{id}/abort");
        let ((status, body), ()) = tokio::join!(
            admin(&system, &system.order, reqwest::Method::POST, &abort,),
            system.delivery.signal("CONT")
        );
        let end = system.order_when_final(&system.order, &id).await;
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => {
                won += 1;
                assert_eq!(end["status"], "not_placed", "{body} then {end}");
                assert_eq!(end["reason"], "aborted", "{end}");
            }
            StatusCode::CONFLICT => {
                lost += 1;
                assert_eq!(end["status"], "placed", "{body} then {end}");
            }
            _ => panic!("the abort answered {status} {body}"),
        }
    }
    println!("aborts that won: {won}, refused as decided: {lost}");
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
}
