//! Request statistics: one owner task, fed by a bounded channel.
//!
//! The data path never takes a lock to record a sample: it `try_send`s a
//! small [`Event`] and moves on (a full channel drops the event and counts
//! it). The [`StatsTask`] owns every histogram and counter: cumulative since
//! start, a sliding window (the last minute, in rotating slots, as in
//! tower's rotating histogram) and the rollout step's window (reset at every
//! step). It also feeds the Prometheus handles and keeps the last mismatches.
//! It must never block the data path and never hold request bodies.

pub mod stream;
pub mod window;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::compare::{Difference, ElementCounts, Outcome};
pub use crate::labels::Role;
use crate::labels::StatusClass;
use crate::split::Backend;
use crate::telemetry::Metrics;
pub use window::{BackendStats, DropReason, FailureKind, RoleStats, ShadowResult, WindowStats};

/// Events buffered between the data path and the stats task: at 50k req/s
/// (several events each) far more than one drain tick's worth.
const EVENT_CAPACITY: usize = 65_536;
/// How often the stats task takes the queued events: often enough that a
/// scrape or snapshot is never more than a few milliseconds behind.
const DRAIN_EVERY: Duration = Duration::from_millis(5);
/// The sliding window is this many slots of [`SLOT_LENGTH`]: a one-minute
/// view that moves every ten seconds.
const SLOTS: usize = 6;
const SLOT_LENGTH: Duration = Duration::from_secs(10);

/// Index of a backend in the metrics' `[backend]` arrays, in
/// [`crate::labels::BACKENDS`] order.
/// One recent mismatch, for `GET /mismatches`. Holds the first differing
/// location and the two values there, never whole bodies.
#[derive(Debug, Clone, Serialize)]
pub struct MismatchRecord {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub request_id: String,
    /// The W3C trace id both backend requests carried (32 hex digits);
    /// absent when `shadow.strip_headers` took `traceparent` off the
    /// shadow request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub method: String,
    pub path: String,
    #[serde(flatten)]
    pub difference: Difference,
}

/// What the data path and the mirror report.
#[derive(Debug)]
pub enum Event {
    /// A backend answered with a response head.
    Response {
        backend: Backend,
        role: Role,
        status: u16,
        latency: Duration,
    },
    /// A backend yielded no usable response (or its body broke off).
    Failure {
        backend: Backend,
        role: Role,
        kind: FailureKind,
        latency: Duration,
    },
    Shadow(ShadowResult),
    Compared {
        outcome: Outcome,
        elements: ElementCounts,
        mismatch: Option<Box<MismatchRecord>>,
    },
    /// A mirror whose shadow answered in full and whose pair was judged:
    /// the shadow's `Response`, `Shadow(Sent)` and `Compared` in one message
    /// (the common case sends one event through the queue instead of three).
    /// Sent once the pair is judged, so the shadow's response shows in the
    /// statistics together with its comparison.
    Mirrored {
        /// The shadowing backend.
        backend: Backend,
        status: u16,
        latency: Duration,
        outcome: Outcome,
        elements: ElementCounts,
        mismatch: Option<Box<MismatchRecord>>,
    },
    /// A mirrored pair that was not compared (see [`DropReason`]), with the
    /// shadow's response when it answered cleanly: that still counts as
    /// the shadowing backend's latency evidence.
    CompareDropped {
        shadow: Option<ShadowAnswer>,
        reason: DropReason,
    },
    /// An event-stream answer's timing (see [`stream`]), measured once the
    /// stream ended.
    Stream {
        backend: Backend,
        role: Role,
        sample: Box<stream::StreamSample>,
    },
}

/// A shadow's clean response head, recorded with what became of its pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowAnswer {
    /// The shadowing backend.
    pub backend: Backend,
    pub status: u16,
    pub latency: Duration,
}

/// A consistent copy of the statistics at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub cumulative: WindowStats,
    /// The last minute (up to one slot more).
    pub sliding: WindowStats,
    /// Since the rollout step started (or since start without a rollout).
    pub step: WindowStats,
    pub mismatches: Vec<MismatchRecord>,
}

enum Control {
    Snapshot(oneshot::Sender<Snapshot>),
    /// Answered once every event sent before it has been counted.
    Flush(oneshot::Sender<()>),
    ResetStep,
    KeepMismatches(usize),
}

/// Events and control share one channel, so a reset or a snapshot is
/// ordered exactly after the events recorded before it.
enum Message {
    Event(Event),
    Control(Control),
}

