//! [`Reply`]: what the fake upstream does with a request, one variant per way
//! a real model server answers or fails, plus the streaming bodies behind them.
//!
//! This file only *describes* replies and builds hyper responses for the
//! well-formed ones; it must never touch sockets (raw failure modes are carried
//! out by `upstream.rs`, which owns the connection).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use tokio::sync::{mpsc, watch};

use super::upstream::Received;

/// Error type of fake-upstream bodies and services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body type produced by the fake upstream.
pub type RespBody = BoxBody<Bytes, BoxError>;

/// How the fake upstream answers one request. Build with a constructor, then
/// optionally chain [`Reply::header`] and [`Reply::delay`].
#[derive(Clone, Debug)]
pub struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) body: Bytes,
    pub(super) delay: Duration,
    /// Set by [`Reply::held_by`]: the reply waits until the gate opens.
    pub(super) gate: Option<watch::Receiver<bool>>,
    pub(super) mode: Mode,
}

/// Holds back the replies built with [`Reply::held_by`] until [`Gate::open`]
/// (or until the gate is dropped). A test can then check what the proxy does
/// while an upstream has not answered yet, by what happened rather than by
/// guessing how long a delay is long enough.
#[derive(Debug)]
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn new() -> Self {
        Self(watch::Sender::new(false))
    }

    /// Lets every held reply go on, now and later.
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Debug)]
pub(super) enum Mode {
    Fixed,
    Echo,
    Hang,
    Reset,
    CloseMidBody(usize),
    Garbage,
    Chunked { chunks: Vec<Bytes>, gap: Duration },
    Large(u64),
}

impl Reply {
    fn with_mode(status: u16, mode: Mode) -> Self {
        let status = StatusCode::from_u16(status).expect("valid HTTP status");
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
            gate: None,
            mode,
        }
    }

    /// `status` with an empty body.
    pub fn empty(status: u16) -> Self {
        Self::with_mode(status, Mode::Fixed)
    }

    /// `status` with a body and an explicit `content-type`.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        let mut reply = Self::empty(status).header("content-type", content_type);
        reply.body = body.into();
        reply
    }

    /// `status` with a JSON body (`content-type: application/json`).
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self::bytes(status, "application/json", body)
    }

    /// `status` with a plain-text body.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self::bytes(status, "text/plain; charset=utf-8", body)
    }

    /// `status` with its canonical reason as plain text, e.g. `500` →
    /// `Internal Server Error` (what MLServer/uvicorn send on a crash).
    pub fn status(status: u16) -> Self {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Unknown");
        Self::text(status, reason)
    }

    /// 200 with a JSON description of the request: `method`, `path`, `query`
    /// (or null), `version`, `headers` (all, repeated values joined by `, `),
    /// `body_len` and `body` (lossy UTF-8).
    pub fn echo() -> Self {
        Self::with_mode(200, Mode::Echo).header("content-type", "application/json")
    }

    /// Read the request, then never answer (until the upstream shuts down).
    pub fn hang() -> Self {
        Self::with_mode(200, Mode::Hang)
    }

    /// Read the request, then reset the TCP connection (RST via `SO_LINGER`
    /// 0) without a response. Over h2c the stream is reset instead.
    pub fn reset() -> Self {
        Self::with_mode(200, Mode::Reset)
    }

    /// Send headers announcing `n + 1024` bytes of body, send `n`, then close
    /// the connection. Over h2c the stream is reset after `n` bytes.
    pub fn close_mid_body(n: usize) -> Self {
        Self::with_mode(200, Mode::CloseMidBody(n))
    }

    /// Write bytes that are not HTTP, then close. Over h2c the stream is reset.
    pub fn garbage() -> Self {
        Self::with_mode(200, Mode::Garbage)
    }

    /// 200 streaming `chunks` with `gap` between them and no
    /// `content-length` (so HTTP/1.1 uses `transfer-encoding: chunked`).
    pub fn chunked<I, B>(chunks: I, gap: Duration) -> Self
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let chunks = chunks.into_iter().map(Into::into).collect();
        Self::with_mode(200, Mode::Chunked { chunks, gap })
    }

    /// 200 with `n` bytes of `x`, generated on the fly in 64 KiB chunks (never
    /// held in memory) and an exact `content-length`.
    pub fn large(n: u64) -> Self {
        Self::with_mode(200, Mode::Large(n)).header("content-type", "application/octet-stream")
    }

    /// Add (append) a response header. Panics on an invalid name or value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("valid header name");
        let value = HeaderValue::from_str(value).expect("valid header value");
        self.headers.push((name, value));
        self
    }

    /// Wait this long after reading the request before doing anything else
    /// (before headers, before a reset, ...).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Read the request, then wait for `gate` to open before doing anything
    /// else (after any [`Reply::delay`]).
    pub fn held_by(mut self, gate: &Gate) -> Self {
        self.gate = Some(gate.0.subscribe());
        self
    }

    /// Build the hyper response for the modes hyper can express directly.
    /// `Hang`/`Reset`/`Garbage` never reach here; `CloseMidBody` does only
    /// for h2, where a body error resets the stream.
    pub(super) fn into_response(self, request: &Received) -> Response<RespBody> {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        let body = match self.mode {
            Mode::Echo => full(echo_json(request)),
            Mode::Chunked { chunks, gap } => {
                let (tx, body) = channel_body();
                tokio::spawn(async move {
                    for (i, chunk) in chunks.into_iter().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(gap).await;
                        }
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // client went away
                        }
                    }
                });
                body
            }
            Mode::Large(n) => {
                builder = builder.header(CONTENT_LENGTH, n);
                RepeatBody { remaining: n }.boxed()
            }
            Mode::CloseMidBody(n) => {
                builder = builder.header(CONTENT_LENGTH, n + 1024);
                let (tx, body) = channel_body();
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Bytes::from(vec![b'x'; n]))).await;
                    let _ = tx.send(Err("fake upstream: close_mid_body".into())).await;
                });
                body
            }
            Mode::Fixed | Mode::Hang | Mode::Reset | Mode::Garbage => full(self.body),
        };
        builder.body(body).expect("valid response parts")
    }
}

fn full(bytes: impl Into<Bytes>) -> RespBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn echo_json(request: &Received) -> String {
    let mut headers = serde_json::Map::new();
    for name in request.headers.keys() {
        let values: Vec<String> = request
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let (path, query) = match request.path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (request.path_and_query.as_str(), None),
    };
    serde_json::json!({
        "method": request.method.as_str(),
        "path": path,
        "query": query,
        "version": format!("{:?}", request.version),
        "headers": headers,
        "body_len": request.body.len(),
        "body": String::from_utf8_lossy(&request.body),
    })
    .to_string()
}

/// Body fed by a task through a small channel; an `Err` item aborts it.
struct ChannelBody(mpsc::Receiver<Result<Bytes, BoxError>>);

fn channel_body() -> (mpsc::Sender<Result<Bytes, BoxError>>, RespBody) {
    let (tx, rx) = mpsc::channel(1);
    (tx, ChannelBody(rx).boxed())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// 64 KiB of filler shared by every `large` body: zero allocations per chunk.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// `remaining` bytes of filler, produced lazily.
struct RepeatBody {
    remaining: u64,
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(FILLER.len() as u64) as usize;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&FILLER[..len])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
