//! A TCP proxy between a service and the broker or PostgreSQL, which a test can freeze
//! (`service_kit::testing::Proxy`).

pub use service_kit::testing::Proxy;

/// A proxy to the server of `url` (`scheme://user:password@host:port/...`), and `url` with the
/// proxy in its place.
pub async fn for_url(url: &str) -> (Proxy, String) {
    let mut parsed = reqwest::Url::parse(url).expect("a URL");
    let host = parsed.host_str().expect("a host").to_owned();
    let port = parsed.port().expect("a port");
    let proxy = Proxy::start(&host, port).await.expect("start the proxy");
    parsed
        .set_port(Some(proxy.port()))
        .expect("a port can be set");
    (proxy, parsed.to_string())
}
