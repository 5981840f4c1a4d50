//! A response body fed by a channel: each message is one data frame, sent as
//! soon as it is received, and the body ends when the sender is dropped.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

pub(super) struct Channel {
    rx: mpsc::Receiver<Bytes>,
}

impl Channel {
    pub(super) fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Channel { rx }
    }
}

impl Body for Channel {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
