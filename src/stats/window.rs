//! Counters and latency histograms for one window of time, and how windows
//! merge. Pure data: no clocks, channels or metrics here, so the rollout
//! judge and `understudy validate` can use the same types.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stream::StreamStats;
use crate::compare::ElementCounts;
pub use crate::labels::{DropReason, FailureKind, Outcome, ShadowResult, StatusClass};
use crate::split::Backend;

/// Highest latency a histogram tracks: five minutes, in microseconds. Larger
/// samples saturate at this value rather than being lost.
pub const MAX_LATENCY_US: u64 = 300_000_000;
/// Two significant digits: 1% error on any percentile, and a histogram of
/// about 27 KiB, so many windows fit in a few MiB.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Creates an empty latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants known to be valid, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// One backend in one role (serving clients, or shadowing).
#[derive(Debug, Clone)]
pub struct RoleStats {
    /// Requests by [`StatusClass::index`].
    pub by_class: [u64; StatusClass::COUNT],
    /// Failures by [`FailureKind::index`] (a body failure also has a status
    /// class).
    pub failures: [u64; FailureKind::COUNT],
    /// Time to the response head, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Event-stream timing (TTFT, ITL, decode rate); `None` until this
    /// backend answered an event stream with output in this role.
    pub stream: Option<Box<StreamStats>>,
}

impl Default for RoleStats {
    fn default() -> Self {
        Self {
            by_class: [0; StatusClass::COUNT],
            failures: [0; FailureKind::COUNT],
            latency_us: latency_histogram(),
            stream: None,
        }
    }
}

impl RoleStats {
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// 5xx, timeouts, transport errors, bodies that broke off and failed
    /// gRPC calls: what the rollout judge counts against a backend. 4xx are
    /// the client's fault.
    pub fn errors(&self) -> u64 {
        self.by_class[StatusClass::ServerError.index()]
            + self.by_class[StatusClass::Error.index()]
            + self.failures[FailureKind::Body.index()]
            + self.failures[FailureKind::Grpc.index()]
    }

    pub fn client_errors(&self) -> u64 {
        self.by_class[StatusClass::ClientError.index()]
    }

    pub fn merge(&mut self, other: &RoleStats) {
        for (a, b) in self.by_class.iter_mut().zip(other.by_class) {
            *a += b;
        }
        for (a, b) in self.failures.iter_mut().zip(other.failures) {
            *a += b;
        }
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        StreamStats::merge_into(&mut self.stream, other.stream.as_deref());
    }

    /// Latency percentile in milliseconds, `None` without samples.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Serving and shadow traffic of one backend.
#[derive(Debug, Clone, Default)]
pub struct BackendStats {
    pub serve: RoleStats,
    pub shadow: RoleStats,
}

impl BackendStats {
    /// Both roles together: in every phase one backend serves and the other
    /// shadows, so the judge compares all traffic each backend handled.
    pub fn combined(&self) -> RoleStats {
        let mut all = self.serve.clone();
        all.merge(&self.shadow);
        all
    }

    pub fn merge(&mut self, other: &BackendStats) {
        self.serve.merge(&other.serve);
        self.shadow.merge(&other.shadow);
    }
}

/// Index of a comparison outcome in [`WindowStats::comparisons`]; the same
/// as [`Outcome::index`], kept for callers that index windows by function.
pub fn outcome_index(outcome: Outcome) -> usize {
    outcome.index()
}

/// Everything counted in one window.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub stable: BackendStats,
    pub candidate: BackendStats,
    /// Comparison outcomes by [`Outcome::index`].
    pub comparisons: [u64; Outcome::COUNT],
    pub elements: ElementCounts,
    /// Mirror outcomes by [`ShadowResult::index`].
    pub shadow: [u64; ShadowResult::COUNT],
    /// Pairs not compared, by [`DropReason::index`].
    pub compare_dropped: [u64; DropReason::COUNT],
    /// Per-request sums behind a clustered per-row agreement bound.
    pub row_clusters: RowClusters,
}

