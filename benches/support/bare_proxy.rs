//! The ceiling of a hyper-based reverse proxy on this machine: hyper's HTTP/1
//! server and client and nothing else — no metrics, ids, headers, timeouts,
//! mirroring or comparison — on the same worker layout as understudy (one
//! current-thread runtime per core, `SO_REUSEPORT`, a per-worker list of
//! ready upstream connections). `benches/load.sh` runs it beside nginx and
//! understudy so the table shows how much of the gap to nginx is hyper's
//! own cost and how much is ours.
//!
//! Usage: `bare_proxy LISTEN_PORT UPSTREAM_PORT [MIRROR_PORT [MAX_IN_FLIGHT]]`.
//! With a mirror port every request is also sent there in the background and
//! the answer read and dropped (nginx's `mirror`, without blocking the
//! client). With `MAX_IN_FLIGHT`, at most that many mirrors run at once (one
//! bound shared by the workers, as `shadow.max_in_flight`); the rest are
//! dropped.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

type Pool = Rc<RefCell<Vec<SendRequest<Full<Bytes>>>>>;

/// Where mirrors go, and the bound on how many run at once (without one,
/// more slots than could ever be taken).
#[derive(Clone)]
struct MirrorTo {
    port: u16,
    slots: Arc<Semaphore>,
}

async fn checkout(pool: &Pool, port: u16) -> SendRequest<Full<Bytes>> {
    loop {
        let ready = pool.borrow_mut().pop();
        match ready {
            Some(mut sender) => {
                if sender.ready().await.is_ok() {
                    return sender;
                }
            }
            None => {
                let stream = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("upstream connect");
                let _ = stream.set_nodelay(true);
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::task::spawn_local(connection);
                return sender;
            }
        }
    }
}

/// A whole (small) body; what a broken one had so far counts as nothing.
async fn read_all(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

async fn forward(
    pool: &Pool,
    port: u16,
    parts: http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut sender = checkout(pool, port).await;
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .expect("upstream answered");
    // The answers are small: read the whole body, then the connection is
    // idle and goes back to the pool.
    let (parts, body) = response.into_parts();
    let body = read_all(body).await;
    pool.borrow_mut().push(sender);
    Response::from_parts(parts, Full::new(body))
}

async fn handle(
    request: Request<Incoming>,
    stable: (Pool, u16),
    mirror: Option<(Pool, MirrorTo)>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = read_all(body).await;
    // With every slot taken the mirror is dropped, as understudy does.
    if let Some((pool, to)) = mirror
        && let Ok(slot) = to.slots.clone().try_acquire_owned()
    {
        let mut copy = Request::new(());
        *copy.method_mut() = parts.method.clone();
        *copy.uri_mut() = parts.uri.clone();
        *copy.headers_mut() = parts.headers.clone();
        let (copy, ()) = copy.into_parts();
        let body = body.clone();
        tokio::task::spawn_local(async move {
            let _ = forward(&pool, to.port, copy, body).await;
            drop(slot);
        });
    }
    Ok(forward(&stable.0, stable.1, parts, body).await)
}

async fn worker(listener: std::net::TcpListener, upstream: u16, mirror: Option<MirrorTo>) {
    let listener = TcpListener::from_std(listener).expect("listener");
    let stable: Pool = Rc::default();
    let shadow: Pool = Rc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stable = stable.clone();
        let shadow = shadow.clone();
        let mirror = mirror.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |request| {
                handle(
                    request,
                    (stable.clone(), upstream),
                    mirror.clone().map(|to| (shadow.clone(), to)),
                )
            });
            // As understudy's listener: no read while a request is in
            // flight (see `half_close` in src/listener.rs).
            let _ = http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn main() {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("usage: bare_proxy LISTEN UPSTREAM [MIRROR [MAX_IN_FLIGHT]]")
        })
        .collect();
    assert!(
        ports.len() >= 2,
        "usage: bare_proxy LISTEN UPSTREAM [MIRROR [MAX_IN_FLIGHT]]"
    );
    let max_in_flight = ports
        .get(3)
        .map_or(Semaphore::MAX_PERMITS, |&max| usize::from(max));
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mirror = ports.get(2).map(|&port| MirrorTo { port, slots });
    let addr: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let listeners = understudy::listener::bind_shared(addr, 2).expect("bind");
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let (upstream, mirror) = (ports[1], mirror.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, worker(listener, upstream, mirror));
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}
