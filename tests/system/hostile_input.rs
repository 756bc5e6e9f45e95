//! Input that the database would refuse is answered with a 4xx and a JSON error before it
//! reaches the database: hostile values at every field of every endpoint, and seeded random
//! strings, never make a service answer 5xx.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestSystem;

/// Strings that databases, JSON and Unicode handling trip on.
fn hostile_strings(rng: &mut StdRng) -> Vec<Value> {
    let mut strings: Vec<Value> = [
        "",
        " ",
        "\u{0}",
        "a\u{0}b",
        "\u{0}\u{0}",
        "\u{7f}",
        "\u{feff}",
        "\u{202e}abc",
        "\u{10ffff}",
        "😀",
        "\\",
        "'",
        "\"",
        "%s%n",
        "' OR 1=1 --",
        "\r\n",
        "\t",
    ]
    .iter()
    .map(|s| json!(s))
    .collect();
    strings.push(json!("x".repeat(201)));
    strings.push(json!("é".repeat(200)));
    strings.push(json!("x".repeat(100_000)));
    for _ in 0..40 {
        let len = rng.random_range(0..40);
        let s: String = (0..len)
            .map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('?'))
            .collect();
        strings.push(json!(s));
    }
    strings
}

/// Numbers and other values at the edges.
fn hostile_values() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1.5),
        json!(1e300),
        json!(null),
        json!(true),
        json!([]),
        json!({}),
        json!("1"),
    ]
}

/// Sends `body` and checks the answer is not a server error and is JSON.
async fn check(
    system: &TestSystem,
    service: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) {
    let target = match service {
        "order" => &system.order,
        "store" => &system.store,
        _ => &system.delivery,
    };
    let (status, answer) = system.request(target, method.clone(), path, body).await;
    assert!(
        !status.is_server_error(),
        "{service} {method} {path} {body:?} answered {status}: {answer}"
    );
    // A refusal says why; a 409 is an order that is not placed, with its own body.
    if status.is_client_error() && status != reqwest::StatusCode::CONFLICT {
        assert!(answer["error"].is_string(), "{service} {path}: {answer}");
    }
}

#[tokio::test]
async fn no_input_makes_a_service_answer_5xx() {
    let system = TestSystem::start().await;
    let food = system.create_food("Dhokla", 1000).await;
    system.create_agents(1000).await;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let strings = hostile_strings(&mut rng);
    let values = hostile_values();
    let anything: Vec<Value> = strings.iter().chain(&values).cloned().collect();

    for s in &anything {
        check(
            &system,
            "order",
            Method::POST,
            "/orders",
            Some(&json!({ "food_id": food, "customer_id": s })),
        )
        .await;
        check(
            &system,
            "order",
            Method::POST,
            "/orders",
            Some(&json!({ "food_id": s, "customer_id": "c-1" })),
        )
        .await;
        check(
            &system,
            "store",
            Method::POST,
            "/foods",
            Some(&json!({ "name": s, "packets": 1 })),
        )
        .await;
        check(
            &system,
            "store",
            Method::POST,
            "/foods",
            Some(&json!({ "name": "ok", "packets": s })),
        )
        .await;
        check(
            &system,
            "store",
            Method::POST,
            &format!("/foods/{food}/packets"),
            Some(&json!({ "count": s })),
        )
        .await;
        check(
            &system,
            "delivery",
            Method::POST,
            "/agents",
            Some(&json!({ "count": s })),
        )
        .await;
        check(
            &system,
            "delivery",
            Method::POST,
            "/agents",
            Some(&json!({ "names": [s] })),
        )
        .await;
        check(
            &system,
            "delivery",
            Method::POST,
            "/agents",
            Some(&json!({ "count": 1, "names": [s] })),
        )
        .await;
        // The delivery day's fields: baskets, hubs, cancels.
        for body in [
            json!({ "customer_id": "c-1", "hub_id": s, "food_id": food }),
            json!({ "customer_id": "c-1", "lines": s }),
            json!({ "customer_id": "c-1", "lines": [s] }),
            json!({ "customer_id": "c-1", "lines": [{ "food_id": s }] }),
            json!({ "customer_id": "c-1", "lines": [{ "food_id": food, "quantity": s }] }),
        ] {
            check(&system, "order", Method::POST, "/orders", Some(&body)).await;
        }
        check(
            &system,
            "store",
            Method::POST,
            "/hubs",
            Some(&json!({ "name": s })),
        )
        .await;
        check(
            &system,
            "store",
            Method::POST,
            "/foods",
            Some(&json!({ "name": "ok", "packets": 1, "hub_id": s })),
        )
        .await;
        check(
            &system,
            "store",
            Method::POST,
            &format!("/foods/{food}/packets"),
            Some(&json!({ "count": 1, "hub_id": s })),
        )
        .await;
        check(
            &system,
            "delivery",
            Method::POST,
            "/agents",
            Some(&json!({ "count": 1, "hub_id": s })),
        )
        .await;
    }
    let (_, placed) = system.place_order(food).await;
    let order = placed["order_id"].as_str().expect("order id").to_owned();
    for s in &anything {
        check(
            &system,
            "order",
            Method::POST,
            &format!("/orders/{order}/cancel"),
            Some(&json!({ "customer_id": s })),
        )
        .await;
    }
    for id in [
        "0",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "x",
        "%00",
        "1.5",
    ] {
        check(&system, "store", Method::GET, &format!("/foods/{id}"), None).await;
        check(
            &system,
            "store",
            Method::GET,
            &format!("/packets/{id}"),
            None,
        )
        .await;
        check(
            &system,
            "store",
            Method::POST,
            &format!("/foods/{id}/packets"),
            Some(&json!({ "count": 1 })),
        )
        .await;
        check(
            &system,
            "delivery",
            Method::GET,
            &format!("/agents/{id}"),
            None,
        )
        .await;
        check(
            &system,
            "order",
            Method::GET,
            &format!("/orders/{id}"),
            None,
        )
        .await;
        for (service, method, path) in [
            ("order", Method::POST, format!("/orders/{id}/cancel")),
            ("store", Method::GET, format!("/hubs/{id}")),
            ("delivery", Method::POST, format!("/agents/{id}/off-duty")),
            ("delivery", Method::POST, format!("/agents/{id}/on-duty")),
            ("delivery", Method::GET, format!("/deliveries/{id}")),
            (
                "delivery",
                Method::POST,
                format!("/deliveries/{id}/picked-up"),
            ),
            (
                "delivery",
                Method::POST,
                format!("/deliveries/{id}/delivered"),
            ),
            (
                "delivery",
                Method::GET,
                format!("/agents/summary?hub_id={id}"),
            ),
        ] {
            let body = json!({ "customer_id": "c-1" });
            check(&system, service, method, &path, Some(&body)).await;
        }
    }
}
