//! What a replica publishes about its step window, and how the leader merges
//! the fleet's reports.
//!
//! Histograms travel as their recorded `(value, count)` pairs: re-recording
//! each pair into a histogram with the same bounds lands every sample in the
//! bucket it came from, so merged percentiles are exactly those of one
//! histogram that had seen all samples — and the reports stay compact (a
//! step's latencies occupy a few dozen buckets, not the 27 KiB array).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::compare::ElementCounts;
use crate::stats::window::latency_histogram;
use crate::stats::{BackendStats, RoleStats, ShadowResult, WindowStats};

/// One replica's step window, as stored under `PREFIX/replicas/ID`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub replica_id: String,
    /// The window epoch of the fleet state this window belongs to; the
    /// leader merges only reports of the current epoch.
    pub epoch: u64,
    /// When it was published (the replica's clock, unix ms).
    pub at_ms: u64,
    /// The weight this replica was serving.
    pub weight: f64,
    pub window: WireWindow,
}

/// [`WindowStats`] in a serializable form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireWindow {
    pub stable: WireBackend,
    pub candidate: WireBackend,
    pub comparisons: [u64; 5],
    /// `[matched, mismatched]` elements.
    pub elements: [u64; 2],
    /// Mirror outcomes in [`WIRE_SHADOW`] order: the order replicas of
    /// every version agree on.
    pub shadow: [u64; 5],
    /// Mirrors not started because comparisons were saturated or the byte
    /// budget was spent: `[dropped_busy, dropped_budget]`. Absent (zero)
    /// in reports of replicas that do not shed.
    #[serde(default)]
    pub shadow_shed: [u64; 2],
    /// Pairs not compared, in [`crate::stats::DropReason::ALL`] order;
    /// absent is zero.
    #[serde(default)]
    pub compare_dropped: [u64; 2],
    /// Per-request row sums for the per-row match gate; absent is none.
    #[serde(default)]
    pub row_clusters: crate::stats::window::RowClusters,
}

