//! A real browser for the tests of the console's pages: headless Chromium driven through
//! `chromedriver` over the W3C WebDriver protocol (JSON over HTTP, with the test's own HTTP
//! client). Debian's `chromium` and `chromium-driver` packages provide both; `CHROMEDRIVER`
//! and `CHROME_BIN` name others.
//!
//! The browser has no network but the page it tests. Chromium reaches out when it starts, even
//! with every switch against it that it has: the tests saw it ask the machine's DNS resolver
//! for names and try Google's public DNS over HTTPS. So the driver and the browser run in a
//! network namespace of their own (`unshare --net`, with a user namespace so that no root is
//! needed where unprivileged namespaces are allowed) that has only its own loopback: nothing
//! they try can leave it. The site under test and the driver cross the namespace's edge
//! through Unix sockets in the browser's folder: `socat` inside the namespace, and two small
//! bridges in the test outside it. `socat` and `ip` (Debian's `socat` and `iproute2`) must be
//! installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser at a time on the machine: each test's browser waits for the one before it to
/// close (two Chromiums at once, each a dozen processes, beside the services of two tests, are
/// more than a small CI machine should carry).
static ONE_AT_A_TIME: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));

/// The driver's port inside the browser's namespace (nothing else listens there).
const DRIVER_PORT_INSIDE: u16 = 9515;

/// What runs inside the browser's namespace: its loopback up, the site under test on the same
/// address as outside (through `site.sock`), the driver reachable through `driver.sock`.
const INSIDE: &str = r#"set -e
ip link set lo up
socat TCP-LISTEN:"$SITE_PORT",bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:"$DIR/site.sock" &
socat UNIX-LISTEN:"$DIR/driver.sock",fork TCP:127.0.0.1:"$DRIVER_PORT" &
exec "$DRIVER" --port="$DRIVER_PORT"
"#;

