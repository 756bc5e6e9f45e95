//! `scripts/run`, the README's way to run the whole system: it starts the three services and
//! the console, and `kill -TERM` of it (as Ctrl-C) stops everything it started.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::helpers::deploy::root;
use crate::helpers::infra::{Infra, binary};
use crate::helpers::{TestSystem, eventually};

/// A base port with its eleven neighbours free (order, store, delivery, console).
fn free_base() -> u16 {
    loop {
        let base = 20_000 + (rand::random::<u16>() % 4_000) * 10;
        let free = [0, 1, 2, 10]
            .iter()
            .all(|offset| std::net::TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if free {
            return base;
        }
    }
}

async fn answers(http: &reqwest::Client, port: u16, path: &str) -> bool {
    http.get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test]
async fn scripts_run_starts_the_system_and_sigterm_stops_everything_it_started() {
    let _servers = TestSystem::share_servers().await;
    let infra = Infra::create().await;
    // The binaries the script runs, as the other tests build them.
    let bin = binary("console");
    let profile = bin
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|d| d.to_str())
        .expect("the binaries' profile")
        .to_owned();
    let base = free_base();
    let mut env = infra.service_env("order");
    env.retain(|(k, _)| k == "AMQP_URL" || k == "LOG_FORMAT" || k == "DATABASE_POOL_SIZE");
    for service in ["order", "store", "delivery"] {
        env.push((
            format!("{}_DATABASE_URL", service.to_uppercase()),
            infra.database_url(service),
        ));
    }
    env.extend(
        [
            ("AUTH_DISABLED", "true"),
            ("NO_BUILD", "1"),
            ("PROFILE", profile.as_str()),
            ("PORT_BASE", &base.to_string()),
            (
                "CARGO_TARGET_DIR",
                &bin.parent()
                    .and_then(|d| d.parent())
                    .expect("target")
                    .display()
                    .to_string(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut script = Command::new("bash")
        .arg(root().join("scripts/run"))
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("scripts/run starts");
    let group = script.id().expect("its pid");
    let http = reqwest::Client::new();
    let ports = [base, base + 1, base + 2, base + 10];
    let deadline = Instant::now() + Duration::from_secs(120);
    for port in ports {
        while !answers(&http, port, "/readyz").await {
            assert!(Instant::now() < deadline, "nothing ready on {port}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        answers(&http, base + 10, "/shop").await,
        "the customer page"
    );

    // TERM to the script alone (as a supervisor or `kill` sends it): it stops what it started.
    let status = Command::new("kill")
        .args(["-TERM", &group.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    let exited = tokio::time::timeout(Duration::from_secs(60), script.wait())
        .await
        .expect("the script exits after TERM")
        .expect("its status");
    assert!(!exited.success(), "stopped by a signal: {exited}");
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port}"
        );
    }
    // Nothing of its process group runs any more (the services; their log filters end with
    // them, and may stay a moment as zombies until they are reaped).
    eventually(
        "every process of scripts/run gone",
        Duration::from_secs(10),
        || async { running_in_group(group).is_empty() },
    )
    .await;
}

/// The processes of process group `group` that are not zombies: `(pid, name)`.
fn running_in_group(group: u32) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (name) state ppid pgrp …`; the name may hold spaces and parentheses.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let (state, pgrp) = (*fields.first()?, fields.get(2)?.parse::<u32>().ok()?);
            (pgrp == group && state != "Z").then_some((pid, name))
        })
        .collect()
}
