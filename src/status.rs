//! The JSON shapes of `GET /status` and `GET /mismatches`, built from a
//! stats snapshot. Pure: shared by the admin API and `understudy status`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::labels::{DropReason, FailureKind, Outcome, ShadowResult, StatusClass};
use crate::stats::stream::StreamReport;
use crate::stats::window::{RoleStats, WindowStats};

/// Counts and latency of one backend in one role.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RoleReport {
    pub requests: u64,
    /// 5xx, timeouts and transport errors.
    pub errors: u64,
    /// 4xx: the client's fault, reported apart.
    pub client_errors: u64,
    pub error_rate: Option<f64>,
    pub status: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, u64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Event-stream answers: time to first token, inter-token latency and
    /// decode rate; absent until this backend streamed output in the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamReport>,
}

impl RoleReport {
    pub fn from_stats(stats: &RoleStats) -> Self {
        let requests = stats.requests();
        let errors = stats.errors();
        Self {
            requests,
            errors,
            client_errors: stats.client_errors(),
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            status: StatusClass::ALL
                .iter()
                .zip(stats.by_class)
                .filter(|(_, n)| *n > 0)
                .map(|(class, n)| (class.as_str().to_string(), n))
                .collect(),
            failures: FailureKind::ALL
                .iter()
                .zip(stats.failures)
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| (kind.as_str().to_string(), n))
                .collect(),
            p50_ms: stats.percentile_ms(0.50),
            p90_ms: stats.percentile_ms(0.90),
            p99_ms: stats.percentile_ms(0.99),
            streams: stats.stream.as_deref().map(StreamReport::of),
        }
    }
}

/// One backend: both roles and their sum.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BackendReport {
    pub total: RoleReport,
    pub serve: RoleReport,
    pub shadow: RoleReport,
}

/// Comparison results of a window.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ComparisonReport {
    /// Pairs whose predictions were compared (match + mismatch).
    pub compared: u64,
    pub match_rate: Option<f64>,
    /// By outcome: match, mismatch, stable_error, shadow_error, uncomparable.
    pub outcomes: BTreeMap<String, u64>,
    pub elements_matched: u64,
    pub elements_mismatched: u64,
    /// Mirrored pairs not compared, by reason (busy, budget): no part of
    /// the match rate. `#[serde(default)]` also reads reports without it.
    #[serde(default)]
    pub dropped: BTreeMap<String, u64>,
}

/// Everything counted in one window.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct WindowReport {
    pub stable: BackendReport,
    pub candidate: BackendReport,
    pub comparisons: ComparisonReport,
    /// Mirror outcomes: sent, dropped_overload, dropped_busy, dropped_budget,
    /// skipped_body, skipped_route, error.
    pub shadow: BTreeMap<String, u64>,
}

impl WindowReport {
    pub fn from_window(window: &WindowStats) -> Self {
        let backend = |b: &crate::stats::BackendStats| BackendReport {
            total: RoleReport::from_stats(&b.combined()),
            serve: RoleReport::from_stats(&b.serve),
            shadow: RoleReport::from_stats(&b.shadow),
        };
        Self {
            stable: backend(&window.stable),
            candidate: backend(&window.candidate),
            comparisons: ComparisonReport {
                compared: window.compared(),
                match_rate: window.match_rate(),
                outcomes: Outcome::ALL
                    .iter()
                    .zip(window.comparisons)
                    .map(|(outcome, n)| (outcome.as_str().to_string(), n))
                    .collect(),
                elements_matched: window.elements.matched,
                elements_mismatched: window.elements.mismatched,
                dropped: DropReason::ALL
                    .iter()
                    .zip(window.compare_dropped)
                    .map(|(reason, n)| (reason.as_str().to_string(), n))
                    .collect(),
            },
            shadow: ShadowResult::ALL
                .iter()
                .zip(window.shadow)
                .map(|(r, n)| (r.as_str().to_string(), n))
                .collect(),
        }
    }
}
