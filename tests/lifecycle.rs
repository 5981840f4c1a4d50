//! The real `understudy` binary through its life: restarts with persisted
//! state, refused and corrupt state files, draining on SIGTERM, reloading on
//! SIGHUP, and the `check`, `status` and `rollout` commands. Config files
//! live in a temp directory; backends are fake upstreams in this process.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use support::harness::{self, Binary, TempDir, run_cli};
use support::{FakeUpstream, Reply, http_client, send, try_send};

const PREDICTION: &str = r#"{"predictions":[1]}"#;
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

async fn upstream() -> FakeUpstream {
    FakeUpstream::start(Reply::json(200, PREDICTION)).await
}

/// A `[rollout]` that never judges by itself within a test, persisting to
/// `state.json` in `dir`, plus `extra` keys in the section.
fn rollout(dir: &TempDir, extra: &str) -> String {
    format!(
        "[rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100000\n{extra}state_file = \"{}\"\n",
        dir.path("state.json").display()
    )
}

/// Writes `understudy.toml` in `dir` and returns its path.
fn write_config(dir: &TempDir, stable: &str, candidate: &str, extra: &str) -> PathBuf {
    let path = dir.path("understudy.toml");
    let text = harness::config_text(stable, Some(candidate), extra);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn status(binary: &Binary) -> Value {
    support::get_json(&format!("{}/status", binary.admin)).await
}

fn phase_weight(value: &Value) -> (&str, f64) {
    (
        value["phase"].as_str().unwrap_or("?"),
        value["weight"].as_f64().unwrap_or(f64::NAN),
    )
}

async fn post(binary: &Binary, command: &str, body: &str) -> Value {
    let url = format!("{}/rollout/{command}", binary.admin);
    let (code, value) = support::post_json(&url, body, None).await;
    assert_eq!(code, 200, "POST /rollout/{command}: {value:#}");
    value
}

/// Sends `n` requests through the proxy; returns the serving backends.
async fn send_many(binary: &Binary, n: usize) -> Vec<String> {
    let client = http_client();
    let mut backends = Vec::new();
    for _ in 0..n {
        let url = format!("{}/v2/models/m/infer", binary.url);
        let (code, headers, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(code, 200, "{body:?}");
        assert_eq!(body, PREDICTION);
        backends.push(headers["x-understudy-backend"].to_str().unwrap().to_owned());
    }
    backends
}

/// SIGTERM, then expect a clean exit.
async fn stop(mut binary: Binary) {
    binary.signal("TERM");
    let status = binary.wait(EXIT_TIMEOUT).await;
    assert!(status.success(), "exit {status:?}");
}

fn read_state(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("state file is not JSON ({e}): {}", text(&bytes)))
}

/// Polls `/metrics` until `series` has `value`.
async fn wait_metric(binary: &Binary, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
        if harness::metric(&metrics, series) == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} != {value}:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_log(binary: &Binary, needle: &str) {
    let what = format!("contains {needle:?}");
    binary
        .wait_for_log(&what, Duration::from_secs(10), |l| l.contains(needle))
        .await;
}

#[tokio::test]
async fn weight_set_by_hand_survives_a_kill_and_restart() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("life-restart");
    let config = write_config(&dir, &stable.url(), &candidate.url(), &rollout(&dir, ""));
    let mut first = Binary::start(&config, &[]).await;
    assert_eq!(phase_weight(&status(&first).await), ("shadow", 0.0));
    let set = post(&first, "weight", r#"{"percent": 30}"#).await;
    assert_eq!(phase_weight(&set), ("paused", 30.0));
    first.signal("KILL");
    let exit = first.wait(EXIT_TIMEOUT).await;
    assert!(!exit.success(), "SIGKILL should not look like a clean exit");
    let persisted = read_state(&dir.path("state.json"));
    assert_eq!(
        phase_weight(&persisted["state"]),
        ("paused", 30.0),
        "{persisted:#}"
    );

    let second = Binary::start(&config, &[]).await;
    let resumed = status(&second).await;
    assert_eq!(phase_weight(&resumed), ("paused", 30.0), "{resumed:#}");
    assert_eq!(resumed["paused_from"], "shadow", "{resumed:#}");
    let manual = resumed["decisions"].as_array().unwrap().last().unwrap();
    assert!(
        manual["action"].as_str().unwrap().contains("30"),
        "{resumed:#}"
    );
    assert!(second.log_contains("resuming rollout from persisted state"));
    // The restored weight is live on the data path, not just in /status.
    let backends = send_many(&second, 100).await;
    let on_candidate = backends.iter().filter(|b| *b == "candidate").count();
    assert!(
        (10..=50).contains(&on_candidate),
        "{on_candidate} of 100 at 30%"
    );
    stop(second).await;
}

#[tokio::test]
async fn state_of_another_candidate_is_refused_until_reset() {
    let (stable, old, new) = (upstream().await, upstream().await, upstream().await);
    let dir = TempDir::new("life-identity");
    let config = write_config(&dir, &stable.url(), &old.url(), &rollout(&dir, ""));
    let first = Binary::start(&config, &[]).await;
    post(&first, "weight", r#"{"percent": 30}"#).await;
    stop(first).await;

    write_config(&dir, &stable.url(), &new.url(), &rollout(&dir, ""));
    let config_arg = config.to_str().unwrap();
    let refused = run_cli(&["--log-format", "json", "run", "-c", config_arg]).await;
    let stderr = text(&refused.stderr);
    assert!(
        !refused.status.success(),
        "started with a foreign state: {stderr}"
    );
    for addr in [old.addr(), new.addr()] {
        assert!(
            stderr.contains(&addr.to_string()),
            "{addr} not named: {stderr}"
        );
    }
    assert!(stderr.contains("--reset-state"), "{stderr}");
    // The refused file is left alone.
    let kept = read_state(&dir.path("state.json"));
    assert_eq!(phase_weight(&kept["state"]), ("paused", 30.0), "{kept:#}");

    let fresh = Binary::start(&config, &["--reset-state"]).await;
    let status = status(&fresh).await;
    assert_eq!(phase_weight(&status), ("shadow", 0.0), "{status:#}");
    // The old log (with the manual weight) is gone.
    let decisions = status["decisions"].as_array().unwrap();
    assert!(decisions.iter().all(|d| d["manual"] == false), "{status:#}");
    let rewritten = read_state(&dir.path("state.json"));
    let identity = rewritten["identity"].as_str().unwrap();
    assert!(identity.contains(&new.addr().to_string()), "{rewritten:#}");
    assert!(send_many(&fresh, 5).await.iter().all(|b| b == "stable"));
    stop(fresh).await;
}

#[tokio::test]
async fn corrupt_state_file_starts_safe_on_stable() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("life-corrupt");
    let config = write_config(&dir, &stable.url(), &candidate.url(), &rollout(&dir, ""));
    // A promoted rollout whose state file was then cut in half.
    let first = Binary::start(&config, &[]).await;
    post(&first, "promote", "").await;
    stop(first).await;
    let state = dir.path("state.json");
    let whole = std::fs::read(&state).unwrap();
    assert!(text(&whole).contains("promoted"));
    std::fs::write(&state, &whole[..whole.len() / 2]).unwrap();

    let binary = Binary::start(&config, &[]).await;
    let status = status(&binary).await;
    assert_eq!(phase_weight(&status), ("paused", 0.0), "{status:#}");
    let reason = status["decisions"].as_array().unwrap().last().unwrap()["reasons"].to_string();
    assert!(reason.contains("corrupt"), "{status:#}");
    assert!(send_many(&binary, 20).await.iter().all(|b| b == "stable"));
    assert!(
        binary.log_contains("corrupt") && binary.log_contains("starting safe"),
        "no clear log line: {:#?}",
        binary.logs.lock().unwrap()
    );
    let mut aside = state.clone().into_os_string();
    aside.push(".corrupt");
    assert_eq!(std::fs::read(&aside).unwrap(), whole[..whole.len() / 2]);
    let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
    assert_eq!(
        harness::metric(&metrics, r#"understudy_rollout_phase{phase="promoted"}"#),
        Some(0.0)
    );
    stop(binary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let slow = Reply::json(200, PREDICTION).delay(Duration::from_secs(1));
    let (stable, candidate) = (FakeUpstream::start(slow).await, upstream().await);
    let dir = TempDir::new("life-term");
    let config = write_config(&dir, &stable.url(), &candidate.url(), &rollout(&dir, ""));
    let mut binary = Binary::start(&config, &[]).await;
    let url = format!("{}/v2/models/m/infer", binary.url);
    let requests: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                try_send(&http_client(), Method::POST, &url, &[], "{}")
                    .await
                    .map(|(status, _, body)| (status, body))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    assert!(stable.wait_for_requests(10, Duration::from_secs(5)).await);
    binary.signal("TERM");
    let signalled = Instant::now();
    // Draining: not ready any more, and new connections are not served.
    let readyz = format!("{}/readyz", binary.admin);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (code, _, _) = send(&http_client(), Method::GET, &readyz, &[], "").await;
        if code == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {code} while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = try_send(&http_client(), Method::POST, &url, &[], "{}").await;
    if let Ok((status, _, _)) = &late {
        assert_ne!(
            status.as_u16(),
            200,
            "a new request was served after SIGTERM"
        );
    }
    for request in requests {
        let (status, body) = request.await.unwrap().expect("in-flight request failed");
        assert_eq!((status.as_u16(), &body[..]), (200, PREDICTION.as_bytes()));
    }
    let exit = binary.wait(EXIT_TIMEOUT).await;
    let took = signalled.elapsed();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}, drain_timeout is 5s"
    );
    let state = read_state(&dir.path("state.json"));
    assert_eq!(state["state"]["phase"], "shadow", "{state:#}");
    assert!(binary.log_contains("draining"));
}

#[tokio::test]
async fn sighup_applies_a_valid_config_and_rejects_an_invalid_one() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("life-hup");
    let shadow = |percent| format!("[shadow]\npercent = {percent}\n\n");
    let (s, c) = (stable.url(), candidate.url());
    let config = write_config(&dir, &s, &c, &(shadow(100) + &rollout(&dir, "")));
    let binary = Binary::start(&config, &[]).await;
    send_many(&binary, 10).await;
    assert!(
        candidate
            .wait_for_requests(10, Duration::from_secs(5))
            .await
    );

    write_config(&dir, &s, &c, &(shadow(0) + &rollout(&dir, "")));
    binary.signal("HUP");
    let reloads = r#"understudy_config_reloads_total{result="success"}"#;
    wait_metric(&binary, reloads, 1.0).await;
    let mirrored = candidate.request_count();
    send_many(&binary, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(candidate.request_count(), mirrored, "still mirroring at 0%");

    let bad = rollout(&dir, "max_error_rate = 7\n");
    write_config(&dir, &s, &c, &(shadow(100) + &bad));
    binary.signal("HUP");
    wait_metric(
        &binary,
        r#"understudy_config_reloads_total{result="error"}"#,
        1.0,
    )
    .await;
    wait_log(&binary, "max_error_rate").await;
    let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
    assert_eq!(harness::metric(&metrics, reloads), Some(1.0));
    // The running config (no mirroring) stays in force.
    assert_eq!(send_many(&binary, 10).await.len(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        candidate.request_count(),
        mirrored,
        "the rejected file was applied"
    );
    assert_eq!(phase_weight(&status(&binary).await), ("shadow", 0.0));
    stop(binary).await;
}

#[tokio::test]
async fn check_validates_a_config_file() {
    let dir = TempDir::new("life-check");
    let (s, c) = ("http://127.0.0.1:8001", "http://127.0.0.1:8002");
    let valid = write_config(&dir, s, c, &rollout(&dir, ""));
    let ok = run_cli(&["check", "-c", valid.to_str().unwrap()]).await;
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("ok"), "{}", text(&ok.stdout));

    for (bad_line, key) in [
        ("max_error_rate = 7\n", "rollout.max_error_rate"),
        ("max_eror_rate = 0.1\n", "max_eror_rate"),
    ] {
        let path = write_config(&dir, s, c, &rollout(&dir, bad_line));
        let content = std::fs::read_to_string(&path).unwrap();
        let line = 1 + content
            .lines()
            .position(|l| l == bad_line.trim_end())
            .unwrap();
        let out = run_cli(&["check", "-c", path.to_str().unwrap()]).await;
        let printed = text(&out.stdout) + &text(&out.stderr);
        assert!(!out.status.success(), "{bad_line} accepted: {printed}");
        assert!(printed.contains(key), "{key} not named: {printed}");
        assert!(
            printed.contains(&format!("line {line}")),
            "line {line} not named: {printed}"
        );
    }
    let missing = run_cli(&["check", "-c", dir.path("nope.toml").to_str().unwrap()]).await;
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("nope.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_rollout_commands_talk_to_a_running_binary() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("life-cli");
    let config = write_config(&dir, &stable.url(), &candidate.url(), &rollout(&dir, ""));
    let binary = Binary::start(&config, &[]).await;
    let admin = binary.admin.as_str();

    let shown = run_cli(&["status", "--admin", admin]).await;
    let out = text(&shown.stdout);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert!(
        out.contains("phase shadow") && out.contains("weight 0"),
        "{out}"
    );

    let paused = run_cli(&["rollout", "pause", "--admin", admin]).await;
    assert!(paused.status.success(), "{}", text(&paused.stderr));
    assert!(
        text(&paused.stdout).contains("phase paused"),
        "{}",
        text(&paused.stdout)
    );
    assert_eq!(phase_weight(&status(&binary).await), ("paused", 0.0));

    let set = run_cli(&["rollout", "set-weight", "20", "--admin", admin]).await;
    assert!(set.status.success(), "{}", text(&set.stderr));
    let shown = run_cli(&["status", "--admin", admin]).await;
    let out = text(&shown.stdout);
    assert!(
        out.contains("phase paused") && out.contains("weight 20"),
        "{out}"
    );
    assert!(out.contains("manual set weight 20%"), "{out}");

    let invalid = run_cli(&["rollout", "set-weight", "150", "--admin", admin]).await;
    assert!(!invalid.status.success());
    let stderr = text(&invalid.stderr);
    assert!(stderr.contains("between 0 and 100"), "{stderr}");

    // A refused command: non-zero with the server's reason.
    let again = run_cli(&["rollout", "pause", "--admin", admin]).await;
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already paused"),
        "{}",
        text(&again.stderr)
    );

    let dead = format!("http://{}", support::refused_addr().await);
    for args in [
        vec!["rollout", "pause", "--admin", &dead],
        vec!["status", "--admin", &dead],
    ] {
        let out = run_cli(&args).await;
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded against {dead}");
        assert!(
            stderr.contains(&dead) && stderr.contains("cannot connect"),
            "{stderr}"
        );
    }
    assert_eq!(phase_weight(&status(&binary).await), ("paused", 20.0));
    stop(binary).await;
}
