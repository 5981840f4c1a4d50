//! A minimal, fast model-server stand-in for load benchmarks: answers every
//! request with a fixed small JSON body, optionally after a delay, on one
//! or more ports. It reads and discards the request body, keeps connections
//! alive, and does nothing else, so the proxy under test is what is measured.
//!
//! Usage: `fake_upstream PORT[:DELAY_MS] ...`, e.g. `fake_upstream 19001 19002 19003:50`.

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

/// 40 bytes of JSON, like the anchor benchmark's upstreams.
const BODY: &[u8] = br#"{"predictions":[[0.1,0.7,0.2]],"v":"1"}"#;

async fn answer(
    request: Request<Incoming>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = request.into_body().collect().await;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn serve(port: u16, delay: Duration) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1:{port}: {e}"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, delay));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() {
    let targets: Vec<(u16, Duration)> = std::env::args()
        .skip(1)
        .map(|arg| {
            let (port, delay) = arg.split_once(':').unwrap_or((&arg, "0"));
            (
                port.parse().expect("PORT[:DELAY_MS]"),
                Duration::from_millis(delay.parse().expect("PORT[:DELAY_MS]")),
            )
        })
        .collect();
    assert!(
        !targets.is_empty(),
        "usage: fake_upstream PORT[:DELAY_MS] ..."
    );
    // One worker thread: the upstream should take as little of the shared
    // cores as possible away from the proxies being compared.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for (port, delay) in targets {
            tasks.push(tokio::spawn(serve(port, delay)));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}
