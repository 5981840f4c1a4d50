//! HTTPS backends behind the proxy: a private CA (`backends.X.ca`), SNI and
//! hostname verification, certificates from an unknown CA (502 and a log
//! line naming the problem), a self-signed `CA:TRUE` certificate given as
//! its own `ca` (trusted, name still checked), upstream mutual TLS
//! (`cert`/`key`), h2 to a candidate via ALPN (`http2 = true`), and
//! rustls's own log records under `RUST_LOG`. Certificates are made at test
//! time (`support::tls`); TLS in front of the proxy is in `tls.rs`.

mod support;

use std::path::Path;
use std::time::Duration;

use http::{Method, Version};
use serde_json::Value;
use support::harness::series::failures;
use support::harness::{self, Binary, TempDir};
use support::tls::{Leaf, Pki, TlsUpstream, server_config};
use support::{FakeUpstream, Reply, http_client, send};

const WAIT: Duration = Duration::from_secs(10);
const TLS_BODY: &str = r#"{"predictions":[1,2,3]}"#;

/// A TOML string holding `path`.
fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// Full config text: listeners on ephemeral ports and the given backend
/// sections.
fn config(backends: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n{backends}\n"
    )
}

/// A `[backends.NAME]` section with `url` and extra `keys`.
fn backend(name: &str, url: &str, keys: &str) -> String {
    format!("[backends.{name}]\nurl = \"{url}\"\ntimeout = \"5s\"\n{keys}\n")
}

#[tokio::test]
async fn https_stable_with_a_private_ca_is_verified_by_hostname() {
    let dir = TempDir::new("tls-up-ca");
    let pki = Pki::generate(&dir.0);
    let up = TlsUpstream::start(&server_config(&pki.server, None), TLS_BODY).await;
    let ca = format!("ca = {}\n", toml_path(&pki.ca_pem));
    let proxy = harness::start_text(&config(&backend("stable", &up.url(), &ca))).await;
    let (status, headers, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/v1/models/m:predict", proxy.url),
        &[("content-type", "application/json")],
        "{\"instances\":[1]}",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, TLS_BODY);
    assert_eq!(headers["x-upstream"], "tls");
    let received = up.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].sni.as_deref(),
        Some("localhost"),
        "SNI comes from the URL's host"
    );
    assert_eq!(received[0].request.path(), "/v1/models/m:predict");
    assert_eq!(received[0].request.body, "{\"instances\":[1]}");
    assert_eq!(received[0].request.version, Version::HTTP_11);
    proxy.stop().await;
}

