//! Settings shared by the services. Each is a command-line flag and an environment variable;
//! `--help` lists them all.

use std::str::FromStr;
use std::time::Duration;

use messaging::BrokerConfig;
use sqlx::postgres::PgConnectOptions;

use crate::db::DatabaseSettings;
use crate::telemetry::LogFormat;

/// Parses `30s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Parses a duration like [`parse_duration`], refusing zero (for periods and leases).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(err) => Err(err.to_string()),
    }
}

/// Parses a duration like [`parse_duration`] of at least 10 ms: for leases and budgets that are
/// divided into smaller periods (a lease is renewed every third of it).
pub fn parse_lease(s: &str) -> Result<Duration, String> {
    const MIN: Duration = Duration::from_millis(10);
    match humantime::parse_duration(s) {
        Ok(d) if d < MIN => Err(format!(
            "must be at least {}",
            humantime::format_duration(MIN)
        )),
        Ok(d) => Ok(d),
        Err(err) => Err(err.to_string()),
    }
}

/// Settings that are each valid but do not fit together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid settings: {0}")]
pub struct SettingsError(pub String);

/// The value of the secret setting `name` from the file named by `<NAME>_FILE`, if that is set
/// (a Docker or Kubernetes secret): the value is then in neither the command line (which `ps`
/// shows) nor the environment. A trailing newline is dropped. Setting both is refused.
pub fn secret_from_file(name: &str) -> Result<Option<String>, SettingsError> {
    let file_var = format!("{name}_FILE");
    let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if std::env::var_os(name).is_some_and(|v| !v.is_empty()) {
        return Err(SettingsError(format!("set {name} or {file_var}, not both")));
    }
    let text = std::fs::read_to_string(&path).map_err(|err| {
        SettingsError(format!(
            "{file_var} ({}): {err}",
            std::path::Path::new(&path).display()
        ))
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()))
}

/// RabbitMQ settings.
#[derive(clap::Args, Clone, Debug)]
pub struct BrokerArgs {
    /// RabbitMQ URL; the vhost in it is honoured (`%2f` is `/`). Add `?heartbeat=10` to notice
    /// a dead connection sooner. It holds a password: give it in the environment, or in a file
    /// named by `AMQP_URL_FILE`.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// The nodes of a RabbitMQ cluster, as `host:port` separated by commas
    /// (`rabbit-1:5672,rabbit-2:5672,rabbit-3:5672`). Each is reached with `AMQP_URL`'s
    /// credentials, vhost and options; a lost connection is made again to the next node that
    /// answers. Unset: `AMQP_URL`'s node alone.
    #[arg(long, env = "AMQP_ADDRESSES", value_delimiter = ',')]
    pub amqp_addresses: Vec<String>,

    /// Prefix of every exchange and queue name, so that several deployments can share a vhost.
    #[arg(long, env = "AMQP_PREFIX", default_value = "")]
    pub amqp_prefix: String,

    /// Publisher channels kept open (with publisher confirms).
    #[arg(long, env = "AMQP_PUBLISHER_CHANNELS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub amqp_publisher_channels: u16,

    /// How long to wait for the broker to confirm a published message.
    #[arg(long, env = "AMQP_CONFIRM_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub amqp_confirm_timeout: Duration,

    /// With an `amqps://` URL: a PEM file of the certificate authorities that may sign the
    /// broker's certificate, besides the system's. The broker's host name is always verified.
    #[arg(long, env = "AMQP_TLS_CA_FILE")]
    pub amqp_tls_ca_file: Option<std::path::PathBuf>,
}

impl BrokerArgs {
    /// The broker configuration for a service named `service`.
    pub fn config(&self, service: &str) -> BrokerConfig {
        BrokerConfig {
            url: self.amqp_url.clone(),
            // `AMQP_ADDRESSES=` (empty, as compose passes an unset variable) is one node.
            addresses: self
                .amqp_addresses
                .iter()
                .filter(|a| !a.trim().is_empty())
                .cloned()
                .collect(),
            connection_name: service.to_owned(),
            publisher_channels: usize::from(self.amqp_publisher_channels),
            confirm_timeout: self.amqp_confirm_timeout,
            connect_timeout: Duration::from_secs(5),
            tls_ca_file: self.amqp_tls_ca_file.clone(),
        }
    }
}

/// PostgreSQL settings. The service's own database URL (e.g. `STORE_DATABASE_URL`) is a separate
/// flag of each service; without it the service uses its default database on `DATABASE_URL`.
#[derive(clap::Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// The PostgreSQL server. Each service uses its own database on it unless its own
    /// `<SERVICE>_DATABASE_URL` is set. It may hold a password: give it in the environment, or
    /// in a file named by `DATABASE_URL_FILE`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432"
    )]
    pub database_url: String,

    /// Several PostgreSQL servers, of which one is the primary (`db-1:5432,db-2:5432`): the
    /// service writes to the one that takes writes (libpq's `target_session_attrs=read-write`),
    /// with the user, password and database of its URL, and follows it when a failover moves
    /// it. Unset: the URL's server alone (also the way to use a proxy that follows the primary).
    #[arg(long, env = "DATABASE_HOSTS", value_delimiter = ',')]
    pub database_hosts: Vec<String>,

    /// Connections in the service's pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_pool_size: u32,

    /// Longest a statement may run (`statement_timeout`).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub database_statement_timeout: Duration,
}

