//! Raw-socket failure modes for HTTP/1.1 connections of the fake upstream:
//! a socket hyper can drive while the connection task keeps a second handle,
//! so that after hyper is dropped mid-request the task can reset the socket,
//! write garbage, or send a truncated response.
//!
//! Why not hand hyper the `TcpStream` itself? hyper would own (and on drop
//! close) the socket, making a true RST (`SO_LINGER` 0) or hand-written bytes
//! impossible. This module must never parse HTTP: hyper does all of that.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::reply::Reply;

/// A `TcpStream` shared between hyper and the connection task. Reads and
/// writes go through tokio's `&TcpStream` readiness API, so no lock is needed.
pub(super) struct SharedIo(pub(super) Arc<TcpStream>);

impl AsyncRead for SharedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; poll again to re-register the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(())) // TcpStream has no user-space buffer
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // `&TcpStream` cannot half-close; the connection task closes the
        // socket (FIN) right after hyper finishes, which clients see the same.
        Poll::Ready(Ok(()))
    }
}

/// What the connection task does once hyper has been dropped.
#[derive(Debug)]
pub(super) enum Takeover {
    /// Close with `SO_LINGER` 0: the peer gets a TCP RST.
    Reset,
    /// Write non-HTTP bytes, then close.
    Garbage,
    /// Write `head` (status line + headers), then `sent` body bytes, then close.
    CloseMidBody { head: Vec<u8>, sent: usize },
}

/// Bytes no HTTP client can parse as a response.
const GARBAGE: &[u8] = b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n";

impl Takeover {
    /// A truncated HTTP/1.1 response for `reply`: it announces `sent + 1024`
    /// bytes of body so the client is guaranteed to see a short read.
    pub(super) fn close_mid_body(reply: &Reply, sent: usize) -> Self {
        let reason = reply.status.canonical_reason().unwrap_or("Unknown");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status.as_u16()).into_bytes();
        for (name, value) in &reply.headers {
            if name != http::header::CONTENT_LENGTH {
                head.extend_from_slice(name.as_str().as_bytes());
                head.extend_from_slice(b": ");
                head.extend_from_slice(value.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
        }
        head.extend_from_slice(format!("content-length: {}\r\n\r\n", sent + 1024).as_bytes());
        Self::CloseMidBody { head, sent }
    }

    /// Carry out the takeover. `stream` must be the last handle to the socket
    /// (hyper already dropped), so dropping it here really closes it.
    pub(super) async fn perform(self, stream: Arc<TcpStream>) {
        let result = match self {
            Self::Reset => stream.set_zero_linger(),
            Self::Garbage => write_all(&stream, GARBAGE).await,
            Self::CloseMidBody { head, sent } => match write_all(&stream, &head).await {
                Ok(()) => write_all(&stream, &vec![b'x'; sent]).await,
                Err(e) => Err(e),
            },
        };
        if let Err(error) = result {
            // The peer may already be gone; the socket is closed either way.
            tracing::debug!(%error, "fake upstream takeover write failed");
        }
        debug_assert_eq!(
            Arc::strong_count(&stream),
            1,
            "hyper still holds the socket"
        );
        drop(stream);
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