/// A browser session, and the driver that runs it (in a process group of its own, so that the
/// browser goes with it).
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    folder: PathBuf,
    bridges: [JoinHandle<()>; 2],
    _turn: OwnedMutexGuard<()>,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session (1400×1000) that can reach `site`
    /// (a `127.0.0.1` address: the pages' URLs stay as they are) and nothing else.
    pub async fn start(site: SocketAddr) -> Self {
        assert!(
            site.ip().is_loopback(),
            "the site under test is on 127.0.0.1"
        );
        let turn = Arc::clone(&ONE_AT_A_TIME).lock_owned().await;
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chrome).exists(),
            "no Chromium at {chrome}: `apt-get install chromium chromium-driver` (or set CHROME_BIN)"
        );
        let folder = std::env::temp_dir().join(format!("browser-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&folder).expect("the browser's folder");
        let bridges = bridges(site, &folder).await;
        let driver = Command::new("unshare")
            .args(["--map-root-user", "--net", "--", "sh", "-c", INSIDE])
            .env("SITE_PORT", site.port().to_string())
            .env("DIR", &folder)
            .env("DRIVER", &driver_bin)
            .env("DRIVER_PORT", DRIVER_PORT_INSIDE.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("unshare does not start ({err}): util-linux is needed"));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{}", bridges.1);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                // The namespace stops what these do not.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-extensions", "--mute-audio",
                         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                         "--no-zygote", "--renderer-process-limit=1",
                         "--window-size=1400,1000",
                         "--force-device-scale-factor=1",
                         format!("--user-data-dir={}", folder.join("profile").display())],
            },
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            let answer = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await;
            // Until the driver listens, the bridge closes the connection: try again.
            match answer {
                Ok(response) => match response.json::<Value>().await {
                    Ok(body) => {
                        let id = body["value"]["sessionId"].as_str().map(str::to_owned);
                        break id.unwrap_or_else(|| panic!("no browser session: {body}"));
                    }
                    Err(err) if Instant::now() >= deadline => {
                        panic!("chromedriver does not answer: {err}")
                    }
                    Err(_) => {}
                },
                Err(err) if Instant::now() >= deadline => {
                    panic!("chromedriver does not answer: {err}")
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Self {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            folder,
            bridges: bridges.0,
            _turn: turn,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("chromedriver answers");
        let body: Value = response.json().await.expect("a WebDriver answer");
        body["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs `script` in the page with `args` (`arguments[0]`, …) and returns what it returns.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            json!([css]),
        )
        .await
        .as_str()
        .map(|t| t.trim().to_owned())
    }

    /// Whether the first element matching `css` (a button, an input) is disabled.
    pub async fn is_disabled(&self, css: &str) -> bool {
        self.script(
            "return document.querySelector(arguments[0]).disabled;",
            json!([css]),
        )
        .await
            == true
    }

    /// Waits until an element matching `css` exists (at most `timeout`); its text.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(text) = self.text(css).await {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on the page after {timeout:?}: {}",
                self.text("body").await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of `css` satisfies `ok` (at most `timeout`); the text.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(css).await;
            if let Some(text) = text.as_deref().filter(|t| ok(t)) {
                return text.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{css} is {text:?} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no element matches `css` (at most `timeout`).
    pub async fn wait_gone(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.text(css).await.is_some() {
            assert!(Instant::now() < deadline, "{css} still on the page");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no {css}: {found}"))
            .to_owned()
    }

    /// Clicks the first element matching `css`, as a person would (it must be shown and
    /// enabled). An element that the page replaced between finding and clicking it is found
    /// again.
    pub async fn click(&self, css: &str) {
        for _ in 0..5 {
            let id = self.element(css).await;
            let answer = self
                .command(
                    reqwest::Method::POST,
                    &format!("/element/{id}/click"),
                    Some(json!({})),
                )
                .await;
            if answer["error"] == "stale element reference" {
                continue;
            }
            assert!(answer.is_null(), "clicking {css}: {answer}");
            return;
        }
        panic!("{css} kept being replaced");
    }

    /// Types `text` into the first element matching `css`, after clearing it.
    pub async fn fill(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        let answer = self
            .command(
                reqwest::Method::POST,
                &format!("/element/{id}/value"),
                Some(json!({ "text": text })),
            )
            .await;
        assert!(answer.is_null(), "typing into {css}: {answer}");
    }

    /// Chooses the option with `value` in the `<select>` matching `css`, as a person would.
    pub async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"))
            .await;
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("a screenshot"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        std::fs::write(path, png).expect("screenshot written");
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(&self.session)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        self.kill_group();
    }

    fn kill_group(&mut self) {
        if let Some(pid) = self.driver.id() {
            // The browser and the namespace's `socat`s run in the driver's process group (a
            // negative pid: after `--`, or procps' `kill` reads it as an option).
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        for bridge in &self.bridges {
            bridge.abort();
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// The two bridges outside the browser's namespace: `site.sock` in `folder` to `site`, and a
/// free port on 127.0.0.1 to `driver.sock` (the driver inside). Returns them and that port.
async fn bridges(site: SocketAddr, folder: &Path) -> ([JoinHandle<()>; 2], u16) {
    let site_listener = UnixListener::bind(folder.join("site.sock")).expect("site.sock");
    let to_site = tokio::spawn(async move {
        while let Ok((mut inside, _)) = site_listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outside) = TcpStream::connect(site).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    });
    let driver_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the driver");
    let port = driver_listener.local_addr().expect("its address").port();
    let driver_socket = folder.join("driver.sock");
    let to_driver = tokio::spawn(async move {
        while let Ok((mut outside, _)) = driver_listener.accept().await {
            let socket = driver_socket.clone();
            tokio::spawn(async move {
                if let Ok(mut inside) = UnixStream::connect(socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
                }
            });
        }
    });
    ([to_site, to_driver], port)
}
