//! The operations console and the customer page, used as a person would: in headless Chromium,
//! against the real services with identity on. The screenshots in `docs/` come from here
//! (`UPDATE_SCREENSHOTS=1`; otherwise they go to `target/screenshots/`).
//!
//! The browser reaches the console and nothing else (see `helpers::browser`): Debian's
//! `chromium`, `chromium-driver`, `socat` and `iproute2` are needed.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::browser::Browser;
use crate::helpers::keys::{self, TestKeys};
use crate::helpers::service::Service;
use crate::helpers::{Options, TestSystem, eventually};

/// How long the page may take to show a change (the console reads the services on each order
/// event; what it shows is measured, not asserted, here: see docs/console.md).
const SHOWN: Duration = Duration::from_secs(10);

struct Day {
    system: TestSystem,
    keys: TestKeys,
    console: Service,
    operator: String,
}

impl Day {
    async fn open(options: Options) -> Self {
        let keys = TestKeys::new("ed25519");
        let system = TestSystem::start_with(options.identity(&keys)).await;
        let operator = keys.operator();
        let token_file = keys.public_key_file().with_file_name("console-token");
        std::fs::write(&token_file, &operator).expect("token file");
        let mut env = system.infra.service_env("console");
        env.extend(keys::verifying_with(&keys.public_key_file()));
        env.extend([
            ("ORDER_URL".to_owned(), system.order.url("")),
            ("STORE_URL".to_owned(), system.store.url("")),
            ("DELIVERY_URL".to_owned(), system.delivery.url("")),
            (
                "CONSOLE_TOKEN_FILE".to_owned(),
                token_file.display().to_string(),
            ),
            ("CONSOLE_STUCK_AFTER".to_owned(), "1s".to_owned()),
        ]);
        let mut console = Service::new("console", env);
        console.start().await;
        Self {
            system,
            keys,
            console,
            operator,
        }
    }