/// The mirror outcomes of [`WireWindow::shadow`], in wire order.
const WIRE_SHADOW: [ShadowResult; 5] = [
    ShadowResult::Sent,
    ShadowResult::DroppedOverload,
    ShadowResult::SkippedBody,
    ShadowResult::SkippedRoute,
    ShadowResult::Error,
];
const WIRE_SHED: [ShadowResult; 2] = [ShadowResult::DroppedBusy, ShadowResult::DroppedBudget];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireBackend {
    pub serve: WireRole,
    pub shadow: WireRole,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireRole {
    pub by_class: [u64; 6],
    pub failures: [u64; 5],
    /// `(latency µs, count)` for every non-empty histogram bucket.
    pub latency_us: Vec<(u64, u64)>,
}

impl From<&WindowStats> for WireWindow {
    fn from(w: &WindowStats) -> Self {
        Self {
            stable: (&w.stable).into(),
            candidate: (&w.candidate).into(),
            comparisons: w.comparisons,
            elements: [w.elements.matched, w.elements.mismatched],
            shadow: WIRE_SHADOW.map(|r| w.shadow[r.index()]),
            shadow_shed: WIRE_SHED.map(|r| w.shadow[r.index()]),
            compare_dropped: w.compare_dropped,
            row_clusters: w.row_clusters,
        }
    }
}

impl From<&BackendStats> for WireBackend {
    fn from(b: &BackendStats) -> Self {
        Self {
            serve: (&b.serve).into(),
            shadow: (&b.shadow).into(),
        }
    }
}

impl From<&RoleStats> for WireRole {
    fn from(r: &RoleStats) -> Self {
        Self {
            by_class: r.by_class,
            failures: r.failures,
            latency_us: r
                .latency_us
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }
}

impl WireWindow {
    /// Back into [`WindowStats`]; samples beyond the histogram's range
    /// saturate at its top, as they do when recorded locally.
    pub fn to_window(&self) -> WindowStats {
        WindowStats {
            stable: self.stable.to_backend(),
            candidate: self.candidate.to_backend(),
            comparisons: self.comparisons,
            elements: ElementCounts {
                matched: self.elements[0],
                mismatched: self.elements[1],
            },
            shadow: {
                let mut shadow = [0; ShadowResult::ALL.len()];
                for (result, n) in WIRE_SHADOW.iter().zip(self.shadow) {
                    shadow[result.index()] = n;
                }
                for (result, n) in WIRE_SHED.iter().zip(self.shadow_shed) {
                    shadow[result.index()] = n;
                }
                shadow
            },
            compare_dropped: self.compare_dropped,
            row_clusters: self.row_clusters,
        }
    }

    /// Requests one backend handled in either role.
    pub fn requests(&self) -> u64 {
        [&self.stable, &self.candidate]
            .iter()
            .flat_map(|b| [&b.serve, &b.shadow])
            .map(|r| r.by_class.iter().sum::<u64>())
            .sum()
    }
}

impl WireBackend {
    fn to_backend(&self) -> BackendStats {
        BackendStats {
            serve: self.serve.to_role(),
            shadow: self.shadow.to_role(),
        }
    }
}

impl WireRole {
    fn to_role(&self) -> RoleStats {
        RoleStats {
            by_class: self.by_class,
            failures: self.failures,
            latency_us: histogram_of(&self.latency_us),
            stream: None,
        }
    }
}

fn histogram_of(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut histogram = latency_histogram();
    for &(value, count) in pairs {
        histogram.saturating_record_n(value.max(1), count);
    }
    histogram
}

/// The fleet's window for the current epoch.
#[derive(Debug, Clone)]
pub struct Merged {
    pub window: WindowStats,
    /// Replicas whose window was merged.
    pub merged: usize,
    /// Every live replica reported a window of the current epoch: the
    /// merged window is the whole fleet's evidence.
    pub fleet_wide: bool,
}

/// Sums the windows of `reports` that belong to `epoch`. Counts are exact
/// sums; histograms are merged bucket by bucket.
pub fn merge<'r>(reports: impl IntoIterator<Item = &'r Report>, epoch: u64) -> Merged {
    let mut window = WindowStats::default();
    let (mut merged, mut live) = (0, 0);
    for report in reports {
        live += 1;
        if report.epoch == epoch {
            window.merge(&report.window.to_window());
            merged += 1;
        }
    }
    Merged {
        window,
        merged,
        fleet_wide: live > 0 && merged == live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Outcome;
    use crate::stats::window::outcome_index;

    fn window(requests: u64, latencies_ms: &[u64], matched: u64) -> WindowStats {
        let mut w = WindowStats::default();
        w.stable.serve.by_class[1] = requests;
        w.candidate.shadow.by_class[1] = requests;
        w.candidate.shadow.by_class[4] = 1;
        w.candidate.shadow.failures[2] = 1;
        for &ms in latencies_ms {
            w.stable.serve.latency_us.record(ms * 1000).unwrap();
            w.candidate.shadow.latency_us.record(ms * 2000).unwrap();
        }
        w.comparisons[outcome_index(Outcome::Match)] = matched;
        w.comparisons[outcome_index(Outcome::Mismatch)] = requests - matched;
        w.elements.matched = matched * 3;
        w
    }

    fn report(id: &str, epoch: u64, w: &WindowStats) -> Report {
        Report {
            replica_id: id.into(),
            epoch,
            at_ms: 1,
            weight: 0.0,
            window: w.into(),
        }
    }

    #[test]
    fn a_window_survives_the_wire() {
        let w = window(40, &[1, 2, 3, 250, 9000], 38);
        let json = serde_json::to_string(&report("r1", 3, &w)).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let restored = back.window.to_window();
        assert_eq!(restored.stable.serve.by_class, w.stable.serve.by_class);
        assert_eq!(
            restored.candidate.shadow.failures,
            w.candidate.shadow.failures
        );
        assert_eq!(restored.comparisons, w.comparisons);
        assert_eq!(restored.elements.matched, 114);
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(
                restored.stable.serve.latency_us.value_at_quantile(q),
                w.stable.serve.latency_us.value_at_quantile(q),
                "quantile {q}"
            );
        }
        assert_eq!(restored.stable.serve.latency_us.len(), 5);
    }

    #[test]
    fn shed_mirrors_and_dropped_pairs_survive_the_wire_and_old_reports_read_as_zero() {
        let mut w = window(10, &[1], 10);
        for (i, n) in w.shadow.iter_mut().enumerate() {
            *n = 10 + i as u64;
        }
        w.compare_dropped = [3, 4];
        let json = serde_json::to_string(&report("r1", 1, &w)).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        let restored = back.window.to_window();
        assert_eq!(restored.shadow, w.shadow);
        assert_eq!(restored.compare_dropped, [3, 4]);

        // A replica that does not shed sends neither field.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        let wire = old["window"].as_object_mut().unwrap();
        wire.remove("shadow_shed");
        wire.remove("compare_dropped");
        let back: Report = serde_json::from_value(old).unwrap();
        let restored = back.window.to_window();
        assert_eq!(restored.compare_dropped, [0, 0]);
        assert_eq!(restored.shadow[ShadowResult::DroppedBusy.index()], 0);
        assert_eq!(
            restored.shadow[ShadowResult::Sent.index()],
            w.shadow[ShadowResult::Sent.index()]
        );
    }

    #[test]
    fn merged_counts_are_sums_and_percentiles_come_from_merged_histograms() {
        let a = window(30, &[1; 99], 30);
        let b = window(20, &[100], 19);
        let c = window(10, &[50, 50], 10);
        let reports = [report("a", 2, &a), report("b", 2, &b), report("c", 2, &c)];
        let m = merge(&reports, 2);
        assert!(m.fleet_wide);
        assert_eq!(m.merged, 3);
        assert_eq!(m.window.stable.serve.requests(), 60);
        assert_eq!(m.window.candidate.shadow.errors(), 3);
        assert_eq!(m.window.compared(), 60);
        assert_eq!(m.window.comparisons_of(Outcome::Match), 59);
        // The reference: one histogram that saw every sample.
        let mut all = latency_histogram();
        for w in [&a, &b, &c] {
            all.add(&w.stable.serve.latency_us).unwrap();
        }
        for q in [0.5, 0.98, 0.99, 1.0] {
            assert_eq!(
                m.window.stable.serve.latency_us.value_at_quantile(q),
                all.value_at_quantile(q)
            );
        }
    }

    #[test]
    fn reports_of_another_epoch_are_left_out_and_the_merge_is_not_fleet_wide() {
        let w = window(10, &[1], 10);
        let reports = [report("a", 5, &w), report("b", 4, &w)];
        let m = merge(&reports, 5);
        assert!(!m.fleet_wide);
        assert_eq!(m.merged, 1);
        assert_eq!(m.window.stable.serve.requests(), 10);
        assert!(!merge(std::iter::empty(), 5).fleet_wide);
    }
}
