//! Metric handles and log setup.
//!
//! Every Prometheus series is registered once, here, with labels from the
//! closed sets of [`crate::labels`] (the only part of the crate it imports);
//! the data path only bumps pre-built handles (atomics), never builds a key
//! or takes a lock. Each proxy instance owns its own recorder instead of a
//! process-global one, so tests can run several proxies in one process.
//! Besides understudy's own series the exposition carries
//! `understudy_build_info` and the process's `process_*` series, read at
//! each render (the `process` submodule).

mod descriptions;
mod process;
mod streams;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

pub use crate::labels::BACKENDS;
use crate::labels::{
    DropReason, FailureKind, Outcome, Phase, Role, ShadowResult, StatusClass, Verdict,
};
use descriptions::{DESCRIPTIONS, Kind};
use process::ProcessMetrics;
pub use streams::StreamMetrics;

/// Latency buckets in seconds, from a fast in-memory model (1 ms) to a slow
/// generative one (60 s).
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// `understudy_fleet_*`.
pub struct FleetGauges {
    pub replicas: Gauge,
    pub leader: Gauge,
    pub connected: Gauge,
}

/// All of understudy's metrics, registered once.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `[backend][role][status class]`, by [`BACKENDS`], [`Role::index`]
    /// and [`StatusClass::index`].
    pub requests: [[[Counter; StatusClass::COUNT]; Role::COUNT]; 2],
    /// `[backend][role]`
    pub duration: [[Histogram; Role::COUNT]; 2],
    /// `[backend][role][failure kind]`, the last by [`FailureKind::index`].
    pub upstream_failures: [[[Counter; FailureKind::COUNT]; Role::COUNT]; 2],
    /// By [`ShadowResult::index`].
    pub shadow: [Counter; ShadowResult::COUNT],
    /// By [`Outcome::index`].
    pub comparisons: [Counter; Outcome::COUNT],
    /// By [`DropReason::index`].
    pub comparisons_dropped: [Counter; DropReason::COUNT],
    pub shadow_buffered_bytes: Gauge,
    pub compare_queue_depth: Gauge,
    /// `[match, mismatch]`
    pub elements: [Counter; 2],
    pub match_ratio: Gauge,
    /// `understudy_canary_weight_ratio` and the deprecated
    /// `understudy_canary_weight_percent`: set both with
    /// [`Metrics::set_canary_weight`].
    weight_ratio: Gauge,
    weight_percent: Gauge,
    /// By [`Phase::index`].
    pub phase: [Gauge; Phase::COUNT],
    /// By [`Verdict::index`].
    pub decisions: [Counter; Verdict::COUNT],
    pub rollbacks: Counter,
    /// `[success, error]`
    pub reloads: [Counter; 2],
    pub stats_dropped: Counter,
    pub shadow_in_flight: Gauge,
    pub connections: Gauge,
    pub connections_rejected: Counter,
    pub access_log_dropped: Counter,
    /// `understudy_record_total{result}`: `[written, dropped]`
    pub record: [Counter; 2],
    pub tls_handshake_failures: Counter,
    /// `understudy_requests_rejected_total{reason="body_too_large"}`
    pub body_too_large: Counter,
    /// `understudy_requests_rejected_total{reason="client_aborted"}`
    pub client_aborted: Counter,
    /// `understudy_requests_rejected_total{reason="client_timeout"}`
    pub client_timeout: Counter,
    /// `understudy_requests_rejected_total{reason="backend_busy"}`
    pub backend_busy: Counter,
    /// `understudy_requests_rejected_total{reason="malformed"}`
    pub malformed: Counter,
    pub state_persist_failures: Counter,
    pub state_file_behind: Gauge,
    pub responses_spilled: Counter,
    pub response_spill_failures: Counter,
    /// Time to first token, inter-token latency and decode rate of
    /// event-stream answers.
    pub streams: StreamMetrics,
    process: ProcessMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("understudy_request_duration_seconds".into()),
                &DURATION_BUCKETS,
            )
            .expect("bucket list is non-empty");
        let recorder = streams::buckets(recorder).build_recorder();
        let handle = recorder.handle();
        let r = Registrar(&recorder);

        for (name, kind, help) in DESCRIPTIONS {
            match kind {
                Kind::Counter => r.describe_counter(name, help),
                Kind::Gauge => r.describe_gauge(name, help),
                Kind::Histogram => r.describe_histogram(name, help),
            }
        }

        let requests = BACKENDS.map(|backend| {
            Role::ALL.map(|role| {
                StatusClass::ALL.map(|class| {
                    r.counter(
                        "understudy_requests_total",
                        &[
                            ("backend", backend),
                            ("role", role.as_str()),
                            ("status_class", class.as_str()),
                        ],
                    )
                })
            })
        });
        let duration = BACKENDS.map(|backend| {
            Role::ALL.map(|role| {
                r.histogram(
                    "understudy_request_duration_seconds",
                    &[("backend", backend), ("role", role.as_str())],
                )
            })
        });
        let upstream_failures = BACKENDS.map(|backend| {
            Role::ALL.map(|role| {
                FailureKind::ALL.map(|kind| {
                    r.counter(
                        "understudy_upstream_failures_total",
                        &[
                            ("backend", backend),
                            ("role", role.as_str()),
                            ("kind", kind.as_str()),
                        ],
                    )
                })
            })
        });
        r.gauge(
            "understudy_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("UNDERSTUDY_REVISION")),
            ],
        )
        .set(1.0);
        Metrics {
            requests,
            duration,
            upstream_failures,
            shadow: ShadowResult::ALL
                .map(|s| r.counter("understudy_shadow_total", &[("result", s.as_str())])),
            comparisons: Outcome::ALL
                .map(|o| r.counter("understudy_comparisons_total", &[("result", o.as_str())])),
            comparisons_dropped: DropReason::ALL.map(|d| {
                r.counter(
                    "understudy_comparisons_dropped_total",
                    &[("reason", d.as_str())],
                )
            }),
            shadow_buffered_bytes: r.gauge("understudy_shadow_buffered_bytes", &[]),
            compare_queue_depth: r.gauge("understudy_compare_queue_depth", &[]),
            elements: ["match", "mismatch"]
                .map(|e| r.counter("understudy_prediction_elements_total", &[("result", e)])),
            match_ratio: r.gauge("understudy_match_ratio", &[]),
            weight_ratio: r.gauge("understudy_canary_weight_ratio", &[]),
            weight_percent: r.gauge("understudy_canary_weight_percent", &[]),
            phase: Phase::ALL
                .map(|p| r.gauge("understudy_rollout_phase", &[("phase", p.as_str())])),
            decisions: Verdict::ALL.map(|v| {
                r.counter(
                    "understudy_rollout_decisions_total",
                    &[("verdict", v.as_str())],
                )
            }),
            rollbacks: r.counter("understudy_rollbacks_total", &[]),
            reloads: ["success", "error"]
                .map(|res| r.counter("understudy_config_reloads_total", &[("result", res)])),
            stats_dropped: r.counter("understudy_stats_events_dropped_total", &[]),
            shadow_in_flight: r.gauge("understudy_shadow_in_flight", &[]),
            connections: r.gauge("understudy_connections_open", &[]),
            connections_rejected: r.counter("understudy_connections_rejected_total", &[]),
            access_log_dropped: r.counter("understudy_access_log_dropped_total", &[]),
            record: ["written", "dropped"]
                .map(|res| r.counter("understudy_record_total", &[("result", res)])),
            tls_handshake_failures: r.counter("understudy_tls_handshake_failures_total", &[]),
            body_too_large: r.counter(
                "understudy_requests_rejected_total",
                &[("reason", "body_too_large")],
            ),
            client_aborted: r.counter(
                "understudy_requests_rejected_total",
                &[("reason", "client_aborted")],
            ),
            client_timeout: r.counter(
                "understudy_requests_rejected_total",
                &[("reason", "client_timeout")],
            ),
            backend_busy: r.counter(
                "understudy_requests_rejected_total",
                &[("reason", "backend_busy")],
            ),
            malformed: r.counter(
                "understudy_requests_rejected_total",
                &[("reason", "malformed")],
            ),
            state_persist_failures: r.counter("understudy_state_persist_failures_total", &[]),
            state_file_behind: r.gauge("understudy_state_file_behind", &[]),
            responses_spilled: r.counter("understudy_responses_spilled_total", &[]),
            response_spill_failures: r.counter("understudy_response_spill_failures_total", &[]),
            streams: StreamMetrics::new(&r),
            process: ProcessMetrics::new(&recorder),
            handle,
            recorder,
        }
    }

    /// Sets `understudy_rollout_phase{phase}` to 1 for `phase` only.
    pub fn set_phase(&self, phase: Phase) {
        for (p, gauge) in Phase::ALL.iter().zip(&self.phase) {
            gauge.set(if *p == phase { 1.0 } else { 0.0 });
        }
    }

    /// Sets the candidate's share of client traffic, given in percent.
    pub fn set_canary_weight(&self, percent: f64) {
        self.weight_ratio.set(percent / 100.0);
        self.weight_percent.set(percent);
    }

    /// Prometheus text exposition of every metric, with the process's
    /// figures read now.
    pub fn render(&self) -> String {
        self.process.collect(&self.recorder);
        self.handle.render()
    }

    /// Registers the fleet gauges; only fleet mode exports them.
    pub fn fleet_gauges(&self) -> FleetGauges {
        let r = Registrar(&self.recorder);
        FleetGauges {
            replicas: r.gauge("understudy_fleet_replicas", &[]),
            leader: r.gauge("understudy_fleet_leader", &[]),
            connected: r.gauge("understudy_fleet_connected", &[]),
        }
    }

    /// Housekeeping the exporter needs periodically (histogram rollover).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The recorder, to keep it alive as long as the handles.
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