    async fn call(
        &self,
        service: &Service,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (StatusCode, Value) {
        self.system
            .request_as(service, method, path, body.as_ref(), Some(token))
            .await
    }

    /// Creates something as the operator (`201`); its body.
    async fn create(&self, service: &Service, path: &str, body: Value) -> Value {
        let (status, created) = self
            .call(service, Method::POST, path, Some(body), &self.operator)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {created}");
        created
    }

    async fn hub(&self, name: &str) -> i64 {
        let hub = self
            .create(&self.system.store, "/hubs", json!({ "name": name }))
            .await;
        hub["id"].as_i64().unwrap()
    }

    async fn food(&self, name: &str, hub: i64, packets: i64) -> i64 {
        let food = self
            .create(
                &self.system.store,
                "/foods",
                json!({ "name": name, "packets": 0 }),
            )
            .await;
        let id = food["id"].as_i64().unwrap();
        self.packets(id, hub, packets).await;
        id
    }

    async fn packets(&self, food: i64, hub: i64, count: i64) {
        let path = format!("/foods/{food}/packets");
        let body = json!({ "count": count, "hub_id": hub });
        self.create(&self.system.store, &path, body).await;
    }

    async fn agents(&self, hub: i64, count: i64) {
        let body = json!({ "count": count, "hub_id": hub });
        self.create(&self.system.delivery, "/agents", body).await;
    }

    async fn order(&self, customer: &str, hub: i64, lines: &[(i64, i64)]) -> (StatusCode, Value) {
        let lines: Vec<Value> = lines
            .iter()
            .map(|(food, quantity)| json!({ "food_id": food, "quantity": quantity }))
            .collect();
        self.call(
            &self.system.order,
            Method::POST,
            "/orders",
            Some(json!({ "hub_id": hub, "lines": lines })),
            &self.keys.customer(customer),
        )
        .await
    }

    /// The rider of `agent` reports `step` of `order`.
    async fn ride(&self, order: &str, agent: i64, step: &str) {
        let token = self.keys.rider(agent);
        let (status, body) = self.system.rider_as(order, step, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{step}: {body}");
    }

    async fn status_of(&self, order: &str) -> Value {
        let (status, body) = self
            .call(
                &self.system.order,
                Method::GET,
                &format!("/orders/{order}"),
                None,
                &self.operator,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Where a screenshot goes: `docs/` with `UPDATE_SCREENSHOTS=1`, else `target/screenshots/`.
fn screenshot_path(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        root.join("docs/screenshots").join(name)
    } else {
        root.join("target/screenshots").join(name)
    }
}

/// Signs in on the console's page with the operator's token, as an operator does.
async fn sign_in(browser: &Browser, day: &Day) {
    browser.goto(&day.console.url("/")).await;
    browser.wait_text("#sign-in", SHOWN, |_| true).await;
    browser.fill("#token", &day.operator).await;
    browser.click("#use-token").await;
    browser.wait_text("#link", SHOWN, |t| t == "live").await;
}

#[tokio::test]
async fn an_operator_watches_the_day_on_the_console_and_aborts_a_stuck_order_from_it() {
    // Phase 1 may wait a minute, so that an order whose delivery side is frozen stays undecided
    // until the operator aborts it.
    let options = Options::default()
        .order("ORDER_DEADLINE", "60s")
        .order("RESPONSE_BUDGET", "2s")
        .all("RESERVATION_TTL", "120s");
    let day = Day::open(options).await;
    let north = day.hub("Indiranagar").await;
    let south = day.hub("Koramangala").await;
    let milk = day.food("Milk", north, 8).await;
    day.packets(milk, south, 5).await;
    let bread = day.food("Bread", north, 6).await;
    let eggs = day.food("Eggs", south, 4).await;
    day.agents(north, 3).await;
    day.agents(south, 2).await;

    let browser = Browser::start(day.console.addr()).await;
    sign_in(&browser, &day).await;
    let hub_card = format!("#hub-{north}");
    browser.wait_for(&hub_card, SHOWN).await;
    assert_eq!(
        browser
            .text(&format!("{hub_card} [data-riders=available]"))
            .await
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        browser
            .text(&format!(
                "{hub_card} tr[data-food=\"{milk}\"] [data-stock=available]"
            ))
            .await
            .as_deref(),
        Some("8")
    );

    // A basket placed through the API appears at its hub, with its rider taken and its packets
    // assigned.
    let (status, placed) = day.order("c-1", north, &[(milk, 2), (bread, 1)]).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let answered = Instant::now();
    let id = placed["order_id"].as_str().unwrap().to_owned();
    let agent = placed["agent_id"].as_i64().unwrap();
    let row = format!("{hub_card} li[data-order=\"{id}\"]");
    browser.wait_for(&row, SHOWN).await;
    println!(
        "the placed order was on the page {:?} after its answer",
        answered.elapsed()
    );
    assert_eq!(
        browser
            .script(
                "return document.querySelector(arguments[0]).dataset.state;",
                json!([row])
            )
            .await,
        "placed"
    );
    browser
        .wait_text(&format!("{hub_card} [data-riders=assigned]"), SHOWN, |t| {
            t == "1"
        })
        .await;
    browser
        .wait_text(
            &format!("{hub_card} tr[data-food=\"{milk}\"] [data-stock=assigned]"),
            SHOWN,
            |t| t == "2",
        )
        .await;
    browser
        .wait_text(&format!("{hub_card} [data-last-hour=placed]"), SHOWN, |t| {
            t == "1"
        })
        .await;

    // A refusal at the other hub is counted by its reason.
    let (status, refused) = day.order("c-2", south, &[(eggs, 5)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    browser
        .wait_text(
            &format!("#hub-{south} [data-refusal=food_unavailable]"),
            SHOWN,
            |t| t.ends_with('1'),
        )
        .await;
    // More of the day, for the picture.
    let (status, other) = day.order("c-3", south, &[(milk, 1), (eggs, 2)]).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let (status, third) = day.order("c-4", north, &[(bread, 2)]).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    day.ride(
        third["order_id"].as_str().unwrap(),
        third["agent_id"].as_i64().unwrap(),
        "picked-up",
    )
    .await;

    // The rider picks the first order up and delivers it: the page follows, and the rider is
    // free again.
    day.ride(&id, agent, "picked-up").await;
    browser
        .wait_text(&row, SHOWN, |t| t.contains("picked up"))
        .await;
    browser
        .wait_text(
            &format!("{hub_card} [data-riders=delivering]"),
            SHOWN,
            |t| t == "2",
        )
        .await;
    browser.screenshot(&screenshot_path("console.png")).await;
    day.ride(&id, agent, "delivered").await;
    browser.wait_gone(&row, SHOWN).await;
    browser
        .wait_text(
            &format!("{hub_card} [data-last-hour=delivered]"),
            SHOWN,
            |t| t == "1",
        )
        .await;
    browser
        .wait_text(
            &format!("{hub_card} [data-riders=delivering]"),
            SHOWN,
            |t| t == "1",
        )
        .await;
    browser
        .wait_text(&format!("{hub_card} [data-riders=available]"), SHOWN, |t| {
            t == "2"
        })
        .await;

    // Delivery stops answering: the next order stays undecided, is listed as stuck, and the
    // operator aborts it from the page.
    day.system.delivery.signal("STOP").await;
    let (status, pending) = day.order("c-5", north, &[(milk, 1)]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    let stuck = pending["order_id"].as_str().unwrap().to_owned();
    let abort = format!("button[data-abort=\"{stuck}\"]");
    browser.wait_for(&abort, SHOWN).await;
    assert!(
        browser
            .text(&format!("button[data-retry=\"{stuck}\"]"))
            .await
            .is_none(),
        "an undecided order is aborted, not retried"
    );
    browser.click(&abort).await;
    let result = browser
        .wait_text("#action-result", SHOWN, |t| t.starts_with("abort"))
        .await;
    assert!(
        result.contains(" 200 ") || result.contains(" 202 "),
        "{result}"
    );
    day.system.delivery.signal("CONT").await;
    eventually("the stuck order aborted", SHOWN, || async {
        let order = day.status_of(&stuck).await;
        order["status"] == "not_placed" && order["reason"] == "aborted"
    })
    .await;
    browser
        .wait_gone(&format!("tr[data-stuck=\"{stuck}\"]"), SHOWN)
        .await;
    browser
        .wait_text(&format!("{hub_card} [data-refusal=aborted]"), SHOWN, |t| {
            t.ends_with('1')
        })
        .await;
    browser.close().await;
    day.system.assert_audit_clean(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_customer_places_a_basket_on_the_customer_page_and_watches_it_move() {
    let day = Day::open(Options::default()).await;
    let food = day.food("Poha", 1, 5).await;
    day.agents(1, 2).await;

    let browser = Browser::start(day.console.addr()).await;
    browser.goto(&day.console.url("/shop")).await;
    browser.wait_text("#sign-in", SHOWN, |_| true).await;
    browser.fill("#token", &day.keys.customer("c-web")).await;
    browser.click("#use-token").await;
    let quantity = format!("input[data-quantity=\"{food}\"]");
    browser.wait_for(&quantity, SHOWN).await;
    browser.fill(&quantity, "2").await;
    browser.click("#place").await;
    browser
        .wait_text("#order-status", SHOWN, |t| t == "placed")
        .await;
    let id = browser.text("#order-id").await.expect("the order id");
    let order = day.status_of(&id).await;
    assert_eq!(order["lines"], json!([{ "food_id": food, "quantity": 2 }]));
    let agent = order["agent_id"].as_i64().unwrap();
    assert!(
        !browser.is_disabled("#cancel").await,
        "a placed order may be cancelled"
    );

    day.ride(&id, agent, "picked-up").await;
    browser
        .wait_text("#order-status", SHOWN, |t| t == "picked_up")
        .await;
    assert!(
        browser.is_disabled("#cancel").await,
        "not after the pick-up"
    );
    day.ride(&id, agent, "delivered").await;
    browser
        .wait_text("#order-status", SHOWN, |t| t == "delivered")
        .await;
    for step in ["placed", "picked_up", "delivered"] {
        browser
            .wait_for(&format!("#timeline li[data-step={step}]"), SHOWN)
            .await;
    }
    browser.screenshot(&screenshot_path("customer.png")).await;

    // Another basket, cancelled from the page while it may be.
    browser.fill(&quantity, "1").await;
    browser.click("#place").await;
    browser
        .wait_text("#order-status", SHOWN, |t| t == "placed")
        .await;
    let second = browser.text("#order-id").await.expect("the order id");
    assert_ne!(second, id);
    browser.click("#cancel").await;
    browser
        .wait_text("#order-status", SHOWN, |t| t == "cancelled")
        .await;
    assert_eq!(day.status_of(&second).await["status"], "cancelled");
    browser.close().await;
}

#[tokio::test]
async fn the_consoles_api_is_for_operators_and_refuses_bad_input_with_a_clear_4xx() {
    let day = Day::open(Options::default()).await;
    let http = day.system.http();
    let customer = day.keys.customer("c-1");
    for path in ["/api/snapshot", "/api/live", "/api/dead-letters/x.dlq"] {
        let none = http.get(day.console.url(path)).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            none.json::<Value>().await.unwrap()["error"].is_string(),
            "{path}"
        );
        let customer = http
            .get(day.console.url(path))
            .bearer_auth(&customer)
            .send()
            .await
            .unwrap();
        assert_eq!(customer.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let order = uuid::Uuid::new_v4();
    let abort = http
        .post(day.console.url(&format!("/api/orders/{order}/abort")))
        .bearer_auth(&customer)
        .send()
        .await
        .unwrap();
    assert_eq!(abort.status(), StatusCode::FORBIDDEN);
    let missing = http
        .post(day.console.url(&format!("/api/orders/{order}/abort")))
        .bearer_auth(&day.operator)
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        StatusCode::NOT_FOUND,
        "the order service's answer"
    );
    for (method, path, status) in [
        (
            Method::POST,
            "/api/orders/not-a-uuid/abort",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/dead-letters/orders",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (Method::GET, "/assets/nothing.js", StatusCode::NOT_FOUND),
    ] {
        let answer = http
            .request(method, day.console.url(path))
            .bearer_auth(&day.operator)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{path}");
        assert!(
            answer.json::<Value>().await.unwrap()["error"].is_string(),
            "{path}"
        );
    }
    // Development sign-in is off without the signing key.
    let token = http
        .post(day.console.url("/api/dev/token"))
        .json(&json!({ "role": "operator", "subject": "me" }))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::NOT_FOUND);
    let session: Value = http
        .get(day.console.url("/api/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session, json!({ "identity": true, "dev_sign_in": false }));

    // The snapshot: every dead-letter queue counted, every hub read.
    eventually("a full snapshot", SHOWN, || async {
        let snapshot: Value = http
            .get(day.console.url("/api/snapshot"))
            .bearer_auth(&day.operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        snapshot["problems"] == json!([])
            && snapshot["hubs"].as_array().is_some_and(|h| !h.is_empty())
            && snapshot["dead_letters"]
                .as_array()
                .is_some_and(|q| q.len() >= 10 && q.iter().all(|q| q["depth"] == 0))
    })
    .await;
}

#[tokio::test]
async fn an_operator_moves_parked_commands_back_from_the_console_after_a_dry_run() {
    // Every assign makes the store's handler panic: the assigns are parked.
    let mut day =
        Day::open(Options::fast().store("FAULT_POINTS", "participant.before_assign=panic")).await;
    let food = day.food("Sheera", 1, 2).await;
    day.agents(1, 2).await;
    let (_, refused) = day.order("c-1", 1, &[(food, 1)]).await;
    let id = refused["order_id"]
        .as_str()
        .expect("an order id")
        .to_owned();
    let dlq = "store.assign.dlq";
    let (management, vhost) = (&day.system.infra.management, &day.system.infra.vhost);
    eventually("the assign is parked", SHOWN, || async {
        management.count_messages(vhost, dlq).await >= 1
    })
    .await;
    eventually("the order final", Duration::from_secs(60), || async {
        day.status_of(&id).await["status"] == "not_placed"
    })
    .await;
    let parked = management.count_messages(vhost, dlq).await;

    // The fix: the store without the bug.
    day.system.store.remove_env("FAULT_POINTS");
    day.system.store.kill().await;
    day.system.store.start().await;

    let browser = Browser::start(day.console.addr()).await;
    sign_in(&browser, &day).await;
    let depth = format!("tr[data-dlq=\"{dlq}\"] [data-depth]");
    browser
        .wait_text(&depth, SHOWN, |t| t == parked.to_string())
        .await;
    let replay = format!("button[data-replay=\"{dlq}\"]");
    assert!(
        browser.is_disabled(&replay).await,
        "no replay before a dry run"
    );
    browser
        .click(&format!("button[data-dry-run=\"{dlq}\"]"))
        .await;
    let dry = browser
        .wait_for(&format!("[data-dry-run-result=\"{dlq}\"]"), SHOWN)
        .await;
    assert!(
        dry.contains(&format!("{parked} would move back to store.assign")),
        "{dry}"
    );
    assert_eq!(
        management.count_messages(vhost, dlq).await,
        parked,
        "a dry run moves nothing"
    );
    browser.click(&replay).await;
    let moved = browser
        .wait_for(&format!("[data-replayed=\"{dlq}\"]"), SHOWN)
        .await;
    assert!(
        moved.contains(&format!("Moved {parked} back to store.assign")),
        "{moved}"
    );
    browser.wait_text(&depth, SHOWN, |t| t == "0").await;
    browser.close().await;
    // Moved back to a fixed store, each is handled once: the order stays not placed (its assign
    // is refused, the transaction released) and nothing is held.
    day.system
        .assert_nothing_reserved(Duration::from_secs(30))
        .await;
    assert_eq!(day.status_of(&id).await["status"], "not_placed");
}

#[tokio::test]
async fn many_open_pages_cost_the_services_what_one_does() {
    let day = Day::open(Options::default()).await;
    let reads = || {
        day.system
            .order
            .lines_with("request answered")
            .iter()
            .filter(|line| line.contains("/admin/hubs/"))
            .count()
    };
    let mut first = live(&day).await;
    first.next(SHOWN).await.expect("a snapshot");
    let before = reads();
    assert!(before > 0, "the console reads the order service");
    let mut pages = Vec::new();
    for _ in 0..50 {
        let mut page = live(&day).await;
        // Each page gets the current picture at once, without a read of its own.
        let snapshot = page.next(SHOWN).await.expect("a snapshot");
        assert_eq!(snapshot.name, "snapshot");
        assert!(snapshot.data["hubs"].is_array(), "{:?}", snapshot.data);
        pages.push(page);
    }
    // The console reads on its own schedule (every 2 s here, no event coming): opening fifty
    // pages adds no read of its own (a page with reads of its own would add fifty).
    let added = reads() - before;
    assert!(
        added < 5,
        "{added} reads of the order service while 50 pages opened"
    );
}

async fn live(day: &Day) -> crate::helpers::sse::SseStream {
    let response = day
        .system
        .http()
        .get(day.console.url("/api/live"))
        .bearer_auth(&day.operator)
        .send()
        .await
        .expect("the console answers");
    crate::helpers::sse::SseStream::new(response)
}
