//! Streaming through the proxy: chunked and very large bodies, both ways,
//! pass through as they arrive and arrive intact.

mod support;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::channel_body::ChannelBody;
use support::harness;
use support::{FakeUpstream, Reply, http_client};
use tokio::sync::mpsc;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn chunked_response_streams_to_the_client_as_it_arrives() {
    let gap = Duration::from_millis(400);
    let chunks = ["{\"predictions\":", "[1,", "2,", "3]}"];
    let stable = FakeUpstream::start(Reply::chunked(chunks, gap)).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let request = Request::get(format!("{}/stream", proxy.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.into_body();
    let mut collected = Vec::new();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            collected.extend_from_slice(&data);
            arrivals.push(Instant::now());
        }
    }
    assert_eq!(collected, chunks.concat().as_bytes());
    // Upstream spaces its chunks 3 gaps apart in total; a proxy that buffered
    // the body would deliver it all at once.
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(spread >= gap, "body arrived in one burst ({spread:?})");
    proxy.stop().await;
}

/// `total` bytes where byte `i` is `i % 251`, generated chunk by chunk
/// (never held in memory) and without a declared length.
struct PatternBody {
    remaining: usize,
    chunk: Bytes,
}

const PATTERN_CHUNK: usize = 251 * 256;

fn pattern_chunk() -> Bytes {
    (0..PATTERN_CHUNK).map(|i| (i % 251) as u8).collect()
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(PATTERN_CHUNK);
        self.remaining -= len;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default() // unknown: sent chunked
    }
}

fn streaming_client<B>() -> Client<HttpConnector, B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// A body larger than `listen.request_buffer_bytes` streams on to stable
/// once the buffer is full, before the client has sent all of it.
#[tokio::test]
async fn chunked_request_body_is_forwarded_before_it_ends() {
    let stable = FakeUpstream::start(Reply::empty(204)).await;
    let text = harness::config_text(&stable.url(), None, "");
    let text = text.replacen("[listen]\n", "[listen]\nrequest_buffer_bytes = 4\n", 1);
    let proxy = harness::start_text(&text).await;
    let (tx, rx) = mpsc::channel(4);
    let request = Request::post(format!("{}/upload", proxy.url))
        .body(ChannelBody(rx))
        .unwrap();
    let client = streaming_client();
    let response = tokio::spawn(async move { client.request(request).await });
    tx.send(Frame::data(Bytes::from_static(b"first,")))
        .await
        .unwrap();
    // The proxy must connect to stable while the client is still sending.
    let deadline = Instant::now() + WAIT;
    while stable.connections_accepted() == 0 {
        assert!(Instant::now() < deadline, "proxy waited for the whole body");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(Frame::data(Bytes::from_static(b"second,")))
        .await
        .unwrap();
    tx.send(Frame::data(Bytes::from_static(b"third")))
        .await
        .unwrap();
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 204);
    let received = stable.received().await;
    assert_eq!(received[0].body, "first,second,third");
    assert!(received[0].headers.get("content-length").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn large_download_streams_through_intact() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let stable = FakeUpstream::start(Reply::large(SIZE)).await;
    // Mirrored too: the proxy tees the response while streaming it.
    let candidate = FakeUpstream::start(Reply::large(SIZE)).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
    let request = Request::get(format!("{}/model.bin", proxy.url))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = http_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        SIZE.to_string().as_str()
    );
    let filler = [b'x'; 64 * 1024];
    let mut body = response.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.expect("body broke off").into_data() else {
            continue;
        };
        for piece in data.chunks(filler.len()) {
            assert!(piece == &filler[..piece.len()], "corrupt byte near {total}");
        }
        total += data.len() as u64;
    }
    assert_eq!(total, SIZE);
    // Both copies are over shadow.max_body_bytes: counted, not compared.
    let uncomparable = r#"understudy_comparisons_total{result="uncomparable"}"#;
    proxy.wait_metric(uncomparable, 1.0, WAIT).await;
    proxy.stop().await;
}

#[tokio::test]
async fn large_streamed_upload_reaches_stable_intact() {
    const SIZE: usize = 100 * 1024 * 1024 + 7;
    let stable = FakeUpstream::start(Reply::empty(200)).await;
    let candidate = FakeUpstream::start(Reply::empty(200)).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
    let chunk = pattern_chunk();
    let body = PatternBody {
        remaining: SIZE,
        chunk: chunk.clone(),
    };
    let request = Request::put(format!("{}/upload", proxy.url))
        .body(body)
        .unwrap();
    let response = streaming_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let received = stable.received().await;
    let got = &received[0].body;
    assert_eq!(got.len(), SIZE);
    for (i, piece) in got.chunks(PATTERN_CHUNK).enumerate() {
        assert!(piece == &chunk[..piece.len()], "corrupt chunk {i}");
    }
    // Over shadow.max_body_bytes (found while streaming): not mirrored.
    let skipped = r#"understudy_shadow_total{result="skipped_body"}"#;
    proxy.wait_metric(skipped, 1.0, WAIT).await;
    assert_eq!(candidate.request_count(), 0);
    proxy.stop().await;
}
