//! A connection whose first bytes were already read: they are read again
//! first, then the socket. Used to give hyper a connection whose first
//! request the listener has read (see `first_request`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `io` with `bytes` in front of what it reads.
pub(super) struct Replay<IO> {
    /// Released once read: a kept-alive connection holds nothing of its
    /// first request.
    bytes: Vec<u8>,
    read: usize,
    io: IO,
}

impl<IO> Replay<IO> {
    pub(super) fn new(bytes: Vec<u8>, io: IO) -> Self {
        Self { bytes, read: 0, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replay<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.bytes.len() {
            let n = buf.remaining().min(this.bytes.len() - this.read);
            buf.put_slice(&this.bytes[this.read..this.read + n]);
            this.read += n;
            if this.read == this.bytes.len() {
                this.bytes = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replay<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_bytes_come_first_then_the_stream_in_small_reads_too() {
        let (mut near, far) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut near, b" world")
            .await
            .unwrap();
        drop(near);
        let mut replay = Replay::new(b"hello".to_vec(), far);
        let mut small = [0u8; 3];
        let n = replay.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"hel");
        let mut rest = Vec::new();
        replay.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"lo world");
        assert_eq!(replay.bytes.capacity(), 0, "released once read");
    }
}
