//! Fault injection, client side: clients that go away mid-upload or
//! mid-download, or upload slowly. Nothing may be counted against stable
//! (its failures are what the rollout judge acts on), nothing may leak
//! (mirrors, client connections, upstream connections), memory stays
//! bounded, and the proxy keeps serving.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use support::harness;
use support::harness::series::{failures, requests, shadow};
use support::memory::RssSampler;
use support::{FakeUpstream, Reply, http_client, send};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);
const OK_BODY: &str = r#"{"predictions":[0.1,0.9]}"#;
const SHADOW: &str = "[shadow]\ntimeout = \"2s\"\n";
const RSS_BUDGET: u64 = 64 << 20;
const FAILURE_KINDS: [&str; 5] = ["connect", "timeout", "protocol", "body", "grpc"];
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
const CLIENT_ABORTED: &str = r#"understudy_requests_rejected_total{reason="client_aborted"}"#;

fn value(metrics: &str, series: &str) -> f64 {
    harness::metric(metrics, series).unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Everything the proxy writes on a raw connection until it closes it.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response stalled")
        .expect("read the response");
    String::from_utf8_lossy(&response).into_owned()
}

/// Stable's serve counters: `class` at `n` requests, nothing else, and no
/// failure of any kind.
fn assert_stable_serve(metrics: &str, class: Option<&str>, n: f64, what: &str) {
    for kind in FAILURE_KINDS {
        let series = failures("stable", "serve", kind);
        assert_eq!(value(metrics, &series), 0.0, "{what}: {series}");
    }
    for other in STATUS_CLASSES {
        let want = if Some(other) == class { n } else { 0.0 };
        let series = requests("stable", "serve", other);
        assert_eq!(value(metrics, &series), want, "{what}: {series}");
    }
}

/// How a client goes away.
#[derive(Clone, Copy, Debug)]
enum Close {
    /// Orderly close (FIN).
    Fin,
    /// Abortive close (RST).
    Reset,
}

/// One upload that breaks off: the request head, the part of the body that
/// is sent, and how the connection is closed.
struct Upload {
    name: &'static str,
    head: String,
    part: Vec<u8>,
    close: Close,
}

fn uploads() -> Vec<Upload> {
    let chunk = |n: usize| {
        let mut c = format!("{n:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b'c', n));
        c.extend_from_slice(b"\r\n");
        c
    };
    vec![
        Upload {
            // Declared under shadow.max_body_bytes: mirrored until it breaks.
            name: "content-length 200 kB, 50 kB sent, FIN",
            head: head("Content-Length: 200000"),
            part: vec![b'a'; 50_000],
            close: Close::Fin,
        },
        Upload {
            // Declared over the cap: forwarded only.
            name: "content-length 64 MiB, 4 MiB sent, RST",
            head: head(&format!("Content-Length: {}", 64 << 20)),
            part: vec![b'b'; 4 << 20],
            close: Close::Reset,
        },
        Upload {
            name: "chunked, 3 chunks sent, FIN",
            head: head("Transfer-Encoding: chunked"),
            part: [chunk(10_000), chunk(10_000), chunk(10_000)].concat(),
            close: Close::Fin,
        },
        Upload {
            name: "chunked, 3 chunks sent, RST",
            head: head("Transfer-Encoding: chunked"),
            part: [chunk(10_000), chunk(10_000), chunk(10_000)].concat(),
            close: Close::Reset,
        },
    ]
}

fn head(framing: &str) -> String {
    format!(
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: proxy\r\n\
         Content-Type: application/json\r\n{framing}\r\n\r\n"
    )
}

/// Sends the head and part of the body over raw TCP, waits until stable has
/// the request open, then goes away.
async fn abort_upload(addr: &str, upload: &Upload, stable: &FakeUpstream) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream.write_all(upload.head.as_bytes()).await.unwrap();
    stream.write_all(&upload.part).await.unwrap();
    stream.flush().await.unwrap();
    // Let the proxy forward what it got (stable accepts a connection).
    let deadline = Instant::now() + WAIT;
    while stable.open_connections() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Close::Reset = upload.close {
        stream.set_zero_linger().unwrap();
    }
    drop(stream);
}

