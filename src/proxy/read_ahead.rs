//! The serving answer read ahead of a slow client, so the backend's
//! connection slot comes back when the *backend* is done, not when the
//! client is (nginx's `proxy_buffering` with its temporary files).
//!
//! Without it the answer moves only as fast as the client reads it: hyper
//! stops pulling the body once its write buffer (`max(listen.max_header_bytes,
//! 8 KiB)`) is full, the backend's bytes wait in its socket, and its slot
//! (`backends.*.max_connections`) stays taken. A thousand clients reading
//! a few bytes every few seconds then hold every slot, and everyone else
//! waits.
//!
//! So an answer longer than hyper's write buffer (or of unknown length) is
//! pulled by a task of its own:
//! * up to `listen.response_buffer_bytes` is kept in memory;
//! * when that is full and the client has taken nothing for
//!   [`SPILL_AFTER`], the rest goes to an unlinked file in
//!   `listen.spill_dir`, up to `listen.response_spill_bytes` per answer;
//! * past that (or when no file can be written) the task waits for the
//!   client as before, and `listen.send_timeout` is the last resort.
//!
//! A client that keeps up never touches the file: the wait before spilling
//! is far longer than a fast client's pause between two writes. An answer
//! that fits hyper's write buffer is passed through untouched: hyper reads
//! all of it at once anyway, and a small answer costs no task.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use metrics::Counter;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::box_error::BoxError;
use crate::telemetry::Metrics;

/// How long a full memory buffer waits for the client before the rest of
/// the answer goes to disk. A client that reads at all takes a write's
/// worth within milliseconds; one that has taken nothing for this long is
/// slow enough that holding the backend for it costs more than the file.
pub const SPILL_AFTER: Duration = Duration::from_millis(50);

/// Largest frame read back from the spill file.
const SPILL_READ: usize = 32 * 1024;

/// How answers are read ahead (from `listen.*`).
#[derive(Debug, Clone)]
pub struct ReadAheadSettings {
    /// Bytes kept in memory ahead of the client; 0 turns read-ahead off.
    pub memory_bytes: usize,
    /// Bytes of one answer that may go to the spill file; 0: never spill.
    pub spill_bytes: u64,
    /// Where spill files are created (unlinked at once).
    pub spill_dir: PathBuf,
    /// Answers of a known length up to this pass through untouched: the
    /// client connection's own write buffer takes them whole.
    pub direct_up_to: u64,
}

/// A serving answer on its way to the client: passed through, or pulled
/// ahead by a task of its own.
pub enum ReadAhead<B> {
    Direct(B),
    Pulled(Pulled),
}

impl<B> ReadAhead<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    /// Starts pulling `body` ahead of the client unless it is short enough
    /// to pass through.
    pub fn new(body: B, settings: &ReadAheadSettings, metrics: &Metrics) -> Self {
        let hint = body.size_hint();
        let short = hint.upper().is_some_and(|n| n <= settings.direct_up_to);
        if settings.memory_bytes == 0 || short || body.is_end_stream() {
            return Self::Direct(body);
        }
        let shared = Arc::new(Shared::default());
        let pump = Pump {
            shared: shared.clone(),
            settings: settings.clone(),
            spilled: metrics.responses_spilled.clone(),
            spill_failures: metrics.response_spill_failures.clone(),
            spill: None,
            spill_failed: false,
        };
        let task = tokio::spawn(pump.run(body));
        Self::Pulled(Pulled {
            shared,
            hint,
            task: task.abort_handle(),
        })
    }
}

/// The client's side of an answer pulled by a [`Pump`].
pub struct Pulled {
    shared: Arc<Shared>,
    hint: SizeHint,
    task: AbortHandle,
}

impl Drop for Pulled {
    /// A client gone before the end stops the pull: the backend's
    /// connection is closed, as it was when the client's write failed.
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever the client takes a frame.
    room: Notify,
}

