//! The soak: a whole delivery day (`bench run --scenario soak`: baskets at three hubs with
//! scarce packets and few riders, riders who pick up and deliver, duplicate and out-of-order
//! reports, cancels racing pick-ups, keyed client retries, an operator aborting and retrying
//! stuck orders) against two copies of every service, while a nemesis injects a fault every few
//! seconds, drawn at random from:
//! - `kill -9` of any service copy, started again after a moment;
//! - `SIGTERM` of any service copy, which must drain and exit 0, started again;
//! - a store or delivery copy paused (`SIGSTOP`) past the reservation TTL;
//! - the vhost's broker connections closed; the broker node restarted;
//! - the test's PostgreSQL backends terminated; the PostgreSQL server restarted;
//! - the TCP path between one copy and the broker or its database blackholed for a while;
//! - a coordinator's wall clock stepped while it runs: 20 s further ahead, or back to the real
//!   time (`clock.step`, `SIGUSR1` and `SIGUSR2`).
//!
//! The nemesis writes each fault to a fault log, and the bench's checker ends the day: every
//! answer against the order's record, every order ended, lost 0, duplicated 0, false placed 0,
//! the day's own checks (no packet or agent given twice, every agent free again, nothing held),
//! the audit of the three databases, and `timeout` refusals only inside a fault's window.
//!
//! `SOAK_DURATION` (default 60s) sets how long the nemesis runs, `SOAK_SEED` its random choices,
//! and `SOAK_FAULTS` (a comma-separated list of `kill`, `term`, `stop`, `close`, `broker`,
//! `backends`, `postgres`, `cut`, `clock`) limits it to some faults.
//! The 30-minute run is documented in `docs/failure-handling.md` and its figures in
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::helpers::infra::{StoppedBroker, binary};
use crate::helpers::proxy::{self, Proxy};
use crate::helpers::service::Service;
use crate::helpers::{Options, TestSystem, eventually, eventually_explained};

/// How long the services may take to come back, and the bench to settle and check after the
/// nemesis stops.
const FINISH: Duration = Duration::from_secs(300);
/// The reservation TTL of the soak: a paused participant is paused past it.
const TTL: Duration = Duration::from_secs(6);
/// The nemesis's faults, drawn with these weights (a cut twice as often as the others).
const FAULTS: [&str; 10] = [
    "kill", "term", "stop", "close", "broker", "backends", "postgres", "cut", "cut", "clock",
];
/// How far one step puts a coordinator's clock ahead, seconds.
const CLOCK_STEP: u32 = 20;

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One copy of a service, reaching the broker and its database through proxies the nemesis can
/// blackhole, on a fixed port (a restarted copy listens where it did).
struct Copy {
    service: Service,
    to_broker: Proxy,
    to_database: Proxy,
}

impl Copy {
    async fn start(mut service: Service, system: &TestSystem, short: &str) -> Self {
        let upper = short.to_uppercase();
        let (to_broker, amqp) =
            proxy::for_url(&format!("{}?heartbeat=5", system.infra.amqp_url)).await;
        let (to_database, database) = proxy::for_url(&system.infra.database_url(short)).await;
        if short == "order" {
            // The nemesis steps the coordinators' clocks while they run.
            service.set_env("FAULT_POINTS", &format!("clock.step={CLOCK_STEP}s"));
        }
        service.set_env("AMQP_URL", &amqp);
        service.set_env(&format!("{upper}_DATABASE_URL"), &database);
        service.start().await;
        let addr = service.url("").trim_start_matches("http://").to_owned();
        service.set_env(&format!("{upper}_HTTP_ADDR"), addr.trim_end_matches('/'));
        Self {
            service,
            to_broker,
            to_database,
        }
    }
}

/// The nemesis's log: a line `<start> <end> <fault>` per fault, Unix milliseconds.
struct FaultLog {
    path: std::path::PathBuf,
    text: String,
}

