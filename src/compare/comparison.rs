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
/// sides rendered (compact JSON; in argmax mode `label=I score=S`, the index of the
/// row's largest score and that score; in cosine mode the similarity), each at most
/// [`MAX_CHARS`](super::MAX_CHARS) characters. For a KServe V2 answer (REST or gRPC)
/// `output` names the output tensor and `row` the row within it (counted from 0);
/// for the other row layouts `row` is the row of the target. For a gRPC answer the
/// pointer addresses the answer as KServe's REST protocol writes it
/// (`/outputs/0/data/3`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Difference {
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    pub stable: String,
    pub candidate: String,
}

impl Difference {
    /// Where it lies in tensor terms, for reports: `output "probabilities", row 3`,
    /// `row 3`, `output "label"`; empty when neither is known.
    pub fn place(&self) -> String {
        match (&self.output, self.row) {
            (Some(output), Some(row)) => format!("output {output:?}, row {row}"),
            (Some(output), None) => format!("output {output:?}"),
            (None, Some(row)) => format!("row {row}"),
            (None, None) => String::new(),
        }
    }
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
    /// The stable answer to a KServe V2 gRPC `ModelInfer` call is not exactly one
    /// complete gRPC message holding a `ModelInferResponse`.
    pub const STABLE_NOT_GRPC: &str = "stable_not_grpc";
    /// The candidate's answer to such a call is not.
    pub const SHADOW_NOT_GRPC: &str = "shadow_not_grpc";
    /// A gRPC answer's message is compressed (`grpc-encoding`), which is not
    /// decoded.
    pub const GRPC_COMPRESSED: &str = "grpc_compressed";
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn place_names_output_and_row_when_known() {
        let at = |output: Option<&str>, row| Difference {
            output: output.map(str::to_owned),
            row,
            ..Difference::default()
        };
        assert_eq!(
            at(Some("probabilities"), Some(3)).place(),
            r#"output "probabilities", row 3"#
        );
        assert_eq!(at(Some("label"), None).place(), r#"output "label""#);
        assert_eq!(at(None, Some(0)).place(), "row 0");
        assert_eq!(at(None, None).place(), "");
    }

    #[test]
    fn mismatch_json_carries_output_and_row_only_when_known() {
        let d = Difference {
            pointer: "/outputs/0/data/6".into(),
            output: Some("p".into()),
            row: Some(2),
            stable: "0.1".into(),
            candidate: "0.7".into(),
        };
        let json = serde_json::to_value(&d).expect("serializes");
        assert_eq!((&json["output"], &json["row"]), (&"p".into(), &2.into()));
        let bare = serde_json::to_value(Difference::default()).expect("serializes");
        assert!(bare.get("output").is_none() && bare.get("row").is_none());
    }
}
