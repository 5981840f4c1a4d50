//! gRPC through the proxy, without tonic: both backends are small h2c gRPC
//! servers written here (length-prefixed messages, `grpc-status` in the
//! trailers or, for trailers-only errors, in the head), the client speaks
//! h2c to the proxy and reads trailers. Covers pass-through of unary and
//! server-streaming calls, the mirrored call the candidate receives, and how
//! gRPC outcomes are compared and counted.

mod support;

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::channel_body::ChannelBody;
use support::harness;
use support::harness::series::{comparisons, failures};
use support::{Received, h2c_client};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

const WAIT: Duration = Duration::from_secs(10);
const PATH: &str = "/iris.Predictor/Predict";
/// A protobuf-looking request message: field 1, four bytes.
const REQUEST_MESSAGE: &[u8] = &[0x0a, 0x04, 0x40, 0xa0, 0x00, 0x00];

/// One gRPC message on the wire: compressed flag, 4-byte big-endian length,
/// payload.
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame.freeze()
}

fn frames(messages: &[&[u8]]) -> Bytes {
    let mut all = BytesMut::new();
    for m in messages {
        all.extend_from_slice(&grpc_frame(m));
    }
    all.freeze()
}

/// How a [`GrpcServer`] answers.
#[derive(Clone)]
enum GrpcReply {
    /// Headers, each message as a data frame (`gap` between them), then
    /// trailers with `status` (and `grpc-message` when given). With `gate`,
    /// waits for it after the first message.
    Stream {
        messages: Vec<Bytes>,
        gap: Duration,
        status: u32,
        message: Option<&'static str>,
        gate: Option<Arc<Notify>>,
    },
    /// A trailers-only response: `grpc-status` in the head, no body.
    TrailersOnly { status: u32, message: &'static str },
}

impl GrpcReply {
    fn ok(messages: &[&[u8]]) -> Self {
        Self::error(messages, 0, None)
    }

