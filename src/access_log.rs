//! The optional access log: one JSON line per request, written off the
//! request path.
//!
//! The data path formats a line and `try_send`s it to a writer task; when
//! the writer falls behind (a slow disk), lines are dropped and counted
//! rather than slowing clients. A line the writer could not write (a full
//! disk, no permission) is counted too, and a line cut off by a failed
//! write is removed from the file, so the file plus
//! `understudy_access_log_dropped_total` account for every request logged.
//! It never logs bodies or header values.

use std::fs::File;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AccessLogTarget;
use crate::lines::{self, LineBuffer};

/// Lines buffered for the writer.
const QUEUE: usize = 16_384;

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339 time the response head was sent.
    pub time: String,
    pub request_id: &'a str,
    /// The W3C trace id sent to the backends (32 hex digits).
    pub trace_id: &'a str,
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
    out: Sink,
}

/// Where the lines go, and the count of those that did not get there.
struct Sink {
    target: Target,
    dropped: metrics::Counter,
    /// Failed batches in a row; logged at powers of two, so a full disk
    /// does not flood the log with one line per batch.
    failures: u64,
}

enum Target {
    Stdout,
    /// Appended to; a torn last line is cut off again.
    File(File),
    /// Lost with a panicked writer: every line counts as dropped.
    Gone,
}

impl AccessLog {
    /// Opens the target (a file is appended to) and returns the logger and
    /// the writer task to spawn.
    pub fn open(
        target: &AccessLogTarget,
        dropped: metrics::Counter,
    ) -> std::io::Result<(AccessLog, AccessLogTask)> {
        let target = match target {
            AccessLogTarget::Stdout => Target::Stdout,
            AccessLogTarget::File(path) => Target::File(
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
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let out = Sink {
            target,
            dropped: dropped.clone(),
            failures: 0,
        };
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

async fn write_batch(mut out: Sink, batch: Vec<String>) -> Sink {
    let dropped = out.dropped.clone();
    let lines = batch.len() as u64;
    let result = tokio::task::spawn_blocking(move || {
        out.write(&batch);
        out
    })
    .await;
    match result {
        Ok(out) => out,
        Err(_) => {
            // The writer panicked: this batch and every later line is lost,
            // and counted as such.
            dropped.increment(lines);
            Sink {
                target: Target::Gone,
                dropped,
                failures: 0,
            }
        }
    }
}

impl Sink {
    /// Writes the batch as whole lines; counts the lines that did not make
    /// it and cuts a torn one off the file.
    fn write(&mut self, batch: &[String]) {
        let mut buffer = LineBuffer::default();
        for line in batch {
            buffer.push(line);
        }
        let outcome = match &mut self.target {
            Target::Stdout => buffer.write_to(&mut std::io::stdout().lock()),
            Target::Gone => buffer.write_to(&mut Gone),
            Target::File(file) => {
                let outcome = buffer.write_to(file);
                if let Err(error) = lines::cut_torn_tail(file, outcome.torn_bytes) {
                    tracing::warn!(%error, "cannot remove a torn access log line");
                }
                outcome
            }
        };
        self.dropped.increment(outcome.lost);
        match outcome.error {
            Some(error) => {
                self.failures += 1;
                if self.failures.is_power_of_two() {
                    tracing::warn!(%error, lost = outcome.lost, failed_batches = self.failures,
                        "access log write failed; lines counted in understudy_access_log_dropped_total");
                }
            }
            None => self.failures = 0,
        }
    }
}

/// A writer that takes nothing.
struct Gone;

impl std::io::Write for Gone {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("the access log writer is gone"))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Current time as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::full_fs::FullFs;
    use crate::telemetry::Metrics;

    fn entry(id: &str) -> Entry<'_> {
        Entry {
            time: now_rfc3339(),
            request_id: id,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            method: "POST",
            path: "/v1/models/m:predict",
            backend: "stable",
            status: 200,
            latency_ms: 1.5,
            shadow: "mirrored",
        }
    }

    /// Logs `n` requests through a fresh writer task on `target`; returns
    /// the dropped count.
    async fn log_requests(target: &AccessLogTarget, tag: &str, n: usize) -> f64 {
        let metrics = Metrics::new();
        let (log, task) = AccessLog::open(target, metrics.access_log_dropped.clone()).unwrap();
        let shutdown = CancellationToken::new();
        let writer = tokio::spawn(task.run(shutdown.clone()));
        for i in 0..n {
            log.log(&entry(&format!("{tag}-{i}")));
        }
        shutdown.cancel();
        writer.await.unwrap();
        let text = metrics.render();
        text.lines()
            .find_map(|l| {
                l.strip_prefix("understudy_access_log_dropped_total")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap()
    }

    /// Complete JSON lines in the file; panics on a torn one.
    fn logged(path: &std::path::Path) -> usize {
        let text = std::fs::read_to_string(path).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("torn line {line:?}: {e}"));
        }
        text.lines().count()
    }

    #[tokio::test]
    async fn failed_writes_are_counted_as_dropped_and_leave_no_torn_line() {
        let Some(fs) = FullFs::mount("access") else {
            let full = AccessLogTarget::File("/dev/full".into());
            assert_eq!(log_requests(&full, "full", 500).await, 500.0);
            return;
        };
        let path = fs.path("access.jsonl");
        let target = AccessLogTarget::File(path.clone());
        assert_eq!(log_requests(&target, "before", 5).await, 0.0);
        fs.fill();
        let dropped = log_requests(&target, "full", 500).await;
        assert!(dropped > 0.0, "nothing dropped on a full disk");
        assert_eq!(logged(&path) as f64, 5.0 + 500.0 - dropped);
        fs.free();
        let before = logged(&path);
        assert_eq!(log_requests(&target, "after", 50).await, 0.0);
        assert_eq!(logged(&path), before + 50);
    }
}
