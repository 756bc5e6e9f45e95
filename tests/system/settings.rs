//! A service refuses settings that cannot work, at start, with a message that names the setting
//! and a non-zero exit; it connects to nothing first.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::helpers::infra::binary;

/// Runs `service` with `env` (and addresses where nothing listens, so that a service that
/// wrongly starts cannot touch anything) and returns its exit code and what it printed.
async fn start_with(service: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(binary(service))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1")
        .env("ORDER_HTTP_ADDR", "127.0.0.1:0")
        .env("STORE_HTTP_ADDR", "127.0.0.1:0")
        .env("DELIVERY_HTTP_ADDR", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .unwrap_or_else(|_| panic!("{service} with {env:?} did not exit"))
        .expect("run the service");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), printed)
}

async fn assert_refused(service: &str, env: &[(&str, &str)], names: &str) {
    let (code, printed) = start_with(service, env).await;
    assert!(
        code.is_some_and(|c| c != 0),
        "{service} with {env:?} exited with {code:?}: {printed}"
    );
    assert!(
        printed.contains(names),
        "{service} with {env:?} did not name {names}: {printed}"
    );
}

#[tokio::test]
async fn the_coordinator_refuses_zero_deadlines_and_a_lease_too_short_to_renew() {
    for (name, value) in [
        ("ORDER_DEADLINE", "0s"),
        ("RESPONSE_BUDGET", "0s"),
        ("LEASE", "5ns"),
        ("AMQP_CONFIRM_TIMEOUT", "0s"),
        ("DATABASE_STATEMENT_TIMEOUT", "0s"),
        ("DATABASE_POOL_SIZE", "0"),
        ("AMQP_PUBLISHER_CHANNELS", "0"),
    ] {
        assert_refused("order-service", &[(name, value)], name).await;
    }
}

#[tokio::test]
async fn participants_refuse_zero_and_barrier_records_that_die_before_their_commands() {
    for service in ["store-service", "delivery-service"] {
        for (name, value) in [
            ("RESERVATION_TTL", "0s"),
            ("BARRIER_RETENTION", "0s"),
            ("COMMAND_PREFETCH", "0"),
        ] {
            assert_refused(service, &[(name, value)], name).await;
        }
        assert_refused(
            service,
            &[("RESERVATION_TTL", "1m"), ("BARRIER_RETENTION", "2m")],
            "BARRIER_RETENTION (2m) must be more than twice RESERVATION_TTL + EXPIRY_GRACE",
        )
        .await;
    }
}
