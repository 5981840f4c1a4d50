//! The real binary with its rollout state file on a full disk: a rollback
//! takes effect at once but is reported as not durable, retried until the
//! disk has room, and only then logged; a restart never resumes from a
//! state older than the last logged decision.
//!
//! The disk is a small tmpfs mounted for the test (root only); where that
//! is not permitted, the tests say so and return.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use support::full_fs::FullFs;
use support::harness::{self, Binary, TempDir};
use support::{FakeUpstream, Reply, http_client, send};

const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
const WAIT: Duration = Duration::from_secs(20);

async fn upstream() -> FakeUpstream {
    FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await
}

/// Config in `dir`, with the state file at `state`; the judge never acts
/// on its own within a test.
fn write_config(dir: &TempDir, stable: &str, candidate: &str, state: &Path) -> PathBuf {
    let rollout = format!(
        "[rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100000\nstate_file = \"{}\"\n",
        state.display()
    );
    let path = dir.path("understudy.toml");
    std::fs::write(
        &path,
        harness::config_text(stable, Some(candidate), &rollout),
    )
    .unwrap();
    path
}

async fn post(binary: &Binary, command: &str, body: &str) -> Value {
    let url = format!("{}/rollout/{command}", binary.admin);
    let (code, value) = support::post_json(&url, body, None).await;
    assert_eq!(code, 200, "POST /rollout/{command}: {value:#}");
    value
}

