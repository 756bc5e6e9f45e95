//! Test support (feature `testing`): a TCP proxy between a service and a server it talks to,
//! which a test can freeze. Once frozen it keeps every connection open but forwards nothing
//! more, like a network path that silently drops everything (there is no `netem` here).

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