#[tokio::test]
async fn client_aborting_mid_upload() {
    let stable = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let candidate = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), SHADOW).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let rss = RssSampler::start();
    let uploads = uploads();
    let (mut aborted_before, mut requests_before) = (0.0, 0);
    for (i, upload) in uploads.iter().enumerate() {
        abort_upload(&addr, upload, &stable).await;
        // Settled: the client connection is gone and its mirror decided.
        proxy.wait_drained(WAIT).await;
        let metrics = proxy
            .wait_metric(&shadow("skipped_body"), (i + 1) as f64, WAIT)
            .await;
        assert_stable_serve(&metrics, None, 0.0, upload.name);
        assert!(
            stable.wait_for_open_connections_at_most(0, WAIT).await,
            "{}: stable connection of the aborted upload still open",
            upload.name
        );
        // Either the proxy saw the upload break and counted it as the
        // client's, or stable never got the request.
        let aborted = value(&metrics, CLIENT_ABORTED);
        assert!(
            aborted - aborted_before == 1.0 || stable.request_count() == requests_before,
            "{}: client_aborted +{}",
            upload.name,
            aborted - aborted_before
        );
        eprintln!(
            "{}: client_aborted +{}, stable saw {} request(s) so far",
            upload.name,
            aborted - aborted_before,
            stable.request_count()
        );
        aborted_before = aborted;
        requests_before = stable.request_count();
    }
    let metrics = proxy.metrics().await;
    // Nothing broken off was mirrored, or counted as anything but skipped.
    assert_eq!(candidate.request_count(), 0);
    assert_eq!(
        value(&metrics, &shadow("skipped_body")),
        uploads.len() as f64
    );
    for result in ["sent", "error", "dropped_overload"] {
        assert_eq!(value(&metrics, &shadow(result)), 0.0, "{result}");
    }
    let comparisons: f64 = [
        "match",
        "mismatch",
        "stable_error",
        "shadow_error",
        "uncomparable",
    ]
    .iter()
    .map(|r| {
        value(
            &metrics,
            &format!(r#"understudy_comparisons_total{{result="{r}"}}"#),
        )
    })
    .sum();
    assert_eq!(comparisons, 0.0, "an aborted upload was compared");

    // The proxy keeps serving.
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    let (status, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, OK_BODY.as_bytes()));
    let metrics = proxy
        .wait_metric(r#"understudy_comparisons_total{result="match"}"#, 1.0, WAIT)
        .await;
    assert_stable_serve(&metrics, Some("2xx"), 1.0, "after the aborts");
    drop(client);
    proxy.wait_drained(WAIT).await;
    assert!(stable.open_connections() <= 1);
    assert!(candidate.open_connections() <= 1);
    let grew = rss.finish();
    assert!(grew < RSS_BUDGET, "RSS grew by {} MiB", grew >> 20);
    eprintln!("aborted uploads: RSS +{} KiB", grew >> 10);
    proxy.stop().await;
    assert!(stable.wait_for_open_connections_at_most(0, WAIT).await);
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}

