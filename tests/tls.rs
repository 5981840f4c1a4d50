//! TLS in front of the proxy: HTTPS clients (h2 and HTTP/1.1 via ALPN,
//! mutual TLS with `listen.tls.client_ca`), `understudy check` on unreadable
//! certificate files, and certificate reload on SIGHUP without dropping
//! established connections. Every certificate is made at test time
//! (`support::tls`), into a temp directory; HTTPS backends are in
//! `tls_upstream.rs`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use support::harness::{self, Binary, TempDir};
use support::tls::{HttpsClient, Pki, client_config, https_client};
use support::{FakeUpstream, Reply};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const WAIT: Duration = Duration::from_secs(10);
const STABLE_BODY: &str = r#"{"predictions":[0.1,0.9]}"#;

/// A TOML string holding `path`.
fn toml_path(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

/// `[listen.tls]` with the PKI's server certificate, plus `extra` keys.
fn listen_tls(pki: &Pki, extra: &str) -> String {
    format!(
        "[listen.tls]\ncert = {}\nkey = {}\n{extra}",
        toml_path(&pki.server_pem),
        toml_path(&pki.server_key)
    )
}

/// Full config text: listeners on ephemeral ports, the given listener TLS
/// section (may be empty), backend sections and any extra sections.
fn config(listen_tls: &str, backends: &str, extra: &str) -> String {
    format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n{listen_tls}\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n{backends}\n{extra}\n"
    )
}

/// A `[backends.NAME]` section with `url` and extra `keys`.
fn backend(name: &str, url: &str, keys: &str) -> String {
    format!("[backends.{name}]\nurl = \"{url}\"\ntimeout = \"5s\"\n{keys}\n")
}

/// Sends a request with `client` and reads all of it; returns the version
/// too, so tests see what ALPN chose.
async fn https_send(
    client: &HttpsClient,
    url: &str,
    body: &'static str,
) -> Result<(StatusCode, Version, http::HeaderMap, Bytes), support::BoxError> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let response = client.request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.version, parts.headers, body))
}

fn https_url(proxy: &harness::Proxy, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", proxy.running.data_addr.port())
}

async fn stable_upstream() -> FakeUpstream {
    FakeUpstream::start(Reply::json(200, STABLE_BODY)).await
}

/// An in-process proxy with a TLS listener (`listen_keys` added to its
/// `[listen.tls]`) in front of `stable`.
async fn tls_proxy(pki: &Pki, listen_keys: &str, stable: &FakeUpstream) -> harness::Proxy {
    harness::start_text(&config(
        &listen_tls(pki, listen_keys),
        &backend("stable", &stable.url(), ""),
        "",
    ))
    .await
}

