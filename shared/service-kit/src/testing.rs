//! Test support (feature `testing`): a TCP proxy between a service and a server it talks to,
//! which a test can freeze. Once frozen it keeps every connection open but forwards nothing
//! more, like a network path that silently drops everything (there is no `netem` here). A
//! database of a test's own ([`ScratchDatabase`]). And the check that a service's committed
//! OpenAPI document is the one its code generates.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy on 127.0.0.1; stops accepting when dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    frozen: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `host:port`.
    pub async fn start(host: &str, port: u16) -> std::io::Result<Self> {
        Self::start_at(0, host, port).await
    }

    /// A proxy to `host:port` listening on `listen_port` (0: any free port), e.g. the port a
    /// service was told its server is on before that server is up.
    pub async fn start_at(listen_port: u16, host: &str, port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", listen_port)).await?;
        let local = listener.local_addr()?.port();
        let (frozen, watch) = watch::channel(false);
        let upstream = format!("{host}:{port}");
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, watch.clone()));
                tokio::spawn(pump(server_read, client_write, watch.clone()));
            }
        });
        Ok(Self {
            port: local,
            frozen,
            accept,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, nothing more is forwarded, in either direction.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again what was held and what comes next (the path heals).
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Pumps waiting on a frozen proxy end when the sender goes.
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 || frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Fails (panics) unless the file at `committed` holds `document` as the code generates it
/// (pretty JSON), saying how to refresh it; with `UPDATE_OPENAPI=1` in the environment, writes
/// it there instead. `package` is the service's package, for the refresh command.
pub fn check_openapi_document(
    document: &utoipa::openapi::OpenApi,
    committed: &std::path::Path,
    package: &str,
) {
    let generated = match document.to_pretty_json() {
        Ok(json) => json + "\n",
        Err(err) => panic!("the OpenAPI document of {package} does not serialise: {err}"),
    };
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| !v.is_empty() && v != "0") {
        if let Some(dir) = committed.parent()
            && let Err(err) = std::fs::create_dir_all(dir)
        {
            panic!("cannot create {}: {err}", dir.display());
        }
        if let Err(err) = std::fs::write(committed, &generated) {
            panic!("cannot write {}: {err}", committed.display());
        }
        return;
    }
    let on_disk = std::fs::read_to_string(committed).unwrap_or_default();
    assert!(
        on_disk == generated,
        "{} is not the OpenAPI document the code of {package} generates (an endpoint, a status \
         or a body changed?). Check the change, then refresh the committed copy with \
         `UPDATE_OPENAPI=1 cargo test -p {package} openapi` and commit it.",
        committed.display()
    );
}

/// The routes every service serves to anyone: the probes, the metrics and the document.
pub const OPEN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Fails (panics) unless every operation of `document` declares the bearer token
/// ([`BEARER_SCHEME`](crate::auth::BEARER_SCHEME)) as its security and documents its `401`
/// answer: every route of a service takes a [`Caller`](crate::auth::Caller), but for the
/// [`OPEN_PATHS`], which declare no security.
pub fn check_security(document: &utoipa::openapi::OpenApi) {
    let document = match serde_json::to_value(document) {
        Ok(document) => document,
        Err(err) => panic!("the OpenAPI document does not serialise: {err}"),
    };
    let scheme = crate::auth::BEARER_SCHEME;
    assert!(
        document["components"]["securitySchemes"][scheme].is_object(),
        "the document does not declare the {scheme} security scheme"
    );
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    assert!(!paths.is_empty(), "the document has no paths");
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, operation) in item {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            if OPEN_PATHS.contains(&path.as_str()) {
                assert!(
                    operation.get("security").is_none(),
                    "{method} {path} is open: it declares no security"
                );
                continue;
            }
            let security = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let open = security
                .iter()
                .any(|r| r.as_object().is_some_and(|r| r.is_empty()));
            let token = security.iter().any(|r| r.get(scheme).is_some());
            assert!(
                token && !open,
                "{method} {path}: it must say security((\"{scheme}\" = [])), not {security:?}"
            );
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path}: it must document its 401"
            );
        }
    }
}

/// A database of a test's own on the local PostgreSQL (`DATABASE_URL`, else
/// `postgres://postgres@127.0.0.1:5432`), with a random name. Dropped by
/// [`ScratchDatabase::drop_database`] (a test that fails before leaves it behind, named by its
/// prefix).
#[derive(Debug)]
pub struct ScratchDatabase {
    name: String,
    admin: sqlx::PgPool,
    pool: sqlx::PgPool,
}

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` and connects to it (two connections at most).
    pub async fn create(prefix: &str) -> Result<Self, sqlx::Error> {
        use std::str::FromStr;
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let server = sqlx::postgres::PgConnectOptions::from_str(&url)?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(server.clone().database("postgres"))
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(server.database(&name))
            .await?;
        Ok(Self { name, admin, pool })
    }

    /// The pool of the database.
    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Closes the pool and drops the database.
    pub async fn drop_database(self) -> Result<(), sqlx::Error> {
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await?;
        Ok(())
    }
}
