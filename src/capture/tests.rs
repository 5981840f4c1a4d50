//! Tests of the capped copy: what the copy holds, what the peer still
//! receives, and what the byte budget is charged.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};

use super::*;

fn complete(body: Bytes) -> Captured {
    Captured::Complete {
        body,
        trailers: None,
    }
}

/// A body of several data frames, as a chunked upload arrives (the
/// request body tests use it too).
pub(crate) struct Chunks(std::collections::VecDeque<Bytes>);

pub(crate) fn chunks(parts: &[&'static str]) -> Chunks {
    Chunks(
        parts
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect(),
    )
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn concatenates_chunks_of_a_streamed_body() {
    let (body, copy) = TeeBody::capturing(chunks(&["{\"a\":", "[1,2]", "}"]), 64);
    let forwarded = body.collect().await.unwrap().to_bytes();
    assert_eq!(forwarded, Bytes::from_static(b"{\"a\":[1,2]}"));
    assert_eq!(copy.await.unwrap(), complete(forwarded));
}

#[tokio::test]
async fn captures_a_small_body_and_forwards_it_unchanged() {
    let (body, copy) = TeeBody::capturing(Full::new(Bytes::from_static(b"{\"x\":1}")), 64);
    let forwarded = body.collect().await.unwrap().to_bytes();
    assert_eq!(forwarded, Bytes::from_static(b"{\"x\":1}"));
    assert_eq!(copy.await.unwrap(), complete(forwarded));
}

#[tokio::test]
async fn a_single_chunk_is_copied_not_shared() {
    // As hyper hands it out: a small slice of a larger read buffer.
    let read_buffer = Bytes::from(vec![b'x'; 8192]);
    let frame = read_buffer.slice(0..40);
    let (body, copy) = TeeBody::capturing(Full::new(frame.clone()), 64);
    let forwarded = body.collect().await.unwrap().to_bytes();
    assert_eq!(forwarded.as_ptr(), frame.as_ptr(), "forwarded as it came");
    let Captured::Complete { body: captured, .. } = copy.await.unwrap() else {
        panic!("the copy is complete");
    };
    assert_eq!(captured, frame);
    // A copy of its own: holding it does not keep the 8 KiB buffer alive.
    assert!(!read_buffer.as_ptr_range().contains(&captured.as_ptr()));
}

#[tokio::test]
async fn a_body_of_declared_length_is_copied_into_one_buffer_of_its_size() {
    // Ten chunks of 1000 bytes with their total declared up front.
    let source = Chunks((0..10).map(|_| Bytes::from(vec![b'x'; 1000])).collect());
    let declared = Declared(source, 10_000);
    let (body, copy) = TeeBody::capturing(declared, 1 << 20);
    body.collect().await.unwrap();
    let Captured::Complete { body: captured, .. } = copy.await.unwrap() else {
        panic!("the copy is complete");
    };
    assert_eq!(captured.len(), 10_000);
    // Converted back without a copy only when it owns exactly its bytes.
    let owned = BytesMut::from(captured);
    assert_eq!(
        owned.capacity(),
        10_000,
        "one allocation of the body's size"
    );
}

/// A body with an exact size hint, as hyper gives one with Content-Length.
struct Declared<B>(B, u64);

impl<B: Body<Data = Bytes> + Unpin> Body for Declared<B> {
    type Data = Bytes;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }
}

#[tokio::test]
async fn empty_body_completes_without_being_polled() {
    let (_body, copy) = TeeBody::capturing(Full::new(Bytes::new()), 64);
    assert_eq!(copy.await.unwrap(), complete(Bytes::new()));
}

#[tokio::test]
async fn body_over_the_cap_reports_overflow_but_still_streams() {
    let data = Bytes::from(vec![7u8; 100]);
    let (body, copy) = TeeBody::capturing(Full::new(data.clone()), 99);
    assert_eq!(body.collect().await.unwrap().to_bytes(), data);
    assert_eq!(copy.await.unwrap(), Captured::Overflow);
}

/// Data frames, then trailers, as a gRPC response ends.
struct WithTrailers(std::collections::VecDeque<Frame<Bytes>>);

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn trailers_complete_the_copy_and_are_kept() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = [
        Frame::data(Bytes::from_static(b"\0\0\0\0\x01a")),
        Frame::trailers(trailers.clone()),
    ];
    let (body, copy) = TeeBody::capturing(WithTrailers(frames.into_iter().collect()), 64);
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(
        copy.await.unwrap(),
        Captured::Complete {
            body: Bytes::from_static(b"\0\0\0\0\x01a"),
            trailers: Some(trailers),
        }
    );
}

