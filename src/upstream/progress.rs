//! A request body's progress, shared between the body (polled by the
//! connection that sends it) and the request waiting for the response, so
//! the head timeout can start when the body is done.
//!
//! One allocation per request: the counters and the end signal live in a
//! single `Arc` (it was two `Arc`s and a oneshot channel).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Shared {
    polls: AtomicU64,
    waiting_on_source: AtomicBool,
    ended: AtomicBool,
    end: Notify,
}

/// The body's side: reports polls and the end.
#[derive(Debug)]
pub struct ProgressReporter {
    shared: Arc<Shared>,
    ended: bool,
}

/// The sender's side. See [`super::Upstream::send_streaming`].
#[derive(Debug)]
pub struct BodyProgress {
    shared: Arc<Shared>,
}

/// A linked reporter and watcher.
pub fn body_progress() -> (ProgressReporter, BodyProgress) {
    let shared = Arc::new(Shared::default());
    (
        ProgressReporter {
            shared: shared.clone(),
            ended: false,
        },
        BodyProgress { shared },
    )
}

impl ProgressReporter {
    /// Counts one poll of the body; `pending` when it waits for its source.
    pub fn polled(&self, pending: bool) {
        self.shared.polls.fetch_add(1, Ordering::Relaxed);
        self.shared
            .waiting_on_source
            .store(pending, Ordering::Relaxed);
    }

    /// The body has ended or failed; only the first call counts.
    pub fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.shared.ended.store(true, Ordering::Release);
            // Stores a permit when nobody waits yet, so the end is never
            // missed.
            self.shared.end.notify_one();
        }
    }
}

impl Drop for ProgressReporter {
    /// A body dropped before its end counts as ended: nothing more will
    /// be sent.
    fn drop(&mut self) {
        self.end();
    }
}

impl BodyProgress {
    /// Resolves when the body has ended or failed (or was dropped).
    pub async fn ended(&self) {
        if self.shared.ended.load(Ordering::Acquire) {
            return;
        }
        self.shared.end.notified().await;
    }

    /// Increases every time the body is polled.
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(Ordering::Relaxed)
    }

    /// True while the body waits for its own source (the client), which
    /// is the client's slowness, not the backend's.
    pub fn waiting_on_source(&self) -> bool {
        self.shared.waiting_on_source.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_end_before_anyone_waits_is_not_missed() {
        let (mut reporter, progress) = body_progress();
        reporter.polled(false);
        reporter.end();
        progress.ended().await;
        assert_eq!(progress.polls(), 1);
    }

    #[tokio::test]
    async fn a_dropped_body_counts_as_ended() {
        let (reporter, progress) = body_progress();
        let waiter = tokio::spawn(async move { progress.ended().await });
        tokio::task::yield_now().await;
        drop(reporter);
        waiter.await.unwrap();
    }
}
