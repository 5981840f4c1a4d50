//! Manual rollout control over the admin API, over real sockets: commands
//! and their effect on the split, invalid input, the bearer token, a
//! rollback announced to an `https://` webhook, and a proxy without a
//! `[rollout]` section. (Automatic judging is in `rollout.rs`.)

mod support;

use std::time::Duration;

use http::Method;
use serde_json::Value;
use support::harness;
use support::tls::{Pki, TlsUpstream, server_config};
use support::{FakeUpstream, Reply, http_client, send};

const PREDICTION: &str = r#"{"predictions":[1]}"#;

/// Two fake model servers answering the same prediction.
async fn backends() -> (FakeUpstream, FakeUpstream) {
    (
        FakeUpstream::start(Reply::json(200, PREDICTION)).await,
        FakeUpstream::start(Reply::json(200, PREDICTION)).await,
    )
}

/// A rollout that never judges by itself within a test (huge volume gate).
fn manual_rollout(dir: &harness::TempDir) -> String {
    format!(
        "[rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100000\nstate_file = \"{}\"\n",
        dir.path("state.json").display()
    )
}

async fn post(proxy: &harness::Proxy, command: &str, body: &str) -> (u16, Value) {
    post_with(proxy, command, body, None).await
}

async fn post_with(
    proxy: &harness::Proxy,
    command: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let url = format!("{}/rollout/{command}", proxy.admin);
    support::post_json(&url, body, token).await
}

/// Asserts a command answered `code` and returns its body.
async fn expect(proxy: &harness::Proxy, command: &str, body: &str, code: u16) -> Value {
    let (got, value) = post(proxy, command, body).await;
    assert_eq!(got, code, "POST /rollout/{command} {body}: {value:#}");
    value
}

fn phase_weight(value: &Value) -> (&str, f64) {
    (
        value["phase"].as_str().unwrap_or("?"),
        value["weight"].as_f64().unwrap_or(f64::NAN),
    )
}

/// The candidate's weight as both gauges: `understudy_canary_weight_ratio`
/// (0 to 1) and the deprecated `understudy_canary_weight_percent`.
fn assert_weight_gauges(metrics: &str, percent: f64) {
    let percent_gauge = harness::metric(metrics, "understudy_canary_weight_percent");
    let ratio_gauge = harness::metric(metrics, "understudy_canary_weight_ratio");
    assert_eq!(percent_gauge, Some(percent), "{metrics}");
    assert_eq!(ratio_gauge, Some(percent / 100.0), "{metrics}");
}

/// `understudy_build_info` names the crate version and the git revision
/// built (the checkout's `HEAD` when the tests run in one), and the
/// process's memory and file descriptors are exported.
fn assert_build_and_process_series(metrics: &str) {
    let info = metrics
        .lines()
        .find(|l| l.starts_with("understudy_build_info{"))
        .unwrap_or_else(|| panic!("no understudy_build_info: {metrics}"));
    let label = |name: &str| {
        let start = info.find(&format!("{name}=\"")).map(|i| i + name.len() + 2);
        let value = start.map(|i| &info[i..i + info[i..].find('"').unwrap()]);
        value.unwrap_or_else(|| panic!("no {name} label: {info}"))
    };
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"), "{info}");
    let revision = label("revision");
    assert!(!revision.is_empty(), "{info}");
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR")])
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(head) = head {
        assert_eq!(
            revision,
            String::from_utf8_lossy(&head.stdout).trim(),
            "{info}"
        );
    }
    assert!(info.ends_with(" 1"), "{info}");
    for series in ["process_resident_memory_bytes", "process_open_fds"] {
        let value = harness::metric(metrics, series);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{series} {value:?}: {metrics}"
        );
    }
}

