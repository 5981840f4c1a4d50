//! The thresholds a window is judged against: what they mean, their
//! defaults (those of `[rollout]`), how they come from the config and how
//! they (de)serialize in the persisted rollout state.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{self, MatchUnit};

/// Thresholds a step is judged against. Missing fields deserialize to the
/// defaults; `interval` is in seconds (a float).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Candidate requests (and compared responses) needed before a pass.
    pub min_requests: u64,
    /// Minimum time in a step before a pass.
    #[serde(with = "secs_f64")]
    pub interval: Duration,
    /// Highest acceptable candidate error rate (0..=1).
    pub max_error_rate: f64,
    /// Highest acceptable relative latency increase over stable (0.2 = +20%).
    pub max_latency_increase: f64,
    /// Absolute latency slack in milliseconds: the candidate may always be
    /// this much slower than stable (0 = the relative threshold alone).
    pub max_latency_increase_ms: f64,
    /// Lowest acceptable share of matching responses (0..=1).
    pub min_match_rate: f64,
    /// What `min_match_rate` counts: whole responses or prediction rows.
    pub match_unit: MatchUnit,
    /// How far the match rate may fall below stable's agreement with
    /// itself; when set it replaces `min_match_rate` (see `relative`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_match_rate_drop: Option<f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_requests: config::DEFAULT_MIN_REQUESTS,
            interval: config::DEFAULT_INTERVAL,
            max_error_rate: config::DEFAULT_MAX_ERROR_RATE,
            max_latency_increase: config::DEFAULT_MAX_LATENCY_INCREASE,
            max_latency_increase_ms: config::DEFAULT_LATENCY_SLACK_MS,
            min_match_rate: config::DEFAULT_MIN_MATCH_RATE,
            match_unit: MatchUnit::Request,
            max_match_rate_drop: None,
        }
    }
}

impl From<&config::Rollout> for Thresholds {
    /// The thresholds `[rollout]` configures, the interval included (a
    /// replay, which has no time dimension, sets it to zero itself).
    fn from(rollout: &config::Rollout) -> Self {
        Self {
            min_requests: rollout.min_requests,
            interval: rollout.interval,
            max_error_rate: rollout.max_error_rate,
            max_latency_increase: rollout.max_latency_increase,
            max_latency_increase_ms: rollout.max_latency_increase_ms,
            min_match_rate: rollout.min_match_rate,
            match_unit: rollout.match_unit,
            max_match_rate_drop: rollout.max_match_rate_drop,
        }
    }
}

/// Serde for a `Duration` as float seconds; rejects negative or non-finite.
mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| D::Error::custom(format!("interval must be >= 0 seconds, got {secs}")))
    }
}
