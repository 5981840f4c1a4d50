//! The optional access log: one JSON line per request, written off the
//! request path.
//!
//! The data path formats a line and `try_send`s it to a writer task; when
//! the writer falls behind (a slow disk), lines are dropped and counted
//! rather than slowing clients. It never logs bodies or header values.

use std::io::Write;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AccessLogTarget;

/// Lines buffered for the writer.
const QUEUE: usize = 16_384;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 time the response head was sent.
    pub time: String,
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// `stable` or `candidate`.
    pub backend: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Time to the serving backend's response head.
    pub latency_ms: f64,
    /// `mirrored`, `dropped_overload`, `skipped_body`, `skipped_route`,
    /// `not_sampled` or `off`.
    pub shadow: &'a str,
}

#[derive(Clone)]
pub struct AccessLog {
    lines: mpsc::Sender<String>,
    dropped: metrics::Counter,
}

pub struct AccessLogTask {
    lines: mpsc::Receiver<String>,
    out: Box<dyn Write + Send>,
}

impl AccessLog {
    /// Opens the target (a file is appended to) and returns the logger and
    /// the writer task to spawn.
    pub fn open(
        target: &AccessLogTarget,
        dropped: metrics::Counter,
    ) -> std::io::Result<(AccessLog, AccessLogTask)> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot open access log {}: {e}", path.display()),
                        )
                    })?,
            )),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok((
            AccessLog { lines: tx, dropped },
            AccessLogTask { lines: rx, out },
        ))
    }

    pub fn log(&self, entry: &Entry<'_>) {
        let Ok(line) = serde_json::to_string(entry) else {
            return;
        };
        if self.lines.try_send(line).is_err() {
            self.dropped.increment(1);
        }
    }
}

impl AccessLogTask {
    /// Writes lines until shutdown, then flushes what is queued. Blocking
    /// writes happen on the blocking pool so a slow disk never stalls a
    /// runtime worker.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let mut batch = Vec::new();
            tokio::select! {
                n = self.lines.recv_many(&mut batch, 256) => if n == 0 { break },
                _ = shutdown.cancelled() => {
                    while let Ok(line) = self.lines.try_recv() {
                        batch.push(line);
                    }
                    self.out = write_batch(self.out, batch).await;
                    break;
                }
            }
            self.out = write_batch(self.out, batch).await;
        }
    }
}

async fn write_batch(mut out: Box<dyn Write + Send>, batch: Vec<String>) -> Box<dyn Write + Send> {
    let result = tokio::task::spawn_blocking(move || {
        for line in &batch {
            if let Err(error) = writeln!(out, "{line}") {
                tracing::warn!(%error, "access log write failed");
                break;
            }
        }
        let _ = out.flush();
        out
    })
    .await;
    match result {
        Ok(out) => out,
        Err(_) => Box::new(std::io::sink()),
    }
}

/// Current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}
