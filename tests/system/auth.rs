//! Everyone acts only for themselves: every endpoint of the three services against every role
//! (a customer and another, the rider whose agent holds the order and another rider, an
//! operator) and against every bad credential (none, expired, forged, another issuer or
//! audience, `alg: none`, an HMAC made with the public key). The services verify tokens with a
//! key of the test's own, as in production.

use std::collections::BTreeMap;

use identity::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::keys::{ISSUER, TestKeys};
use crate::helpers::service::Service;
use crate::helpers::{Options, TestSystem, eventually};

/// Who calls, in the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum As {
    /// The customer who placed the orders.
    Owner,
    /// Another customer.
    Stranger,
    /// The rider whose agent holds the order.
    Holder,
    /// Another rider.
    OtherRider,
    /// An operator.
    Operator,
}

const EVERYONE: [As; 5] = [
    As::Owner,
    As::Stranger,
    As::Holder,
    As::OtherRider,
    As::Operator,
];

struct World {
    system: TestSystem,
    keys: TestKeys,
    forger: TestKeys,
    tokens: BTreeMap<As, String>,
    food: i64,
    packet: i64,
    holder: i64,
    other_agent: i64,
}

impl World {
    async fn start() -> Self {
        let keys = TestKeys::new("ed25519");
        let forger = TestKeys::new("ed25519");
        let system = TestSystem::start_with(Options::default().identity(&keys)).await;
        let operator = keys.operator();
        let (status, food) = call(
            &system,
            &system.store,
            Method::POST,
            "/foods",
            Some(json!({ "name": "Poha", "packets": 20 })),
            Some(&operator),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{food}");
        let (status, agents) = call(
            &system,
            &system.delivery,
            Method::POST,
            "/agents",
            Some(json!({ "count": 20 })),
            Some(&operator),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{agents}");
        // The other rider's agent is at another hub: no order of the test (all at the default
        // hub) can take it, whichever agent a reserve starts looking from.
        let (status, hub) = call(
            &system,
            &system.store,
            Method::POST,
            "/hubs",
            Some(json!({ "name": "Elsewhere" })),
            Some(&operator),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{hub}");
        let (status, elsewhere) = call(
            &system,
            &system.delivery,
            Method::POST,
            "/agents",
            Some(json!({ "count": 1, "hub_id": hub["id"] })),
            Some(&operator),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{elsewhere}");
        let mut world = Self {
            tokens: BTreeMap::from([
                (As::Owner, keys.customer("c-owner")),
                (As::Stranger, keys.customer("c-stranger")),
                (As::Operator, operator),
            ]),
            system,
            keys,
            forger,
            food: food["id"].as_i64().unwrap(),
            packet: 0,
            holder: 0,
            other_agent: 0,
        };
        world.other_agent = elsewhere["ids"][0].as_i64().unwrap();
        world
    }

    fn token(&self, who: As) -> &str {
        &self.tokens[&who]
    }

    /// An order of the owner's, placed: its id.
    async fn place(&mut self) -> String {
        let (status, placed) = self
            .call_as(
                As::Owner,
                Method::POST,
                "order",
                "/orders",
                Some(json!({ "food_id": self.food })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{placed}");
        let id = placed["order_id"].as_str().unwrap().to_owned();
        let customer: String = sqlx::query_scalar("SELECT customer_id FROM orders WHERE id = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_one(self.system.infra.order_db().await)
            .await
            .unwrap();
        assert_eq!(customer, "c-owner", "the customer is the token's subject");
        id
    }

    fn service(&self, name: &str) -> &Service {
        match name {
            "order" => &self.system.order,
            "store" => &self.system.store,
            _ => &self.system.delivery,
        }
    }

    async fn call_as(
        &self,
        who: As,
        method: Method,
        service: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let token = self.token(who).to_owned();
        call(
            &self.system,
            self.service(service),
            method,
            path,
            body,
            Some(&token),
        )
        .await
    }

    /// Every bad credential on `path`: each a `401` with `WWW-Authenticate: Bearer` and a JSON
    /// error, before anything else is looked at.
    async fn assert_refuses_bad_credentials(
        &self,
        method: &Method,
        service: &str,
        path: &str,
        body: &Option<Value>,
    ) {
        let mut expired = TestKeys::operator_claims();
        expired.exp = expired.iat - 3600;
        expired.iat -= 7200;
        let mut other_issuer = TestKeys::operator_claims();
        other_issuer.iss = "someone-else".to_owned();
        let mut other_audience = TestKeys::operator_claims();
        other_audience.aud = "another-system".to_owned();
        let mut rider_without_agent = TestKeys::operator_claims();
        rider_without_agent.role = Role::Rider;
        let public_pem = std::fs::read(self.keys.public_key_file()).unwrap();
        let bad: Vec<(&str, Option<String>)> = vec![
            ("no token", None),
            ("not a JWT", Some("not-a-token".to_owned())),
            ("expired", Some(self.keys.sign(&expired))),
            ("forged (another key)", Some(self.forger.operator())),
            ("another issuer", Some(self.keys.sign(&other_issuer))),
            ("another audience", Some(self.keys.sign(&other_audience))),
            (
                "a rider without an agent",
                Some(self.keys.sign(&rider_without_agent)),
            ),
            ("alg none", Some(unsigned(&TestKeys::operator_claims()))),
            (
                "HS256 with the public key as secret",
                Some(hmac_with(&public_pem, &TestKeys::operator_claims())),
            ),
        ];
        for (what, token) in bad {
            let mut request = self
                .system
                .http()
                .request(method.clone(), self.service(service).url(path));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("the service answers");
            let status = response.status();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {service}{path} with {what}: {answer}"
            );
            assert_eq!(
                challenge.as_deref(),
                Some("Bearer"),
                "{method} {path} with {what}"
            );
            assert!(
                answer["error"].is_string(),
                "{method} {path} with {what}: {answer}"
            );
        }
    }
}

async fn call(
    system: &TestSystem,
    service: &Service,
    method: Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = system.http().request(method, service.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One row of the matrix: a request, and what each role gets.
struct Row {
    method: Method,
    service: &'static str,
    path: String,
    body: Option<Value>,
    /// The roles let through, and the status every other role gets (`403`, or `404` where
    /// even the thing's existence is not theirs to know).
    allowed: Vec<As>,
    others: StatusCode,
}

fn row(
    method: Method,
    service: &'static str,
    path: String,
    body: Option<Value>,
    allowed: &[As],
    others: StatusCode,
) -> Row {
    Row {
        method,
        service,
        path,
        body,
        allowed: allowed.to_vec(),
        others,
    }
}

/// Every endpoint, every role, every bad credential. Requests that change something are made
/// so that the allowed ones can each succeed (an order of its own for each cancel, an agent that
/// holds nothing for the duty changes); the refused ones must change nothing.
#[tokio::test]
async fn every_endpoint_answers_each_role_as_its_own_and_refuses_bad_credentials() {
    let mut world = World::start().await;
    let order = world.place().await;
    let (_, placed) = world
        .call_as(
            As::Operator,
            Method::GET,
            "order",
            &format!("/orders/{order}"),
            None,
        )
        .await;
    world.holder = placed["agent_id"].as_i64().unwrap();
    world.packet = placed["packet_ids"][0].as_i64().unwrap();
    assert_ne!(
        world.holder, world.other_agent,
        "the other rider holds nothing"
    );
    let (holder, other) = (world.holder, world.other_agent);
    world.tokens.insert(As::Holder, world.keys.rider(holder));
    world.tokens.insert(As::OtherRider, world.keys.rider(other));
    let cancelled_by_owner = world.place().await;
    let cancelled_by_operator = world.place().await;
    let (food, packet) = (world.food, world.packet);
    use As::*;
    let (forbidden, not_found) = (StatusCode::FORBIDDEN, StatusCode::NOT_FOUND);
    let rows = vec![
        // Orders: a customer's own; an operator's any.
        row(
            Method::POST,
            "order",
            "/orders".into(),
            Some(json!({ "food_id": food })),
            &[Owner, Stranger],
            forbidden,
        ),
        row(
            Method::POST,
            "order",
            "/orders".into(),
            Some(json!({ "food_id": food, "customer_id": "c-owner" })),
            &[Owner],
            forbidden,
        ),
        row(
            Method::GET,
            "order",
            format!("/orders/{order}"),
            None,
            &[Owner, Operator],
            not_found,
        ),
        // Allowed in the order given: the first one cancels, the second gets the same answer.
        row(
            Method::POST,
            "order",
            format!("/orders/{cancelled_by_owner}/cancel"),
            Some(json!({})),
            &[Owner, Operator],
            not_found,
        ),
        row(
            Method::POST,
            "order",
            format!("/orders/{cancelled_by_operator}/cancel"),
            Some(json!({})),
            &[Operator, Owner],
            not_found,
        ),
        row(
            Method::GET,
            "order",
            "/admin/orders".into(),
            None,
            &[Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "order",
            format!("/admin/orders/{order}/retry"),
            None,
            &[Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "order",
            format!("/admin/orders/{order}/abort"),
            None,
            &[Operator],
            forbidden,
        ),
        // The store: its catalogue for anyone; the rest for operators.
        row(
            Method::GET,
            "store",
            "/hubs".into(),
            None,
            &EVERYONE,
            forbidden,
        ),
        row(
            Method::GET,
            "store",
            "/hubs/1".into(),
            None,
            &EVERYONE,
            forbidden,
        ),
        row(
            Method::GET,
            "store",
            "/foods".into(),
            None,
            &EVERYONE,
            forbidden,
        ),
        row(
            Method::GET,
            "store",
            format!("/foods/{food}"),
            None,
            &EVERYONE,
            forbidden,
        ),
        row(
            Method::POST,
            "store",
            "/hubs".into(),
            Some(json!({ "name": "Koramangala" })),
            &[Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "store",
            "/foods".into(),
            Some(json!({ "name": "Upma", "packets": 1 })),
            &[Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "store",
            format!("/foods/{food}/packets"),
            Some(json!({ "count": 1 })),
            &[Operator],
            forbidden,
        ),
        row(
            Method::GET,
            "store",
            format!("/packets/{packet}"),
            None,
            &[Operator],
            forbidden,
        ),
        // Delivery: a rider for their own agent and the orders it holds.
        row(
            Method::POST,
            "delivery",
            "/agents".into(),
            Some(json!({ "count": 1 })),
            &[Operator],
            forbidden,
        ),
        row(
            Method::GET,
            "delivery",
            "/agents/summary".into(),
            None,
            &[Operator],
            forbidden,
        ),
        row(
            Method::GET,
            "delivery",
            format!("/agents/{holder}"),
            None,
            &[Holder, Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "delivery",
            format!("/agents/{other}/off-duty"),
            None,
            &[OtherRider, Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "delivery",
            format!("/agents/{other}/on-duty"),
            None,
            &[OtherRider, Operator],
            forbidden,
        ),
        row(
            Method::POST,
            "delivery",
            format!("/deliveries/{order}/picked-up"),
            None,
            &[Holder],
            forbidden,
        ),
        row(
            Method::GET,
            "delivery",
            format!("/deliveries/{order}"),
            None,
            &[Holder, Operator],
            not_found,
        ),
        row(
            Method::POST,
            "delivery",
            format!("/deliveries/{order}/delivered"),
            None,
            &[Holder],
            forbidden,
        ),
    ];
    for row in &rows {
        world
            .assert_refuses_bad_credentials(&row.method, row.service, &row.path, &row.body)
            .await;
        // The refused roles first: they must change nothing the allowed ones then do.
        let refused = EVERYONE
            .into_iter()
            .filter(|who| !row.allowed.contains(who));
        for who in refused.chain(row.allowed.iter().copied()) {
            let mut tries = 0;
            let (status, body) = loop {
                let (status, body) = world
                    .call_as(
                        who,
                        row.method.clone(),
                        row.service,
                        &row.path,
                        row.body.clone(),
                    )
                    .await;
                // Delivery takes a pick-up once it has seen the order placed: `409` until then.
                tries += 1;
                if status == StatusCode::CONFLICT && row.path.ends_with("picked-up") && tries < 100
                {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
                break (status, body);
            };
            let path = &row.path;
            if row.allowed.contains(&who) {
                assert!(
                    !matches!(status.as_u16(), 401 | 403 | 404),
                    "{} {}{path} as {who:?} is allowed: {status} {body}",
                    row.method,
                    row.service
                );
                // A read or a report of the holder's shows the order; a refusal shows nothing.
            } else {
                assert_eq!(
                    status, row.others,
                    "{} {}{path} as {who:?}: {body}",
                    row.method, row.service
                );
                assert!(
                    body["error"].is_string() && body.as_object().map(|o| o.len()) == Some(1),
                    "a refusal shows nothing but its reason: {body}"
                );
            }
        }
    }

    // An order no agent holds any more (cancelled) is answered as no order to any rider (`404`,
    // as before identity): the statements would take a report only from its agent.
    for who in [As::Holder, As::OtherRider] {
        let (status, body) = world
            .call_as(
                who,
                Method::POST,
                "delivery",
                &format!("/deliveries/{cancelled_by_owner}/picked-up"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{who:?}: {body}");
    }

    // What the refused requests did not change: the order of the owner's is delivered by its
    // rider (the only one who reported), the other orders were cancelled by who was allowed.
    for (id, end) in [
        (&order, "delivered"),
        (&cancelled_by_owner, "cancelled"),
        (&cancelled_by_operator, "cancelled"),
    ] {
        eventually(
            "the order's end is recorded",
            std::time::Duration::from_secs(30),
            || async {
                let (status, body) = world
                    .call_as(
                        As::Owner,
                        Method::GET,
                        "order",
                        &format!("/orders/{id}"),
                        None,
                    )
                    .await;
                status == StatusCode::OK && body["status"] == end
            },
        )
        .await;
    }
}

/// A customer learns nothing of another's orders: an order id of someone else's answers exactly
/// as an id that was never used, to a read and to a cancel.
#[tokio::test]
async fn another_customers_order_answers_exactly_as_no_order() {
    let mut world = World::start().await;
    let order = world.place().await;
    let never = uuid::Uuid::now_v7().to_string();
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::POST, "/cancel", Some(json!({}))),
        (
            Method::POST,
            "/cancel",
            Some(json!({ "customer_id": "c-owner" })),
        ),
    ] {
        let (theirs_status, theirs) = world
            .call_as(
                As::Stranger,
                method.clone(),
                "order",
                &format!("/orders/{order}{suffix}"),
                body.clone(),
            )
            .await;
        let (none_status, none) = world
            .call_as(
                As::Stranger,
                method.clone(),
                "order",
                &format!("/orders/{never}{suffix}"),
                body.clone(),
            )
            .await;
        assert_eq!(theirs_status, StatusCode::NOT_FOUND, "{theirs}");
        assert_eq!(none_status, StatusCode::NOT_FOUND, "{none}");
        assert_eq!(
            theirs["error"].as_str().map(|e| e.replace(&order, "ID")),
            none["error"].as_str().map(|e| e.replace(&never, "ID")),
            "the same words"
        );
    }
    let (_, mine) = world
        .call_as(
            As::Owner,
            Method::GET,
            "order",
            &format!("/orders/{order}"),
            None,
        )
        .await;
    assert_eq!(
        mine["status"], "placed",
        "the stranger's cancel changed nothing: {mine}"
    );
}

/// The services take tokens signed by an identity provider's keys from its JWKS, and follow a
/// key rotation: a token signed with a new key (a new `kid`) is taken once the JWKS lists it.
#[tokio::test]
async fn tokens_are_verified_against_the_identity_providers_jwks_and_its_rotation() {
    let first = TestKeys::new("ec");
    let second = TestKeys::new("ed25519");
    let jwks = crate::helpers::keys::JwksServer::start(vec![first.jwk("k1")]).await;
    let options = Options::default()
        .all("AUTH_DISABLED", "false")
        .all("AUTH_JWKS_URL", &jwks.url())
        .all("AUTH_ISSUER", ISSUER);
    let system = TestSystem::start_with(options).await;
    let old = first.issuer.clone().with_key_id("k1");
    let new = second.issuer.clone().with_key_id("k2");
    let ttl = std::time::Duration::from_secs(600);
    let read = |token: String| {
        let system = &system;
        async move {
            call(
                system,
                &system.store,
                Method::GET,
                "/foods",
                None,
                Some(&token),
            )
            .await
            .0
        }
    };
    assert_eq!(
        read(old.operator("ops", ttl).unwrap()).await,
        StatusCode::OK
    );
    assert_eq!(
        read(new.operator("ops", ttl).unwrap()).await,
        StatusCode::UNAUTHORIZED,
        "a key the provider does not list"
    );
    // The provider rotates: it lists the new key beside the old one.
    jwks.set(vec![first.jwk("k1"), second.jwk("k2")]);
    eventually(
        "the new key is taken",
        std::time::Duration::from_secs(60),
        || async { read(new.operator("ops", ttl).unwrap()).await == StatusCode::OK },
    )
    .await;
    // A token naming a listed key but signed with another is forged.
    let forged = second.issuer.clone().with_key_id("k1");
    assert_eq!(
        read(forged.operator("ops", ttl).unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A service with no keys and identity not explicitly turned off refuses to start, saying how
/// to configure it; turned off, it says so loudly.
#[tokio::test]
async fn a_service_without_keys_does_not_start_open_and_identity_off_is_logged_loudly() {
    let system = TestSystem::start().await;
    let mut store = system.store.sibling();
    store.remove_env("AUTH_DISABLED");
    assert!(!store.try_spawn().await, "it must not start open");
    eventually(
        "it says how to configure identity",
        std::time::Duration::from_secs(10),
        || async { store.logged("AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_URL") },
    )
    .await;
    assert!(
        system.store.logged("IDENTITY IS TURNED OFF"),
        "{}",
        system.store.tail(20)
    );
}

/// `alg: none`: a token with no signature.
fn unsigned(claims: &identity::Claims) -> String {
    let header = crate::helpers::keys::base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = crate::helpers::keys::base64url(&serde_json::to_vec(claims).unwrap());
    format!("{header}.{claims}.")
}

/// HS256 with `secret` (the algorithm-confusion attack: the public key used as an HMAC secret).
fn hmac_with(secret: &[u8], claims: &identity::Claims) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .unwrap()
}
