//! Reads a plaintext connection's first request — its head, and a small
//! declared body — before hyper is given the connection.
//!
//! hyper costs about 24 KiB per HTTP/1 connection from the moment it
//! serves one: an 8 KiB write buffer allocated up front, an 8 KiB read
//! buffer at the first read, and its connection state. A client that
//! trickles its head or its body (slowloris, slow POST) holds all of that
//! for as long as the timeouts allow. Read here, such a client costs only
//! the bytes it has sent, so a thousand of them cost a few megabytes,
//! nginx-style (its `client_header_buffer_size` is 1 KiB).
//!
//! Nothing here decides anything about the request: hyper parses the
//! bytes read here exactly as it would have read them, and answers 431,
//! 400, 413 or 408 as before. This only chooses how long to wait before
//! handing over:
//! * the head: until its blank line (CRLF or bare LF line ends), within
//!   `listen.header_read_timeout` of accept, or until
//!   `listen.max_header_bytes` arrived without one (hyper then refuses it);
//! * the body: only with one `Content-Length` of at most
//!   `listen.request_buffer_bytes` (and `max_body_bytes`), no
//!   `Transfer-Encoding` and no `Expect` (a client that expects
//!   `100 Continue` sends nothing until it gets it). It must arrive within
//!   `listen.request_buffer_timeout` of the head's end, with no pause
//!   longer than `listen.body_idle_timeout`; past either, the bytes so far
//!   go to hyper with the time the upload started, and the request
//!   buffering answers 408 as it would have (see `proxy::prebuffer`).
//!
//! Only the first request of a connection is read this way; hyper reads
//! the ones that follow on a kept-alive connection.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{H2_PREFACE, Protocol, protocol_of};
use crate::proxy::UploadLimits;

/// What was read, for hyper to read again.
pub(super) struct FirstRequest {
    pub bytes: Vec<u8>,
    pub protocol: Protocol,
    /// When the head had arrived and the body's wait began, for a body
    /// that was waited for but did not all arrive.
    pub upload_started: Option<Instant>,
}

/// The first read of a connection: room for a usual request head.
const FIRST_READ: usize = 1024;
/// The most a body read reserves at once: a body that arrives quickly is
/// read in a few large reads; one that trickles holds little spare room.
const BODY_READ: usize = 16 * 1024;

/// Reads the first request of a plaintext connection. `None`: no complete
/// head within `header_read_timeout`, or the client closed or the socket
/// failed before one; the connection is closed without an answer, as hyper
/// closes it.
pub(super) async fn read(
    stream: &TcpStream,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    upload: UploadLimits,
) -> Option<FirstRequest> {
    let mut bytes = Vec::new();
    let head_deadline = Instant::now() + header_read_timeout;
    let head = tokio::time::timeout_at(
        head_deadline,
        read_head(stream, &mut bytes, max_header_bytes),
    );
    let (protocol, head_end) = match head.await {
        Ok(Some(read)) => read,
        Ok(None) | Err(_) => return None,
    };
    let body = match head_end.map(|end| (end, declared_body(&bytes[..end], &upload))) {
        Some((end, Some(length))) => end + length,
        _ => {
            return Some(FirstRequest {
                bytes,
                protocol,
                upload_started: None,
            });
        }
    };
    let started = Instant::now();
    let deadline = started + upload.buffer_timeout;
    let waited = tokio::time::timeout_at(
        deadline,
        read_body(stream, &mut bytes, body, upload.idle_timeout),
    );
    let upload_started = match waited.await {
        Ok(BodyWait::Complete | BodyWait::Closed) => None,
        // Too slow or too idle: hyper and the request buffering take it
        // from here and answer 408.
        Ok(BodyWait::Idle) | Err(_) => Some(started),
    };
    Some(FirstRequest {
        bytes,
        protocol,
        upload_started,
    })
}