/// Sends `n` requests; returns how many the candidate served.
async fn candidate_share(url: &str, n: usize) -> usize {
    let client = http_client();
    let mut candidate = 0;
    for _ in 0..n {
        let (status, headers, _) = send(&client, Method::POST, url, &[], "{}").await;
        assert_eq!(status, 200);
        match headers["x-understudy-backend"].to_str().unwrap() {
            "candidate" => candidate += 1,
            "stable" => {}
            other => panic!("x-understudy-backend {other:?}"),
        }
    }
    candidate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_drive_the_rollout() {
    let (stable, candidate) = backends().await;
    let dir = harness::TempDir::new("manual-commands");
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &manual_rollout(&dir)).await;
    let infer = format!("{}/v2/models/m/infer", proxy.url);

    let paused = expect(&proxy, "pause", "", 200).await;
    assert_eq!(phase_weight(&paused), ("paused", 0.0), "{paused:#}");
    let status = proxy.status().await;
    assert_eq!(phase_weight(&status), ("paused", 0.0), "{status:#}");
    assert_eq!(status["paused_from"], "shadow");
    let again = expect(&proxy, "pause", "", 409).await;
    assert!(
        again["error"].as_str().unwrap().contains("already paused"),
        "{again:#}"
    );

    let set = expect(&proxy, "weight", r#"{"percent": 30}"#, 200).await;
    assert_eq!(phase_weight(&set), ("paused", 30.0), "{set:#}");
    let status = proxy.status().await;
    assert_eq!(phase_weight(&status), ("paused", 30.0), "{status:#}");
    let metrics = proxy.metrics().await;
    assert_weight_gauges(&metrics, 30.0);
    assert_build_and_process_series(&metrics);
    assert_eq!(
        harness::metric(&metrics, r#"understudy_rollout_phase{phase="paused"}"#),
        Some(1.0)
    );
    let served = candidate_share(&infer, 200).await;
    assert!(
        (30..=90).contains(&served),
        "{served} of 200 on the candidate at 30%"
    );

    let resumed = expect(&proxy, "resume", "", 200).await;
    assert_eq!(phase_weight(&resumed), ("canary", 30.0), "{resumed:#}");

    // Invalid weights change nothing and say what is expected.
    for bad in [r#"{"percent": 150}"#, r#"{"percent": -5}"#] {
        let error = expect(&proxy, "weight", bad, 409).await;
        let message = error["error"].as_str().unwrap();
        assert!(message.contains("between 0 and 100"), "{bad}: {error:#}");
    }
    for bad in [r#"{"pct": 10}"#, "ten percent", r#"{"percent": "10"}"#] {
        let error = expect(&proxy, "weight", bad, 400).await;
        let message = error["error"].as_str().unwrap();
        assert!(message.contains("percent"), "{bad}: {error:#}");
    }
    let error = expect(&proxy, "jump", "", 404).await;
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("unknown rollout command")
    );
    let status = proxy.status().await;
    assert_eq!(phase_weight(&status), ("canary", 30.0), "{status:#}");

    let promoted = expect(&proxy, "promote", "", 200).await;
    assert_eq!(phase_weight(&promoted), ("promoted", 100.0), "{promoted:#}");
    assert_eq!(candidate_share(&infer, 20).await, 20);
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(&metrics, r#"understudy_rollout_phase{phase="promoted"}"#),
        Some(1.0)
    );
    assert_weight_gauges(&metrics, 100.0);
    for refused in ["resume", "pause", "promote"] {
        let error = expect(&proxy, refused, "", 409).await;
        assert!(
            error["error"].as_str().unwrap().contains("promoted"),
            "{error:#}"
        );
    }

    // Rollback after promotion is the emergency brake.
    let rolled = expect(&proxy, "rollback", "", 200).await;
    assert_eq!(phase_weight(&rolled), ("rolled_back", 0.0), "{rolled:#}");
    assert_eq!(candidate_share(&infer, 20).await, 0);
    let error = expect(&proxy, "rollback", "", 409).await;
    assert!(
        error["error"].as_str().unwrap().contains("rolled_back"),
        "{error:#}"
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(&metrics, "understudy_rollbacks_total"),
        Some(1.0)
    );
    assert_weight_gauges(&metrics, 0.0);

    let status = proxy.status().await;
    let actions: Vec<&str> = status["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["manual"] == true)
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 5, "{status:#}");
    assert!(actions[1].contains("30"), "{actions:?}");
    assert_eq!(
        actions[3..],
        ["manual promote", "manual rollback"],
        "{actions:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_rollback_is_posted_to_an_https_webhook_verified_by_webhook_ca() {
    let (stable, candidate) = backends().await;
    let dir = harness::TempDir::new("manual-https-webhook");
    // The receiver's certificate is for localhost, from a private CA that
    // only `webhook_ca` names.
    let pki = Pki::generate(&dir.0);
    let hook = TlsUpstream::start(&server_config(&pki.server, None), "{}").await;
    let rollout = format!(
        "{}webhook = \"{}/rollout-events\"\nwebhook_ca = \"{}\"\n",
        manual_rollout(&dir),
        hook.url(),
        pki.ca_pem.display()
    );
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &rollout).await;

    let rolled = expect(&proxy, "rollback", "", 200).await;
    assert_eq!(phase_weight(&rolled), ("rolled_back", 0.0), "{rolled:#}");
    assert!(
        hook.wait_for_requests(1, Duration::from_secs(10)).await,
        "no event reached the webhook"
    );
    let received = &hook.received()[0];
    assert_eq!(received.request.method, Method::POST);
    assert_eq!(received.request.path(), "/rollout-events");
    assert_eq!(received.sni.as_deref(), Some("localhost"));
    let event: Value = serde_json::from_slice(&received.request.body).unwrap();
    assert_eq!(event["event"], "phase_change", "{event:#}");
    assert_eq!(event["from"], "shadow", "{event:#}");
    assert_eq!(event["to"], "rolled_back", "{event:#}");
    assert_eq!(event["decision"]["action"], "manual rollback", "{event:#}");
    proxy.stop().await;
}

#[tokio::test]
async fn admin_token_guards_every_post() {
    let (stable, candidate) = backends().await;
    let dir = harness::TempDir::new("manual-token");
    let text = harness::config_text(&stable.url(), Some(&candidate.url()), &manual_rollout(&dir))
        .replacen("[admin]\n", "[admin]\ntoken = \"s3cret\"\n", 1);
    let proxy = harness::start_text(&text).await;

    let steps = [
        ("pause", "", "paused"),
        ("weight", r#"{"percent": 10}"#, "paused"),
        ("resume", "", "canary"),
        ("promote", "", "promoted"),
        ("rollback", "", "rolled_back"),
    ];
    let mut phase = "shadow";
    for (command, body, next) in steps {
        for token in [None, Some("wrong"), Some("S3CRET")] {
            let (code, value) = post_with(&proxy, command, body, token).await;
            assert_eq!(code, 401, "{command} with {token:?}: {value:#}");
            assert!(
                value["error"].as_str().unwrap().contains("token"),
                "{value:#}"
            );
        }
        // Refused commands changed nothing; reads need no token.
        let status = proxy.status().await;
        assert_eq!(status["phase"], phase, "{status:#}");
        let (code, value) = post_with(&proxy, command, body, Some("s3cret")).await;
        assert_eq!(code, 200, "{command} with the token: {value:#}");
        assert_eq!(value["phase"], next, "{value:#}");
        phase = next;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_rollout_section_the_endpoints_answer_409() {
    let (stable, candidate) = backends().await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
    for (command, body) in [
        ("pause", ""),
        ("resume", ""),
        ("promote", ""),
        ("rollback", ""),
        ("weight", r#"{"percent": 30}"#),
    ] {
        let value = expect(&proxy, command, body, 409).await;
        let message = value["error"].as_str().unwrap();
        assert!(
            message.contains("no rollout is configured"),
            "{command}: {value:#}"
        );
    }
    let status = proxy.status().await;
    assert_eq!(phase_weight(&status), ("shadow", 0.0), "{status:#}");
    assert_eq!(status["rollout_configured"], false, "{status:#}");
    let infer = format!("{}/v2/models/m/infer", proxy.url);
    assert_eq!(candidate_share(&infer, 20).await, 0);
    // Still shadowing: the candidate gets every request as a mirror.
    assert!(
        candidate
            .wait_for_requests(20, Duration::from_secs(5))
            .await
    );
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(&metrics, r#"understudy_rollout_phase{phase="shadow"}"#),
        Some(1.0)
    );
    assert_weight_gauges(&metrics, 0.0);
    proxy.stop().await;
}
