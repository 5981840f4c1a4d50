//! The accept loop every toy server runs: HTTP/1.1 and h2c on one port,
//! each connection on a task of its own, until the toy's shutdown token is
//! cancelled; then every connection task is waited for.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Serves `handle` on `listener` until `shutdown`; `toy` names the server
/// in log lines.
pub(super) async fn accept_until<H, F, B>(
    listener: TcpListener,
    shutdown: CancellationToken,
    toy: &'static str,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve(stream, shutdown.clone(), toy, handle.clone()));
                }
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning on accept.
                    tracing::warn!(%error, toy, "toy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve<H, F, B>(
    stream: TcpStream,
    shutdown: CancellationToken,
    toy: &'static str,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Small answers and single tokens: Nagle would hold each one back
    // (40 ms on the demo's latencies).
    let _ = stream.set_nodelay(true);
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service_fn(handle));
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, toy, "toy connection ended with error");
            }
        }
        // Dropping the connection future closes the socket: that is the
        // "server went away" behaviour the demo wants on shutdown.
        () = shutdown.cancelled() => {}
    }
}
