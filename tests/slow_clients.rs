//! Slow and hostile clients cost themselves, not the backend: slow uploads
//! never hold the serving backend's connection slots (request buffering),
//! a trickled upload is cut off by the whole-body deadline, and a wait for
//! a slot that runs out is the proxy's 503, never the backend's failure.

mod support;

use std::time::Duration;

use http::Method;
use support::harness::{self, metric};
use support::{FakeUpstream, Reply, http_client, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OK_BODY: &str = r#"{"predictions":[1]}"#;

fn count(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or(0.0)
}

/// One worker, so the backend's `max_connections` is not divided further.
fn config(stable: &str, max_connections: usize, timeout: &str, listen: &str) -> String {
    let text = harness::config_text(stable, None, "");
    let text = text.replacen("[listen]\n", &format!("[listen]\nworkers = 1\n{listen}"), 1);
    let backend = format!("url = \"{stable}\"\ntimeout = \"5s\"\n");
    assert!(text.contains(&backend), "harness config changed:\n{text}");
    text.replacen(
        &backend,
        &format!(
            "url = \"{stable}\"\ntimeout = \"{timeout}\"\nmax_connections = {max_connections}\n"
        ),
        1,
    )
}

/// A client that sends its request head, then one body byte every 200 ms.
async fn trickle(addr: String) -> String {
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = "POST /v1/models/m:predict HTTP/1.1\r\nHost: p\r\n\
                Content-Length: 1000\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    for _ in 0..200 {
        if stream.write_all(b"x").await.is_err() {
            break;
        }
        let mut chunk = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_hold_no_backend_slot_and_are_cut_off_by_the_deadline() {
    let stable = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    // Two slots to stable; ten clients trickling their bodies.
    let text = config(&stable.url(), 2, "5s", "request_buffer_timeout = \"2s\"\n");
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    let slow: Vec<_> = (0..10)
        .map(|_| tokio::spawn(trickle(addr.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile, other clients are served at once: the slow uploads are
    // buffered by the proxy and never reach stable.
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    for i in 0..20 {
        let (status, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(status, 200, "request {i}");
        assert_eq!(&body[..], OK_BODY.as_bytes());
    }
    assert_eq!(
        stable.received().await.len(),
        20,
        "no slow upload reached stable"
    );

    for upload in slow {
        let response = upload.await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 408"),
            "a trickled upload ends with 408 at the deadline, got:\n{response}"
        );
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        count(
            &metrics,
            r#"understudy_requests_rejected_total{reason="client_timeout"}"#
        ),
        10.0
    );
    assert_eq!(stable.received().await.len(), 20);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_a_busy_backend_slot_is_the_proxys_503_not_the_backends_fault() {
    // Stable answers at once but takes 3 s over its body: the first
    // request holds the only slot for that long, past the 1 s wait.
    let parts = [r#"{"predictions":"#, "[1]}"];
    let stable = FakeUpstream::start(Reply::chunked(parts, Duration::from_secs(3))).await;
    let text = config(&stable.url(), 1, "1s", "");
    let proxy = harness::start_text(&text).await;
    let url = format!("{}/v1/models/m:predict", proxy.url);

    // The first request takes the only slot.
    let first = {
        let url = url.clone();
        tokio::spawn(async move { send(&http_client(), Method::POST, &url, &[], "{}").await })
    };
    assert!(stable.wait_for_requests(1, Duration::from_secs(10)).await);
    let (status, _, body) = send(&http_client(), Method::POST, &url, &[], "{}").await;
    assert_eq!(status, 503, "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("upstream busy"));
    let (first_status, _, first_body) = first.await.unwrap();
    assert_eq!(first_status, 200);
    assert_eq!(&first_body[..], OK_BODY.as_bytes());

    let metrics = proxy.metrics().await;
    assert_eq!(
        count(
            &metrics,
            r#"understudy_requests_rejected_total{reason="backend_busy"}"#
        ),
        1.0
    );
    let stable_timeouts = count(
        &metrics,
        r#"understudy_upstream_failures_total{backend="stable",role="serve",kind="timeout"}"#,
    );
    assert_eq!(
        stable_timeouts, 0.0,
        "the proxy's queue is not stable's timeout"
    );
    let stable_errors = count(
        &metrics,
        r#"understudy_requests_total{backend="stable",role="serve",status_class="error"}"#,
    );
    assert_eq!(stable_errors, 0.0);
    assert_eq!(
        stable.received().await.len(),
        1,
        "the queued request never reached stable"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_frees_the_backend_slot() {
    let stable = FakeUpstream::builder()
        .respond(Reply::large(64 << 20))
        .route("/small", Reply::json(200, OK_BODY))
        .start()
        .await;
    // Nothing is spilled to disk: only the send timeout frees the slot.
    let listen = "send_timeout = \"1s\"\nresponse_spill_bytes = 0\n";
    let text = config(&stable.url(), 1, "10s", listen);
    let proxy = harness::start_text(&text).await;
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();

    // A reader with a tiny receive window that never reads: the proxy's
    // writes stall once the socket buffers are full.
    let mut slow = slow_reader(addr, "/large").await;
    assert!(stable.wait_for_requests(1, Duration::from_secs(10)).await);

    // It holds the only slot until the send timeout cuts it off; then the
    // next client gets the slot, well within its 10 s wait.
    let url = format!("{}/small", proxy.url);
    let (status, _, body) = send(&http_client(), Method::GET, &url, &[], "").await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(&body[..], OK_BODY.as_bytes());

    // The slow reader's connection is closed: draining it ends.
    let mut sink = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut sink)).await;
    assert!(drained.is_ok(), "the stalled connection was closed");
    assert!(sink.len() < 64 << 20, "it never got the whole answer");
    proxy.stop().await;
}

/// Connects with a small receive window and sends `GET path`, reading
/// nothing yet.
async fn slow_reader(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The body of a raw HTTP/1.1 answer read to its end.
fn body_of(response: &[u8]) -> &[u8] {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head");
    &response[end + 4..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_its_whole_answer_from_disk_while_the_backend_serves_others() {
    const SIZE: u64 = 8 << 20;
    let stable = FakeUpstream::builder()
        .respond(Reply::large(SIZE))
        .route("/small", Reply::json(200, OK_BODY))
        .start()
        .await;
    // One slot, a short wait for it, and no send timeout in the way: only
    // reading the answer ahead can free the slot for the next client.
    let listen = "send_timeout = \"60s\"\n";
    let text = config(&stable.url(), 1, "3s", listen);
    let proxy = harness::start_text(&text).await;
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();

    let mut slow = slow_reader(addr, "/large").await;
    assert!(stable.wait_for_requests(1, Duration::from_secs(10)).await);

    // The slow reader has read nothing, yet the slot is free.
    let url = format!("{}/small", proxy.url);
    let (status, _, body) = send(&http_client(), Method::GET, &url, &[], "").await;
    assert_eq!(status, 200, "{body:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(count(&metrics, "understudy_responses_spilled_total"), 1.0);
    assert_eq!(
        count(
            &metrics,
            r#"understudy_requests_rejected_total{reason="backend_busy"}"#
        ),
        0.0
    );

    // And it still gets every byte, in order, as stable sent them.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut answer))
        .await
        .expect("the slow reader's answer ends")
        .unwrap();
    let direct = stable_answer(&stable.url()).await;
    assert_eq!(body_of(&answer).len() as u64, SIZE);
    assert!(
        body_of(&answer) == &direct[..],
        "the spilled answer is stable's, byte for byte"
    );
    proxy.stop().await;
}

/// Stable's own answer, fetched directly.
async fn stable_answer(url: &str) -> bytes::Bytes {
    let (status, _, body) = send(
        &http_client(),
        Method::GET,
        &format!("{url}/large"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_readers_hold_neither_the_backend_nor_their_answers_in_memory() {
    use support::memory::RssSampler;
    // Answers longer than a loopback socket's send buffer (up to 4 MiB),
    // so the kernel cannot take them off the proxy's hands.
    const READERS: usize = 20;
    const SIZE: u64 = 8 << 20;
    let stable = FakeUpstream::builder()
        .respond(Reply::large(SIZE))
        .route("/small", Reply::json(200, OK_BODY))
        .start()
        .await;
    let text = config(&stable.url(), 4, "3s", "send_timeout = \"60s\"\n");
    let proxy = harness::start_text(&text).await;
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();

    let rss = RssSampler::start();
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(slow_reader(addr, "/large").await);
    }
    assert!(
        stable
            .wait_for_requests(READERS, Duration::from_secs(30))
            .await
    );
    // Everyone else is served throughout.
    let url = format!("{}/small", proxy.url);
    for _ in 0..10 {
        let (status, _, body) = send(&http_client(), Method::GET, &url, &[], "").await;
        assert_eq!(status, 200, "{body:?}");
    }
    let spilled = "understudy_responses_spilled_total";
    let metrics = proxy
        .wait_metric(spilled, READERS as f64, Duration::from_secs(10))
        .await;
    assert_eq!(count(&metrics, spilled), READERS as f64);
    // The answers add up to 160 MiB, and none of them is held in memory:
    // what stays per reader is its read-ahead and its connection's write
    // buffer (and, in this process, the fake backend's own buffers).
    let grew = rss.finish();
    eprintln!(
        "{READERS} slow readers of {} MiB: RSS +{} KiB",
        SIZE >> 20,
        grew >> 10
    );
    let answers = READERS as u64 * SIZE;
    assert!(
        grew < answers / 4,
        "RSS grew by {} MiB with {READERS} slow readers of {} MiB answers",
        grew >> 20,
        answers >> 20
    );
    drop(readers);
    proxy.stop().await;
}

/// An HTTP/2 request body that never ends, for streams that open and then
/// send nothing.
struct Silent(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for Silent {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(http_body::Frame::data(c))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_that_never_send_their_bodies_hold_no_backend_slot() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let stable = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let text = config(&stable.url(), 2, "5s", "");
    let proxy = harness::start_text(&text).await;
    let url = format!("{}/v1/models/m:predict", proxy.url);

    // 3 connections x 20 streams, each with a body that never comes.
    let mut open = Vec::new();
    for _ in 0..3 {
        let client: Client<_, Silent> = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();
        for _ in 0..20 {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let request = http::Request::post(&url)
                .header("content-length", "100")
                .body(Silent(rx))
                .unwrap();
            let client = client.clone();
            open.push((
                tx,
                tokio::spawn(async move { client.request(request).await }),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let client = support::h2c_client();
    for i in 0..10 {
        let (status, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(status, 200, "request {i}");
        assert_eq!(&body[..], OK_BODY.as_bytes());
    }
    assert_eq!(
        stable.received().await.len(),
        10,
        "no silent stream reached stable"
    );
    for (tx, request) in open {
        drop(tx);
        request.abort();
    }
    proxy.stop().await;
}

/// Opens a connection and sends `sent`, a request it never finishes.
async fn unfinished(addr: std::net::SocketAddr, sent: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trickle_their_first_request_cost_only_the_bytes_they_sent() {
    use support::memory::RssSampler;
    const CLIENTS: usize = 400;
    let stable = FakeUpstream::start(Reply::json(200, OK_BODY)).await;
    let text = config(&stable.url(), 4, "3s", "max_connections = 2000\n");
    let proxy = harness::start_text(&text).await;
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();
    let slow_head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: p\r\nX-Pad: a\r\n";
    let slow_body = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: p\r\n\
                      Content-Length: 1000\r\n\r\n{\"instances\":";

    let rss = RssSampler::start();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let sent: &[u8] = if i % 2 == 0 { slow_head } else { slow_body };
        clients.push(unfinished(addr, sent).await);
    }
    let open = "understudy_connections_open";
    proxy
        .wait_metric(open, CLIENTS as f64, Duration::from_secs(10))
        .await;
    // Let every connection read what its client sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, body) = send(&http_client(), Method::POST, &proxy.url, &[], "{}").await;
    assert_eq!(status, 200, "{body:?}");
    let grew = rss.finish();
    eprintln!(
        "{CLIENTS} unfinished first requests: RSS +{} KiB, {} bytes each",
        grew >> 10,
        grew / CLIENTS as u64
    );
    // Given to hyper, each would hold an 8 KiB write buffer, an 8 KiB read
    // buffer and hyper's state: over 24 KiB (this process also holds the
    // test's client sockets). Read by the listener, a client costs its
    // bytes, its task and its socket: well under that.
    assert!(
        grew < CLIENTS as u64 * 16 * 1024,
        "RSS grew by {} KiB for {CLIENTS} unfinished requests ({} bytes each)",
        grew >> 10,
        grew / CLIENTS as u64
    );
    assert_eq!(
        stable.request_count(),
        1,
        "no unfinished request was sent on"
    );
    drop(clients);
    proxy.stop().await;
}