fn on_disk(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn phase_weight(value: &Value) -> (&str, f64) {
    (
        value["phase"].as_str().unwrap_or("?"),
        value["weight"].as_f64().unwrap_or(f64::NAN),
    )
}

/// The `action` of every "rollout decision" log line, in order.
fn logged_decisions(binary: &Binary) -> Vec<String> {
    binary
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["message"] == "rollout decision")
        .map(|v| v["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn metric(binary: &Binary, series: &str) -> f64 {
    let text = support::get_text(&format!("{}/metrics", binary.admin)).await;
    harness::metric(&text, series).unwrap_or_else(|| panic!("{series} missing"))
}

async fn readyz(binary: &Binary) -> (u16, String) {
    let url = format!("{}/readyz", binary.admin);
    let (code, _, body) = send(&http_client(), Method::GET, &url, &[], "").await;
    (code.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// Serving backends of `n` requests.
async fn candidate_share(binary: &Binary, n: usize) -> usize {
    let client = http_client();
    let mut on_candidate = 0;
    for _ in 0..n {
        let url = format!("{}/v1/models/m:predict", binary.url);
        let (code, headers, _) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(code, 200);
        on_candidate += usize::from(headers["x-understudy-backend"] == "candidate");
    }
    on_candidate
}

/// Two backends and a config whose state file is on a disk of its own
/// that the test fills and frees. Fields drop in order: the disk last.
struct StateOnSmallDisk {
    config: PathBuf,
    /// The state file, on `disk`.
    state: PathBuf,
    _dir: TempDir,
    _backends: (FakeUpstream, FakeUpstream),
    disk: FullFs,
}

impl StateOnSmallDisk {
    /// `None` (said on stderr) where this process may not mount the disk.
    async fn new(name: &str) -> Option<StateOnSmallDisk> {
        let disk = FullFs::mount(name)?;
        let (stable, candidate) = (upstream().await, upstream().await);
        let dir = TempDir::new(&format!("durable-{name}"));
        let state = disk.path("state.json");
        let config = write_config(&dir, &stable.url(), &candidate.url(), &state);
        Some(StateOnSmallDisk {
            config,
            state,
            _dir: dir,
            _backends: (stable, candidate),
            disk,
        })
    }

    /// Starts the binary at paused 50%, durable, then fills the disk and
    /// rolls back.
    async fn rolled_back_on_a_full_disk(&self) -> Binary {
        let binary = Binary::start(&self.config, &[]).await;
        let set = post(&binary, "weight", r#"{"percent": 50}"#).await;
        assert_eq!(set["durable"], true, "{set:#}");
        self.disk.fill();
        let answer = post(&binary, "rollback", "").await;
        assert_eq!(phase_weight(&answer), ("rolled_back", 0.0), "{answer:#}");
        assert_eq!(answer["durable"], false, "{answer:#}");
        let warning = answer["warning"].as_str().unwrap_or_default();
        assert!(
            warning.contains("not yet written") && warning.contains("space"),
            "{answer:#}"
        );
        binary
    }
}

#[tokio::test]
async fn a_rollback_on_a_full_disk_applies_at_once_and_is_written_once_space_frees() {
    let Some(setup) = StateOnSmallDisk::new("rollback").await else {
        return;
    };
    let state = &setup.state;
    let mut binary = setup.rolled_back_on_a_full_disk().await;

    // In effect on the data path at once, reported everywhere as not durable.
    assert_eq!(candidate_share(&binary, 40).await, 0);
    let status = support::get_json(&format!("{}/status", binary.admin)).await;
    assert_eq!(phase_weight(&status), ("rolled_back", 0.0));
    assert_eq!(status["state_file"]["durable"], false, "{status:#}");
    let (code, body) = readyz(&binary).await;
    assert_eq!((code, body.starts_with("degraded")), (200, true), "{body}");
    assert_eq!(metric(&binary, "understudy_state_file_behind").await, 1.0);
    assert_eq!(phase_weight(&on_disk(state)["state"]), ("paused", 50.0));
    assert!(
        !logged_decisions(&binary).contains(&"manual rollback".to_owned()),
        "a rollback that is not on disk was logged"
    );
    // Retried, and every failed attempt counted.
    let deadline = Instant::now() + WAIT;
    while metric(&binary, "understudy_state_persist_failures_total").await < 3.0 {
        assert!(Instant::now() < deadline, "no retries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    setup.disk.free();
    let deadline = Instant::now() + WAIT;
    while phase_weight(&on_disk(state)["state"]) != ("rolled_back", 0.0) {
        assert!(
            Instant::now() < deadline,
            "the rollback never reached the disk"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + WAIT;
    while readyz(&binary).await != (200, "ready\n".to_owned()) {
        assert!(Instant::now() < deadline, "still degraded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logged = logged_decisions(&binary);
    assert_eq!(
        logged.last().map(String::as_str),
        Some("manual rollback"),
        "{logged:?}"
    );
    assert_eq!(metric(&binary, "understudy_rollbacks_total").await, 1.0);

    binary.signal("KILL");
    binary.wait(EXIT_TIMEOUT).await;
    let restarted = Binary::start(&setup.config, &[]).await;
    let status = support::get_json(&format!("{}/status", restarted.admin)).await;
    assert_eq!(phase_weight(&status), ("rolled_back", 0.0), "{status:#}");
    assert_eq!(candidate_share(&restarted, 40).await, 0);
}

#[tokio::test]
async fn a_kill_while_the_disk_is_full_resumes_from_the_last_logged_decision() {
    let Some(setup) = StateOnSmallDisk::new("kill").await else {
        return;
    };
    let state = &setup.state;
    let mut binary = setup.rolled_back_on_a_full_disk().await;
    binary.signal("KILL");
    binary.wait(EXIT_TIMEOUT).await;

    // The last decision the log announced is the last one in the file.
    let logged = logged_decisions(&binary);
    let file = on_disk(state);
    let last_in_file = file["state"]["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(
        logged.last(),
        last_in_file["action"].as_str().map(str::to_owned).as_ref(),
        "log {logged:?} vs file {file:#}"
    );
    assert_eq!(phase_weight(&file["state"]), ("paused", 50.0));
    setup.disk.free();
    let restarted = Binary::start(&setup.config, &[]).await;
    let status = support::get_json(&format!("{}/status", restarted.admin)).await;
    assert_eq!(phase_weight(&status), ("paused", 50.0), "{status:#}");
}
