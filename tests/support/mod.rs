//! Shared support for integration tests.
//!
//! The world outside the proxy:
//! * [`FakeUpstream`] / [`Reply`]: a controllable upstream on `127.0.0.1`
//!   (HTTP/1.1 and h2c) that records requests and fails on demand.
//! * [`http_client`], [`send`], [`get_json`] and the rest of `client.rs`:
//!   the one HTTP client of the tests, for the proxy (data plane or admin
//!   API) or an upstream.
//! * [`refused_addr`]: an address where nothing listens.
//! * [`sse_upstream`]: a fake LLM server streaming chat-completion events
//!   on a fixed schedule (first token, gap between tokens).
//! * [`raw_exchange`], [`RawUpstream`]: raw-socket client and upstream for
//!   bytes no HTTP library would send.
//! * [`tls`], [`memory`], [`promtool`], [`full_fs`]: certificates and TLS
//!   peers, memory sampling, metrics linting, a disk that fills up.
//!
//! And the proxy itself: [`harness`] starts understudy (in-process or as the
//! real binary) and runs the crate's toy models; it is the only code here
//! that may use `understudy::`, so a fake server can never share a bug with
//! the proxy it tests (`tests/layout.rs` checks this). `fleet/` (etcd and
//! three replicas) serves `tests/fleet.rs` alone, which includes it with
//! `#[path]`, so the other suites do not compile it; `deploy_kit.rs` (a real
//! Prometheus, PromQL selectors, dashboard queries) serves
//! `tests/deploy_queries.rs` the same way.
//!
//! Each integration test compiles this module separately and uses only part
//! of it, hence `dead_code` is allowed. It must never bind anything but
//! `127.0.0.1`.
//!
//! ```ignore
//! mod support;
//! use support::{FakeUpstream, Reply, http_client, send};
//!
//! let up = FakeUpstream::builder()
//!     .respond(Reply::json(200, r#"{"predictions":[1,2]}"#))
//!     .route("/boom", Reply::reset())
//!     .start()
//!     .await;
//! let (status, _headers, body) =
//!     send(&http_client(), Method::GET, &format!("{}/x", up.url()), &[], "").await;
//! assert_eq!(status, 200);
//! assert_eq!(body, r#"{"predictions":[1,2]}"#);
//! ```
#![allow(dead_code, unused_imports)]

pub mod channel_body;
mod client;
/// The same full-disk helper the library's unit tests use.
#[path = "../../src/full_fs.rs"]
pub mod full_fs;
pub mod harness;
pub mod memory;
pub mod noisy;
pub mod promtool;
mod raw;
mod raw_peer;
mod reply;
mod server;
pub mod sse_upstream;
pub mod tls;
mod upstream;

use std::net::{Ipv4Addr, SocketAddr};

pub use client::{
    TestClient, get_json, get_text, h2c_client, http_client, post_json, send, try_send, wait_json,
};
pub use raw_peer::{RawUpstream, header_of, raw_exchange, status_of};
pub use reply::{BoxError, Gate, Reply};
pub use upstream::{FakeUpstream, FakeUpstreamBuilder, Received};

/// An address on `127.0.0.1` where nothing listens, so connecting is refused.
pub async fn refused_addr() -> SocketAddr {
    // Bound but never listening: the kernel refuses connections to it, and
    // the port stays ours, so no server started meanwhile (by another test
    // or another process) can take it and answer in its place. The socket
    // is leaked on purpose: a few per test process, closed at exit.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((Ipv4Addr::LOCALHOST, 0).into())
        .expect("bind 127.0.0.1:0");
    let addr = socket.local_addr().expect("local addr");
    std::mem::forget(socket);
    addr
}
