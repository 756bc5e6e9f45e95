//! One service process under test.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use super::eventually;
use super::infra::binary;

/// Log lines kept per service (the last ones are printed when a test fails).
const KEPT_LINES: usize = 5_000;

/// A service binary, started and stopped by the test.
pub struct Service {
    /// The binary's name.
    pub name: &'static str,
    env: Vec<(String, String)>,
    child: Option<Child>,
    addr: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// A service that will run with `env`.
    pub fn new(name: &'static str, env: Vec<(String, String)>) -> Self {
        Self {
            name,
            env,
            child: None,
            addr: None,
            logs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Another process of the same service with the same settings, not started.
    pub fn sibling(&self) -> Self {
        Self::new(self.name, self.env.clone())
    }

    /// Whether the process is running (as far as the test knows).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process has exited by itself; if so, it may be started again.
    pub fn has_exited(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
        if exited {
            self.child = None;
            self.addr = None;
        }
        exited
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Removes an environment variable for the next start.
    pub fn remove_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// Starts the process and waits until it listens and reports ready.
    pub async fn start(&mut self) {
        self.spawn().await;
        self.wait_ready(Duration::from_secs(60)).await;
    }

    /// Starts the process and waits until it listens (not until it is ready).
    pub async fn spawn(&mut self) {
        let listening = self.try_spawn().await;
        assert!(
            listening,
            "{} exited before listening: {}",
            self.name,
            self.tail(50)
        );
    }

    /// Starts the process and waits until it listens; false if it exited before (a process that
    /// crashes at start, as under a crash loop).
    pub async fn try_spawn(&mut self) -> bool {
        assert!(self.child.is_none(), "{} already running", self.name);
        let mut command = Command::new(binary(self.name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("service binary starts");
        let (addr_tx, addr_rx) = oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let name = self.name;
        let echo = std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
        if let Some(stdout) = child.stdout.take() {
            let logs = Arc::clone(&self.logs);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(addr) = listening_addr(&line)
                        && let Some(tx) = addr_tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    keep(&logs, name, line, echo);
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let logs = Arc::clone(&self.logs);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    keep(&logs, name, line, echo);
                }
            });
        }
        self.child = Some(child);
        let listening = tokio::time::timeout(Duration::from_secs(60), addr_rx)
            .await
            .unwrap_or_else(|_| panic!("{} did not start listening: {}", self.name, self.tail(50)));
        match listening {
            Ok(addr) => {
                self.addr = Some(addr);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let url = self.url("/readyz");
        let client = reqwest::Client::new();
        eventually(&format!("{} ready", self.name), timeout, || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    /// Whether `/readyz` answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        self.readiness().await.is_ok()
    }

    /// `Ok` when `/readyz` answers 200; otherwise which of its checks failed (its JSON body), or
    /// why it did not answer.
    pub async fn readiness(&self) -> Result<(), String> {
        let response = reqwest::Client::new()
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|err| format!("({}: {err})", self.name))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(format!("({}: {status} {body})", self.name))
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("{} not started", self.name))
    }

    /// The URL of `path` on this service.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("{} not running", self.name))
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, …) with `kill`.
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.addr = None;
    }

    /// SIGTERM (graceful shutdown), and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM").await;
        self.wait_exit(Duration::from_secs(30)).await
    }

    /// Waits for the process to exit by itself (e.g. at a fault point).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} not running", self.name));
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {timeout:?}", self.name))
            .expect("wait for exit");
        self.addr = None;
        status
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .map(|l| l.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    /// The log lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|line| line.contains(needle))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A handle on the log lines, for a test that has moved the service into a task.
    pub fn logs(&self) -> Logs {
        Logs(Arc::clone(&self.logs))
    }

    /// The last `n` log lines.
    pub fn tail(&self, n: usize) -> String {
        self.logs
            .lock()
            .map(|l| l[l.len().saturating_sub(n)..].join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- last log lines of {} -----\n{}",
                self.name,
                self.tail(150)
            );
        }
    }
}

/// The log lines of a service (see [`Service::logs`]).
#[derive(Clone, Debug)]
pub struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    /// Whether any log line contains `needle`.
    pub fn contain(&self, needle: &str) -> bool {
        self.0
            .lock()
            .map(|l| l.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }
}

fn keep(logs: &Mutex<Vec<String>>, name: &str, line: String, echo: bool) {
    if echo {
        eprintln!("[{name}] {line}");
    }
    if let Ok(mut logs) = logs.lock() {
        if logs.len() >= KEPT_LINES {
            logs.drain(..KEPT_LINES / 2);
        }
        logs.push(line);
    }
}

/// The address in the service's `listening` log line (JSON logs).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value["message"] != "listening" {
        return None;
    }
    value["addr"].as_str()?.parse().ok()
}
