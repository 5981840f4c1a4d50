//! The config file exactly as written: serde structs that mirror the TOML.
//!
//! Every struct denies unknown fields so a typo in a threshold fails loudly
//! instead of silently keeping a default. Nothing here is validated; that is
//! `build.rs`'s job, which turns these into the typed [`super::Config`].

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub backends: RawBackends,
    #[serde(default)]
    pub shadow: RawShadow,
    #[serde(default)]
    pub compare: RawCompare,
    pub rollout: Option<RawRollout>,
    #[serde(default)]
    pub split: RawSplit,
    #[serde(default)]
    pub log: RawLog,
    pub record: Option<RawRecord>,
    pub fleet: Option<RawFleet>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub addr: Option<String>,
    pub backend_header: Option<bool>,
    pub drain_timeout: Option<String>,
    pub max_connections: Option<i64>,
    pub workers: Option<i64>,
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub body_idle_timeout: Option<String>,
    pub request_buffer_bytes: Option<i64>,
    pub request_buffer_timeout: Option<String>,
    pub send_timeout: Option<String>,
    pub response_buffer_bytes: Option<i64>,
    pub response_spill_bytes: Option<i64>,
    pub spill_dir: Option<String>,
    pub tls: Option<RawListenTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub handshake_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub addr: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackends {
    pub stable: Option<RawBackend>,
    pub candidate: Option<RawBackend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub http2: Option<bool>,
    pub pool_max_idle: Option<i64>,
    pub max_connections: Option<i64>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub percent: Option<f64>,
    pub max_in_flight: Option<i64>,
    pub max_body_bytes: Option<i64>,
    pub max_buffered_bytes: Option<i64>,
    pub timeout: Option<String>,
    pub routes: Option<Vec<String>>,
    pub strip_headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    pub format: Option<String>,
    pub preset: Option<String>,
    pub pointer: Option<String>,
    pub ignore: Option<Vec<String>>,
    pub abs_tolerance: Option<f64>,
    pub rel_tolerance: Option<f64>,
    pub mode: Option<String>,
    pub min_cosine: Option<f64>,
    pub text: Option<String>,
    pub min_similarity: Option<f64>,
    pub keep_mismatches: Option<i64>,
    pub threads: Option<i64>,
    pub queue: Option<i64>,
    pub priority: Option<String>,
    pub noise_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub steps: Option<Vec<f64>>,
    pub interval: Option<String>,
    pub min_requests: Option<i64>,
    pub max_error_rate: Option<f64>,
    pub max_latency_increase: Option<f64>,
    pub max_latency_increase_ms: Option<f64>,
    pub min_match_rate: Option<f64>,
    pub max_match_rate_drop: Option<f64>,
    pub match_unit: Option<String>,
    pub state_file: Option<String>,
    pub max_step_duration: Option<String>,
    pub webhook: Option<String>,
    pub webhook_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub sticky: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub access: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub path: Option<String>,
    pub percent: Option<f64>,
    pub max_bytes: Option<i64>,
    pub headers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub replica_id: Option<String>,
    pub lease_ttl: Option<String>,
    pub tls: Option<RawFleetTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetTls {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub domain: Option<String>,
}