/// Cheap, cloneable sender side used by the data path.
#[derive(Clone)]
pub struct StatsHandle {
    messages: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl StatsHandle {
    /// Records an event without waiting; counts it as dropped when the stats
    /// task is behind.
    pub fn record(&self, event: Event) {
        if self.messages.try_send(Message::Event(event)).is_err() {
            self.metrics.stats_dropped.increment(1);
        }
    }

    /// A copy of every window, including every event recorded before the
    /// call; `None` if the stats task has stopped.
    pub async fn snapshot(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.messages
            .send(Message::Control(Control::Snapshot(tx)))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Waits until every event recorded before the call is counted, so a
    /// metrics scrape reflects every request answered before it.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .messages
            .send(Message::Control(Control::Flush(tx)))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Starts a new rollout-step window after the events recorded so far.
    pub fn reset_step(&self) {
        self.control(Control::ResetStep);
    }

    pub fn set_keep_mismatches(&self, keep: usize) {
        self.control(Control::KeepMismatches(keep));
    }

    /// Control messages must not be lost: when the queue is full, wait for
    /// room in a task instead of blocking the caller.
    fn control(&self, control: Control) {
        if let Err(mpsc::error::TrySendError::Full(message)) =
            self.messages.try_send(Message::Control(control))
        {
            let messages = self.messages.clone();
            tokio::spawn(async move {
                let _ = messages.send(message).await;
            });
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The owner of all statistics.
pub struct StatsTask {
    messages: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
    cumulative: WindowStats,
    step: WindowStats,
    /// Newest slot first.
    slots: VecDeque<WindowStats>,
    slot_started: Instant,
    mismatches: VecDeque<MismatchRecord>,
    keep_mismatches: usize,
}

/// Creates the stats task and the handle that feeds it.
pub fn channel(metrics: Arc<Metrics>, keep_mismatches: usize) -> (StatsHandle, StatsTask) {
    let (messages_tx, messages) = mpsc::channel(EVENT_CAPACITY);
    let handle = StatsHandle {
        messages: messages_tx,
        metrics: metrics.clone(),
    };
    let task = StatsTask {
        messages,
        metrics,
        cumulative: WindowStats::default(),
        step: WindowStats::default(),
        slots: VecDeque::from([WindowStats::default()]),
        slot_started: Instant::now(),
        mismatches: VecDeque::new(),
        keep_mismatches,
    };
    (handle, task)
}

impl StatsTask {
    /// Runs until `shutdown` fires and every handle is gone or the queue is
    /// drained, so late events from draining requests still count.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::debug!("stats task started");
        // The queue is drained on a short tick rather than awaited: a task
        // waiting in `recv` would be woken by every request's event, a
        // cross-thread wake-up per request for the data-plane workers. On a
        // tick, senders only push; a control message waits one tick at most.
        let mut drain = tokio::time::interval(DRAIN_EVERY);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = drain.tick() => {
                    if !self.drain() {
                        break;
                    }
                }
                _ = housekeeping.tick() => self.on_tick(),
                _ = shutdown.cancelled() => {
                    self.drain();
                    break;
                }
            }
        }
        tracing::debug!("stats task stopped");
    }

    /// Handles everything queued; `false` once every sender is gone.
    fn drain(&mut self) -> bool {
        loop {
            match self.messages.try_recv() {
                Ok(Message::Event(event)) => self.on_event(event),
                Ok(Message::Control(control)) => self.on_control(control),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Control::Flush(reply) => {
                let _ = reply.send(());
            }
            Control::ResetStep => self.step = WindowStats::default(),
            Control::KeepMismatches(keep) => {
                self.keep_mismatches = keep;
                self.mismatches.truncate(keep);
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut sliding = WindowStats::default();
        for slot in &self.slots {
            sliding.merge(slot);
        }
        Snapshot {
            cumulative: self.cumulative.clone(),
            sliding,
            step: self.step.clone(),
            mismatches: self.mismatches.iter().cloned().collect(),
        }
    }

    fn on_tick(&mut self) {
        if self.slot_started.elapsed() >= SLOT_LENGTH {
            self.slots.push_front(WindowStats::default());
            self.slots.truncate(SLOTS);
            self.slot_started = Instant::now();
        }
        let mut sliding = WindowStats::default();
        for slot in &self.slots {
            sliding.merge(slot);
        }
        if let Some(rate) = sliding.match_rate() {
            self.metrics.match_ratio.set(rate);
        }
        self.metrics.upkeep();
    }

    fn windows(&mut self) -> [&mut WindowStats; 3] {
        let slot = self
            .slots
            .front_mut()
            .expect("there is always a current slot");
        [&mut self.cumulative, &mut self.step, slot]
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Response {
                backend,
                role,
                status,
                latency,
            } => self.on_response(backend, role, status, latency),
            Event::Failure {
                backend,
                role,
                kind,
                latency,
            } => self.on_failure(backend, role, kind, latency),
            Event::Shadow(result) => self.on_shadow(result),
            Event::Compared {
                outcome,
                elements,
                mismatch,
            } => self.on_compared(outcome, elements, mismatch),
            Event::Mirrored {
                backend,
                status,
                latency,
                outcome,
                elements,
                mismatch,
            } => {
                self.on_response(backend, Role::Shadow, status, latency);
                self.on_shadow(ShadowResult::Sent);
                self.on_compared(outcome, elements, mismatch);
            }
            Event::CompareDropped { shadow, reason } => {
                if let Some(answer) = shadow {
                    self.on_response(answer.backend, Role::Shadow, answer.status, answer.latency);
                    self.on_shadow(ShadowResult::Sent);
                }
                self.on_compare_dropped(reason);
            }
            Event::Stream {
                backend,
                role,
                sample,
            } => self.on_stream(backend, role, &sample),
        }
    }

    fn on_compare_dropped(&mut self, reason: DropReason) {
        self.metrics.comparisons_dropped[reason.index()].increment(1);
        for w in self.windows() {
            w.compare_dropped[reason.index()] += 1;
        }
    }

    fn on_response(&mut self, backend: Backend, role: Role, status: u16, latency: Duration) {
        let m = &self.metrics;
        let class = StatusClass::of(status).index();
        let (b, r) = (backend.index(), role.index());
        m.requests[b][r][class].increment(1);
        m.duration[b][r].record(latency.as_secs_f64());
        let micros = latency.as_micros().max(1) as u64;
        for w in self.windows() {
            let stats = role_stats(w, backend, role);
            stats.by_class[class] += 1;
            stats.latency_us.saturating_record(micros);
        }
    }

    fn on_failure(&mut self, backend: Backend, role: Role, kind: FailureKind, latency: Duration) {
        let m = &self.metrics;
        let (b, r) = (backend.index(), role.index());
        m.upstream_failures[b][r][kind.index()].increment(1);
        // A broken body or failed gRPC call already counted its response
        // head; other failures are requests without one.
        let counts_request = !matches!(kind, FailureKind::Body | FailureKind::Grpc);
        if counts_request {
            m.requests[b][r][StatusClass::Error.index()].increment(1);
            m.duration[b][r].record(latency.as_secs_f64());
        }
        let micros = latency.as_micros().max(1) as u64;
        for w in self.windows() {
            let stats = role_stats(w, backend, role);
            stats.failures[kind.index()] += 1;
            if counts_request {
                stats.by_class[StatusClass::Error.index()] += 1;
                stats.latency_us.saturating_record(micros);
            }
        }
    }

    fn on_shadow(&mut self, result: ShadowResult) {
        self.metrics.shadow[result.index()].increment(1);
        for w in self.windows() {
            w.shadow[result.index()] += 1;
        }
    }

    fn on_compared(
        &mut self,
        outcome: Outcome,
        elements: ElementCounts,
        mismatch: Option<Box<MismatchRecord>>,
    ) {
        let m = &self.metrics;
        let index = outcome.index();
        m.comparisons[index].increment(1);
        m.elements[0].increment(elements.matched);
        m.elements[1].increment(elements.mismatched);
        for w in self.windows() {
            w.comparisons[index] += 1;
            w.elements.matched += elements.matched;
            w.elements.mismatched += elements.mismatched;
            w.row_clusters.record(&elements);
        }
        if let Some(record) = mismatch
            && self.keep_mismatches > 0
        {
            self.mismatches.truncate(self.keep_mismatches - 1);
            self.mismatches.push_front(*record);
        }
    }
}

fn role_stats(window: &mut WindowStats, backend: Backend, role: Role) -> &mut RoleStats {
    let stats = window.backend_mut(backend);
    match role {
        Role::Serve => &mut stats.serve,
        Role::Shadow => &mut stats.shadow,
    }
}

/// Unix time in milliseconds (for records that outlive the process).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
