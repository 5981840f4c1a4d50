//! Starts understudy for integration tests: in-process through the library
//! entry point ([`start`]), or as the real binary ([`Binary`]), always on
//! `127.0.0.1:0`. Also small helpers to read its admin API and the names of
//! its metric series ([`series`]), and in [`validate`] the `validate`
//! suite's toy models and recordings.
//!
//! The only support code that may use `understudy::` (see `super`).

pub mod series;
pub mod validate;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use understudy::config::Config;
use understudy::server::{self, Running, StartOptions};

use crate::support::{get_json, get_text, wait_json};

/// Config text with both listeners on ephemeral loopback ports, the given
/// backends, and `extra` TOML sections (e.g. `[shadow]\npercent = 50`).
pub fn config_text(stable: &str, candidate: Option<&str>, extra: &str) -> String {
    let candidate = candidate
        .map(|url| format!("[backends.candidate]\nurl = \"{url}\"\ntimeout = \"5s\"\n"))
        .unwrap_or_default();
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n\
         [backends.stable]\nurl = \"{stable}\"\ntimeout = \"5s\"\n\n{candidate}\n{extra}\n"
    )
}

/// A proxy running inside the test process.
pub struct Proxy {
    pub running: Running,
    /// `http://127.0.0.1:PORT` of the data plane.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin: String,
}

/// Starts understudy in-process with [`config_text`].
pub async fn start(stable: &str, candidate: Option<&str>, extra: &str) -> Proxy {
    start_text(&config_text(stable, candidate, extra)).await
}

/// Starts understudy in-process from full config text.
pub async fn start_text(text: &str) -> Proxy {
    let config = Config::parse(text, "test config").unwrap_or_else(|e| panic!("{e}"));
    let running = server::start(config, StartOptions::default())
        .await
        .unwrap_or_else(|e| panic!("start failed: {e}"));
    Proxy {
        url: format!("http://{}", running.data_addr),
        admin: format!("http://{}", running.admin_addr),
        running,
    }
}

impl Proxy {
    pub async fn status(&self) -> Value {
        get_json(&format!("{}/status", self.admin)).await
    }

    pub async fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.admin)).await
    }

    /// Waits until no mirror is in flight (each has been queued for its
    /// comparison, compared, or dropped), or panics after ten seconds.
    pub async fn settle_mirrors(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = self.metrics().await;
            if metric(&metrics, "understudy_shadow_in_flight") == Some(0.0) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mirrors still in flight after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until `/status` satisfies `done`, or panics after `timeout`
    /// with the last status.
    pub async fn wait_status(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        wait_json(&format!("{}/status", self.admin), timeout, done).await
    }

    pub async fn stop(self) {
        self.running.shutdown().await;
    }
}

/// Reads one Prometheus sample, e.g.
/// `metric(&text, r#"understudy_shadow_total{result="sent"}"#)`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "understudy-test-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How long a one-shot CLI run ([`run_cli`]) may take: generous, since
/// `validate` replays hundreds of requests on a busy test machine.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the real binary with `args` (stdin closed) to its exit; panics
/// after [`CLI_TIMEOUT`].
pub async fn run_cli(args: &[&str]) -> std::process::Output {
    let child = Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(CLI_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("understudy {args:?} did not exit within {CLI_TIMEOUT:?}"))
        .unwrap()
}

/// Checks one of the proxy's own error answers (for a failure of stable):
/// the status `want`, a request id, and a JSON body naming stable and the
/// error.
pub fn assert_proxy_error(what: &str, got: (StatusCode, HeaderMap, Bytes), want: u16) {
    let (status, headers, body) = got;
    assert_eq!(status, want, "{what}: body {body:?}");
    assert_eq!(headers["content-type"], "application/json", "{what}");
    assert_eq!(headers["x-understudy-backend"], "stable", "{what}");
    assert!(headers.contains_key("x-request-id"), "{what}");
    let json: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
    assert_eq!(json["backend"], "stable", "{what}: {json}");
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {json}"
    );
}

/// The real `understudy` binary, started with `run -c CONFIG --log-format
/// json`; its addresses are read from its "understudy is running" log line.
pub struct Binary {
    pub child: Child,
    pub url: String,
    pub admin: String,
    /// Log lines seen after startup are collected here by a background task.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts the binary with `RUST_LOG=info`.
    pub async fn start(config: &Path, extra_args: &[&str]) -> Binary {
        Self::start_with_rust_log(config, extra_args, "info").await
    }

    /// Starts the binary with the given `RUST_LOG` filter.
    pub async fn start_with_rust_log(config: &Path, extra_args: &[&str], rust_log: &str) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_understudy"))
            .arg("--log-format")
            .arg("json")
            .arg("run")
            .arg("-c")
            .arg(config)
            .args(extra_args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn understudy");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let (url, admin) = loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .expect("understudy did not start within 20s")
                .expect("read stderr")
                .unwrap_or_else(|| {
                    panic!(
                        "understudy exited before starting; logs: {:?}",
                        logs.lock().unwrap()
                    )
                });
            logs.lock().unwrap().push(line.clone());
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["message"] == "understudy is running" {
                break (
                    format!("http://{}", v["data_addr"].as_str().unwrap()),
                    format!("http://{}", v["admin_addr"].as_str().unwrap()),
                );
            }
        };
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Binary {
            child,
            url,
            admin,
            logs,
        }
    }

    /// Sends a signal (e.g. `"TERM"`, `"HUP"`, `"KILL"`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("understudy did not exit in time")
            .unwrap()
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits until a log line satisfies `matches`; panics after `within`
    /// naming `what` and showing every line logged so far.
    pub async fn wait_for_log(&self, what: &str, within: Duration, matches: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.logs.lock().unwrap().iter().any(|l| matches(l)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line {what}; logs:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Proxy {
    /// `GET /mismatches` as JSON.
    pub async fn mismatches(&self) -> Value {
        get_json(&format!("{}/mismatches", self.admin)).await
    }

    /// Polls `/metrics` until the sample `series` (as for [`metric`]) is at
    /// least `at_least`; returns that scrape, or panics after `timeout` with
    /// the last value. Comparisons and mirrors are counted asynchronously,
    /// so tests wait for counts instead of sleeping.
    pub async fn wait_metric(&self, series: &str, at_least: f64, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            let value = metric(&text, series);
            if value.is_some_and(|v| v >= at_least) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{series} did not reach {at_least} within {timeout:?} (last: {value:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Proxy {
    /// Polls `/metrics` until the sample `series` is present and at most
    /// `at_most`; returns that scrape, or panics after `timeout` with the
    /// last value. For gauges that must fall back (in-flight mirrors, open
    /// connections) once traffic is over.
    pub async fn wait_metric_at_most(
        &self,
        series: &str,
        at_most: f64,
        timeout: Duration,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            let value = metric(&text, series);
            if value.is_some_and(|v| v <= at_most) {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{series} did not fall to {at_most} within {timeout:?} (last: {value:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until nothing the traffic started is left: no mirror in flight
    /// (`/status` `mirrors_in_flight` and `understudy_shadow_in_flight`) and
    /// no client connection open (`understudy_connections_open`; drop the
    /// test's clients first). Panics after `timeout`.
    pub async fn wait_drained(&self, timeout: Duration) {
        self.wait_status(timeout, |s| s["mirrors_in_flight"] == 0)
            .await;
        self.wait_metric_at_most("understudy_shadow_in_flight", 0.0, timeout)
            .await;
        self.wait_metric_at_most("understudy_connections_open", 0.0, timeout)
            .await;
    }
}
