//! `POST /reload` on the real binary: guarded by the admin token like the
//! other POSTs, it re-reads the config file as SIGHUP does and answers
//! what was applied, what needs a restart, or why the file was rejected
//! (with the running config still serving); the backends' TLS files are
//! read again, so rotated certificates and CAs work without a restart.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use serde_json::Value;
use support::harness::{self, Binary, TempDir, run_cli};
use support::tls::{Pki, TlsUpstream, server_config};
use support::{FakeUpstream, Reply, http_client, send};

const TOKEN: &str = "reload-secret";
const TLS_BODY: &str = r#"{"predictions":[1,2,3]}"#;

async fn upstream() -> FakeUpstream {
    FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await
}

/// Writes `understudy.toml` (admin token set, `extra` appended) in `dir`.
fn write_config(dir: &TempDir, stable: &str, candidate: &str, extra: &str) -> PathBuf {
    let path = dir.path("understudy.toml");
    let text = harness::config_text(stable, Some(candidate), extra).replacen(
        "[admin]\n",
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn reload(binary: &Binary, token: Option<&str>) -> (u16, Value) {
    support::post_json(&format!("{}/reload", binary.admin), "", token).await
}

/// Sends `n` requests through the proxy, each answered 200.
async fn send_many(binary: &Binary, n: usize) {
    let client = http_client();
    for _ in 0..n {
        let url = format!("{}/v2/models/m/infer", binary.url);
        let (code, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(code, 200, "{body:?}");
    }
}

/// Whether requests sent now are mirrored to `candidate`.
async fn mirrors(binary: &Binary, candidate: &FakeUpstream) -> bool {
    let before = candidate.request_count();
    send_many(binary, 5).await;
    candidate
        .wait_for_requests(before + 5, Duration::from_secs(2))
        .await
}

async fn stop(mut binary: Binary) {
    binary.signal("TERM");
    let status = binary.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status:?}");
}

#[tokio::test]
async fn reload_needs_the_bearer_token_like_the_other_posts() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("reload-auth");
    let config = write_config(&dir, &stable.url(), &candidate.url(), "");
    let binary = Binary::start(&config, &[]).await;
    let pause = format!("{}/rollout/pause", binary.admin);
    for token in [None, Some("wrong")] {
        let (code, body) = reload(&binary, token).await;
        let (other, other_body) = support::post_json(&pause, "", token).await;
        assert_eq!(
            (code, other),
            (401, 401),
            "{token:?}: {body} / {other_body}"
        );
        assert_eq!(body, other_body);
    }
    let (code, body) = reload(&binary, Some(TOKEN)).await;
    assert_eq!(code, 200, "{body:#}");
    stop(binary).await;
}

#[tokio::test]
async fn reload_applies_hot_keys_and_reports_restart_only_ones() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("reload-apply");
    let (s, c) = (stable.url(), candidate.url());
    let config = write_config(&dir, &s, &c, "[shadow]\npercent = 100\n");
    let binary = Binary::start(&config, &[]).await;
    assert!(mirrors(&binary, &candidate).await);

    let changed = "[shadow]\npercent = 0\n\n[compare]\nthreads = 3\n";
    write_config(&dir, &s, &c, changed);
    let (code, body) = reload(&binary, Some(TOKEN)).await;
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(body["applied"], serde_json::json!(["shadow"]), "{body:#}");
    assert_eq!(
        body["needs_restart"],
        serde_json::json!(["compare.threads"]),
        "{body:#}"
    );
    assert!(!mirrors(&binary, &candidate).await, "still mirroring at 0%");
    let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
    let success = r#"understudy_config_reloads_total{result="success"}"#;
    assert_eq!(harness::metric(&metrics, success), Some(1.0));
    stop(binary).await;
}

#[tokio::test]
async fn a_rejected_file_answers_the_check_text_and_the_old_config_serves() {
    let (stable, candidate) = (upstream().await, upstream().await);
    let dir = TempDir::new("reload-reject");
    let (s, c) = (stable.url(), candidate.url());
    let config = write_config(&dir, &s, &c, "[shadow]\npercent = 100\n");
    let binary = Binary::start(&config, &[]).await;

    let cases = [
        ("[shadow]\npercent = 0\nmax_in_flight = -3\n", 422),
        ("[shadow]\npercent = 0\n[[[", 400),
    ];
    for (extra, status) in cases {
        write_config(&dir, &s, &c, extra);
        let check = run_cli(&["check", "-c", config.to_str().unwrap()]).await;
        assert!(!check.status.success());
        let printed = String::from_utf8_lossy(&check.stderr).trim_end().to_owned();
        let (code, body) = reload(&binary, Some(TOKEN)).await;
        assert_eq!(code, status, "{extra}: {body:#}");
        let answered = body["error"].as_str().unwrap_or_default().trim_end();
        assert_eq!(answered, printed, "{body:#}");
        assert!(
            mirrors(&binary, &candidate).await,
            "the rejected file was applied"
        );
    }
    let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
    let error = r#"understudy_config_reloads_total{result="error"}"#;
    assert_eq!(harness::metric(&metrics, error), Some(2.0));
    stop(binary).await;
}

/// A backend that moves to a new CA, for its own certificate and for the
/// client certificates it accepts, is reachable again once the proxy's
/// `ca`, `cert` and `key` files are replaced and reloaded.
#[tokio::test]
async fn reload_rereads_a_backends_ca_and_client_certificate() {
    let dir = TempDir::new("reload-tls");
    let pki = Pki::generate(&dir.0);
    let up = TlsUpstream::start(&server_config(&pki.server, Some(&pki.ca)), TLS_BODY).await;
    let ca = pki.ca.write(&dir.path("backend-ca.pem"));
    let (cert, key) = pki.client.write(&dir.0, "proxy-client");
    let stable = format!(
        "[backends.stable]\nurl = \"{}\"\ntimeout = \"5s\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        up.url(),
        ca.display(),
        cert.display(),
        key.display()
    );
    let config = dir.path("understudy.toml");
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n{stable}"
    );
    std::fs::write(&config, text).unwrap();
    let binary = Binary::start(&config, &[]).await;
    let client = http_client();
    let url = format!("{}/predict", binary.url);
    let (code, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
    assert_eq!(code, 200, "{body:?}");
    assert_eq!(body, TLS_BODY);

    // The backend's certificate and the client CA it trusts both change.
    up.rotate(&server_config(&pki.other_server, Some(&pki.other_ca)));
    let (code, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
    assert_eq!(
        code, 502,
        "old CA and client certificate still work: {body:?}"
    );

    pki.other_ca.write(&ca);
    pki.other_client.write(&dir.0, "proxy-client");
    let (code, answer) = reload(&binary, Some(TOKEN)).await;
    assert_eq!(code, 200, "{answer:#}");
    let applied = answer["applied"].as_array().unwrap();
    assert!(
        applied.contains(&"backends.stable.tls".into()),
        "{answer:#}"
    );
    let (code, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
    assert_eq!(code, 200, "{body:?}");
    assert!(up.received().last().unwrap().client_cert);
    stop(binary).await;
}
