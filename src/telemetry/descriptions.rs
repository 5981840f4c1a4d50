//! The help text of every understudy series, and its kind.

pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Help text of every metric: `promtool check metrics` rejects a series
/// without one, and a test runs it on our exposition.
pub(super) const DESCRIPTIONS: [(&str, Kind, &str); 37] = [
    (
        "understudy_requests_total",
        Kind::Counter,
        "Requests sent to each backend, by role (serve|shadow) and status class.",
    ),
    (
        "understudy_request_duration_seconds",
        Kind::Histogram,
        "Time from sending a request to a backend until its response head arrived.",
    ),
    (
        "understudy_time_to_first_token_seconds",
        Kind::Histogram,
        "Event-stream answers: time from sending a request to a backend until the first event carrying output arrived.",
    ),
    (
        "understudy_inter_token_latency_seconds",
        Kind::Histogram,
        "Event-stream answers: gaps between consecutive events carrying output.",
    ),
    (
        "understudy_output_tokens_per_second",
        Kind::Histogram,
        "Event-stream answers that reported usage: output tokens after the first per second between the first and the last event carrying output.",
    ),
    (
        "understudy_upstream_failures_total",
        Kind::Counter,
        "Requests to a backend that yielded no usable response (or a failed body or gRPC status), by kind.",
    ),
    (
        "understudy_shadow_total",
        Kind::Counter,
        "What happened to each request chosen for mirroring.",
    ),
    (
        "understudy_comparisons_total",
        Kind::Counter,
        "Outcome of comparing the stable and candidate responses of one request.",
    ),
    (
        "understudy_noise_comparisons_total",
        Kind::Counter,
        "Outcome of comparing two answers of the stable backend to the same request (compare.noise_percent): the noise floor, apart from understudy_comparisons_total.",
    ),
    (
        "understudy_noise_dropped_total",
        Kind::Counter,
        "Requests sampled by compare.noise_percent whose second stable request was not sent: no mirror permit left, or half the shadow byte budget in use.",
    ),
    (
        "understudy_comparisons_dropped_total",
        Kind::Counter,
        "Mirrored pairs not compared, by reason: busy (the comparison queue was full) or budget (the answers did not fit shadow.max_buffered_bytes). A dropped pair is no comparison; the shadow's latency still counts.",
    ),
    (
        "understudy_shadow_buffered_bytes",
        Kind::Gauge,
        "Bytes held by mirrors in flight (request and response copies, and what each reserved ahead when it started), against shadow.max_buffered_bytes.",
    ),
    (
        "understudy_compare_queue_depth",
        Kind::Gauge,
        "Mirrored pairs waiting for a comparison thread.",
    ),
    (
        "understudy_prediction_elements_total",
        Kind::Counter,
        "Per-row agreement of batch predictions.",
    ),
    (
        "understudy_match_ratio",
        Kind::Gauge,
        "Share of compared responses that matched over the last minute.",
    ),
    (
        "understudy_canary_weight_ratio",
        Kind::Gauge,
        "Share of client traffic served by the candidate, 0 to 1.",
    ),
    (
        "understudy_canary_weight_percent",
        Kind::Gauge,
        "Deprecated, use understudy_canary_weight_ratio: share of client traffic served by the candidate, in percent.",
    ),
    (
        "understudy_rollout_phase",
        Kind::Gauge,
        "1 for the rollout's current phase, 0 for the others.",
    ),
    (
        "understudy_rollout_decisions_total",
        Kind::Counter,
        "Rollout judge decisions by verdict.",
    ),
    (
        "understudy_rollbacks_total",
        Kind::Counter,
        "Rollbacks, automatic or manual.",
    ),
    (
        "understudy_config_reloads_total",
        Kind::Counter,
        "Config reloads (SIGHUP or POST /reload) by result.",
    ),
    (
        "understudy_stats_events_dropped_total",
        Kind::Counter,
        "Statistics events dropped because the stats task fell behind.",
    ),
    (
        "understudy_shadow_in_flight",
        Kind::Gauge,
        "Mirrored requests currently in flight.",
    ),
    (
        "understudy_connections_open",
        Kind::Gauge,
        "Client connections currently open.",
    ),
    (
        "understudy_connections_rejected_total",
        Kind::Counter,
        "Client connections refused because listen.max_connections was reached.",
    ),
    (
        "understudy_access_log_dropped_total",
        Kind::Counter,
        "Access log lines that never reached the log: the writer fell behind, or the write failed (full disk, no permission).",
    ),
    (
        "understudy_record_total",
        Kind::Counter,
        "Requests sampled by [record]: written to the recording, or dropped (queue full, body over the cap, write failed).",
    ),
    (
        "understudy_tls_handshake_failures_total",
        Kind::Counter,
        "Client TLS handshakes that failed or timed out (e.g. no valid client certificate).",
    ),
    (
        "understudy_requests_rejected_total",
        Kind::Counter,
        "Client requests answered by the proxy itself, by reason: body over listen.max_body_bytes (413), an upload that broke off (400) or was too slow (408), a head it will not forward (malformed: CONNECT, no Host, unknown transfer coding), or every connection slot to the serving backend busy for its whole timeout (503, backend_busy: the proxy's queueing, never counted against the backend).",
    ),
    (
        "understudy_state_persist_failures_total",
        Kind::Counter,
        "Failed writes of the rollout state file (each retry counts); the change stays in memory and is retried.",
    ),
    (
        "understudy_responses_spilled_total",
        Kind::Counter,
        "Serving answers whose client read slower than the backend answered, so the rest went to a file in listen.spill_dir and the backend's connection was freed.",
    ),
    (
        "understudy_response_spill_failures_total",
        Kind::Counter,
        "Answers that could not be spilled to listen.spill_dir (full disk, permissions); they wait for their slow client, holding the backend's connection.",
    ),
    (
        "understudy_state_file_behind",
        Kind::Gauge,
        "1 while the rollout state file on disk is older than the state in memory (its writes are failing).",
    ),
    (
        "understudy_build_info",
        Kind::Gauge,
        "Always 1; its labels name the running build: version (the crate's) and revision (git commit, or unknown).",
    ),
    (
        "understudy_fleet_replicas",
        Kind::Gauge,
        "Fleet mode: live replicas of this rollout (those with a current report in etcd).",
    ),
    (
        "understudy_fleet_leader",
        Kind::Gauge,
        "Fleet mode: 1 on the replica that leads the rollout, 0 on the others.",
    ),
    (
        "understudy_fleet_connected",
        Kind::Gauge,
        "Fleet mode: 1 while this replica reaches etcd, 0 while it serves on the last known weight.",
    ),
];
