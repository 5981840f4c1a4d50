//! Helpers for `tests/validate.rs`: the crate's toy iris models as
//! backends, recording traffic through the in-process proxy, validate
//! configs and running the real binary.
//! Only `127.0.0.1`; nothing here outlives a test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use understudy::toy::{self, ToyModel, ToyModelConfig, iris};

use crate::support::{self, harness};

pub const INFER: &str = "/v2/models/iris/infer";
/// 500: the fewest pairs the latency criterion judges (at p90).
pub const REQUESTS: usize = 500;

/// Two toy iris servers; `disagree` is the candidate's disagreement rate.
pub struct Toys {
    pub stable: ToyModel,
    pub candidate: ToyModel,
    shutdown: CancellationToken,
}

impl Toys {
    pub async fn start(disagree: f64, latency: Duration) -> Toys {
        let shutdown = CancellationToken::new();
        let model = |version: &str| {
            ToyModelConfig::new("iris", version).with_latency(latency, Duration::ZERO)
        };
        let stable = toy::spawn(model("v1"), shutdown.clone()).await.unwrap();
        let candidate = toy::spawn(model("v2").with_disagree_rate(disagree), shutdown.clone())
            .await
            .unwrap();
        Toys {
            stable,
            candidate,
            shutdown,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.stable.stopped().await;
        self.candidate.stopped().await;
    }
}

/// The feature rows every test replays: seeded, so the share of rows a
/// 20%-disagreeing candidate gets wrong is the same on every run (with
/// seed 7, 59 of the first 300 rows: a typical sample, 19.7%).
pub fn rows(n: usize) -> Vec<[f64; 4]> {
    iris::random_rows(&mut SmallRng::seed_from_u64(7), n)
}

/// Sends one single-row infer request per row through an in-process proxy
/// with `[record]` at 100% (and every request mirrored, so the request and
/// response copies are shared with the mirror) and returns the recording
/// once every line is written.
pub async fn record_traffic(dir: &harness::TempDir, rows: &[[f64; 4]]) -> PathBuf {
    let toys = Toys::start(0.0, Duration::ZERO).await;
    let path = dir.path("traffic.jsonl");
    let extra = format!(
        "[compare]\npreset = \"kserve-v2\"\n\n[record]\npath = \"{}\"\npercent = 100\n",
        path.display()
    );
    let proxy = harness::start(&toys.stable.url(), Some(&toys.candidate.url()), &extra).await;
    let client = support::http_client();
    let url = format!("{}{INFER}", proxy.url);
    // Eight requests at a time, like a few concurrent clients.
    for (n, chunk) in rows.chunks(8).enumerate() {
        let sends: Vec<_> = chunk
            .iter()
            .map(|row| {
                let (client, url) = (client.clone(), url.clone());
                let body = iris::infer_body(&[*row], &format!("req-{n}"));
                tokio::spawn(async move {
                    let headers = [
                        ("content-type", "application/json"),
                        ("authorization", "Bearer secret"),
                    ];
                    support::send(&client, http::Method::POST, &url, &headers, body).await
                })
            })
            .collect();
        for send in sends {
            assert_eq!(send.await.unwrap().0, 200);
        }
    }
    let written = r#"understudy_record_total{result="written"}"#;
    let metrics = proxy
        .wait_metric(written, rows.len() as f64, Duration::from_secs(10))
        .await;
    let dropped = r#"understudy_record_total{result="dropped"}"#;
    assert_eq!(harness::metric(&metrics, dropped), Some(0.0));
    // The mirror got its copies too.
    let matched = r#"understudy_comparisons_total{result="match"}"#;
    proxy
        .wait_metric(matched, rows.len() as f64, Duration::from_secs(10))
        .await;
    proxy.stop().await;
    toys.stop().await;
    path
}

/// A validate config for the two backends: KServe V2 comparison and a
/// generous latency threshold (this is about agreement, and loopback
/// latencies of a busy test machine are noisy).
pub fn config(dir: &harness::TempDir, stable: &str, candidate: &str) -> PathBuf {
    let path = dir.path("validate.toml");
    let text = format!(
        "[backends.stable]\nurl = \"{stable}\"\ntimeout = \"5s\"\n\n\
         [backends.candidate]\nurl = \"{candidate}\"\ntimeout = \"5s\"\n\n\
         [compare]\npreset = \"kserve-v2\"\n\n\
         [rollout]\nmax_latency_increase = 10.0\nstate_file = \"{}\"\n",
        dir.path("state.json").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub async fn validate(args: &[&str]) -> Run {
    let out = harness::run_cli(&[&["validate"], args].concat()).await;
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}
