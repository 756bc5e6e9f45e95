//! A real browser for the tests of the console's pages: headless Chromium driven through
//! `chromedriver` over the W3C WebDriver protocol (JSON over HTTP, with the test's own HTTP
//! client). Debian's `chromium` and `chromium-driver` packages provide both; `CHROMEDRIVER`
//! and `CHROME_BIN` name others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::time::Instant;

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser at a time on the machine: each test's browser waits for the one before it to
/// close (two Chromiums at once, each a dozen processes, beside the services of two tests, are
/// more than a small CI machine should carry).
static ONE_AT_A_TIME: LazyLock<Arc<Mutex<()>>> = LazyLock::new(|| Arc::new(Mutex::new(())));

/// A browser session, and the driver that runs it (in a process group of its own, so that the
/// browser goes with it).
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    profile: PathBuf,
    _turn: OwnedMutexGuard<()>,
}

impl Browser {
    /// Starts `chromedriver` on a free port and a headless Chromium session, 1400×1000.
    pub async fn start() -> Self {
        let turn = Arc::clone(&ONE_AT_A_TIME).lock_owned().await;
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chrome).exists(),
            "no Chromium at {chrome}: `apt-get install chromium chromium-driver` (or set CHROME_BIN)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("{driver_bin} does not start ({err}): `apt-get install chromium-driver`")
            });
        let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome,
                // Nothing fetched from elsewhere: the machine may have no way out.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-extensions", "--mute-audio",
                         "--no-zygote", "--renderer-process-limit=1",
                         "--window-size=1400,1000",
                         "--force-device-scale-factor=1",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let deadline = Instant::now() + Duration::from_secs(30);
        let session = loop {
            match http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
            {
                Ok(response) => {
                    let body: Value = response.json().await.expect("a WebDriver answer");
                    let id = body["value"]["sessionId"].as_str().map(str::to_owned);
                    break id.unwrap_or_else(|| panic!("no browser session: {body}"));
                }
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("chromedriver does not answer: {err}"),
            }
        };
        Self {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            profile,
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
            // The browser runs in the driver's process group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &format!("-{pid}")])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}
