//! The lean HTTP/1 path against real sockets: what hyper-util's client did
//! for us (Host, origin-form, reuse, a closed connection) must still hold.

use super::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn backend(url: &str) -> config::Backend {
    config::Backend {
        name: "stable",
        url: url.parse().unwrap(),
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        http2: false,
        pool_max_idle: 8,
        max_connections: 256,
        ca: None,
        client_cert: None,
    }
}

/// An empty request for `path` on `upstream`.
fn request_for(upstream: &Upstream<Full<Bytes>>, path: &str) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = upstream.uri_for(Some(&path.parse().unwrap()));
    request
}

async fn get(upstream: &Upstream<Full<Bytes>>, path: &str) -> Result<String, UpstreamError> {
    let request = request_for(upstream, path);
    let response = upstream.send(request, Duration::from_secs(5)).await?;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

/// A raw HTTP/1.1 backend that answers each request with its request line
/// and Host header, then keeps the connection open or closes it. Returns
/// its address and a count of accepted connections.
async fn raw_backend(close_after_each: bool) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let host = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: "))
                        .unwrap_or("-")
                        .to_owned();
                    let body = format!("{line}|{host}");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(reply.as_bytes()).await.is_err() || close_after_each {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn requests_go_out_in_origin_form_with_the_backends_host() {
    let (url, _) = raw_backend(false).await;
    let upstream = Upstream::new(&backend(&url)).unwrap();
    let answer = get(&upstream, "/v1/models/m:predict?x=1").await.unwrap();
    let authority = url.trim_start_matches("http://");
    assert_eq!(
        answer,
        format!("GET /v1/models/m:predict?x=1 HTTP/1.1|{authority}")
    );
}

#[tokio::test]
async fn a_connection_is_reused_once_its_response_has_ended() {
    let (url, accepted) = raw_backend(false).await;
    let upstream = Upstream::new(&backend(&url)).unwrap();
    for _ in 0..3 {
        get(&upstream, "/").await.unwrap();
        // Lets the connection's task take it back (no timing involved).
        tokio::task::yield_now().await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_replaced() {
    let (url, accepted) = raw_backend(true).await;
    let upstream = Upstream::new(&backend(&url)).unwrap();
    for _ in 0..3 {
        get(&upstream, "/").await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // Bind and drop, so the port is very likely closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Upstream::new(&backend(&format!("http://{addr}"))).unwrap();
    let error = get(&upstream, "/").await.unwrap_err();
    assert!(matches!(error, UpstreamError::Connect { .. }), "{error}");
}

/// A backend that answers after `delay` and records the most requests it
/// had in progress at once; returns its URL, that peak and its accepted
/// connections.
async fn slow_backend(delay: Duration) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    use hyper::server::conn::http1 as server;
    use hyper_util::rt::TokioIo;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (peak, accepted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let current = Arc::new(AtomicU64::new(0));
    let (peak_seen, accepted_seen) = (peak.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let (current, peak) = (current.clone(), peak.clone());
            let service = hyper::service::service_fn(move |_request| {
                let (current, peak) = (current.clone(), peak.clone());
                async move {
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                }
            });
            tokio::spawn(server::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (format!("http://{addr}"), peak_seen, accepted_seen)
}

/// `get(upstream, "/")` running on its own task.
fn spawn_get(
    upstream: &Arc<Upstream<Full<Bytes>>>,
) -> tokio::task::JoinHandle<Result<String, UpstreamError>> {
    let upstream = upstream.clone();
    tokio::spawn(async move { get(&upstream, "/").await })
}

#[tokio::test]
async fn requests_past_the_in_flight_limit_wait_for_a_connection() {
    let (url, peak, accepted) = slow_backend(Duration::from_millis(30)).await;
    let upstream = Arc::new(Upstream::new(&backend(&url)).unwrap().with_max_in_flight(2));
    let requests: Vec<_> = (0..6).map(|_| spawn_get(&upstream)).collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), "ok");
    }
    // Without the limit all six would be in progress on six connections.
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_waiting_for_a_slot_past_its_timeout_is_busy_not_timed_out() {
    let (url, _, _) = slow_backend(Duration::from_millis(500)).await;
    let upstream = Arc::new(Upstream::new(&backend(&url)).unwrap().with_max_in_flight(1));
    let first = spawn_get(&upstream);
    // Let the first request take the only slot.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let request = request_for(&upstream, "/");
    let outcome = upstream.send(request, Duration::from_millis(100)).await;
    assert!(
        matches!(outcome, Err(UpstreamError::Busy { .. })),
        "a request that never got a slot is the proxy's queue, not a backend timeout"
    );
    assert_eq!(first.await.unwrap().unwrap(), "ok");
}

#[tokio::test]
async fn time_spent_waiting_for_a_slot_is_not_the_backends_latency() {
    let delay = Duration::from_millis(200);
    let (url, _, _) = slow_backend(delay).await;
    let upstream = Arc::new(Upstream::new(&backend(&url)).unwrap().with_max_in_flight(1));
    let asked = Instant::now();
    let first = spawn_get(&upstream);
    // Let the first request take the only slot.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The body's progress never reports its end, so the instant returned
    // is where the clock started, not where the body ended.
    let (_reporter, progress) = body_progress();
    let request = request_for(&upstream, "/");
    let (response, started) = upstream
        .send_streaming(request, Duration::from_secs(5), progress)
        .await
        .map_err(|e| e.to_string())
        .unwrap();
    // The slot came free only once the first answer (after `delay`) ended.
    assert!(
        started.duration_since(asked) >= delay,
        "the latency clock started {:?} after the first request, while it held the slot",
        started.duration_since(asked)
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    assert_eq!(first.await.unwrap().unwrap(), "ok");
}
