//! Idle HTTP/2 client connections are closed after the idle timeout
//! (`listen.header_read_timeout`), as idle HTTP/1.1 ones are, so silent
//! connections cannot hold every `listen.max_connections` slot; busy ones
//! are never closed.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::harness;
use support::{FakeUpstream, Reply};

/// Longer than any close the proxy may take (idle timeout, GOAWAY grace);
/// only a bound on waiting, not an expected duration.
const PATIENCE: Duration = Duration::from_secs(30);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: the client's half of the handshake.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const GOAWAY: u8 = 7;

/// A proxy whose idle timeout is 1 s, with `max_connections` slots.
async fn proxy(stable: &FakeUpstream, max_connections: usize) -> (harness::Proxy, String) {
    let text = harness::config_text(&stable.url(), None, "").replace(
        "drain_timeout = \"5s\"",
        &format!(
            "drain_timeout = \"5s\"\nheader_read_timeout = \"1s\"\nmax_connections = {max_connections}"
        ),
    );
    let proxy = harness::start_text(&text).await;
    let addr = proxy.url.trim_start_matches("http://").to_owned();
    (proxy, addr)
}

/// Reads frames until the peer closes; returns the frame types seen, or
/// `None` if the connection was still open after [`PATIENCE`].
async fn frames_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    Some(types)
}

/// An HTTP/2 connection driven by hyper's client, which answers pings.
async fn h2_connection(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, driver)
}

async fn get(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: &str,
    path: &str,
) -> u16 {
    let request = Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("request failed");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("body failed");
    status
}

#[tokio::test]
async fn a_silent_h2c_connection_is_closed_and_its_slot_freed() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let (proxy, addr) = proxy(&stable, 1).await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    silent.write_all(PREFACE).await.unwrap();
    silent.write_all(SETTINGS).await.unwrap();
    // Never another byte, not even a ping answer.
    let frames = frames_until_closed(&mut silent)
        .await
        .expect("the silent h2c connection was never closed");
    assert!(
        frames.contains(&GOAWAY),
        "closed without a GOAWAY: {frames:?}"
    );
    // Its one slot serves the next client.
    proxy
        .wait_metric_at_most("understudy_connections_open", 0.0, PATIENCE)
        .await;
    let (mut sender, _driver) = h2_connection(&addr).await;
    assert_eq!(get(&mut sender, &addr, "/x").await, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn an_idle_h2c_connection_that_answers_pings_is_closed_too() {
    let stable = FakeUpstream::start(Reply::echo()).await;
    let (proxy, addr) = proxy(&stable, 10).await;
    let (mut sender, driver) = h2_connection(&addr).await;
    assert_eq!(get(&mut sender, &addr, "/x").await, 200);
    tokio::time::timeout(PATIENCE, driver)
        .await
        .expect("an idle h2c connection that answers pings stayed open")
        .unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn a_busy_h2c_connection_is_never_closed() {
    // `/slow` answers after 3 idle timeouts.
    let stable = FakeUpstream::builder()
        .respond(Reply::echo())
        .route("/slow", Reply::echo().delay(Duration::from_secs(3)))
        .start()
        .await;
    let (proxy, addr) = proxy(&stable, 10).await;
    let (mut sender, driver) = h2_connection(&addr).await;
    // A request in flight keeps it open, though no frame moves for seconds.
    assert_eq!(get(&mut sender, &addr, "/slow").await, 200);
    // So do requests a third of the idle timeout apart, for 3 timeouts.
    for _ in 0..10 {
        assert_eq!(get(&mut sender, &addr, "/x").await, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!driver.is_finished(), "the busy connection was closed");
    proxy.stop().await;
}