impl DatabaseArgs {
    /// The settings for a service: its own URL if given, else `default_database` on
    /// `DATABASE_URL`.
    pub fn settings(
        &self,
        own_url: Option<&str>,
        default_database: &str,
    ) -> Result<DatabaseSettings, DatabaseSettingsError> {
        let options = match own_url {
            Some(url) => PgConnectOptions::from_str(url)?,
            None => PgConnectOptions::from_str(&self.database_url)?.database(default_database),
        };
        // `DATABASE_HOSTS=` (empty, as compose passes an unset variable) is the URL's server.
        let hosts = self
            .database_hosts
            .iter()
            .filter(|h| !h.trim().is_empty())
            .map(|h| h.parse())
            .collect::<Result<_, _>>()?;
        Ok(DatabaseSettings {
            options,
            hosts,
            pool_size: self.database_pool_size,
            statement_timeout: self.database_statement_timeout,
        })
    }
}

/// Database settings that do not parse.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseSettingsError {
    /// The URL.
    #[error("database URL: {0}")]
    Url(#[from] sqlx::Error),
    /// One of `DATABASE_HOSTS`.
    #[error(transparent)]
    Host(#[from] crate::primary::BadHost),
}

/// Logging settings.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `info,store_service=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// `text` (human-readable) or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// The settings every service has: broker, database server, logging, fault points, identity.
#[derive(clap::Args, Clone, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub broker: BrokerArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DatabaseArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub fault: FaultArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub identity: IdentityArgs,
}

/// How callers' tokens are verified. Exactly one of `AUTH_PUBLIC_KEY_FILE`, `AUTH_JWKS_URL`
/// and `AUTH_DISABLED=true` must be set: a service does not start open by accident.
#[derive(clap::Args, Clone, Debug)]
pub struct IdentityArgs {
    /// The identity provider's public key: a PEM file (Ed25519, ECDSA P-256 or RSA).
    /// `scripts/run` makes a development key pair and sets this.
    #[arg(long, env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<std::path::PathBuf>,

    /// The identity provider's JWKS address (its `jwks_uri`): keys by key id, fetched at start,
    /// every `AUTH_JWKS_REFRESH` and when a token names a key not seen yet.
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,

    /// How often the JWKS is fetched again.
    #[arg(long, env = "AUTH_JWKS_REFRESH", default_value = "5m", value_parser = parse_positive_duration)]
    pub auth_jwks_refresh: Duration,

    /// The issuer (`iss`) tokens must come from.
    #[arg(long, env = "AUTH_ISSUER", default_value = "tenminute-dev")]
    pub auth_issuer: String,

    /// The audience (`aud`) tokens must be for.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "tenminute")]
    pub auth_audience: String,

    /// Turns identity off: every request may act for anyone. For development only; the service
    /// says so loudly at start.
    #[arg(
        long,
        env = "AUTH_DISABLED",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub auth_disabled: bool,
}

impl ServiceArgs {
    /// Fills in the secret settings given as files (`AMQP_URL_FILE`, `DATABASE_URL_FILE`).
    pub fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        if let Some(url) = secret_from_file("AMQP_URL")? {
            self.broker.amqp_url = url;
        }
        if let Some(url) = secret_from_file("DATABASE_URL")? {
            self.db.database_url = url;
        }
        Ok(())
    }
}

/// Metrics settings.
#[derive(clap::Args, Clone, Debug)]
pub struct MetricsArgs {
    /// How often the gauges that are read from elsewhere are sampled: the depth of the service's
    /// dead-letter queues (from the broker) and, in the order service, the age of the oldest
    /// unfinished order (from its database). Each sample is one cheap request per queue or state.
    #[arg(long, env = "METRICS_SAMPLE_INTERVAL", default_value = "5s", value_parser = parse_positive_duration)]
    pub metrics_sample_interval: Duration,
}

/// Test-only settings.
#[derive(clap::Args, Clone, Debug)]
pub struct FaultArgs {
    /// Fault points to arm, for fault-injection tests only: a comma-separated list of point
    /// names (the process aborts when it reaches one) or `name=<duration>` (it stalls there).
    /// Never set this in production.
    #[arg(
        long,
        env = "FAULT_POINTS",
        default_value = "",
        hide_default_value = true
    )]
    pub fault_points: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_must_be_longer_than_zero() {
        assert_eq!(
            parse_positive_duration("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("soon").is_err());
        assert_eq!(parse_duration("0s").ok(), Some(Duration::ZERO));
    }

    #[test]
    fn a_lease_is_long_enough_to_be_divided() {
        assert_eq!(parse_lease("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_lease("10ms"), Ok(Duration::from_millis(10)));
        assert!(parse_lease("5ns").is_err());
        assert!(parse_lease("0s").is_err());
    }
}
