//! What comparing one pair yields: the outcome, how many rows agreed, the
//! first difference, and why a pair was uncomparable. Plain data with no
//! comparison logic of its own.

use crate::labels::Outcome;

/// Per-row (per-element) agreement within one pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElementCounts {
    pub matched: u64,
    pub mismatched: u64,
}

/// The first differing location: an RFC 6901 pointer into the stable document and both
/// sides rendered (compact JSON, or a label / similarity in argmax / cosine mode), each
/// at most [`MAX_CHARS`](super::MAX_CHARS) characters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Difference {
    pub pointer: String,
    pub stable: String,
    pub candidate: String,
}

/// The result of comparing one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub outcome: Outcome,
    /// Zero for error and uncomparable outcomes, and for a status mismatch.
    pub elements: ElementCounts,
    /// Some for Mismatch.
    pub difference: Option<Difference>,
    /// One of [`reason`]'s constants for Uncomparable.
    pub reason: Option<&'static str>,
}

/// Why a pair was uncomparable (closed set).
pub mod reason {
    /// The stable body is not JSON (checked first when both are not).
    pub const STABLE_NOT_JSON: &str = "stable_not_json";
    /// The candidate body is not JSON.
    pub const SHADOW_NOT_JSON: &str = "shadow_not_json";
    /// A body exceeded the capture cap, so it was not seen whole.
    pub const BODY_TRUNCATED: &str = "body_truncated";
    /// The compared pointer exists in neither document.
    pub const POINTER_MISSING: &str = "pointer_missing";
}

impl Comparison {
    pub(super) fn bare(outcome: Outcome, reason: Option<&'static str>) -> Comparison {
        Comparison {
            outcome,
            elements: ElementCounts::default(),
            difference: None,
            reason,
        }
    }

    pub(super) fn matched(rows: u64) -> Comparison {
        Comparison {
            elements: ElementCounts {
                matched: rows,
                mismatched: 0,
            },
            ..Comparison::bare(Outcome::Match, None)
        }
    }

    pub(super) fn mismatched(elements: ElementCounts, difference: Difference) -> Comparison {
        Comparison {
            elements,
            difference: Some(difference),
            ..Comparison::bare(Outcome::Mismatch, None)
        }
    }
}
