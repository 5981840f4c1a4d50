//! The event-stream series: time to first token, inter-token latency and
//! decode rate, per backend and role (see `crate::stats::stream`).

use metrics::Histogram;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use super::{BACKENDS, DURATION_BUCKETS, Registrar};
use crate::labels::Role;

pub(super) const TTFT: &str = "understudy_time_to_first_token_seconds";
pub(super) const ITL: &str = "understudy_inter_token_latency_seconds";
pub(super) const RATE: &str = "understudy_output_tokens_per_second";

/// Gaps between tokens: a fast decoder emits one every few milliseconds, a
/// stalled one pauses for seconds.
const ITL_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];
/// Output tokens per second of one stream, from a slow large model to a
/// small fast one.
const RATE_BUCKETS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0, 2000.0,
];

/// `[backend][role]` handles of each series, by [`BACKENDS`] and
/// [`Role::index`].
pub struct StreamMetrics {
    pub ttft: [[Histogram; Role::COUNT]; 2],
    pub itl: [[Histogram; Role::COUNT]; 2],
    pub tokens_per_second: [[Histogram; Role::COUNT]; 2],
}

/// Gives each series its buckets (without them the exporter would write a
/// summary).
pub(super) fn buckets(builder: PrometheusBuilder) -> PrometheusBuilder {
    [
        (TTFT, &DURATION_BUCKETS[..]),
        (ITL, &ITL_BUCKETS[..]),
        (RATE, &RATE_BUCKETS[..]),
    ]
    .into_iter()
    .fold(builder, |builder, (name, buckets)| {
        builder
            .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
            .expect("bucket lists are non-empty")
    })
}

impl StreamMetrics {
    pub(super) fn new(r: &Registrar) -> Self {
        let each = |name| {
            BACKENDS.map(|backend| {
                Role::ALL
                    .map(|role| r.histogram(name, &[("backend", backend), ("role", role.as_str())]))
            })
        };
        Self {
            ttft: each(TTFT),
            itl: each(ITL),
            tokens_per_second: each(RATE),
        }
    }
}
