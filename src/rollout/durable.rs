//! Keeps the rollout state file current, and says when it is not.
//!
//! Its one job: every state the controller applies reaches the disk, in
//! order, and nothing about a decision is announced (its log line, its
//! counters, its webhook) before a state that contains it is on disk. It must
//! never drop a state or block the data path: a failed write is kept and
//! retried with backoff on a thread of its own until it succeeds.
//!
//! # Why a restart can never resume from a state older than the log
//! A change is applied in memory first (a rollback takes effect on the data
//! path at once: it is the safe direction), then [`StateWriter::submit`]
//! queues its announcement behind the state and writes. Announcements are
//! released only by a successful [`persist::save`] (temp file, fsync, rename,
//! fsync of the directory) of that state or a later one, in submission
//! order. So whatever the last logged decision is, the file on disk already
//! holds it; a crash while the disk refuses writes loses only changes that
//! were never announced, and the admin API said so (`durable: false`).
//!
//! Only one write is ever in progress: while the retry thread runs, new
//! states are only queued (it always writes the newest); otherwise the
//! submitting caller writes, holding the queue's lock.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use super::machine::RolloutState;
use super::persist;

/// First retry after a failed write: soon, for a transient failure.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Backoff cap: a disk that gets space back is caught up within seconds,
/// while a long outage costs 12 attempts (and fsyncs) a minute.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often [`StateWriter::settle`] looks again.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// A decision's outward effects, released once its state is durable.
pub(super) type Announcement = Box<dyn FnOnce() + Send>;

/// Whether a submitted state is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    Durable,
    /// Applied in memory only; the write failed (or an earlier one is still
    /// being retried) with this error.
    Pending(String),
}

/// Writes the state file and retries failed writes.
pub(super) struct StateWriter {
    path: PathBuf,
    identity: String,
    failures: metrics::Counter,
    behind_gauge: metrics::Gauge,
    /// Lock-free copy of `Queue::retrying`, for `/readyz`.
    behind: AtomicBool,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// The newest state not yet on disk.
    unsaved: Option<RolloutState>,
    /// Bumped by every submission, so the retry thread can tell whether
    /// the state it wrote is still the newest.
    generation: u64,
    /// Waiting for a write, oldest first.
    announcements: Vec<Announcement>,
    /// A retry thread is running; it alone writes until it has caught up.
    retrying: bool,
    /// Failed attempts since the file fell behind.
    attempts: u64,
    last_error: String,
}