impl FaultLog {
    fn record(&mut self, started: SystemTime, fault: &str) {
        let ms = |at: SystemTime| at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let _ = writeln!(
            self.text,
            "{} {} {fault}",
            ms(started),
            ms(SystemTime::now())
        );
        std::fs::write(&self.path, &self.text).expect("the fault log is written");
    }
}

async fn restart_postgresql() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL version");
    let status = tokio::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .status()
        .await
        .expect("pg_ctlcluster runs");
    assert!(status.success(), "PostgreSQL restarted");
}

#[tokio::test]
async fn a_delivery_day_under_a_nemesis_keeps_every_promise() {
    let duration = setting("SOAK_DURATION")
        .map(|d| humantime::parse_duration(&d).expect("SOAK_DURATION is a duration"))
        .unwrap_or(Duration::from_secs(60));
    let seed = setting("SOAK_SEED")
        .map(|s| s.parse().expect("SOAK_SEED is a number"))
        .unwrap_or(0x50a4);
    let kinds: Vec<&str> = match setting("SOAK_FAULTS") {
        None => FAULTS.to_vec(),
        Some(only) => only
            .split(',')
            .map(|kind| {
                let known = FAULTS.iter().find(|k| **k == kind.trim());
                *known.unwrap_or_else(|| panic!("SOAK_FAULTS: {kind:?} is none of {FAULTS:?}"))
            })
            .collect(),
    };
    // The broker and PostgreSQL are restarted: no other test may run meanwhile.
    let options = Options::fast()
        .order("ORDER_DEADLINE", "3s")
        .order("RESPONSE_BUDGET", "4s")
        .all("RESERVATION_TTL", &format!("{}s", TTL.as_secs()))
        .exclusive_broker();
    let mut system = TestSystem::start_with(options).await;
    system.order.kill().await;
    system.store.kill().await;
    system.delivery.kill().await;
    let mut copies = Vec::new();
    for (service, short) in [
        (system.store.sibling(), "store"),
        (system.store.sibling(), "store"),
        (system.delivery.sibling(), "delivery"),
        (system.delivery.sibling(), "delivery"),
        (system.order.sibling(), "order"),
        (system.order.sibling(), "order"),
    ] {
        copies.push(Copy::start(service, &system, short).await);
    }
    let urls = |name: &str| {
        copies
            .iter()
            .filter(|copy| copy.service.name == name)
            .map(|copy| copy.service.url(""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let dir = std::env::temp_dir().join(format!("soak-{}", system.infra.id));
    std::fs::create_dir_all(&dir).expect("a folder for the fault log");
    let mut log = FaultLog {
        path: dir.join("faults.txt"),
        text: String::new(),
    };
    std::fs::write(&log.path, "").expect("the fault log is created");

    let mut bench = tokio::process::Command::new(binary("bench"));
    bench
        .args(["run", "--scenario", "soak", "--duration"])
        .arg(format!("{}s", duration.as_secs()))
        .args(["--clients", "8", "--hubs", "3", "--agents-per-hub", "3"])
        .args(["--stock", "480", "--pickup-delay", "300ms"])
        .args(["--deliver-delay", "300ms", "--no-vacuum", "--fault-log"])
        .arg(&log.path)
        .env("ORDER_URL", urls("order-service"))
        .env("STORE_URL", urls("store-service"))
        .env("DELIVERY_URL", urls("delivery-service"))
        .env("ORDER_DATABASE_URL", system.infra.database_url("order"))
        .env("STORE_DATABASE_URL", system.infra.database_url("store"))
        .env(
            "DELIVERY_DATABASE_URL",
            system.infra.database_url("delivery"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let bench = bench.spawn().expect("bench starts");

    // The nemesis stops before the orders do, so that its log is whole when the bench reads it.
    let mut rng = StdRng::seed_from_u64(seed);
    // How far each copy's clock is stepped ahead, seconds (coordinators only).
    let mut stepped = vec![0; copies.len()];
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let end = Instant::now() + duration.saturating_sub(TTL + Duration::from_secs(8));
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..5_000))).await;
        let started = SystemTime::now();
        let victim = rng.random_range(0..copies.len());
        let down = Duration::from_millis(rng.random_range(0..1_500));
        let copy = &mut copies[victim];
        let name = copy.service.name;
        let fault = match kinds[rng.random_range(0..kinds.len())] {
            "kill" => {
                copy.service.kill().await;
                tokio::time::sleep(down).await;
                copy.service.start().await;
                format!("kill -9 {name}")
            }
            "term" => {
                let status = copy.service.terminate().await;
                assert!(status.success(), "{name} drains and exits 0 on SIGTERM");
                copy.service.start().await;
                format!("SIGTERM {name}")
            }
            "stop" => {
                // A participant: paused past the reservation TTL.
                let copy = &copies[rng.random_range(0..4)];
                copy.service.signal("STOP").await;
                tokio::time::sleep(TTL + Duration::from_secs(1)).await;
                copy.service.signal("CONT").await;
                format!("SIGSTOP {} past the TTL", copy.service.name)
            }
            "close" => {
                system.infra.close_broker_connections().await;
                "broker connections closed".to_owned()
            }
            "broker" => {
                let stopped = StoppedBroker::stop().await;
                tokio::time::sleep(down).await;
                stopped.start().await;
                "broker restarted".to_owned()
            }
            "backends" => {
                system.infra.terminate_backends().await;
                "database backends terminated".to_owned()
            }
            "postgres" => {
                restart_postgresql().await;
                "PostgreSQL restarted".to_owned()
            }
            "cut" => {
                let to_broker = rng.random_bool(0.5);
                let link = if to_broker {
                    &copy.to_broker
                } else {
                    &copy.to_database
                };
                link.freeze();
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..4_000))).await;
                link.thaw();
                let what = if to_broker { "broker" } else { "database" };
                format!("{name} cut off from its {what}")
            }
            _ => {
                // "clock": a coordinator's clock stepped while it runs (`clock.step`): ahead by another
                // CLOCK_STEP, or back to the real time.
                let which = 4 + rng.random_range(0..2);
                let coordinator = &copies[which].service;
                let last_step = || coordinator.lines_with("the clock was stepped").pop();
                let before = last_step();
                let fault = if stepped[which] >= 2 * CLOCK_STEP || rng.random_bool(0.3) {
                    coordinator.signal("USR2").await;
                    stepped[which] = 0;
                    "order-service clock stepped back to the real time".to_owned()
                } else {
                    coordinator.signal("USR1").await;
                    stepped[which] += CLOCK_STEP;
                    format!(
                        "order-service clock stepped {CLOCK_STEP}s ahead (now {}s)",
                        stepped[which]
                    )
                };
                eventually(
                    "the coordinator says its clock was stepped",
                    FINISH,
                    || async { last_step() != before },
                )
                .await;
                fault
            }
        };
        if fault.starts_with("kill -9") || fault.starts_with("SIGTERM") {
            // A restarted process reads the real time.
            stepped[victim] = 0;
        }
        log.record(started, &fault);
        // Counted by kind and victim, whatever the clock reads.
        let kind = fault.split(" (now").next().unwrap_or(&fault);
        *counts.entry(kind.to_owned()).or_default() += 1;
    }

    for copy in &copies {
        eventually_explained("every service copy ready", FINISH, || {
            copy.service.readiness()
        })
        .await;
    }
    let output = tokio::time::timeout(duration + FINISH, bench.wait_with_output())
        .await
        .expect("the soak ends")
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("soak: {duration:?}, seed {seed}, faults {counts:?}\n{stdout}");
    assert!(
        output.status.success(),
        "the soak found a violation (seed {seed}):\n{stdout}\n{stderr}\nfault log:\n{}",
        log.text
    );
    assert!(
        stdout.contains("false placed 0"),
        "the checker ran:\n{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