#[derive(Default)]
struct State {
    memory: VecDeque<Bytes>,
    memory_bytes: usize,
    /// The spill file and how far the pump has written it; frames in
    /// memory always come before the file's unread bytes.
    spill: Option<Arc<File>>,
    written: u64,
    /// How far the client has read the file (only the client moves it).
    read: u64,
    trailers: Option<HeaderMap>,
    end: Option<Result<(), BoxError>>,
    client: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_client(mut state: MutexGuard<'_, State>) {
        let waker = state.client.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The task that pulls the backend's body.
struct Pump {
    shared: Arc<Shared>,
    settings: ReadAheadSettings,
    /// `understudy_responses_spilled_total`
    spilled: Counter,
    /// `understudy_response_spill_failures_total`
    spill_failures: Counter,
    /// The file, once created; kept here too so writes need no lock.
    spill: Option<Arc<File>>,
    spill_failed: bool,
}

impl Pump {
    async fn run<B>(mut self, mut body: B)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let end = loop {
            match body.frame().await {
                None => break Ok(()),
                Some(Err(error)) => break Err(error.into()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.keep(data).await,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.shared.lock().trailers = Some(trailers);
                        }
                    }
                },
            }
        };
        // The body is done with: its connection slot goes back now, before
        // the client has read a byte more.
        drop(body);
        let mut state = self.shared.lock();
        state.end = Some(end);
        Shared::wake_client(state);
    }

    /// Keeps `data` in memory if there is room, else on disk once the
    /// client has stalled, else waits for the client.
    async fn keep(&mut self, data: Bytes) {
        let shared = self.shared.clone();
        let mut stalled = false;
        loop {
            let room = shared.room.notified();
            {
                let mut state = shared.lock();
                let file_unread = state.written > state.read;
                let fits = state.memory_bytes + data.len() <= self.settings.memory_bytes;
                if !file_unread && (fits || state.memory.is_empty()) {
                    state.memory_bytes += data.len();
                    state.memory.push_back(data);
                    Shared::wake_client(state);
                    return;
                }
                let offset = state.written;
                let may_spill = !self.spill_failed
                    && offset + data.len() as u64 <= self.settings.spill_bytes
                    && (file_unread || stalled);
                if may_spill {
                    drop(state);
                    if self.spill_write(&data, offset) {
                        let mut state = shared.lock();
                        state.written += data.len() as u64;
                        Shared::wake_client(state);
                        return;
                    }
                    continue;
                }
            }
            let may_wait_to_spill = !stalled && !self.spill_failed && self.settings.spill_bytes > 0;
            if may_wait_to_spill {
                tokio::select! {
                    _ = room => {}
                    _ = tokio::time::sleep(SPILL_AFTER) => stalled = true,
                }
            } else {
                room.await;
            }
        }
    }

    /// Writes `data` at `offset` of the spill file, creating it first.
    /// The file is in the page cache, written from this task as nginx
    /// writes its temporary files from its event loop: a blocking-pool hop
    /// per frame would cost more than the copy. `false` when it cannot be
    /// written; the answer then waits for the client.
    fn spill_write(&mut self, data: &[u8], offset: u64) -> bool {
        let result = match &self.spill {
            Some(file) => file.write_all_at(data, offset),
            None => tempfile::tempfile_in(&self.settings.spill_dir).and_then(|file| {
                file.write_all_at(data, offset)?;
                let file = Arc::new(file);
                self.spill = Some(file.clone());
                self.shared.lock().spill = Some(file);
                self.spilled.increment(1);
                Ok(())
            }),
        };
        if let Err(error) = &result {
            self.spill_failed = true;
            self.spill_failures.increment(1);
            tracing::warn!(
                dir = %self.settings.spill_dir.display(),
                %error,
                "cannot spill an answer to disk; it waits for its slow client, holding its backend connection"
            );
        }
        result.is_ok()
    }
}

/// The next bytes of the spill file, read outside the lock: only the
/// client reads and moves `read`, and the pump never rewrites what it has
/// written.
fn read_spill(file: &File, from: u64, to: u64) -> io::Result<Bytes> {
    let len = (to - from).min(SPILL_READ as u64) as usize;
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, from)?;
    Ok(buf.freeze())
}

impl<B> Body for ReadAhead<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Direct(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            Self::Pulled(pulled) => pulled.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Direct(body) => body.is_end_stream(),
            Self::Pulled(pulled) => {
                let state = pulled.shared.lock();
                matches!(state.end, Some(Ok(())))
                    && state.memory.is_empty()
                    && state.read == state.written
                    && state.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Direct(body) => body.size_hint(),
            Self::Pulled(pulled) => pulled.hint,
        }
    }
}

impl Pulled {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.shared.lock();
        if let Some(data) = state.memory.pop_front() {
            state.memory_bytes -= data.len();
            drop(state);
            self.shared.room.notify_one();
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if state.written > state.read {
            let (from, to) = (state.read, state.written);
            let file = state.spill.clone().expect("bytes were spilled to a file");
            drop(state);
            return Poll::Ready(Some(match read_spill(&file, from, to) {
                Ok(data) => {
                    self.shared.lock().read += data.len() as u64;
                    self.shared.room.notify_one();
                    Ok(Frame::data(data))
                }
                Err(error) => Err(error.into()),
            }));
        }
        match state.end.take() {
            Some(Ok(())) => {
                state.end = Some(Ok(()));
                Poll::Ready(state.trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Some(Err(error)) => {
                // Reported once; the stream is over after it.
                state.end = Some(Ok(()));
                state.trailers = None;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                state.client = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests;