impl StateWriter {
    pub fn new(
        path: PathBuf,
        identity: String,
        failures: metrics::Counter,
        behind_gauge: metrics::Gauge,
    ) -> Arc<Self> {
        Arc::new(Self {
            path,
            identity,
            failures,
            behind_gauge,
            behind: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Announcements do not panic midway; the queue stays consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the file on disk is older than the state in memory.
    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// Writes `state` (or queues it behind a write being retried), then
    /// releases `announcement` and every earlier one once a write covering
    /// them succeeded. Call in the order the states were made.
    pub fn submit(
        self: &Arc<Self>,
        state: &RolloutState,
        announcement: Option<Announcement>,
    ) -> Durability {
        let mut queue = self.lock();
        queue.generation += 1;
        queue.announcements.extend(announcement);
        if queue.retrying {
            queue.unsaved = Some(state.clone());
            return Durability::Pending(queue.last_error.clone());
        }
        match persist::save(&self.path, &self.identity, state) {
            Ok(()) => {
                for announce in queue.announcements.drain(..) {
                    announce();
                }
                if queue.unsaved.take().is_some() {
                    // Caught up without the retry thread (it could not start).
                    queue.attempts = 0;
                    self.behind.store(false, Ordering::Relaxed);
                    self.behind_gauge.set(0.0);
                }
                Durability::Durable
            }
            Err(error) => {
                queue.unsaved = Some(state.clone());
                self.failed(&mut queue, &error);
                queue.retrying = true;
                self.behind.store(true, Ordering::Relaxed);
                self.behind_gauge.set(1.0);
                let weak = Arc::downgrade(self);
                let spawned = std::thread::Builder::new()
                    .name("understudy-state-retry".into())
                    .spawn(move || retry(weak));
                if let Err(error) = spawned {
                    // Without the thread, the next submission writes again.
                    tracing::error!(%error, "cannot start the state file retry thread");
                    queue.retrying = false;
                }
                Durability::Pending(queue.last_error.clone())
            }
        }
    }

    fn failed(&self, queue: &mut Queue, error: &std::io::Error) {
        self.failures.increment(1);
        queue.attempts += 1;
        queue.last_error = error.to_string();
        // Powers of two: the first failures are all logged, a long outage
        // only now and then.
        if queue.attempts.is_power_of_two() {
            tracing::error!(
                path = %self.path.display(),
                %error,
                attempts = queue.attempts,
                unannounced_decisions = queue.announcements.len(),
                "cannot persist the rollout state; the change is applied in memory only and a \
                 restart now would resume from the older state on disk; retrying"
            );
        }
    }

    /// At shutdown: waits at most `wait` for a write being retried, so a
    /// disk that is just getting space back still gets the last state.
    /// Returns whether the file is current.
    pub async fn settle(&self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while self.is_behind() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(SETTLE_POLL).await;
        }
        !self.is_behind()
    }

    /// `/status` `state_file`: where it is and whether it is current.
    pub fn status_json(&self) -> Value {
        let queue = self.lock();
        let mut value = json!({
            "path": self.path.display().to_string(),
            "durable": !queue.retrying,
        });
        if queue.retrying {
            value["failed_attempts"] = json!(queue.attempts);
            value["error"] = json!(queue.last_error);
            value["unannounced_decisions"] = json!(queue.announcements.len());
        }
        value
    }
}

/// The retry loop: writes the newest unsaved state until one write succeeds
/// and nothing newer arrived meanwhile. Ends early when the controller is
/// gone (the proxy stopped).
fn retry(writer: Weak<StateWriter>) {
    let mut backoff = RETRY_FIRST;
    loop {
        std::thread::sleep(backoff);
        let Some(writer) = writer.upgrade() else {
            return;
        };
        let (state, generation, covered) = {
            let queue = writer.lock();
            let Some(state) = queue.unsaved.clone() else {
                return;
            };
            (state, queue.generation, queue.announcements.len())
        };
        // Written without the lock: submissions meanwhile only queue.
        let result = persist::save(&writer.path, &writer.identity, &state);
        let mut queue = writer.lock();
        match result {
            Ok(()) => {
                // Announcements queued before the snapshot belong to it or
                // to an older state: all of them are on disk now.
                for announce in queue.announcements.drain(..covered) {
                    announce();
                }
                if queue.generation == generation {
                    tracing::info!(
                        path = %writer.path.display(),
                        failed_attempts = queue.attempts,
                        "rollout state persisted again; the state file is current"
                    );
                    queue.unsaved = None;
                    queue.retrying = false;
                    queue.attempts = 0;
                    writer.behind.store(false, Ordering::Relaxed);
                    writer.behind_gauge.set(0.0);
                    return;
                }
                backoff = RETRY_FIRST;
            }
            Err(error) => {
                writer.failed(&mut queue, &error);
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::full_fs::FullFs;
    use crate::rollout::machine::{Phase, RolloutMachine, RolloutSettings};
    use crate::telemetry::Metrics;

    fn state(weight: f64) -> RolloutState {
        let settings = RolloutSettings {
            steps: vec![50.0, 100.0],
            thresholds: Default::default(),
            max_step_duration: None,
        };
        let mut state = RolloutMachine::new(settings, 1_000).state().clone();
        state.phase = Phase::Paused;
        state.weight = weight;
        state
    }

    fn writer(path: PathBuf, metrics: &Metrics) -> Arc<StateWriter> {
        StateWriter::new(
            path,
            "id".into(),
            metrics.state_persist_failures.clone(),
            metrics.state_file_behind.clone(),
        )
    }

    /// An announcement that appends `n` to `log` when released.
    fn note(log: &Arc<Mutex<Vec<u32>>>, n: u32) -> Option<Announcement> {
        let log = log.clone();
        Some(Box::new(move || log.lock().unwrap().push(n)))
    }

    fn on_disk(path: &std::path::Path) -> f64 {
        persist::load(path, "id").unwrap().unwrap().weight
    }

    fn counter(metrics: &Metrics, series: &str) -> f64 {
        let text = metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    }

    /// Waits (bounded) until the writer has caught up.
    fn wait_caught_up(writer: &StateWriter) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while writer.is_behind() {
            assert!(
                std::time::Instant::now() < deadline,
                "never caught up: {}",
                writer.status_json()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_full_disk_holds_announcements_until_a_retry_writes_the_newest_state() {
        let Some(fs) = FullFs::mount("durable") else {
            return fails_against_a_device_that_is_always_full();
        };
        let metrics = Metrics::new();
        let path = fs.path("state.json");
        let writer = writer(path.clone(), &metrics);
        let log = Arc::new(Mutex::new(Vec::new()));
        assert_eq!(
            writer.submit(&state(50.0), note(&log, 1)),
            Durability::Durable
        );
        assert_eq!(*log.lock().unwrap(), [1]);

        fs.fill();
        let first = writer.submit(&state(0.0), note(&log, 2));
        assert!(
            matches!(&first, Durability::Pending(e) if e.contains("space")),
            "{first:?}"
        );
        // Queued behind the failed write, not written on its own.
        assert!(matches!(
            writer.submit(&state(10.0), note(&log, 3)),
            Durability::Pending(_)
        ));
        assert!(writer.is_behind());
        assert_eq!(on_disk(&path), 50.0, "the old state stays whole");
        assert_eq!(
            *log.lock().unwrap(),
            [1],
            "nothing announced before it is durable"
        );
        // The retry thread keeps failing while the disk is full.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while counter(&metrics, "understudy_state_persist_failures_total") < 3.0 {
            assert!(std::time::Instant::now() < deadline, "no retries");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(counter(&metrics, "understudy_state_file_behind"), 1.0);
        assert_eq!(writer.status_json()["durable"], false);
        assert!(
            !fs.dir().join(".state.json.tmp").exists(),
            "temp file left on a full disk"
        );

        fs.free();
        wait_caught_up(&writer);
        assert_eq!(on_disk(&path), 10.0, "the newest state is written");
        assert_eq!(*log.lock().unwrap(), [1, 2, 3], "announced in order");
        assert_eq!(counter(&metrics, "understudy_state_file_behind"), 0.0);
        assert_eq!(writer.status_json()["durable"], true);
        // Back to writing in line.
        assert_eq!(
            writer.submit(&state(20.0), note(&log, 4)),
            Durability::Durable
        );
        assert_eq!(on_disk(&path), 20.0);
    }

    /// Without a tmpfs: a state file under `/dev/full` can never be written
    /// (its "directory" is a device), so every write fails and is counted.
    fn fails_against_a_device_that_is_always_full() {
        let metrics = Metrics::new();
        let writer = writer(PathBuf::from("/dev/full/state.json"), &metrics);
        let announced = Arc::new(AtomicUsize::new(0));
        let counted = announced.clone();
        let announce: Announcement = Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        assert!(matches!(
            writer.submit(&state(0.0), Some(announce)),
            Durability::Pending(_)
        ));
        assert!(writer.is_behind());
        assert_eq!(announced.load(Ordering::Relaxed), 0);
        assert!(counter(&metrics, "understudy_state_persist_failures_total") >= 1.0);
    }
}