#[tokio::test]
async fn client_aborting_mid_download() {
    const SIZE: u64 = 200 << 20;
    const READ: usize = 4 << 20;
    let stable = FakeUpstream::builder()
        .respond(Reply::large(SIZE))
        .route("/ok", Reply::json(200, OK_BODY))
        .start()
        .await;
    let candidate = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), SHADOW).await;
    let rss = RssSampler::start();

    let client = http_client();
    let request = Request::get(format!("{}/model.bin", proxy.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.expect("response head");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        SIZE.to_string().as_str()
    );
    let mut body = response.into_body();
    let mut received = 0usize;
    while received < READ {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("download stalled")
            .expect("body ended early")
            .expect("body broke off");
        received += frame.data_ref().map_or(0, Bytes::len);
    }
    let dropped = Instant::now();
    drop(body);
    drop(client);

    // The proxy lets go of stable's connection, whose body it cannot reuse.
    assert!(
        stable.wait_for_open_connections_at_most(0, WAIT).await,
        "stable connection of the abandoned download still open"
    );
    let released = dropped.elapsed();
    proxy.wait_drained(WAIT).await;
    // Not stable's fault; the pair is uncomparable (stable's copy was over
    // the cap long before the client left).
    let metrics = proxy
        .wait_metric(
            r#"understudy_comparisons_total{result="uncomparable"}"#,
            1.0,
            WAIT,
        )
        .await;
    assert_stable_serve(&metrics, Some("2xx"), 1.0, "abandoned download");
    assert_eq!(value(&metrics, &shadow("sent")), 1.0);
    assert_eq!(value(&metrics, CLIENT_ABORTED), 0.0);
    let grew = rss.finish();
    assert!(grew < RSS_BUDGET, "RSS grew by {} MiB", grew >> 20);
    eprintln!(
        "abandoned download: read {} MiB of {} MiB, stable connection released {released:?} \
         after the drop; RSS +{} KiB",
        received >> 20,
        SIZE >> 20,
        grew >> 10
    );

    // The proxy keeps serving.
    let client = http_client();
    let (status, _, body) = send(&client, Method::GET, &format!("{}/ok", proxy.url), &[], "").await;
    assert_eq!((status.as_u16(), body.as_ref()), (200, OK_BODY.as_bytes()));
    drop(client);
    proxy.wait_drained(WAIT).await;
    proxy.stop().await;
    assert!(stable.wait_for_open_connections_at_most(0, WAIT).await);
    assert!(candidate.wait_for_open_connections_at_most(0, WAIT).await);
}

/// A client whose upload pauses for longer than stable's `timeout` (but
/// well within what the listener allows) is slow, not aborted: stable
/// answers as soon as the body is complete, and nothing is counted against
/// it. `backends.stable.timeout` bounds how long stable takes to answer,
/// which cannot start before the request has arrived (Envoy starts its
/// route timeout at the end of the downstream request; nginx times each
/// read and write separately).
#[tokio::test]
async fn client_uploading_slower_than_stables_timeout() {
    let stable = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let candidate = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let from = format!("url = \"{}\"\ntimeout = \"5s\"", stable.url());
    let text = harness::config_text(&stable.url(), Some(&candidate.url()), SHADOW);
    assert!(text.contains(&from), "harness config changed:\n{text}");
    let text = text.replacen(&from, &from.replace("5s", "1s"), 1);
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();

    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v1/models/m:predict HTTP/1.1\r\nHost: p\r\n\
                Content-Length: 19\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(b"{\"instances\":").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(b"[[1]]}").await.unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with(OK_BODY),
        "slow upload got:\n{response}"
    );
    let metrics = proxy
        .wait_metric(r#"understudy_comparisons_total{result="match"}"#, 1.0, WAIT)
        .await;
    assert_stable_serve(&metrics, Some("2xx"), 1.0, "slow upload");
    proxy.wait_drained(WAIT).await;
    proxy.stop().await;
}

/// A client that shuts down its sending side once its request is out (as
/// `nc -N` or a batch script does) is waiting for the answer, not gone: it
/// gets the whole response, stable's answer is counted, and the mirror is
/// compared. hyper's default treats that end-of-stream as an abort and
/// drops the request mid-flight; understudy serves half-closed connections.
#[tokio::test]
async fn client_half_closing_after_its_request_still_gets_the_answer() {
    let stable =
        FakeUpstream::start(Reply::json(200, OK_BODY).delay(Duration::from_millis(300))).await;
    let candidate = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), SHADOW).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();

    let body = r#"{"instances":[[1.0,2.0]]}"#;
    let mut stream = TcpStream::connect(&addr).await.expect("connect to proxy");
    let request = format!(
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: proxy\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Nothing more to send: close the writing half while stable thinks.
    stream.shutdown().await.unwrap();
    let response = read_until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(OK_BODY), "{response}");

    let metrics = proxy
        .wait_metric(r#"understudy_comparisons_total{result="match"}"#, 1.0, WAIT)
        .await;
    assert_stable_serve(&metrics, Some("2xx"), 1.0, "half-closed client");
    assert_eq!(value(&metrics, &shadow("sent")), 1.0);
    assert_eq!(value(&metrics, CLIENT_ABORTED), 0.0);
    proxy.wait_drained(WAIT).await;
    proxy.stop().await;
}
