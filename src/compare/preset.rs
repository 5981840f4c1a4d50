//! What each preset compares, and how a compared target splits into rows: the generic
//! layout (no preset), TF Serving predictions, KServe V2 outputs, OpenAI embeddings.
//!
//! Must never read outside the target the pointer selected, and never decide an outcome:
//! it only feeds rows and differences into a [`Tally`].

use serde_json::Value;

use super::kserve;
use super::pointer::{IgnorePath, Pointer};
use super::rows::{RowPair, Rules, Tally, compare_row, compare_rows};
use super::value::{Seg, diff_values};
use super::{Mode, Preset};

/// How the compared target is split into rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// No preset: in value mode an array's elements are rows and anything else is one
    /// row; in argmax/cosine mode a non-empty flat array of numbers is one row (one
    /// vector), any other array's elements are rows, anything else is one row.
    Generic,
    /// `/predictions`: every top-level element is a row.
    TfServing,
    /// `/outputs`: output tensors paired by name, rows from each tensor's `shape`.
    KserveV2,
    /// `/data`: every element is a row, compared through its `embedding`.
    OpenaiEmbeddings,
}

/// What a preset stands for.
pub(crate) struct PresetRules {
    pub(crate) target: Pointer,
    pub(crate) layout: Layout,
    pub(crate) mode: Mode,
    /// Top-level members that vary between servers or versions. They lie outside the
    /// compared target anyway; ignoring them also keeps them out of whole-document
    /// comparisons of equal non-2xx responses.
    pub(crate) ignores: Vec<IgnorePath>,
}

/// Target, layout, default mode and ignores of a preset.
pub(crate) fn preset(p: Preset) -> PresetRules {
    let (token, layout, mode, ignores): (_, _, _, &[&str]) = match p {
        Preset::KserveV2 => (
            "outputs",
            Layout::KserveV2,
            Mode::Value,
            &["id", "model_version", "parameters"],
        ),
        Preset::TfServing => ("predictions", Layout::TfServing, Mode::Value, &[]),
        Preset::Openai => (
            "data",
            Layout::OpenaiEmbeddings,
            Mode::Cosine,
            &["id", "created", "model", "usage"],
        ),
    };
    PresetRules {
        target: Pointer::from_tokens(vec![token.to_owned()]),
        layout,
        mode,
        ignores: ignores.iter().map(|k| IgnorePath::top_level(k)).collect(),
    }
}

impl Layout {
    /// Compares two resolved targets; difference paths are relative to the target.
    pub(crate) fn compare<'a>(
        self,
        a: &'a Value,
        b: &'a Value,
        rules: &Rules,
        tally: &mut Tally<'a>,
    ) {
        match self {
            Layout::KserveV2 => kserve::compare_outputs(a, b, rules, tally),
            Layout::TfServing if a.is_array() => {
                compare_rows(a, b, tally, |x, y| compare_row(RowPair::Nodes(x, y), rules));
            }
            Layout::OpenaiEmbeddings if a.is_array() => {
                compare_rows(a, b, tally, |x, y| match (embedding(x), embedding(y)) {
                    (Some(ex), Some(ey)) => compare_row(RowPair::Nodes(ex, ey), rules)
                        .map(|f| f.under(Seg::Key("embedding"))),
                    _ => diff_values(x, y, &rules.tol),
                });
            }
            Layout::Generic if splits(a, rules.mode) => {
                compare_rows(a, b, tally, |x, y| compare_row(RowPair::Nodes(x, y), rules));
            }
            Layout::Generic | Layout::TfServing | Layout::OpenaiEmbeddings => {
                tally.row(compare_row(RowPair::Nodes(a, b), rules));
            }
        }
    }

    /// Rows `target` stands for (at least one), for when the other side has no target.
    pub(crate) fn row_count(self, target: &Value, mode: Mode) -> u64 {
        let rows = match (self, target.as_array()) {
            (Layout::KserveV2, _) => kserve::row_count(target),
            (Layout::Generic, Some(xs)) if splits(target, mode) => xs.len() as u64,
            (Layout::TfServing | Layout::OpenaiEmbeddings, Some(xs)) => xs.len() as u64,
            _ => 1,
        };
        rows.max(1)
    }
}

/// Whether a generic target's elements are rows (decided on the stable side).
fn splits(target: &Value, mode: Mode) -> bool {
    match target.as_array() {
        None => false,
        Some(_) if mode == Mode::Value => true,
        Some(xs) => xs.is_empty() || !xs.iter().all(Value::is_number),
    }
}

