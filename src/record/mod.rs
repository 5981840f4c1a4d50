//! `[record]`: samples live requests into a JSONL file, the input of
//! `understudy validate`.
//!
//! The data path asks [`Recorder::sample`] for a [`Ticket`] (a percent draw
//! and one of a fixed number of permits), takes capped copies of the
//! request and response bodies through `capture` exactly as for a mirror,
//! and hands both copies to [`Ticket::finish`]. A small task per ticket
//! waits for the copies and `try_send`s one line to the [`RecorderTask`],
//! which owns the file.
//! Recording must never slow or fail a client: no free permit, a full queue,
//! a body over `shadow.max_body_bytes` or a failed write drops the record and
//! counts it in `understudy_record_total{result="dropped"}`.

pub mod format;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::capture::Captured;
use crate::config;
use crate::telemetry::Metrics;
use format::{Payload, Record, RecordedResponse};
pub use writer::{RecorderTask, Rotating};

/// Records waiting for their bodies at once. Each holds at most two
/// captured bodies, so this bounds the recorder's memory.
const MAX_PENDING: usize = 64;
/// Lines queued for the writer before records are dropped.
const QUEUE: usize = 1024;

/// The data path's handle; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

struct Shared {
    percent: f64,
    headers: Vec<HeaderName>,
    permits: Arc<Semaphore>,
    lines: mpsc::Sender<String>,
    dropped: metrics::Counter,
}

impl Recorder {
    /// Opens the recording and returns the handle and the writer task to
    /// spawn. Fails when no path is set or the file cannot be opened.
    pub fn start(
        config: &config::Record,
        metrics: &Metrics,
    ) -> std::io::Result<(Recorder, RecorderTask)> {
        let path = config.path.as_ref().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "[record] has no path: set record.path or pass --record FILE",
            )
        })?;
        let file = Rotating::open(path, config.max_bytes).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open the recording {}: {e}", path.display()),
            )
        })?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let [written, dropped] = metrics.record.clone();
        let recorder = Recorder {
            shared: Arc::new(Shared {
                percent: config.effective_percent(),
                headers: config.headers.clone(),
                permits: Arc::new(Semaphore::new(MAX_PENDING)),
                lines: tx,
                dropped: dropped.clone(),
            }),
        };
        let task = RecorderTask {
            lines: rx,
            file,
            written,
            dropped,
        };
        Ok((recorder, task))
    }

    /// Draws whether this request is recorded; `None` when it is not (or
    /// when too many records are pending, which counts as dropped).
    pub fn sample(&self, parts: &http::request::Parts, request_id: &HeaderValue) -> Option<Ticket> {
        let shared = &self.shared;
        if shared.percent <= 0.0
            || (shared.percent < 100.0 && rand::random::<f64>() * 100.0 >= shared.percent)
        {
            return None;
        }
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            shared.dropped.increment(1);
            return None;
        };
        let record = Record {
            time: Some(crate::access_log::now_rfc3339()),
            request_id: request_id.to_str().ok().map(str::to_owned),
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: format::select_headers(&parts.headers, &shared.headers),
            body: Payload::default(),
            response: None,
        };
        Some(Ticket {
            shared: shared.clone(),
            pending: Some((record, permit)),
        })
    }
}

/// A request chosen for recording; dropping it unfinished counts it as
/// dropped.
pub struct Ticket {
    shared: Arc<Shared>,
    pending: Option<(Record, OwnedSemaphorePermit)>,
}

/// The serving backend's answer, as the data path hands it over.
pub struct ResponseCopy {
    pub backend: &'static str,
    pub status: u16,
    pub body: oneshot::Receiver<Captured>,
}

impl ResponseCopy {
    pub fn new(backend: &'static str, status: u16, body: oneshot::Receiver<Captured>) -> Self {
        ResponseCopy {
            backend,
            status,
            body,
        }
    }
}

impl Ticket {
    /// Waits (in a task, at most `wait`) for the request body and the
    /// response copy, then queues the line. `response` is `None` when the
    /// serving backend failed.
    pub fn finish(
        mut self,
        request: oneshot::Receiver<Captured>,
        response: Option<ResponseCopy>,
        wait: Duration,
    ) {
        let Some((mut record, permit)) = self.pending.take() else {
            return;
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let complete = tokio::time::timeout(wait, async {
                let Ok(Captured::Complete { body, .. }) = request.await else {
                    // Over the cap, or the client never finished sending:
                    // nothing that could be replayed.
                    return None;
                };
                record.body = Payload::encode(&body);
                if let Some(response) = response {
                    let captured = response.body.await;
                    record.response = Some(RecordedResponse {
                        backend: response.backend.to_owned(),
                        status: response.status,
                        body: match &captured {
                            Ok(Captured::Complete { body, .. }) => Payload::encode(body),
                            _ => Payload::default(),
                        },
                        truncated: !matches!(captured, Ok(Captured::Complete { .. })),
                    });
                }
                Some(record)
            })
            .await;
            drop(permit);
            match complete {
                Ok(Some(record)) if shared.lines.try_send(record.to_line()).is_ok() => {}
                _ => shared.dropped.increment(1),
            }
        });
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.shared.dropped.increment(1);
        }
    }
}
