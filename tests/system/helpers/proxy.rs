//! A TCP proxy between a service and a server it talks to, which a test can freeze: once frozen
//! it keeps every connection open but forwards nothing more, like a network path that silently
//! drops everything (there is no `netem` here).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    frozen: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `host:port`.
    pub async fn start(host: &str, port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let local = listener.local_addr().expect("proxy address").port();
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
        Self {
            port: local,
            frozen,
            accept,
        }
    }

    /// A proxy to the server of `url` (`scheme://user:password@host:port/...`), and `url` with
    /// the proxy in its place.
    pub async fn for_url(url: &str) -> (Self, String) {
        let mut parsed = reqwest::Url::parse(url).expect("a URL");
        let host = parsed.host_str().expect("a host").to_owned();
        let port = parsed.port().expect("a port");
        let proxy = Self::start(&host, port).await;
        parsed
            .set_port(Some(proxy.port))
            .expect("a port can be set");
        (proxy, parsed.to_string())
    }

    /// From now on, nothing more is forwarded, in either direction.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
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
