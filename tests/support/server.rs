//! Serving side of the fake upstream: accept loop, per-connection hyper
//! (auto-detecting HTTP/1.1 vs h2c) and the request handler.
//!
//! Design: each connection is served by hyper over a `SharedIo` socket. The
//! reply is chosen *per request*, after the request body has been read and
//! recorded, so keep-alive and pooled connections see run-time changes.
//! Well-formed replies (fixed, echo, delayed, chunked, large) are plain hyper
//! responses. For socket-level failures (reset, garbage, close mid-body) on
//! HTTP/1.1 the handler asks the connection task to take over: the task drops
//! hyper and acts on its own handle to the socket (see `raw.rs`). On h2c those
//! failures reset only the stream, since they would otherwise kill unrelated
//! streams. This must never outlive the upstream's shutdown token.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::raw::{SharedIo, Takeover};
use super::reply::{BoxError, Mode, RespBody};
use super::upstream::{Received, Shared};

/// Accept until shutdown, then wait for every connection task.
pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    shared.open.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(error) => {
                    tracing::warn!(%error, "fake upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Decrements the open-connection gauge however the connection task ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _open = OpenGuard(Arc::clone(&shared));
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let shutdown = shared.shutdown.clone();
    let (takeover_tx, mut takeover_rx) = mpsc::unbounded_channel();
    let service = service_fn(move |req| handle(Arc::clone(&shared), takeover_tx.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(SharedIo(Arc::clone(&stream))), service);
    // select! drops the hyper connection (and with it hyper's socket handle)
    // before a takeover runs.
    let takeover = tokio::select! {
        _ = connection => None,
        Some(takeover) = takeover_rx.recv() => Some(takeover),
        () = shutdown.cancelled() => None,
    };
    if let Some(takeover) = takeover {
        Takeover::perform(takeover, stream).await;
    }
}

async fn handle(
    shared: Arc<Shared>,
    takeover: mpsc::UnboundedSender<Takeover>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, BoxError> {
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => buf.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(error) => {
                body_error = Some(error);
                break;
            }
        }
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let reply = shared.pick(parts.uri.path());
    let received = Received {
        method: parts.method,
        path_and_query,
        version: parts.version,
        headers: parts.headers,
        body: buf.freeze(),
    };
    shared.record(received.clone());
    if let Some(error) = body_error {
        return Err(error.into()); // client aborted its request; nothing to answer
    }
    let shutdown = shared.shutdown.clone();
    if !reply.delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(reply.delay) => {}
            () = shutdown.cancelled() => return Err("fake upstream shutting down".into()),
        }
    }
    if let Some(mut gate) = reply.gate.clone() {
        tokio::select! {
            // A dropped gate counts as open.
            _ = gate.wait_for(|open| *open) => {}
            () = shutdown.cancelled() => return Err("fake upstream shutting down".into()),
        }
    }
    let h2 = received.version == Version::HTTP_2;
    let raw = match reply.mode {
        Mode::Hang => {
            shutdown.cancelled().await;
            return Err("fake upstream shutting down".into());
        }
        // h2: an Err from the service makes hyper reset just this stream.
        Mode::Reset | Mode::Garbage if h2 => return Err("fake upstream: stream reset".into()),
        Mode::CloseMidBody(_) if h2 => return Ok(reply.into_response(&received)),
        Mode::Reset => Takeover::Reset,
        Mode::Garbage => Takeover::Garbage,
        Mode::CloseMidBody(n) => Takeover::close_mid_body(&reply, n),
        _ => return Ok(reply.into_response(&received)),
    };
    let _ = takeover.send(raw);
    // The connection task drops this future together with hyper.
    std::future::pending().await
}
