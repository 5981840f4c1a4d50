use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, oneshot};

use super::*;

/// A body fed frame by frame from the test, as a backend's would arrive.
struct Source {
    frames: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    /// Dropped with the body: when a backend's connection is released.
    _released: oneshot::Sender<()>,
}

impl Body for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.frames.poll_recv(cx)
    }
}

fn settings(memory_bytes: usize, spill_bytes: u64) -> ReadAheadSettings {
    ReadAheadSettings {
        memory_bytes,
        spill_bytes,
        spill_dir: std::env::temp_dir(),
        direct_up_to: 16,
    }
}

type Frames = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

/// The sending side, the body, and what resolves once the body is dropped.
fn source() -> (Frames, Source, oneshot::Receiver<()>) {
    let (tx, frames) = mpsc::channel(1);
    let (released, dropped) = oneshot::channel();
    let body = Source {
        frames,
        _released: released,
    };
    (tx, body, dropped)
}

fn chunk(i: u8, len: usize) -> Bytes {
    Bytes::from(vec![i; len])
}

/// Sends `count` chunks of `len` bytes (chunk `i` all `i`), then the end,
/// as fast as the body takes them.
async fn feed(tx: Frames, count: u8, len: usize) {
    for i in 0..count {
        tx.send(Ok(Frame::data(chunk(i, len)))).await.unwrap();
    }
}

fn expected(count: u8, len: usize) -> Vec<u8> {
    (0..count).flat_map(|i| vec![i; len]).collect()
}

#[tokio::test(start_paused = true)]
async fn a_short_answer_passes_through_without_a_task() {
    let metrics = Metrics::new();
    let body = ReadAhead::new(
        Full::new(Bytes::from_static(b"ok")),
        &settings(64, 1 << 20),
        &metrics,
    );
    assert!(matches!(body, ReadAhead::Direct(_)));
    let off = ReadAhead::new(source().1, &settings(0, 1 << 20), &metrics);
    assert!(matches!(off, ReadAhead::Direct(_)), "0 bytes turns it off");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_reads_nothing_has_the_answer_spilled_and_the_source_finished() {
    let metrics = Metrics::new();
    let (tx, body, released) = source();
    let body = ReadAhead::new(body, &settings(1024, 1 << 20), &metrics);
    // 64 KiB against 1 KiB of memory: the source is only let go of when
    // the rest is on disk, while the client has not read a byte.
    tokio::spawn(feed(tx, 64, 1024));
    tokio::time::timeout(Duration::from_secs(5), released)
        .await
        .expect("the answer was read ahead of the client")
        .unwrap_err();
    let text = metrics.render();
    assert!(
        text.contains("understudy_responses_spilled_total 1"),
        "{text}"
    );
    let collected = body.collect().await.unwrap().to_bytes();
    assert_eq!(collected.len(), 64 * 1024);
    assert!(collected == expected(64, 1024), "bytes came back in order");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_keeps_up_never_spills() {
    let metrics = Metrics::new();
    let (tx, body, _) = source();
    let mut body = ReadAhead::new(body, &settings(1024, 1 << 20), &metrics);
    let feeder = tokio::spawn(feed(tx, 64, 1024));
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().into_data().unwrap().len();
        tokio::time::sleep(SPILL_AFTER / 10).await;
    }
    feeder.await.unwrap();
    assert_eq!(got, 64 * 1024);
    let text = metrics.render();
    assert!(
        text.contains("understudy_responses_spilled_total 0"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_spilling_the_source_waits_for_the_client() {
    let metrics = Metrics::new();
    let (tx, body, mut released) = source();
    let mut body = ReadAhead::new(body, &settings(1024, 0), &metrics);
    let feeder = tokio::spawn(feed(tx, 8, 1024));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        released.try_recv(),
        Err(oneshot::error::TryRecvError::Empty),
        "the answer waits for its client"
    );
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().into_data().unwrap().len();
    }
    assert_eq!(got, 8 * 1024);
    feeder.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn at_the_spill_limit_the_source_waits_for_the_client() {
    let metrics = Metrics::new();
    let (tx, body, mut released) = source();
    let mut body = ReadAhead::new(body, &settings(1024, 4 * 1024), &metrics);
    let feeder = tokio::spawn(feed(tx, 16, 1024));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        released.try_recv(),
        Err(oneshot::error::TryRecvError::Empty),
        "past the spill limit the answer waits"
    );
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        got.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert!(got == expected(16, 1024), "bytes came back in order");
    feeder.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn trailers_and_errors_reach_the_client_after_the_data() {
    let metrics = Metrics::new();
    let (tx, body, _) = source();
    let mut body = ReadAhead::new(body, &settings(1024, 1 << 20), &metrics);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    tx.send(Ok(Frame::data(chunk(1, 100)))).await.unwrap();
    tx.send(Ok(Frame::trailers(trailers.clone())))
        .await
        .unwrap();
    drop(tx);
    let data = body.frame().await.unwrap().unwrap();
    assert_eq!(data.into_data().unwrap(), chunk(1, 100));
    let last = body.frame().await.unwrap().unwrap();
    assert_eq!(last.into_trailers().unwrap(), trailers);
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());

    let (tx, body, _) = source();
    let mut body = ReadAhead::new(body, &settings(1024, 1 << 20), &metrics);
    tx.send(Ok(Frame::data(chunk(2, 100)))).await.unwrap();
    tx.send(Err("backend reset".into())).await.unwrap();
    drop(tx);
    assert!(body.frame().await.unwrap().is_ok());
    let error = body.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "backend reset");
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_stops_the_pull() {
    let metrics = Metrics::new();
    let (tx, body, released) = source();
    let body = ReadAhead::new(body, &settings(1024, 0), &metrics);
    tx.send(Ok(Frame::data(chunk(1, 1024)))).await.unwrap();
    tx.send(Ok(Frame::data(chunk(2, 1024)))).await.unwrap();
    drop(body);
    tokio::time::timeout(Duration::from_secs(1), released)
        .await
        .expect("the source was dropped with the client")
        .unwrap_err();
}

#[tokio::test(start_paused = true)]
async fn an_unwritable_spill_dir_is_counted_and_the_answer_waits() {
    let metrics = Metrics::new();
    let (tx, body, mut released) = source();
    let mut settings = settings(1024, 1 << 20);
    settings.spill_dir = "/nonexistent/understudy-spill".into();
    let mut body = ReadAhead::new(body, &settings, &metrics);
    tokio::spawn(feed(tx, 8, 1024));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        released.try_recv(),
        Err(oneshot::error::TryRecvError::Empty)
    );
    let text = metrics.render();
    assert!(
        text.contains("understudy_response_spill_failures_total 1"),
        "{text}"
    );
    let mut got = 0;
    while let Some(frame) = body.frame().await {
        got += frame.unwrap().into_data().unwrap().len();
    }
    assert_eq!(got, 8 * 1024);
}