struct Registrar<'a>(&'a PrometheusRecorder);

impl Registrar<'_> {
    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::new(*k, *v)).collect();
        Key::from_parts(name, labels)
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        let counter = self.0.register_counter(&Self::key(name, labels), &METADATA);
        // Registering alone does not export a series; touching it does, so
        // every label combination is visible (as 0) from the first scrape.
        counter.increment(0);
        counter
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        let gauge = self.0.register_gauge(&Self::key(name, labels), &METADATA);
        gauge.set(0.0);
        gauge
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Histogram {
        self.0
            .register_histogram(&Self::key(name, labels), &METADATA)
    }

    fn describe_counter(&self, name: &'static str, help: &'static str) {
        self.0
            .describe_counter(KeyName::from(name), None, SharedString::from(help));
    }

    fn describe_gauge(&self, name: &'static str, help: &'static str) {
        self.0
            .describe_gauge(KeyName::from(name), None, SharedString::from(help));
    }

    fn describe_histogram(&self, name: &'static str, help: &'static str) {
        self.0.describe_histogram(
            KeyName::from(name),
            Some(Unit::Seconds),
            SharedString::from(help),
        );
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default
/// `default_level`), output to stderr in the chosen format. Records of
/// libraries that log through the `log` crate (rustls) are turned into
/// events under their own target by the `tracing-log` bridge this also
/// installs. Safe to call twice (the second call is ignored), which matters
/// in tests.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