    fn error(messages: &[&[u8]], status: u32, message: Option<&'static str>) -> Self {
        GrpcReply::Stream {
            messages: messages.iter().map(|m| Bytes::copy_from_slice(m)).collect(),
            gap: Duration::ZERO,
            status,
            message,
            gate: None,
        }
    }
}

struct Shared {
    reply: GrpcReply,
    received: Mutex<Vec<Received>>,
    count: watch::Sender<usize>,
}

/// An h2c (prior knowledge) gRPC server on `127.0.0.1` that records every
/// call. Dropping it stops it.
struct GrpcServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcServer {
    async fn start(reply: GrpcReply) -> GrpcServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            reply,
            received: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        GrpcServer { addr, shared, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    async fn wait_for_calls(&self, n: usize) -> bool {
        let mut count = self.shared.count.subscribe();
        tokio::time::timeout(WAIT, count.wait_for(|&c| c >= n))
            .await
            .is_ok()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| answer(shared.clone(), request));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    {
        let mut received = shared.received.lock().unwrap();
        received.push(Received {
            method: parts.method,
            path_and_query: parts.uri.path().to_owned(),
            version: parts.version,
            headers: parts.headers,
            body,
        });
        shared.count.send_replace(received.len());
    }
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let response = match shared.reply.clone() {
        GrpcReply::TrailersOnly { status, message } => response
            .header("grpc-status", status.to_string())
            .header("grpc-message", message)
            .body(Empty::new().boxed()),
        GrpcReply::Stream {
            messages,
            gap,
            status,
            message,
            gate,
        } => {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(async move {
                for (i, m) in messages.iter().enumerate() {
                    if i > 0 && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    if i == 1
                        && let Some(gate) = &gate
                    {
                        gate.notified().await;
                    }
                    if tx.send(Frame::data(grpc_frame(m))).await.is_err() {
                        return;
                    }
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from(status));
                if let Some(message) = message {
                    trailers.insert("grpc-message", HeaderValue::from_static(message));
                }
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            response.body(ChannelBody(rx).boxed())
        }
    };
    Ok(response.unwrap())
}

/// Config with both backends over h2c and byte-wise comparison.
async fn start_proxy(stable: &GrpcServer, candidate: &GrpcServer) -> harness::Proxy {
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n\
         [backends.stable]\nurl = \"{}\"\ntimeout = \"5s\"\nhttp2 = true\n\n\
         [backends.candidate]\nurl = \"{}\"\ntimeout = \"5s\"\nhttp2 = true\n\n\
         [compare]\nformat = \"bytes\"\n",
        stable.url(),
        candidate.url()
    );
    harness::start_text(&text).await
}

/// A unary call's request to the proxy.
fn call(proxy: &harness::Proxy) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("{}{PATH}", proxy.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "5S")
        .body(Full::new(grpc_frame(REQUEST_MESSAGE)))
        .unwrap()
}

/// The response head, the whole body and the trailers of a call.
async fn unary(proxy: &harness::Proxy) -> (http::response::Parts, Bytes, Option<HeaderMap>) {
    let response = h2c_client()
        .request(call(proxy))
        .await
        .expect("gRPC call through the proxy");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("gRPC response body");
    let trailers = collected.trailers().cloned();
    (parts, collected.to_bytes(), trailers)
}

fn grpc_status(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get("grpc-status")?.to_str().ok()
}

/// Waits until `series` reached `n`, then returns the scrape.
async fn wait(proxy: &harness::Proxy, series: &str, n: f64) -> String {
    proxy.wait_metric(series, n, WAIT).await
}

/// Waits for the first comparison, whatever its outcome, and asserts it
/// was `expected` (so a wrong outcome fails at once, naming it); returns
/// the metrics scrape taken after it.
async fn compared_as(proxy: &harness::Proxy, expected: &str) -> String {
    let status = proxy
        .wait_status(WAIT, |s| {
            s["cumulative"]["comparisons"]["outcomes"]
                .as_object()
                .is_some_and(|o| o.values().filter_map(|v| v.as_u64()).sum::<u64>() >= 1)
        })
        .await;
    let outcomes = &status["cumulative"]["comparisons"]["outcomes"];
    assert_eq!(
        outcomes[expected], 1,
        "expected one {expected}, got {outcomes}"
    );
    proxy.metrics().await
}

#[tokio::test]
async fn unary_call_passes_through_and_is_mirrored_to_the_candidate() {
    let answer: &[u8] = b"\x0a\x06setosa";
    let stable = GrpcServer::start(GrpcReply::ok(&[answer])).await;
    let candidate = GrpcServer::start(GrpcReply::ok(&[answer])).await;
    let proxy = start_proxy(&stable, &candidate).await;

    let (head, body, trailers) = unary(&proxy).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_2);
    assert_eq!(head.headers["content-type"], "application/grpc");
    assert_eq!(
        body,
        grpc_frame(answer),
        "the response message arrives intact"
    );
    assert_eq!(
        grpc_status(trailers.as_ref()),
        Some("0"),
        "trailers: {trailers:?}"
    );

    let served = &stable.received()[0];
    assert_eq!(served.version, Version::HTTP_2);
    assert_eq!(served.path(), PATH);
    assert_eq!(served.body, grpc_frame(REQUEST_MESSAGE));
    assert_eq!(served.header("te"), Some("trailers"));
    assert_eq!(served.header("x-understudy-shadow"), None);

    assert!(candidate.wait_for_calls(1).await, "no mirrored call");
    let mirrored = &candidate.received()[0];
    assert_eq!(mirrored.version, Version::HTTP_2);
    assert_eq!(mirrored.method, Method::POST);
    assert_eq!(mirrored.path(), PATH);
    assert_eq!(
        mirrored.body,
        grpc_frame(REQUEST_MESSAGE),
        "same message bytes"
    );
    assert_eq!(mirrored.header("content-type"), Some("application/grpc"));
    assert_eq!(mirrored.header("te"), Some("trailers"));
    assert_eq!(mirrored.header("x-understudy-shadow"), Some("1"));
    assert_eq!(mirrored.header("grpc-timeout"), Some("5S"));
    assert_eq!(
        mirrored.header("x-request-id"),
        served.header("x-request-id"),
        "both backends see the same request id"
    );