/// Sums over compared requests with rows, enough for a cluster-robust
/// variance of the per-row agreement: rows in one request share its input
/// and model path, so they are not independent draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RowClusters {
    /// Requests with at least one compared row.
    pub requests: u64,
    /// Σ rows.
    pub rows: u64,
    /// Σ matched rows.
    pub matched: u64,
    /// Σ rows², Σ matched², Σ rows·matched (f64: a sum of squares of
    /// large batches outgrows nothing a window holds, and stays mergeable).
    pub rows_sq: f64,
    pub matched_sq: f64,
    pub rows_matched: f64,
    /// Σ rows³, Σ matched³, Σ matched²·rows, Σ matched·rows²: the third
    /// moment, for the skewness correction (one odd request in many is a
    /// long tail that a variance alone underrates).
    pub rows_cu: f64,
    pub matched_cu: f64,
    pub matched_sq_rows: f64,
    pub matched_rows_sq: f64,
}

impl RowClusters {
    /// Adds one request's per-row comparison.
    pub fn record(&mut self, e: &ElementCounts) {
        let rows = e.matched + e.mismatched;
        if rows == 0 {
            return;
        }
        let (m, y) = (rows as f64, e.matched as f64);
        self.requests += 1;
        self.rows += rows;
        self.matched += e.matched;
        self.rows_sq += m * m;
        self.matched_sq += y * y;
        self.rows_matched += m * y;
        self.rows_cu += m * m * m;
        self.matched_cu += y * y * y;
        self.matched_sq_rows += y * y * m;
        self.matched_rows_sq += y * m * m;
    }

    pub fn merge(&mut self, o: &RowClusters) {
        self.requests += o.requests;
        self.rows += o.rows;
        self.matched += o.matched;
        self.rows_sq += o.rows_sq;
        self.matched_sq += o.matched_sq;
        self.rows_matched += o.rows_matched;
        self.rows_cu += o.rows_cu;
        self.matched_cu += o.matched_cu;
        self.matched_sq_rows += o.matched_sq_rows;
        self.matched_rows_sq += o.matched_rows_sq;
    }
}

impl WindowStats {
    pub fn backend(&self, backend: Backend) -> &BackendStats {
        match backend {
            Backend::Stable => &self.stable,
            Backend::Candidate => &self.candidate,
        }
    }

    pub fn backend_mut(&mut self, backend: Backend) -> &mut BackendStats {
        match backend {
            Backend::Stable => &mut self.stable,
            Backend::Candidate => &mut self.candidate,
        }
    }

    pub fn comparisons_of(&self, outcome: Outcome) -> u64 {
        self.comparisons[outcome.index()]
    }

    /// Pairs whose predictions were compared (match + mismatch).
    pub fn compared(&self) -> u64 {
        self.comparisons_of(Outcome::Match) + self.comparisons_of(Outcome::Mismatch)
    }

    /// Mirrored pairs that were not compared, for any reason.
    pub fn compare_dropped_total(&self) -> u64 {
        self.compare_dropped.iter().sum()
    }

    /// Share of compared pairs that matched; `None` before any comparison.
    pub fn match_rate(&self) -> Option<f64> {
        let compared = self.compared();
        (compared > 0).then(|| self.comparisons_of(Outcome::Match) as f64 / compared as f64)
    }

    pub fn merge(&mut self, other: &WindowStats) {
        self.stable.merge(&other.stable);
        self.candidate.merge(&other.candidate);
        for (a, b) in self.comparisons.iter_mut().zip(other.comparisons) {
            *a += b;
        }
        for (a, b) in self.shadow.iter_mut().zip(other.shadow) {
            *a += b;
        }
        for (a, b) in self.compare_dropped.iter_mut().zip(other.compare_dropped) {
            *a += b;
        }
        self.elements.matched += other.elements.matched;
        self.elements.mismatched += other.elements.mismatched;
        self.row_clusters.merge(&other.row_clusters);
    }
}
