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

#[tokio::test]
async fn a_database_host_that_is_not_a_name_and_a_port_is_refused() {
    for service in ["order-service", "store-service", "delivery-service"] {
        assert_refused(
            service,
            &[("DATABASE_HOSTS", "db-1:5432,db-2:port")],
            r#"database host "db-2:port" is not name[:port]"#,
        )
        .await;
    }
}

#[tokio::test]
async fn a_secret_given_both_in_the_environment_and_as_a_file_is_refused_and_a_missing_file_named()
{
    for service in ["order-service", "store-service", "delivery-service"] {
        assert_refused(
            service,
            &[("AMQP_URL_FILE", "/nonexistent"), ("AUTH_DISABLED", "true")],
            "set AMQP_URL or AMQP_URL_FILE, not both",
        )
        .await;
        let own = format!(
            "{}_DATABASE_URL_FILE",
            service.trim_end_matches("-service").to_uppercase()
        );
        assert_refused(
            service,
            &[
                (own.as_str(), "/nonexistent/url"),
                ("AUTH_DISABLED", "true"),
            ],
            &own,
        )
        .await;
    }
}

#[tokio::test]
async fn without_keys_or_with_two_sources_of_keys_a_service_does_not_start() {
    for service in ["order-service", "store-service", "delivery-service"] {
        assert_refused(service, &[], "set AUTH_PUBLIC_KEY_FILE or AUTH_JWKS_URL").await;
        assert_refused(
            service,
            &[
                ("AUTH_PUBLIC_KEY_FILE", "/nonexistent.pem"),
                ("AUTH_JWKS_URL", "http://127.0.0.1:1/jwks.json"),
            ],
            "set only one of AUTH_PUBLIC_KEY_FILE, AUTH_JWKS_URL",
        )
        .await;
        assert_refused(
            service,
            &[("AUTH_PUBLIC_KEY_FILE", "/nonexistent.pem")],
            "/nonexistent.pem",
        )
        .await;
    }
}

/// The database and broker URLs (with their passwords) read from files named by `*_FILE`, as
/// Docker and Kubernetes secrets are given: the service starts and serves with them.
#[tokio::test]
async fn a_service_reads_its_secret_urls_from_files() {
    let system = crate::helpers::TestSystem::start().await;
    let dir = std::env::temp_dir().join(format!("tenminute-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let amqp = dir.join("amqp-url");
    let database = dir.join("database-url");
    std::fs::write(&amqp, format!("{}?heartbeat=5\n", system.infra.amqp_url)).unwrap();
    std::fs::write(&database, system.infra.database_url("store")).unwrap();
    let mut store = system.store.sibling();
    store.remove_env("AMQP_URL");
    store.remove_env("STORE_DATABASE_URL");
    store.set_env("AMQP_URL_FILE", &amqp.display().to_string());
    store.set_env("STORE_DATABASE_URL_FILE", &database.display().to_string());
    store.start().await;
    let (status, foods) = system.get(&store, "/foods").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{foods}");
    let _ = std::fs::remove_dir_all(&dir);
}
