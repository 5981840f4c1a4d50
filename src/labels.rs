//! The closed sets behind every metric label and every per-kind counter
//! array: status classes, roles, failure kinds, mirror results, comparison
//! outcomes, drop reasons, rollout phases and judge verdicts.
//!
//! Each set is an enum whose declaration order is its index: `ALL` lists
//! the values in that order, `index()` places a value in any array sized
//! `COUNT`, and `as_str()` is its label (and its serde name). Counter arrays
//! in `stats`, `telemetry` and `status` are all indexed this way, so no
//! other module writes an index or a label by hand.
//!
//! A leaf: it imports nothing of the crate, so every layer can use it.

use serde::{Deserialize, Serialize};

/// Backend labels in `split::Backend` order (`stable`, then `candidate`).
pub const BACKENDS: [&str; 2] = ["stable", "candidate"];

/// An HTTP status class, or `Error`: no response at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    /// No response (connect error, timeout, broken connection).
    Error,
}

impl StatusClass {
    pub const COUNT: usize = 6;
    pub const ALL: [Self; Self::COUNT] = [
        Self::Informational,
        Self::Success,
        Self::Redirection,
        Self::ClientError,
        Self::ServerError,
        Self::Error,
    ];

    /// The class of an HTTP status; anything outside 100..=499 counts as 5xx.
    pub fn of(status: u16) -> Self {
        match status {
            100..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::Error => "error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Serving clients, or shadowing a request served by the other backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Serve,
    Shadow,
}

impl Role {
    pub const COUNT: usize = 2;
    pub const ALL: [Self; Self::COUNT] = [Self::Serve, Self::Shadow];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serve => "serve",
            Self::Shadow => "shadow",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a request to a backend yielded no usable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Could not connect (refused, unreachable, connect timeout).
    Connect,
    /// No response head within the timeout.
    Timeout,
    /// Connection broke or the backend spoke broken HTTP.
    Protocol,
    /// The head arrived but the body broke off.
    Body,
    /// A gRPC call ended with `grpc-status` other than 0 (OK), in the
    /// trailers or a trailers-only response.
    Grpc,
}

impl FailureKind {
    pub const COUNT: usize = 5;
    pub const ALL: [Self; Self::COUNT] = [
        Self::Connect,
        Self::Timeout,
        Self::Protocol,
        Self::Body,
        Self::Grpc,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Body => "body",
            Self::Grpc => "grpc",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// What happened to each request chosen for mirroring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowResult {
    /// The shadow request was sent and answered (any status).
    Sent,
    /// `shadow.max_in_flight` mirrors were already running.
    DroppedOverload,
    /// The comparison queue was full, so the mirror was not started: its
    /// answer could only have been dropped.
    DroppedBusy,
    /// Mirrors in flight held half of `shadow.max_buffered_bytes` (the
    /// rest is for their answers), or the request body did not fit it.
    DroppedBudget,
    /// The request body exceeded `shadow.max_body_bytes` (or never completed).
    SkippedBody,
    /// The path is not in `shadow.routes`.
    SkippedRoute,
    /// The shadow request failed: connect error, timeout, reset.
    Error,
}

impl ShadowResult {
    pub const COUNT: usize = 7;
    pub const ALL: [Self; Self::COUNT] = [
        Self::Sent,
        Self::DroppedOverload,
        Self::DroppedBusy,
        Self::DroppedBudget,
        Self::SkippedBody,
        Self::SkippedRoute,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::DroppedOverload => "dropped_overload",
            Self::DroppedBusy => "dropped_busy",
            Self::DroppedBudget => "dropped_budget",
            Self::SkippedBody => "skipped_body",
            Self::SkippedRoute => "skipped_route",
            Self::Error => "error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The verdict for one mirrored pair of responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Match,
    Mismatch,
    StableError,
    ShadowError,
    Uncomparable,
}

impl Outcome {
    pub const COUNT: usize = 5;
    /// Every outcome, e.g. to pre-register metric labels.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Match,
        Self::Mismatch,
        Self::StableError,
        Self::ShadowError,
        Self::Uncomparable,
    ];

    /// The metric/label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Mismatch => "mismatch",
            Self::StableError => "stable_error",
            Self::ShadowError => "shadow_error",
            Self::Uncomparable => "uncomparable",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a mirrored pair was not compared. A dropped pair is no comparison:
/// it changes no match rate; its shadow's answer still counts as latency
/// and error evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The comparison queue was full.
    Busy,
    /// The answers did not fit `shadow.max_buffered_bytes`.
    Budget,
}

impl DropReason {
    pub const COUNT: usize = 2;
    pub const ALL: [Self; Self::COUNT] = [Self::Busy, Self::Budget];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Budget => "budget",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where the rollout is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Stable serves everything; the candidate gets mirrored traffic.
    Shadow,
    /// The candidate serves a weighted share, stepping up.
    Canary,
    /// Automation stopped; the weight is held until resumed.
    Paused,
    /// The candidate serves everything. Final.
    Promoted,
    /// The candidate serves nothing. Final.
    RolledBack,
}

impl Phase {
    pub const COUNT: usize = 5;
    /// Every phase, in lifecycle order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Shadow,
        Self::Canary,
        Self::Paused,
        Self::Promoted,
        Self::RolledBack,
    ];

    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Canary => "canary",
            Self::Paused => "paused",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of judging a window (or of one criterion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Credibly within every threshold, with enough data and time.
    Pass,
    /// Credibly outside a threshold.
    Fail,
    /// Not enough evidence either way.
    Hold,
}

impl Verdict {
    pub const COUNT: usize = 3;
    pub const ALL: [Self; Self::COUNT] = [Self::Pass, Self::Fail, Self::Hold];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Hold => "hold",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// For one set: `ALL` is in index order, labels are distinct, and the
    /// serde name (where there is one) is the label.
    fn check<T: Copy>(all: &[T], index: fn(T) -> usize, label: fn(T) -> &'static str) {
        let mut seen = HashSet::new();
        for (i, value) in all.iter().enumerate() {
            assert_eq!(index(*value), i, "{} is out of order", label(*value));
            assert!(seen.insert(label(*value)), "{} twice", label(*value));
        }
    }

    fn serde_name<T: Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .expect("a unit variant serializes")
            .as_str()
            .expect("as a string")
            .to_owned()
    }

    #[test]
    fn every_set_is_indexed_in_declaration_order_with_distinct_labels() {
        check(&StatusClass::ALL, StatusClass::index, StatusClass::as_str);
        check(&Role::ALL, Role::index, Role::as_str);
        check(&FailureKind::ALL, FailureKind::index, FailureKind::as_str);
        check(
            &ShadowResult::ALL,
            ShadowResult::index,
            ShadowResult::as_str,
        );
        check(&Outcome::ALL, Outcome::index, Outcome::as_str);
        check(&DropReason::ALL, DropReason::index, DropReason::as_str);
        check(&Phase::ALL, Phase::index, Phase::as_str);
        check(&Verdict::ALL, Verdict::index, Verdict::as_str);
    }

    #[test]
    fn serde_names_are_the_labels() {
        for v in Role::ALL {
            assert_eq!(serde_name(v), v.as_str());
        }
        for v in FailureKind::ALL {
            assert_eq!(serde_name(v), v.as_str());
        }
        for v in ShadowResult::ALL {
            assert_eq!(serde_name(v), v.as_str());
        }
        for v in DropReason::ALL {
            assert_eq!(serde_name(v), v.as_str());
        }
        for v in Phase::ALL {
            assert_eq!(serde_name(v), v.as_str());
        }
        for v in Verdict::ALL {
            assert_eq!(serde_name(v), v.as_str());
        }
    }

    #[test]
    fn status_classes_cover_every_status() {
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert_eq!(StatusClass::of(404), StatusClass::ClientError);
        assert_eq!(StatusClass::of(503), StatusClass::ServerError);
        assert_eq!(StatusClass::of(99), StatusClass::ServerError);
    }
}
