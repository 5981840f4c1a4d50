//! The comparison pool: a few threads of their own that compare mirrored
//! pairs too large to compare inline, fed by a bounded queue.
//!
//! Comparison is sheddable background work. Its threads run under Linux's
//! `SCHED_IDLE` policy (`compare.priority = "idle"`, the default), so they
//! get a core only when the data plane's threads (and anything else at
//! normal priority) leave it idle: a busy proxy serves its clients first and
//! compares with what is left. A full
//! queue refuses new pairs at once (the caller counts them as dropped), and
//! the proxy stops starting mirrors while it is full, so a saturated pool
//! never makes the candidate do work whose answer would be thrown away.
//!
//! It must never block a caller, never queue without bound, and never
//! decide an outcome itself: the submitted work does the comparing and the
//! counting.

use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::ComparePriority;

/// One pair's comparison and what follows it (recording the outcome).
type Work = Box<dyn FnOnce() + Send>;

/// The queue was full: the pair is dropped, not compared.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// Bounded queue plus its worker threads. The threads end when the pool
/// (every clone of its sender) is dropped and the queue is drained.
#[derive(Debug)]
pub struct ComparePool {
    work: Sender<Work>,
    threads: usize,
}

impl ComparePool {
    /// Starts `threads` comparison threads behind a queue of `queue` pairs.
    pub fn start(threads: usize, queue: usize, priority: ComparePriority) -> Arc<ComparePool> {
        let (work, receiver) = crossbeam_channel::bounded::<Work>(queue.max(1));
        let threads = threads.max(1);
        for index in 0..threads {
            let receiver = receiver.clone();
            let spawned = thread::Builder::new()
                .name(format!("understudy-compare-{index}"))
                .spawn(move || run(receiver, index, priority));
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a comparison thread");
            }
        }
        Arc::new(ComparePool { work, threads })
    }

    /// Queues `work`, or refuses it at once when the queue is full.
    pub fn try_submit(&self, work: impl FnOnce() + Send + 'static) -> Result<(), Busy> {
        match self.work.try_send(Box::new(work)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    /// Whether the queue is full right now: a new mirror would only be
    /// dropped at its comparison, so it is better not started.
    pub fn saturated(&self) -> bool {
        self.work.is_full()
    }

    /// Pairs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.work.len()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }
}

fn run(work: Receiver<Work>, index: usize, priority: ComparePriority) {
    if priority == ComparePriority::Idle && !lower_priority() && index == 0 {
        tracing::warn!(
            "comparison threads could not switch to SCHED_IDLE; they compete with serving at normal priority"
        );
    }
    while let Ok(job) = work.recv() {
        // The comparator never panics (it is fuzzed); should a bug make it,
        // the pair is lost but the thread, and so the pool, lives on.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a comparison panicked; the pair was dropped");
        }
    }
}

/// Moves the calling thread to `SCHED_IDLE`. Chosen over a raised nice
/// value: even nice 19 keeps a weight of 15 against the data plane's 1024,
/// so a pool thread per core would still take a few percent of every core
/// from serving under full load; `SCHED_IDLE` (weight 3, and never
/// preferred over a normal thread for a wake-up) takes nothing that serving
/// wants. Any user may lower a thread's own priority, so no privilege is
/// needed. `false` when the system refused.
fn lower_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        set_thread_priority_and_policy(
            thread_native_id(),
            thread_priority::ThreadPriority::Min,
            idle,
        )
        .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// The calling thread's scheduling policy, for tests.
#[cfg(all(test, target_os = "linux"))]
fn current_policy() -> Option<thread_priority::unix::ThreadSchedulePolicy> {
    thread_priority::unix::thread_schedule_policy().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Normal priority, so a busy test machine cannot starve these tests'
    /// threads (which is what `SCHED_IDLE` is for).
    const NORMAL: ComparePriority = ComparePriority::Normal;

    #[test]
    fn queued_work_runs_on_a_pool_thread() {
        let pool = ComparePool::start(1, 4, NORMAL);
        let (done, result) = mpsc::channel();
        pool.try_submit(move || {
            let name = thread::current().name().map(str::to_owned);
            done.send(name).unwrap();
        })
        .unwrap();
        let name = result.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name.as_deref(), Some("understudy-compare-0"));
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_reports_saturation() {
        let pool = ComparePool::start(1, 2, NORMAL);
        let (release, gate) = mpsc::channel::<()>();
        let (started, on_thread) = mpsc::channel();
        // Hold the only thread, then fill the queue behind it.
        pool.try_submit(move || {
            started.send(()).unwrap();
            let _ = gate.recv();
        })
        .unwrap();
        on_thread.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(!pool.saturated());
        pool.try_submit(|| {}).unwrap();
        pool.try_submit(|| {}).unwrap();
        assert!(pool.saturated());
        assert_eq!(pool.queued(), 2);
        assert_eq!(pool.try_submit(|| {}), Err(Busy));
        release.send(()).unwrap();
    }

    #[test]
    fn a_panicking_job_does_not_end_the_pool() {
        let pool = ComparePool::start(1, 4, NORMAL);
        pool.try_submit(|| panic!("a bug in a comparison")).unwrap();
        let (done, result) = mpsc::channel();
        pool.try_submit(move || done.send(()).unwrap()).unwrap();
        result.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pool_threads_run_under_sched_idle() {
        use thread_priority::unix::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let pool = ComparePool::start(1, 4, ComparePriority::Idle);
        let (done, result) = mpsc::channel();
        pool.try_submit(move || done.send(current_policy()).unwrap())
            .unwrap();
        let policy = result.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            policy,
            Some(ThreadSchedulePolicy::Normal(
                NormalThreadSchedulePolicy::Idle
            ))
        );
    }
}