/// Reads until the protocol is known and, for HTTP/1, the head has ended
/// (`Some(end)`, the offset after the blank line) or grown past
/// `max_header_bytes` (`None`: hyper refuses it). `None` overall: the
/// client closed or the socket failed.
async fn read_head(
    stream: &TcpStream,
    bytes: &mut Vec<u8>,
    max_header_bytes: usize,
) -> Option<(Protocol, Option<usize>)> {
    let mut searched = 0;
    loop {
        stream.readable().await.ok()?;
        // Room only once there is something to read: an idle connection
        // holds no buffer at all.
        if bytes.len() == bytes.capacity() {
            // Doubling, up to one byte past the limit (enough to know).
            let room = bytes.capacity().max(FIRST_READ);
            bytes.reserve_exact(room.min(max_header_bytes + 1 - bytes.len()));
        }
        match stream.try_read_buf(bytes) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
        match protocol_of(&bytes[..bytes.len().min(H2_PREFACE.len())]) {
            Protocol::Undecided => continue,
            Protocol::Http2 => return Some((Protocol::Http2, None)),
            Protocol::Http1 => {}
        }
        if let Some(end) = head_end(bytes, searched) {
            return Some((Protocol::Http1, Some(end)));
        }
        if bytes.len() > max_header_bytes {
            return Some((Protocol::Http1, None));
        }
        // A line end may straddle two reads: look again from just before.
        searched = bytes.len().saturating_sub(3);
    }
}

/// How the wait for a body ended.
enum BodyWait {
    Complete,
    /// A pause longer than the idle timeout.
    Idle,
    /// The client closed or the socket failed mid-body: hyper still gets
    /// what arrived, so the broken upload is answered, logged and counted
    /// as the client's, as it is when hyper reads it.
    Closed,
}

/// Reads until `bytes` holds `total` bytes, a pause of `idle`, or the end
/// of the stream.
async fn read_body(
    stream: &TcpStream,
    bytes: &mut Vec<u8>,
    total: usize,
    idle: Duration,
) -> BodyWait {
    while bytes.len() < total {
        match tokio::time::timeout(idle, stream.readable()).await {
            Err(_) => return BodyWait::Idle,
            Ok(Err(_)) => return BodyWait::Closed,
            Ok(Ok(())) => {}
        }
        if bytes.len() == bytes.capacity() {
            bytes.reserve_exact((total - bytes.len()).min(BODY_READ));
        }
        match stream.try_read_buf(bytes) {
            Ok(0) => return BodyWait::Closed,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return BodyWait::Closed,
        }
    }
    BodyWait::Complete
}

/// The offset just past the blank line that ends an HTTP/1 head, looking
/// from `from` on. hyper accepts bare LF line ends, so this does too.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(lf) = bytes[at..].iter().position(|&b| b == b'\n') {
        let lf = at + lf;
        match &bytes[lf + 1..] {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            _ => at = lf + 1,
        }
    }
    None
}

/// The body length worth waiting for before hyper takes over: one
/// well-formed `Content-Length` within the buffering limits, and nothing
/// that makes the client wait for us or the length uncertain.
fn declared_body(head: &[u8], upload: &UploadLimits) -> Option<usize> {
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"expect") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let digits = value.iter().all(u8::is_ascii_digit) && !value.is_empty();
            if length.is_some() || !digits || value.len() > 12 {
                return None;
            }
            length = std::str::from_utf8(value).ok()?.parse::<usize>().ok();
        }
    }
    let length = length?;
    let within_max = upload.max_body_bytes.is_none_or(|max| length as u64 <= max);
    (length > 0 && length <= upload.buffer_bytes && within_max).then_some(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> UploadLimits {
        UploadLimits {
            buffer_bytes: 1024,
            max_body_bytes: None,
            buffer_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_head_ends_at_its_blank_line_with_either_line_end() {
        assert_eq!(
            head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest", 0),
            Some(27)
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
    }

    #[test]
    fn only_one_plain_content_length_within_the_buffer_is_waited_for() {
        let head = |headers: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n");
        let wait = |headers: &str| declared_body(head(headers).as_bytes(), &limits());
        assert_eq!(wait("Content-Length: 10\r\n"), Some(10));
        assert_eq!(wait("content-length:10\r\n"), Some(10));
        assert_eq!(wait(""), None);
        assert_eq!(wait("Content-Length: 0\r\n"), None);
        assert_eq!(wait("Content-Length: 2000\r\n"), None, "over the buffer");
        assert_eq!(wait("Content-Length: 10\r\nContent-Length: 10\r\n"), None);
        assert_eq!(wait("Content-Length: +10\r\n"), None);
        assert_eq!(
            wait("Content-Length: 10\r\nTransfer-Encoding: chunked\r\n"),
            None
        );
        assert_eq!(wait("Content-Length: 10\r\nExpect: 100-continue\r\n"), None);
        let capped = UploadLimits {
            max_body_bytes: Some(5),
            ..limits()
        };
        assert_eq!(
            declared_body(head("Content-Length: 10\r\n").as_bytes(), &capped),
            None
        );
    }
}
