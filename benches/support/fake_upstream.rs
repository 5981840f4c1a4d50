//! A minimal, fast model-server stand-in for load benchmarks: answers every
//! request with a fixed JSON body, optionally after a delay, on one or more
//! ports. It reads and discards the request body, keeps connections alive,
//! and does nothing else, so the proxy under test is what is measured.
//!
//! Usage: `fake_upstream PORT[:DELAY_MS][:BODY] ...`, e.g.
//! `fake_upstream 19001 19003:50 19401:embeddings 19403:200:embeddings-candidate`.
//! BODY is one of:
//! * (absent) a small TF Serving-style answer of 40 bytes;
//! * `embeddings`, `kserve`: the ML-sized answers of `payloads.rs`, and
//!   `embeddings-candidate`, `kserve-candidate`: the same answers nudged
//!   within tolerance, for a candidate port.
//!
//! On every port, the path `/1mb` is answered with a 1 MiB JSON document
//! instead, so `benches/attack.sh` has a large answer for slow readers behind
//! the same proxy.
//!
//! Every body is built once at start; each answer is a `Bytes` clone (a
//! reference count), so a big answer costs the upstream no more CPU than the
//! kernel's copy.

#[path = "payloads.rs"]
mod payloads;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use payloads::Payload;

/// 40 bytes of JSON, like a small TF Serving answer.
const SMALL_BODY: &[u8] = br#"{"predictions":[[0.1,0.7,0.2]],"v":"1"}"#;

/// The path answered with the large document on every port.
const LARGE_PATH: &str = "/1mb";
/// Size of that document: far more than the socket buffers between a slow
/// reader and the proxy, so the proxy holds the rest for the whole attack.
const LARGE_BYTES: usize = 1024 * 1024;

const USAGE: &str = "usage: fake_upstream PORT[:DELAY_MS][:BODY] ... \
     (BODY: embeddings, embeddings-candidate, kserve, kserve-candidate)";

/// One listening port and how it answers.
struct Target {
    port: u16,
    delay: Duration,
    body: Bytes,
}

/// What every port answers: its own body, or the large one on `LARGE_PATH`.
#[derive(Clone)]
struct Answers {
    delay: Duration,
    body: Bytes,
    large: Bytes,
}

/// A JSON string padded to exactly `LARGE_BYTES`.
fn large_document() -> Bytes {
    let mut doc = Vec::with_capacity(LARGE_BYTES);
    doc.extend_from_slice(br#"{"blob":""#);
    doc.resize(LARGE_BYTES - 2, b'x');
    doc.extend_from_slice(br#""}"#);
    Bytes::from(doc)
}

/// Builds the body named on the command line.
fn body(name: &str) -> Option<Bytes> {
    let (payload, candidate) = match name.strip_suffix("-candidate") {
        Some(base) => (Payload::parse(base)?, true),
        None => (Payload::parse(name)?, false),
    };
    Some(Bytes::from(payload.body(candidate)))
}

/// Parses `PORT[:DELAY_MS][:BODY]`.
fn target(arg: &str) -> Target {
    let mut parts = arg.split(':');
    let port = parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{USAGE}: bad port in {arg:?}"));
    let mut delay = Duration::ZERO;
    let mut answer = Bytes::from_static(SMALL_BODY);
    for part in parts {
        if let Ok(ms) = part.parse() {
            delay = Duration::from_millis(ms);
        } else {
            answer = body(part).unwrap_or_else(|| panic!("{USAGE}: unknown body {part:?}"));
        }
    }
    Target {
        port,
        delay,
        body: answer,
    }
}

async fn answer(
    request: Request<Incoming>,
    answers: Answers,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if request.uri().path() == LARGE_PATH {
        answers.large
    } else {
        answers.body
    };
    let _ = request.into_body().collect().await;
    if !answers.delay.is_zero() {
        tokio::time::sleep(answers.delay).await;
    }
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A listening socket with the accept queue model servers use (uvicorn and
/// gunicorn: 2048), not tokio's 128: a proxy whose clients all reconnect
/// at once opens hundreds of connections in a burst, and a queue of 128
/// drops the rest of the SYNs, which cost a 1 s retransmission each.
fn listen(port: u16) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], port).into())?;
    socket.listen(2048)
}

async fn serve(target: Target, large: Bytes) {
    let Target { port, delay, body } = target;
    let answers = Answers { delay, body, large };
    let listener =
        listen(port).unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, answers.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() {
    let targets: Vec<Target> = std::env::args().skip(1).map(|a| target(&a)).collect();
    assert!(!targets.is_empty(), "{USAGE}");
    // One worker thread: the upstream should take as little of the shared
    // cores as possible away from the proxies being compared.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let large = large_document();
        let mut tasks = Vec::new();
        for target in targets {
            tasks.push(tokio::spawn(serve(target, large.clone())));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}