#[tokio::test]
async fn https_client_negotiates_h2_and_is_served_from_a_plain_stable() {
    let dir = TempDir::new("tls-h2");
    let pki = Pki::generate(&dir.0);
    let stable = stable_upstream().await;
    let proxy = tls_proxy(&pki, "", &stable).await;
    // Offer both: the listener must prefer h2.
    let client = https_client(&client_config(&pki.ca, None, &[b"h2", b"http/1.1"]));
    let url = https_url(&proxy, "/v1/models/m:predict");
    let (status, version, headers, body) = https_send(&client, &url, "{}").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(version, Version::HTTP_2, "ALPN should have negotiated h2");
    assert_eq!(body, STABLE_BODY);
    assert_eq!(headers["x-understudy-backend"], "stable");
    let received = stable.received().await;
    assert_eq!(received.len(), 1);
    // The plain stable speaks HTTP/1.1 whatever the client spoke.
    assert_eq!(received[0].version, Version::HTTP_11);
    assert_eq!(received[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(received[0].path(), "/v1/models/m:predict");
    proxy.stop().await;
}

#[tokio::test]
async fn https_client_speaking_http1_is_served_and_marked_https() {
    let dir = TempDir::new("tls-h1");
    let pki = Pki::generate(&dir.0);
    let stable = stable_upstream().await;
    let proxy = tls_proxy(&pki, "", &stable).await;
    let client = https_client(&client_config(&pki.ca, None, &[b"http/1.1"]));
    let url = https_url(&proxy, "/predict");
    for i in 0..3 {
        let (status, version, _, body) = https_send(&client, &url, "{}").await.unwrap();
        assert_eq!(status, 200, "request {i}");
        assert_eq!(version, Version::HTTP_11, "request {i}");
        assert_eq!(body, STABLE_BODY, "request {i}");
    }
    let received = stable.received().await;
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn mtls_listener_serves_clients_with_a_certificate_and_refuses_others() {
    let dir = TempDir::new("tls-mtls-in");
    let pki = Pki::generate(&dir.0);
    let stable = stable_upstream().await;
    let client_ca = format!("client_ca = {}\n", toml_path(&pki.ca_pem));
    let proxy = tls_proxy(&pki, &client_ca, &stable).await;
    let url = https_url(&proxy, "/predict");

    for alpn in [&b"h2"[..], b"http/1.1"] {
        let with_cert = https_client(&client_config(&pki.ca, Some(&pki.client), &[alpn]));
        let (status, _, _, body) = https_send(&with_cert, &url, "{}").await.unwrap();
        assert_eq!(status, 200, "client certificate presented, ALPN {alpn:?}");
        assert_eq!(body, STABLE_BODY);
    }

    let without_cert = https_client(&client_config(&pki.ca, None, &[b"http/1.1"]));
    let refused = https_send(&without_cert, &url, "{}").await;
    assert!(
        refused.is_err(),
        "a client without a certificate must be refused, got {refused:?}"
    );
    let foreign_cert = https_client(&client_config(&pki.ca, Some(&pki.other_client), &[b"h2"]));
    let refused = https_send(&foreign_cert, &url, "{}").await;
    assert!(
        refused.is_err(),
        "a client certificate from another CA must be refused, got {refused:?}"
    );
    assert_eq!(
        stable.request_count(),
        2,
        "refused clients never reach stable"
    );
    proxy
        .wait_metric("understudy_tls_handshake_failures_total", 2.0, WAIT)
        .await;
    proxy.stop().await;
}

/// Runs `understudy check -c path`; returns (success, stdout + stderr).
async fn check(path: &Path) -> (bool, String) {
    let output = harness::run_cli(&["check", "-c", path.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn check_names_an_unreadable_listen_tls_cert() {
    let dir = TempDir::new("tls-check-cert");
    let pki = Pki::generate(&dir.0);
    let missing = dir.path("missing-server.pem");
    let tls = format!(
        "[listen.tls]\ncert = {}\nkey = {}\n",
        toml_path(&missing),
        toml_path(&pki.server_key)
    );
    let path = dir.path("understudy.toml");
    std::fs::write(
        &path,
        config(&tls, &backend("stable", "http://127.0.0.1:1", ""), ""),
    )
    .unwrap();
    let (ok, text) = check(&path).await;
    assert!(!ok, "check must fail: {text}");
    assert!(text.contains("listen.tls.cert"), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");

    // The same file with the real certificate is valid.
    std::fs::write(
        &path,
        config(
            &listen_tls(&pki, ""),
            &backend("stable", "http://127.0.0.1:1", ""),
            "",
        ),
    )
    .unwrap();
    let (ok, text) = check(&path).await;
    assert!(ok, "{text}");
}

#[tokio::test]
async fn check_names_an_unreadable_listen_tls_client_ca() {
    let dir = TempDir::new("tls-check-ca");
    let pki = Pki::generate(&dir.0);
    let missing = dir.path("missing-ca.pem");
    let tls = listen_tls(&pki, &format!("client_ca = {}\n", toml_path(&missing)));
    let path = dir.path("understudy.toml");
    std::fs::write(
        &path,
        config(&tls, &backend("stable", "http://127.0.0.1:1", ""), ""),
    )
    .unwrap();
    let (ok, text) = check(&path).await;
    assert!(!ok, "check must fail: {text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(
        text.contains("listen.tls.client_ca"),
        "the problem must name listen.tls.client_ca: {text}"
    );
}

/// Opens a TLS connection to `addr` as `localhost` with `alpn`; returns the
/// stream and the leaf certificate the server presented.
async fn connect_tls(
    addr: SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let connector = TlsConnector::from(client_config(&pki.ca, None, alpn));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the proxy");
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone();
    (stream, leaf)
}

type H1Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn h1_get(sender: &mut H1Sender, path: &str) -> (StatusCode, Bytes) {
    sender.ready().await.expect("connection still usable");
    let request = Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("request on the held connection");
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = TempDir::new("tls-reload");
    let pki = Pki::generate(&dir.0);
    let stable = stable_upstream().await;
    let path = dir.path("understudy.toml");
    std::fs::write(
        &path,
        config(
            &listen_tls(&pki, ""),
            &backend("stable", &stable.url(), ""),
            "",
        ),
    )
    .unwrap();
    let binary = Binary::start(&path, &[]).await;
    let addr: SocketAddr = binary.url.trim_start_matches("http://").parse().unwrap();

    // An established keep-alive HTTP/1.1 connection and an h2 connection.
    let (stream, old_leaf) = connect_tls(addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(old_leaf, pki.server.cert);
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (status, body) = h1_get(&mut h1, "/before").await;
    assert_eq!((status.as_u16(), &body[..]), (200, STABLE_BODY.as_bytes()));

    let (stream, _) = connect_tls(addr, &pki, &[b"h2"]).await;
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);

    // Renew: same paths, new certificate (new serial and subject) and key.
    let renewed = pki.ca.server_cert("understudy renewed server");
    assert_ne!(renewed.cert, pki.server.cert);
    std::fs::write(&pki.server_pem, &renewed.cert_pem).unwrap();
    std::fs::write(&pki.server_key, &renewed.key_pem).unwrap();
    binary.signal("HUP");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !binary.log_contains("config reloaded") {
        assert!(
            !binary.log_contains("reload rejected"),
            "reload rejected: {:?}",
            binary.logs.lock().unwrap()
        );
        assert!(tokio::time::Instant::now() < deadline, "no reload logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The held connections still work.
    let (status, body) = h1_get(&mut h1, "/after").await;
    assert_eq!((status.as_u16(), &body[..]), (200, STABLE_BODY.as_bytes()));
    h2.ready().await.expect("h2 connection still usable");
    let request = Request::builder()
        .uri("https://localhost/after-h2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = h2
        .send_request(request)
        .await
        .expect("request on held h2 connection");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);

    // A new connection sees the renewed certificate.
    let (_, new_leaf) = connect_tls(addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(
        new_leaf, renewed.cert,
        "new handshakes must use the renewed certificate"
    );
    let client = https_client(&client_config(&pki.ca, None, &[b"h2"]));
    let (status, version, _, body) = https_send(
        &client,
        &format!("https://localhost:{}/new", addr.port()),
        "{}",
    )
    .await
    .unwrap();
    assert_eq!((status.as_u16(), version), (200, Version::HTTP_2));
    assert_eq!(body, STABLE_BODY);
    let paths: Vec<String> = stable
        .received()
        .await
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/before", "/after", "/after-h2", "/new"]);
    drop(h1);
    drop(h2);
    let mut binary = binary;
    binary.signal("TERM");
    assert!(binary.wait(WAIT).await.success());
}