    let metrics = compared_as(&proxy, "match").await;
    for (backend, role) in [("stable", "serve"), ("candidate", "shadow")] {
        assert_eq!(
            harness::metric(&metrics, &failures(backend, role, "grpc")),
            Some(0.0),
            "{backend} {role}"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn server_streaming_call_streams_every_message_and_the_trailers() {
    let messages: [&[u8]; 4] = [b"\x08\x01", b"\x08\x02", b"\x08\x03", b"\x08\x04"];
    let gate = Arc::new(Notify::new());
    let stable = GrpcServer::start(GrpcReply::Stream {
        messages: messages.iter().map(|m| Bytes::from_static(m)).collect(),
        gap: Duration::from_millis(30),
        status: 0,
        message: None,
        gate: Some(gate.clone()),
    })
    .await;
    let candidate = GrpcServer::start(GrpcReply::ok(&messages)).await;
    let proxy = start_proxy(&stable, &candidate).await;

    let response = h2c_client().request(call(&proxy)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Stable holds the rest of the stream until the gate opens: the first
    // message must reach the client on its own.
    let first = grpc_frame(messages[0]);
    let mut received = BytesMut::new();
    while received.len() < first.len() {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("the first message was not streamed through")
            .expect("stream ended early")
            .unwrap();
        received.extend_from_slice(frame.data_ref().expect("a data frame first"));
    }
    assert_eq!(&received[..], &first[..]);
    gate.notify_one();
    let rest = body.collect().await.unwrap();
    let trailers = rest.trailers().cloned();
    received.extend_from_slice(&rest.to_bytes());
    assert_eq!(
        received.freeze(),
        frames(&messages),
        "every message, in order"
    );
    assert_eq!(grpc_status(trailers.as_ref()), Some("0"), "{trailers:?}");

    compared_as(&proxy, "match").await;
    proxy.stop().await;
}

#[tokio::test]
async fn different_candidate_message_is_a_mismatch() {
    let stable = GrpcServer::start(GrpcReply::ok(&[b"\x0a\x06setosa"])).await;
    let candidate = GrpcServer::start(GrpcReply::ok(&[b"\x0a\x09virginica"])).await;
    let proxy = start_proxy(&stable, &candidate).await;
    let (_, body, trailers) = unary(&proxy).await;
    assert_eq!(
        body,
        grpc_frame(b"\x0a\x06setosa"),
        "the client gets stable's answer"
    );
    assert_eq!(grpc_status(trailers.as_ref()), Some("0"));
    let metrics = compared_as(&proxy, "mismatch").await;
    assert_eq!(harness::metric(&metrics, &comparisons("match")), Some(0.0));
    proxy.stop().await;
}

#[tokio::test]
async fn candidate_grpc_error_is_a_shadow_error() {
    let answer: &[u8] = b"\x0a\x06setosa";
    let stable = GrpcServer::start(GrpcReply::ok(&[answer])).await;
    let candidate = GrpcServer::start(GrpcReply::error(&[], 13, Some("model crashed"))).await;
    let proxy = start_proxy(&stable, &candidate).await;
    let (head, body, trailers) = unary(&proxy).await;
    assert_eq!(head.status, 200);
    assert_eq!(body, grpc_frame(answer));
    assert_eq!(
        grpc_status(trailers.as_ref()),
        Some("0"),
        "the client never sees the shadow's error"
    );

    compared_as(&proxy, "shadow_error").await;
    let metrics = wait(&proxy, &failures("candidate", "shadow", "grpc"), 1.0).await;
    assert_eq!(
        harness::metric(&metrics, &failures("candidate", "shadow", "grpc")),
        Some(1.0)
    );
    assert_eq!(
        harness::metric(&metrics, &failures("stable", "serve", "grpc")),
        Some(0.0)
    );
    assert_eq!(harness::metric(&metrics, &comparisons("match")), Some(0.0));
    proxy.stop().await;
}

#[tokio::test]
async fn stable_grpc_error_reaches_the_client_and_counts_as_a_stable_error() {
    let stable = GrpcServer::start(GrpcReply::error(&[], 14, Some("model unavailable"))).await;
    let candidate = GrpcServer::start(GrpcReply::ok(&[b"\x0a\x06setosa"])).await;
    let proxy = start_proxy(&stable, &candidate).await;
    let (head, body, trailers) = unary(&proxy).await;
    assert_eq!(
        head.status, 200,
        "gRPC errors travel in trailers, not the HTTP status"
    );
    assert!(body.is_empty(), "{body:?}");
    assert_eq!(grpc_status(trailers.as_ref()), Some("14"), "{trailers:?}");
    assert_eq!(
        trailers.as_ref().and_then(|t| t.get("grpc-message")),
        Some(&HeaderValue::from_static("model unavailable"))
    );

    compared_as(&proxy, "stable_error").await;
    let metrics = wait(&proxy, &failures("stable", "serve", "grpc"), 1.0).await;
    assert_eq!(
        harness::metric(&metrics, &failures("stable", "serve", "grpc")),
        Some(1.0)
    );
    assert_eq!(
        harness::metric(&metrics, &failures("candidate", "shadow", "grpc")),
        Some(0.0)
    );
    let status = proxy.status().await;
    assert_eq!(
        status["cumulative"]["stable"]["serve"]["errors"], 1,
        "{status:#}"
    );
    assert_eq!(
        status["cumulative"]["stable"]["serve"]["failures"]["grpc"], 1,
        "{status:#}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn trailers_only_errors_are_counted_on_either_side() {
    // Stable answers trailers-only: the client gets the status in the head.
    let stable = GrpcServer::start(GrpcReply::TrailersOnly {
        status: 14,
        message: "no replicas",
    })
    .await;
    let candidate = GrpcServer::start(GrpcReply::ok(&[b"\x0a\x06setosa"])).await;
    let proxy = start_proxy(&stable, &candidate).await;
    let (head, body, trailers) = unary(&proxy).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"14"[..])
    );
    assert_eq!(head.headers["grpc-message"], "no replicas");
    assert!(body.is_empty());
    assert_eq!(grpc_status(trailers.as_ref()), None);
    compared_as(&proxy, "stable_error").await;
    let metrics = wait(&proxy, &failures("stable", "serve", "grpc"), 1.0).await;
    assert_eq!(
        harness::metric(&metrics, &failures("stable", "serve", "grpc")),
        Some(1.0)
    );
    proxy.stop().await;

    // Candidate answers trailers-only: a shadow error, unseen by the client.
    let stable = GrpcServer::start(GrpcReply::ok(&[b"\x0a\x06setosa"])).await;
    let candidate = GrpcServer::start(GrpcReply::TrailersOnly {
        status: 13,
        message: "boom",
    })
    .await;
    let proxy = start_proxy(&stable, &candidate).await;
    let (_, body, trailers) = unary(&proxy).await;
    assert_eq!(body, grpc_frame(b"\x0a\x06setosa"));
    assert_eq!(grpc_status(trailers.as_ref()), Some("0"));
    compared_as(&proxy, "shadow_error").await;
    let metrics = wait(&proxy, &failures("candidate", "shadow", "grpc"), 1.0).await;
    assert_eq!(
        harness::metric(&metrics, &failures("candidate", "shadow", "grpc")),
        Some(1.0)
    );
    proxy.stop().await;
}
