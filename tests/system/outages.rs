//! The broker and the database going away under load: services reconnect, keep serving, and
//! lose nothing.

use std::time::Duration;

use messaging::{Broker, BrokerConfig, BrokerError, Health, Outgoing, Publisher};
use reqwest::StatusCode;

use crate::helpers::infra::{Infra, MemoryAlarm, StoppedBroker};
use crate::helpers::load::Load;
use crate::helpers::proxy;
use crate::helpers::{Options, TestSystem, eventually, eventually_explained};

const FINISH: Duration = Duration::from_secs(60);

async fn finish_and_audit(system: &TestSystem, load: Load) {
    system.finish_and_check(load, FINISH).await;
}

#[tokio::test]
async fn broker_connections_closed_mid_load_are_reopened() {
    let system = TestSystem::start_with(Options::fast()).await;
    let food = system.create_food("Poha", 5_000).await;
    system.create_agents(5_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(30, FINISH).await;

    system.infra.close_broker_connections().await;

    // Everyone reconnects and keeps serving.
    load.wait_placed(30, FINISH).await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    finish_and_audit(&system, load).await;
}

#[tokio::test]
async fn database_connections_terminated_mid_load_are_reopened() {
    let system = TestSystem::start_with(Options::fast()).await;
    let food = system.create_food("Upma", 5_000).await;
    system.create_agents(5_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    for _ in 0..3 {
        load.wait_placed(20, FINISH).await;
        let terminated = system.infra.terminate_backends().await;
        assert!(terminated > 0);
    }
    load.wait_placed(20, FINISH).await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    finish_and_audit(&system, load).await;
}

#[tokio::test]
async fn a_broker_restart_mid_load_loses_no_confirmed_message() {
    let system = TestSystem::start_with(Options::fast().exclusive_broker()).await;
    let food = system.create_food("Lassi", 5_000).await;
    system.create_agents(5_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(30, FINISH).await;

    let stopped = StoppedBroker::stop().await;
    eventually("the order service reports not ready", FINISH, || async {
        !system.order.is_ready().await
    })
    .await;
    stopped.start().await;

    // Every consumer is back and orders are placed again.
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    load.wait_placed(30, FINISH).await;
    finish_and_audit(&system, load).await;
}

/// A publisher on the test's vhost with a health table of its own, like a service's, and a
/// message for it routed nowhere (to the default exchange): only the broker's confirm matters.
struct ProbePublisher {
    publisher: Publisher,
    health: Health,
    message: Outgoing,
}

/// A broker handle on the test's vhost that reports to `health`.
fn test_broker(infra: &Infra, health: &Health) -> Broker {
    Broker::new(
        BrokerConfig {
            url: infra.amqp_url.clone(),
            addresses: infra.amqp_addresses.clone(),
            connection_name: "system test publisher".into(),
            publisher_channels: 2,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            tls_ca_file: None,
        },
        health.clone(),
    )
    .expect("broker config")
}

impl ProbePublisher {
    fn new(system: &TestSystem) -> Self {
        let health = Health::default();
        let broker = test_broker(&system.infra, &health);
        Self {
            publisher: Publisher::new(broker),
            health,
            message: Outgoing::raw(b"{}".to_vec(), "", "system-test.nowhere").mandatory(false),
        }
    }

    /// Publishes the message; fails the test if that takes longer than `FINISH`.
    async fn publish(&self) -> Result<(), BrokerError> {
        tokio::time::timeout(FINISH, self.publisher.publish(&self.message))
            .await
            .expect("a publish that ends, with or without an error")
    }

    /// What its `amqp publisher` readiness check says.
    fn is_up(&self) -> bool {
        assert_eq!(self.health.snapshot().len(), 1, "one component");
        self.health.all_up()
    }

    /// Waits, publishing nothing, until it reports up.
    async fn wait_up(&self) {
        eventually("the idle publisher reports up", FINISH, || {
            let up = self.is_up();
            async move { up }
        })
        .await;
    }
}

/// Replies are published without confirms: a publish returns once the message is handed to the
/// connection, and a message that no queue takes (its coordinator is gone) is dropped instead of
/// failing the publish, where a confirming publisher reports it unroutable.
#[tokio::test]
async fn a_publisher_without_confirms_drops_what_no_queue_takes_and_reports_under_its_own_name() {
    let _servers = TestSystem::share_servers().await;
    let infra = Infra::create().await;
    let health = Health::default();
    let broker = test_broker(&infra, &health);
    let nowhere = Outgoing::raw(b"{}".to_vec(), "", "system-test.nowhere").transient();

    let confirming = Publisher::new(broker.clone());
    assert!(matches!(
        confirming.publish(&nowhere).await,
        Err(BrokerError::Unroutable { .. })
    ));
    let replies = Publisher::without_confirms(broker);
    replies
        .publish(&nowhere)
        .await
        .expect("dropped, not an error");
    let components: Vec<String> = health
        .snapshot()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(
        components.contains(&"amqp reply publisher".to_owned()),
        "{components:?}"
    );
    assert!(health.all_up(), "{:?}", health.snapshot());
}

#[tokio::test]
async fn after_a_broker_restart_idle_services_and_publishers_are_ready_again() {
    let system = TestSystem::start_with(Options::fast().exclusive_broker()).await;
    let food = system.create_food("Chaas", 10).await;
    system.create_agents(10).await;

    // A publisher that publishes once during the outage and never again afterwards, like a
    // service that nothing asks to publish once the broker is back.
    let probe = ProbePublisher::new(&system);
    probe.publish().await.expect("publish before the outage");
    assert!(probe.is_up());

    let stopped = StoppedBroker::stop().await;
    eventually("the order service reports not ready", FINISH, || async {
        !system.order.is_ready().await
    })
    .await;
    assert!(probe.publish().await.is_err());
    assert!(!probe.is_up());
    stopped.start().await;

    // No traffic at all until everything says it is ready.
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    probe.wait_up().await;

    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    system.assert_audit_clean(FINISH).await;
}

#[tokio::test]
async fn a_blocked_broker_fails_publishes_in_bounded_time_and_they_resume_when_unblocked() {
    let system = TestSystem::start_with(Options::fast().exclusive_broker()).await;
    let food = system.create_food("Jaljeera", 10).await;
    system.create_agents(10).await;
    let probe = ProbePublisher::new(&system);
    probe.publish().await.expect("publish before the alarm");

    // A memory alarm: the broker stops reading from publishing connections.
    let alarm = MemoryAlarm::raise().await;
    // Every publish ends with an error instead of waiting for the alarm to clear: the first at
    // its confirm timeout, the next ones as soon as they need a channel on the blocked
    // connection.
    for attempt in 0..3 {
        let publish = probe.publish().await;
        assert!(publish.is_err(), "publish {attempt} during the alarm");
    }
    assert!(!probe.is_up());
    // An order meanwhile is not placed, or still pending; it is never placed without both sides.
    let (status, body) = system.place_order(food).await;
    assert!(
        [StatusCode::CONFLICT, StatusCode::ACCEPTED].contains(&status),
        "{status}: {body}"
    );
    alarm.clear().await;

    probe.wait_up().await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    system.assert_all_orders_final(FINISH).await;
    system.assert_nothing_reserved(FINISH).await;
    system.assert_audit_clean(FINISH).await;
}

#[tokio::test]
async fn a_pool_of_one_connection_per_service_still_finishes_every_order() {
    // Every database call of a service waits for the one connection: group-commit writers, the
    // relays, the sweeps and the HTTP handlers take turns.
    let system = TestSystem::start_with(Options::fast().all("DATABASE_POOL_SIZE", "1")).await;
    let food = system.create_food("Dal", 5_000).await;
    system.create_agents(5_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(50, FINISH).await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    finish_and_audit(&system, load).await;
}

#[tokio::test]
async fn the_network_to_a_database_cut_under_load_makes_its_service_not_ready_until_it_heals() {
    let mut system = TestSystem::start_with(Options::fast()).await;
    let food = system.create_food("Rava", 5_000).await;
    system.create_agents(5_000).await;
    // The store reaches its database through a path the test can cut.
    let (link, through_proxy) = proxy::for_url(&system.infra.database_url("store")).await;
    system.store.kill().await;
    system.store.set_env("STORE_DATABASE_URL", &through_proxy);
    system.store.start().await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(20, FINISH).await;

    link.freeze();
    eventually("the store reports not ready", FINISH, || async {
        !system.store.is_ready().await
    })
    .await;
    // The coordinator goes on answering within its response budget (not placed, or pending).
    load.wait_answered(16, FINISH).await;

    link.thaw();
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    load.wait_placed(20, FINISH).await;
    finish_and_audit(&system, load).await;
}

#[tokio::test]
async fn unroutable_publishes_lose_nothing_a_command_is_unanswered_and_a_report_waits() {
    let mut system = TestSystem::start_with(Options::fast()).await;
    let food = system.create_food("Kheer", 5).await;
    system.create_agents(5).await;
    let (management, vhost) = (&system.infra.management, system.infra.vhost.clone());
    let topology = protocol::topology::Topology::new("");

    // No queue takes the store's reserves (and no store declares it again): the coordinator's
    // mandatory publish comes back unroutable, which it treats as no answer.
    system.store.kill().await;
    let reserves = topology.command_queue(
        protocol::topology::Participant::Store,
        protocol::command::Operation::Reserve,
    );
    management.delete_queue(&vhost, &reserves).await;
    let (status, body) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "timeout", "{body}");
    system.assert_nothing_reserved(FINISH).await;
    system.store.start().await;
    let (status, placed) = system.place_order(food).await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = placed["order_id"].as_str().expect("order id").to_owned();

    // No queue takes delivery's reports (and no coordinator declares it again): the report
    // stays in delivery's outbox until the coordinator is back. (The coordinator is stopped once
    // delivery has its `order.placed` event, without which no pick-up is taken.)
    eventually("delivery has seen the order placed", FINISH, || {
        system.infra.placement_seen(&id)
    })
    .await;
    system.order.kill().await;
    management
        .delete_queue(&vhost, &topology.progress_queue())
        .await;
    let (status, _) = system.rider(&id, "picked-up").await;
    assert_eq!(status, StatusCode::OK);
    eventually("the report is unroutable and kept", FINISH, || async {
        system.delivery.logged("some outbox messages not published")
    })
    .await;
    system.order.start().await;
    system.order_reaches(&id, "picked_up", FINISH).await;
    system.assert_audit_clean(FINISH).await;
}

/// A participant killed, the broker's connections closed, then the broker node restarted, all
/// under load, with reservations that last ten minutes. Nothing but a release frees a
/// reservation within the test, so a release or a reply lost on the way would leave an item
/// reserved or an order unfinished long after the load stops (with the usual short TTL, the
/// expiry would hide both). Every order finishes, nothing stays reserved, and the checker and the
/// audit find nothing wrong.
#[tokio::test]
async fn with_reservations_of_ten_minutes_a_participant_kill_and_a_broker_restart_lose_no_release_or_reply()
 {
    let options = Options::fast()
        .all("RESERVATION_TTL", "600s")
        .exclusive_broker();
    let mut system = TestSystem::start_with(options).await;
    let food = system.create_food("Misal", 20_000).await;
    system.create_agents(20_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(20, FINISH).await;

    system.delivery.kill().await;
    load.wait_answered(5, FINISH).await;
    system.delivery.start().await;
    load.wait_placed(20, FINISH).await;

    system.infra.close_broker_connections().await;
    load.wait_placed(20, FINISH).await;

    let stopped = StoppedBroker::stop().await;
    load.wait_answered(5, FINISH).await;
    stopped.start().await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    load.wait_placed(20, FINISH).await;
    // Nothing reserved within a minute of the load's end: ten times less than the TTL.
    finish_and_audit(&system, load).await;
}

/// The broker blocks every publisher (a memory alarm) under load: clients are told `409`,
/// `202` or `503` in bounded time, never a false `201`; once the alarm clears, orders are placed
/// again, and the checker and the audit find nothing lost or falsely placed.
#[tokio::test]
async fn a_broker_blocking_publishers_under_load_places_nothing_falsely_and_resumes() {
    let system = TestSystem::start_with(Options::fast().exclusive_broker()).await;
    let food = system.create_food("Sabudana", 20_000).await;
    system.create_agents(20_000).await;
    let load = Load::start(vec![system.order.url("")], food, 8);
    load.wait_placed(20, FINISH).await;

    let alarm = MemoryAlarm::raise().await;
    // The clients go on being answered while publishing is blocked.
    load.wait_answered(16, FINISH).await;
    alarm.clear().await;
    eventually_explained("all services ready", FINISH, || system.all_ready()).await;
    load.wait_placed(20, FINISH).await;
    finish_and_audit(&system, load).await;
}