fn embedding(item: &Value) -> Option<&Value> {
    item.get("embedding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::ElementCounts;
    use crate::compare::render::difference;
    use crate::compare::value::Tolerance;
    use serde_json::json;

    /// Counts and the pointer (relative to the target) of the first difference.
    fn run(layout: Layout, mode: Mode, a: Value, b: Value) -> (ElementCounts, Option<String>) {
        let rules = Rules {
            mode,
            tol: Tolerance {
                abs: 1e-6,
                rel: 1e-4,
            },
            min_cosine: 0.999,
        };
        let mut tally = Tally::default();
        layout.compare(&a, &b, &rules, &mut tally);
        (
            tally.counts,
            tally.first.map(|f| difference(&[], &f).pointer),
        )
    }

    fn counts(matched: u64, mismatched: u64) -> ElementCounts {
        ElementCounts {
            matched,
            mismatched,
        }
    }

    #[test]
    fn generic_value_mode_counts_each_array_element() {
        let r = run(
            Layout::Generic,
            Mode::Value,
            json!([1, 2, 3]),
            json!([1, 2, 4]),
        );
        assert_eq!(r, (counts(2, 1), Some("/2".to_owned())));
    }

    #[test]
    fn generic_argmax_flat_numbers_are_one_row() {
        let r = run(
            Layout::Generic,
            Mode::Argmax,
            json!([0.1, 0.9]),
            json!([0.2, 0.8]),
        );
        assert_eq!(r, (counts(1, 0), None));
        let r = run(
            Layout::Generic,
            Mode::Argmax,
            json!([0.1, 0.9]),
            json!([0.8, 0.2]),
        );
        assert_eq!(r, (counts(0, 1), Some(String::new())));
        let rows = run(
            Layout::Generic,
            Mode::Argmax,
            json!([[0.1, 0.9], [0.6, 0.4]]),
            json!([[0.2, 0.8], [0.3, 0.7]]),
        );
        assert_eq!(rows, (counts(1, 1), Some("/1".to_owned())));
    }

    #[test]
    fn generic_non_array_target_is_one_row() {
        let r = run(
            Layout::Generic,
            Mode::Value,
            json!({"a": 1}),
            json!({"a": 1}),
        );
        assert_eq!(r, (counts(1, 0), None));
    }

    #[test]
    fn tf_serving_scalar_predictions_are_rows() {
        let r = run(
            Layout::TfServing,
            Mode::Argmax,
            json!([0.5, 0.7, 0.1]),
            json!([0.5, 0.2, 0.1]),
        );
        assert_eq!(r, (counts(2, 1), Some("/1".to_owned())));
    }

    #[test]
    fn openai_compares_only_the_embedding_of_each_item() {
        let a = json!([{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}]);
        let b = json!([{"object": "embedding", "index": 0, "embedding": [0.2, 0.4], "extra": 1}]);
        assert_eq!(
            run(Layout::OpenaiEmbeddings, Mode::Cosine, a, b),
            (counts(1, 0), None)
        );
    }

    #[test]
    fn openai_base64_embeddings_compare_exactly() {
        let a = json!([{"embedding": "AAAAPw=="}]);
        let b = json!([{"embedding": "AACAPw=="}]);
        let r = run(Layout::OpenaiEmbeddings, Mode::Cosine, a, b);
        assert_eq!(r, (counts(0, 1), Some("/0/embedding".to_owned())));
    }

    #[test]
    fn openai_item_without_embedding_compares_whole_item() {
        let a = json!([{"embedding": [1, 2]}]);
        let b = json!([{"error": "x"}]);
        let r = run(Layout::OpenaiEmbeddings, Mode::Cosine, a, b);
        assert_eq!(r, (counts(0, 1), Some("/0/embedding".to_owned())));
    }

    #[test]
    fn row_count_follows_layout() {
        assert_eq!(
            Layout::Generic.row_count(&json!([0.1, 0.9]), Mode::Argmax),
            1
        );
        assert_eq!(
            Layout::Generic.row_count(&json!([0.1, 0.9]), Mode::Value),
            2
        );
        assert_eq!(Layout::TfServing.row_count(&json!([]), Mode::Value), 1);
        assert_eq!(
            Layout::OpenaiEmbeddings.row_count(&json!([{}, {}, {}]), Mode::Cosine),
            3
        );
        let outputs = json!([{"name": "p", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]);
        assert_eq!(Layout::KserveV2.row_count(&outputs, Mode::Value), 2);
    }
}
