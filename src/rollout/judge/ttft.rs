//! The time-to-first-token criterion: for windows in which a backend
//! answered event streams, the candidate's TTFT is judged against
//! stable's exactly as head latency is ([`super::latency`]: the same
//! quantile choice, distribution-free bounds, tolerance
//! `max_latency_increase` / `max_latency_increase_ms` and confidence). A
//! model that sends its head at once and then thinks shows nothing in head
//! latency; its TTFT is what its users wait for.
//!
//! Windows without streams carry no TTFT and the criterion is absent, so
//! nothing changes for other traffic. Once streams appear the step cannot
//! pass before each side has [`super::latency::min_samples`] of them.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::latency::{self, LatencyTest, Looks};
use super::rules::Line;
use super::{Thresholds, slack_us};
use crate::stats::window::{RoleStats, latency_histogram};

/// Both backends' TTFT histograms (µs) in the window; a side that streamed
/// nothing has none.
#[derive(Clone, Copy, Debug)]
pub struct StreamWindow<'a> {
    pub stable: Option<&'a Histogram<u64>>,
    pub candidate: Option<&'a Histogram<u64>>,
}

impl<'a> StreamWindow<'a> {
    /// The streams of both sides (served and shadowed merged); `None` when
    /// neither answered an event stream with output.
    pub fn of(stable: &'a RoleStats, candidate: &'a RoleStats) -> Option<Self> {
        let ttft = |s: &'a RoleStats| s.stream.as_deref().map(|s| &s.ttft_us);
        let w = Self {
            stable: ttft(stable),
            candidate: ttft(candidate),
        };
        (w.stable.is_some() || w.candidate.is_some()).then_some(w)
    }
}

/// The TTFT test as judged, recorded with the evidence.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TtftEvidence {
    /// Streams timed on the stable side.
    pub stable_samples: u64,
    /// Streams timed on the candidate side.
    pub candidate_samples: u64,
    /// Quantile, both sides, log ratio and limit, as for head latency.
    pub test: LatencyTest,
}

impl TtftEvidence {
    pub fn measure(w: &StreamWindow, t: &Thresholds, looks: Looks) -> Self {
        let empty = latency_histogram();
        let (stable, candidate) = (w.stable.unwrap_or(&empty), w.candidate.unwrap_or(&empty));
        Self {
            stable_samples: stable.len(),
            candidate_samples: candidate.len(),
            test: LatencyTest::measure(
                stable,
                candidate,
                t.max_latency_increase,
                slack_us(t),
                looks,
            ),
        }
    }
}

/// The TTFT criterion's verdict and reason: the latency rule on the TTFT
/// test, its sentences naming what was judged.
pub(super) fn rule(e: &TtftEvidence, t: &Thresholds, looks: Looks) -> Line {
    let (verdict, reason) = latency::rule(
        &e.test,
        (e.candidate_samples, e.stable_samples),
        t.max_latency_increase,
        slack_us(t),
        looks,
    );
    let reason = match reason.strip_prefix("latency") {
        Some(rest) => format!(
            "time to first token{}",
            rest.replacen(" latency samples", " streams", 1)
        ),
        None => reason,
    };
    (verdict, reason)
}
