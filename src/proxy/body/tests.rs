//! Tests of the request body's limits: size, idle time, and how a capped
//! copy on top of it sees a failure.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::*;
use crate::capture::tests::chunks;
use crate::capture::{Captured, TeeBody};

#[tokio::test]
async fn body_over_the_limit_fails_with_too_large() {
    let body = LimitedBody::new(chunks(&["12345", "67890"])).with_limit(Some(7));
    let error = body.collect().await.unwrap_err();
    assert!(matches!(error, BodyError::TooLarge { limit: 7 }), "{error}");
}

#[tokio::test]
async fn a_copy_of_a_body_over_the_limit_is_never_complete() {
    // The copy's cap is above the request limit: the copy must still not
    // complete, or a mirror would replay a request its client got a 413 for.
    let body = LimitedBody::new(chunks(&["12345", "67890"])).with_limit(Some(7));
    let (body, copy) = TeeBody::capturing(body, 64);
    assert!(body.collect().await.is_err());
    assert_eq!(copy.await.unwrap(), Captured::Broken);
}

#[tokio::test]
async fn a_source_that_breaks_off_is_the_source_s_error() {
    struct BreaksOff;
    impl Body for BreaksOff {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::ErrorKind::UnexpectedEof.into())))
        }
    }
    let error = LimitedBody::new(BreaksOff).collect().await.unwrap_err();
    assert!(matches!(error, BodyError::Source(_)), "{error}");
}

/// A body fed by a channel: pending until the sender sends or leaves.
struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

const IDLE: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_source_quiet_for_the_idle_timeout_fails_the_body() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Bytes::from_static(b"{")).await.unwrap();
    let body = LimitedBody::new(Fed(rx)).with_idle_timeout(Some(IDLE));
    let started = tokio::time::Instant::now();
    let error = body.collect().await.unwrap_err();
    assert!(matches!(error, BodyError::Idle { .. }), "{error}");
    let waited = started.elapsed();
    assert!(
        (IDLE..IDLE + Duration::from_millis(50)).contains(&waited),
        "{waited:?}"
    );
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn each_frame_restarts_the_idle_timeout() {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(IDLE * 3 / 4).await;
            tx.send(Bytes::from_static(b"x")).await.unwrap();
        }
    });
    let body = LimitedBody::new(Fed(rx)).with_idle_timeout(Some(IDLE));
    let collected = body.collect().await.expect("never quiet for the timeout");
    assert_eq!(collected.to_bytes(), "xxxxx");
}

#[tokio::test]
async fn a_body_ready_at_every_poll_never_starts_a_timer() {
    let mut body = LimitedBody::new(chunks(&["a", "b"])).with_idle_timeout(Some(IDLE));
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    assert!(body.idle.as_ref().is_some_and(|idle| idle.sleep.is_none()));
}
