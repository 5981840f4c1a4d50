//! A client connection whose writes stall for `listen.send_timeout` is
//! closed (nginx's `send_timeout`): a client that stops reading its answer
//! — or reads a few bytes every few seconds, as a slow-read attack does —
//! otherwise holds the serving backend's connection slot for as long as it
//! likes, since the answer streams from the backend only as fast as the
//! client takes it.
//!
//! Wraps the client's socket (or TLS stream). A write that cannot proceed
//! starts one timer; any write that makes progress clears it. It must never
//! cost a fast client anything: no timer exists until a write has to wait.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An I/O stream whose writes fail with `TimedOut` once stalled too long.
pub struct SendTimeout<IO> {
    io: IO,
    timeout: Duration,
    /// Armed when a write first has to wait; cleared when one proceeds.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> SendTimeout<IO> {
    pub fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// What a write that returned `poll` means, given the stall timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_takes_nothing_fails_the_write_after_the_timeout() {
        // A pipe that holds 64 bytes and a reader that never reads.
        let (client, _reader) = tokio::io::duplex(64);
        let mut writer = SendTimeout::new(client, Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let error = writer.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_reading_is_never_cut_off() {
        let (client, mut reader) = tokio::io::duplex(64);
        let mut writer = SendTimeout::new(client, Duration::from_secs(5));
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            // 64 bytes every 4 s: slow, but never stalled for 5 s.
            while total < 1024 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                total += reader.read(&mut buf).await.unwrap();
            }
            total
        });
        writer.write_all(&[0u8; 1024]).await.unwrap();
        drop(writer);
        assert_eq!(drain.await.unwrap(), 1024);
    }
}
