//! `[rollout]` as validated: the steps, the thresholds each step is judged
//! against, where the state lives, and the defaults of each. The rollout
//! module builds its judge thresholds and machine settings from these; this
//! module knows nothing of how they are used.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Serialize};

/// Default canary steps, in candidate percent: small first, so a bad
/// candidate touches few users before the judge has evidence.
pub const DEFAULT_STEPS: [f64; 4] = [5.0, 25.0, 50.0, 100.0];
/// Minimum time per step: long enough to see a minute of traffic patterns.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Minimum samples per step before anything can pass.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
pub const DEFAULT_MAX_LATENCY_INCREASE: f64 = 0.20;
/// Default absolute latency slack in milliseconds: half a millisecond is
/// far below what a person notices, yet above the tens of microseconds a
/// sub-millisecond backend's p99 moves by between two hosts.
pub const DEFAULT_LATENCY_SLACK_MS: f64 = 0.5;
pub const DEFAULT_MIN_MATCH_RATE: f64 = 0.95;
pub const DEFAULT_STATE_FILE: &str = "understudy-state.json";

#[derive(Debug, Clone)]
pub struct Rollout {
    pub steps: Vec<f64>,
    pub interval: Duration,
    pub min_requests: u64,
    pub max_error_rate: f64,
    pub max_latency_increase: f64,
    /// Absolute latency slack in milliseconds (see the judge's tolerance).
    pub max_latency_increase_ms: f64,
    pub min_match_rate: f64,
    /// The relative match gate: how far the candidate's match rate may
    /// fall below stable's agreement with itself (`compare.noise_percent`).
    /// When set it replaces the absolute `min_match_rate` gate.
    pub max_match_rate_drop: Option<f64>,
    /// `request` (default) or `row`: what `min_match_rate` counts.
    pub match_unit: MatchUnit,
    pub state_file: PathBuf,
    pub max_step_duration: Option<Duration>,
    /// Where phase changes are posted: an `http://` or `https://` URL.
    pub webhook: Option<Uri>,
    /// The CA an `https://` webhook's certificate is verified against
    /// (default: Mozilla's roots).
    pub webhook_ca: Option<PathBuf>,
}

/// The unit the match criterion counts (`rollout.match_unit`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchUnit {
    /// A response matches when every compared part of it matches.
    #[default]
    Request,
    /// Each prediction row of a batch counts, with a bound that allows
    /// for rows of one request being alike (see the judge's `rows`).
    Row,
}