/// A data frame, then the source fails, as when a backend closes the
/// connection mid-body.
struct BreaksOff(Option<Bytes>);

impl Body for BreaksOff {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(Some(match self.0.take() {
            Some(data) => Ok(Frame::data(data)),
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }))
    }
}

#[tokio::test]
async fn body_whose_source_fails_reports_broken() {
    let (body, copy) = TeeBody::capturing(BreaksOff(Some(Bytes::from_static(b"{\"a\":"))), 64);
    let error = body.collect().await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(copy.await.unwrap(), Captured::Broken);
}

#[tokio::test]
async fn a_copy_past_the_budget_is_given_up_while_the_body_streams_on() {
    let budget = crate::budget::ByteBudget::new(6);
    let reservation = budget.reservation();
    let (body, copy) =
        TeeBody::capturing_within(chunks(&["abc", "def", "ghi"]), 64, reservation.clone());
    let forwarded = body.collect().await.unwrap().to_bytes();
    assert_eq!(&forwarded[..], b"abcdefghi");
    assert_eq!(copy.await.unwrap(), Captured::OverBudget);
    assert!(budget.used() <= 6, "{} bytes held", budget.used());
    drop(reservation);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn a_declared_length_is_reserved_up_front() {
    let budget = crate::budget::ByteBudget::new(100);
    let (_body, copy) = TeeBody::capturing_within(
        Declared(chunks(&["0123456789"]), 150),
        1000,
        budget.reservation(),
    );
    assert_eq!(
        copy.await.unwrap(),
        Captured::OverBudget,
        "150 declared bytes never fit a budget of 100"
    );
    let held = budget.reservation();
    let (body, copy) =
        TeeBody::capturing_within(Declared(chunks(&["0123456789"]), 10), 1000, held.clone());
    assert_eq!(held.held(), 10, "reserved before any byte arrived");
    body.collect().await.unwrap();
    assert_eq!(
        copy.await.unwrap(),
        complete(Bytes::from_static(b"0123456789"))
    );
}

#[tokio::test]
async fn a_copy_within_the_budget_completes_and_holds_its_bytes() {
    let budget = crate::budget::ByteBudget::new(1000);
    let reservation = budget.reservation();
    let (body, copy) = TeeBody::capturing_within(chunks(&["abc", "def"]), 64, reservation.clone());
    body.collect().await.unwrap();
    assert_eq!(copy.await.unwrap(), complete(Bytes::from_static(b"abcdef")));
    assert!(budget.used() >= 6, "the copy's bytes stay reserved");
    drop(reservation);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn dropped_body_closes_the_channel() {
    let (body, copy) = TeeBody::capturing(chunks(&["a", "b"]), 64);
    drop(body);
    assert!(copy.await.is_err());
}

#[tokio::test]
async fn a_shared_copy_reaches_both_receivers() {
    let (body, copy) = TeeBody::capturing(chunks(&["ab", "c"]), 64);
    let (first, second) = share(copy, true);
    body.collect().await.unwrap();
    let expected = complete(Bytes::from_static(b"abc"));
    assert_eq!(first.await.unwrap(), expected);
    assert_eq!(second.expect("asked for").await.unwrap(), expected);
}

#[tokio::test]
async fn a_copy_that_never_completes_closes_both_shared_receivers() {
    let (body, copy) = TeeBody::capturing(chunks(&["ab", "c"]), 64);
    let (first, second) = share(copy, true);
    drop(body);
    assert!(first.await.is_err());
    assert!(second.expect("asked for").await.is_err());
}