#[tokio::test]
async fn https_stable_whose_certificate_names_another_host_gets_502() {
    let dir = TempDir::new("tls-up-name");
    let pki = Pki::generate(&dir.0);
    // Signed by the trusted CA, but for another name than the URL's.
    let leaf = pki.ca.server_cert_for("model server", &["model.internal"]);
    let up = TlsUpstream::start(&server_config(&leaf, None), TLS_BODY).await;
    let ca = format!("ca = {}\n", toml_path(&pki.ca_pem));
    let proxy = harness::start_text(&config(&backend("stable", &up.url(), &ca))).await;
    let (status, _, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/predict", proxy.url),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 502);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["backend"], "stable");
    assert!(
        up.received().is_empty(),
        "no request may reach an unverified server"
    );
    proxy
        .wait_metric(&failures("stable", "serve", "connect"), 1.0, WAIT)
        .await;
    proxy.stop().await;
}

/// A backend serving a self-signed certificate marked `CA:TRUE` (as
/// `openssl req -x509` makes one), valid for `localhost` only; and the
/// `ca` key naming that very certificate.
async fn self_signed_backend(dir: &TempDir) -> (TlsUpstream, String) {
    let leaf = Leaf::self_signed_ca("self-signed model server", &["localhost"]);
    let (pem, _) = leaf.write(&dir.0, "self-signed");
    let up = TlsUpstream::start(&server_config(&leaf, None), TLS_BODY).await;
    (up, format!("ca = {}\n", toml_path(&pem)))
}

/// Starts the binary with `stable` at `url` and the extra `keys`, sends it
/// one request, and checks that it failed as a connect failure of
/// stable's without reaching `up`. Returns the running binary.
async fn refused_by_the_binary(dir: &TempDir, up: &TlsUpstream, url: &str, keys: &str) -> Binary {
    let path = dir.path("understudy.toml");
    std::fs::write(&path, config(&backend("stable", url, keys))).unwrap();
    let binary = Binary::start(&path, &[]).await;
    let (status, _, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/predict", binary.url),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 502, "{body:?}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["backend"], "stable");
    assert!(
        up.received().is_empty(),
        "no request may reach an unverified server"
    );
    let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
    assert_eq!(
        harness::metric(&metrics, &failures("stable", "serve", "connect")),
        Some(1.0),
        "{metrics}"
    );
    binary
}

#[tokio::test]
async fn a_self_signed_ca_certificate_given_as_its_own_ca_is_trusted() {
    let dir = TempDir::new("tls-up-pin");
    let (up, ca) = self_signed_backend(&dir).await;
    let proxy = harness::start_text(&config(&backend("stable", &up.url(), &ca))).await;
    let (status, headers, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/predict", proxy.url),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(body, TLS_BODY);
    assert_eq!(headers["x-upstream"], "tls");
    assert_eq!(up.received().len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn a_pinned_certificate_must_still_name_the_host_of_the_url() {
    let dir = TempDir::new("tls-up-pin-name");
    let (up, ca) = self_signed_backend(&dir).await;
    // The certificate names localhost only; the URL has the address.
    let url = format!("https://127.0.0.1:{}", up.addr().port());
    let mut binary = refused_by_the_binary(&dir, &up, &url, &ca).await;
    let words = "the backend's certificate is not valid for 127.0.0.1, the host in \
                 backends.stable.url (it names localhost): put one of its names in \
                 backends.stable.url";
    binary
        .wait_for_log(
            "saying the certificate does not name 127.0.0.1",
            WAIT,
            |l| l.contains(words),
        )
        .await;
    binary.signal("TERM");
    assert!(binary.wait(WAIT).await.success());
}

#[tokio::test]
async fn a_self_signed_certificate_other_than_the_one_in_ca_is_refused_in_words() {
    let dir = TempDir::new("tls-up-pin-other");
    let (up, _) = self_signed_backend(&dir).await;
    let other = Leaf::self_signed_ca("another self-signed server", &["localhost"]);
    let (other_pem, _) = other.write(&dir.0, "other-self-signed");
    let ca = format!("ca = {}\n", toml_path(&other_pem));
    let mut binary = refused_by_the_binary(&dir, &up, &up.url(), &ca).await;
    let words = format!(
        "the backend's certificate is not signed by the CA in backends.stable.ca ({}): \
         point backends.stable.ca at the CA that issued it, or at the certificate itself \
         if it is self-signed",
        other_pem.display()
    );
    binary
        .wait_for_log(
            "saying the certificate is not signed by the CA",
            WAIT,
            |l| l.contains(&words),
        )
        .await;
    binary.signal("TERM");
    assert!(binary.wait(WAIT).await.success());
}

#[tokio::test]
async fn https_stable_signed_by_an_unknown_ca_gets_502_and_the_log_says_why() {
    let dir = TempDir::new("tls-up-wrong-ca");
    let pki = Pki::generate(&dir.0);
    // Stable's certificate comes from the other CA; the proxy trusts only ours.
    let up = TlsUpstream::start(&server_config(&pki.other_server, None), TLS_BODY).await;
    let ca = format!("ca = {}\n", toml_path(&pki.ca_pem));
    let path = dir.path("understudy.toml");
    std::fs::write(&path, config(&backend("stable", &up.url(), &ca))).unwrap();
    let mut binary = Binary::start(&path, &[]).await;

    let (status, headers, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/predict", binary.url),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "application/json");
    let json: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("502 body is not JSON ({e}): {body:?}"));
    assert_eq!(json["backend"], "stable");
    assert!(json["error"].is_string(), "{json}");
    assert!(up.received().is_empty());

    let metrics = support::get_text(&format!("{}/metrics", binary.admin)).await;
    assert_eq!(
        harness::metric(&metrics, &failures("stable", "serve", "connect")),
        Some(1.0),
        "{metrics}"
    );
    binary
        .wait_for_log("names the certificate problem (UnknownIssuer)", WAIT, |l| {
            l.contains("UnknownIssuer")
                && l.contains("is not signed by the CA in backends.stable.ca")
        })
        .await;
    binary.signal("TERM");
    assert!(binary.wait(WAIT).await.success());
}

/// rustls reports through the `log` crate; those records reach the
/// `RUST_LOG`-filtered log like the proxy's own lines.
#[tokio::test]
async fn rustls_log_records_reach_rust_log() {
    let dir = TempDir::new("tls-up-rustls-log");
    let pki = Pki::generate(&dir.0);
    let up = TlsUpstream::start(&server_config(&pki.server, None), TLS_BODY).await;
    let ca = format!("ca = {}\n", toml_path(&pki.ca_pem));
    let path = dir.path("understudy.toml");
    std::fs::write(&path, config(&backend("stable", &up.url(), &ca))).unwrap();
    let mut binary = Binary::start_with_rust_log(&path, &[], "info,rustls=debug").await;

    let (status, _, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/predict", binary.url),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    let from_rustls = |line: &str| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("rustls"))
        })
    };
    binary
        .wait_for_log("from rustls with RUST_LOG=rustls=debug", WAIT, from_rustls)
        .await;
    binary.signal("TERM");
    assert!(binary.wait(WAIT).await.success());
}

#[tokio::test]
async fn upstream_mtls_works_with_a_client_certificate_and_fails_without() {
    let dir = TempDir::new("tls-up-mtls");
    let pki = Pki::generate(&dir.0);
    let up = TlsUpstream::start(&server_config(&pki.server, Some(&pki.ca)), TLS_BODY).await;

    let with_cert = format!(
        "ca = {}\ncert = {}\nkey = {}\n",
        toml_path(&pki.ca_pem),
        toml_path(&pki.client_pem),
        toml_path(&pki.client_key)
    );
    let proxy = harness::start_text(&config(&backend("stable", &up.url(), &with_cert))).await;
    let url = format!("{}/predict", proxy.url);
    let (status, _, body) = send(&http_client(), Method::POST, &url, &[], "{}").await;
    assert_eq!(status, 200);
    assert_eq!(body, TLS_BODY);
    let received = up.received();
    assert_eq!(received.len(), 1);
    assert!(
        received[0].client_cert,
        "the proxy must present its client certificate"
    );
    proxy.stop().await;

    let ca_only = format!("ca = {}\n", toml_path(&pki.ca_pem));
    let proxy = harness::start_text(&config(&backend("stable", &up.url(), &ca_only))).await;
    let url = format!("{}/predict", proxy.url);
    let (status, _, body) = send(&http_client(), Method::POST, &url, &[], "{}").await;
    assert_eq!(status, 502, "{body:?}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["backend"], "stable");
    assert_eq!(
        up.received().len(),
        1,
        "no request without a client certificate"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn candidate_over_tls_with_http2_receives_h2_mirrors() {
    let dir = TempDir::new("tls-cand-h2");
    let pki = Pki::generate(&dir.0);
    let stable = FakeUpstream::start(Reply::json(200, TLS_BODY)).await;
    let candidate = TlsUpstream::start(&server_config(&pki.server, None), TLS_BODY).await;
    let keys = format!("ca = {}\nhttp2 = true\n", toml_path(&pki.ca_pem));
    let backends =
        backend("stable", &stable.url(), "") + &backend("candidate", &candidate.url(), &keys);
    let proxy = harness::start_text(&config(&backends)).await;

    let (status, _, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/v1/models/m:predict", proxy.url),
        &[],
        "{\"instances\":[2]}",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, TLS_BODY);
    assert!(
        candidate.wait_for_requests(1, WAIT).await,
        "no mirror arrived"
    );
    let mirrored = &candidate.received()[0];
    assert_eq!(mirrored.request.version, Version::HTTP_2);
    assert_eq!(mirrored.alpn.as_deref(), Some("h2"));
    assert_eq!(mirrored.sni.as_deref(), Some("localhost"));
    assert_eq!(mirrored.request.header("x-understudy-shadow"), Some("1"));
    assert_eq!(mirrored.request.path(), "/v1/models/m:predict");
    assert_eq!(mirrored.request.body, "{\"instances\":[2]}");
    proxy
        .wait_metric(r#"understudy_comparisons_total{result="match"}"#, 1.0, WAIT)
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn https_stable_without_ca_does_not_trust_a_private_ca() {
    let dir = TempDir::new("tls-up-no-ca");
    let pki = Pki::generate(&dir.0);
    let up = TlsUpstream::start(&server_config(&pki.server, None), TLS_BODY).await;
    // No `ca`: only the public roots are trusted, never a private CA.
    let proxy = harness::start_text(&config(&backend("stable", &up.url(), ""))).await;
    let (status, _, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/predict", proxy.url),
        &[],
        "{}",
    )
    .await;
    assert_eq!(status, 502, "{body:?}");
    assert!(up.received().is_empty());
    proxy
        .wait_metric(&failures("stable", "serve", "connect"), 1.0, WAIT)
        .await;
    proxy.stop().await;
}

#[tokio::test]
async fn check_names_an_unreadable_backend_ca_and_client_key() {
    let dir = TempDir::new("tls-up-check");
    let pki = Pki::generate(&dir.0);
    let missing_ca = dir.path("missing-ca.pem");
    let missing_key = dir.path("missing-client.key");
    let keys = format!(
        "ca = {}\ncert = {}\nkey = {}\n",
        toml_path(&missing_ca),
        toml_path(&pki.client_pem),
        toml_path(&missing_key)
    );
    let path = dir.path("understudy.toml");
    std::fs::write(
        &path,
        config(&backend("stable", "https://localhost:8443", &keys)),
    )
    .unwrap();
    let output = harness::run_cli(&["check", "-c", path.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "check must fail: {text}");
    assert!(text.contains("backends.stable.ca"), "{text}");
    assert!(text.contains(&missing_ca.display().to_string()), "{text}");
    assert!(text.contains("backends.stable.key"), "{text}");
    assert!(text.contains(&missing_key.display().to_string()), "{text}");
}
