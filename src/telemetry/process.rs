//! The process's own series in the Prometheus client convention:
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`,
//! `process_threads`, `process_start_time_seconds` (what the platform
//! reports), read by the `metrics-process` crate into a proxy's own
//! recorder.

use metrics_exporter_prometheus::PrometheusRecorder;
use metrics_process::Collector;

pub(super) struct ProcessMetrics(Collector);

impl ProcessMetrics {
    /// Describes the series on `recorder` and reads them once, so the first
    /// exposition already has them.
    pub(super) fn new(recorder: &PrometheusRecorder) -> Self {
        let collector = Collector::default();
        metrics::with_local_recorder(recorder, || {
            collector.describe();
            collector.collect();
        });
        Self(collector)
    }

    /// Reads the current figures into `recorder`.
    pub(super) fn collect(&self, recorder: &PrometheusRecorder) {
        metrics::with_local_recorder(recorder, || self.0.collect());
    }
}
