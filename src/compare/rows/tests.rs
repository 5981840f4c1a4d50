//! Row comparison under each mode, and the tally.

use super::*;
use crate::compare::render::difference;
use serde_json::json;

fn rules(mode: Mode) -> Rules {
    Rules {
        mode,
        tol: Tolerance {
            abs: 1e-6,
            rel: 1e-4,
        },
        min_cosine: 0.999,
    }
}

/// (pointer relative to the row, stable, candidate) of the row's difference.
fn row_with(a: Value, b: Value, r: &Rules) -> Option<(String, String, String)> {
    compare_row(RowPair::Nodes(&a, &b), r).map(|f| {
        let d = difference(&[], &f);
        (d.pointer, d.stable, d.candidate)
    })
}

fn row(a: Value, b: Value, mode: Mode) -> Option<(String, String, String)> {
    row_with(a, b, &rules(mode))
}

fn strs(p: &str, s: &str, c: &str) -> Option<(String, String, String)> {
    Some((p.to_owned(), s.to_owned(), c.to_owned()))
}

fn tally(a: Value, b: Value) -> (ElementCounts, Option<String>) {
    let mut t = Tally::default();
    compare_rows(&a, &b, &mut t, |x, y| {
        diff_values(x, y, &rules(Mode::Value).tol)
    });
    (t.counts, t.first.map(|f| difference(&[], &f).pointer))
}

#[test]
fn argmax_ignores_score_drift() {
    let (a, b) = (json!([0.0431, 0.8712, 0.0857]), json!([0.2, 0.5, 0.3]));
    assert_eq!(row(a.clone(), b.clone(), Mode::Argmax), None);
    assert!(row(a, b, Mode::Value).is_some());
}

#[test]
fn argmax_reports_both_labels() {
    let d = row(json!([0.1, 0.7, 0.2]), json!([0.6, 0.3, 0.1]), Mode::Argmax);
    assert_eq!(d, strs("", "label=1 score=0.7", "label=0 score=0.6"));
}

#[test]
fn argmax_ties_go_to_lowest_index() {
    assert_eq!(argmax(&[json!(0.5), json!(0.5), json!(0.1)]), 0);
    assert_eq!(argmax(&[json!(0.1), json!(0.7), json!(0.7)]), 1);
    assert_eq!(argmax(&[json!(-3), json!(-1), json!(-1.0)]), 1);
    // A tie on one side against a clear winner at the lower index still matches.
    assert_eq!(
        row(json!([0.4, 0.4, 0.2]), json!([0.5, 0.3, 0.2]), Mode::Argmax),
        None
    );
    let d = row(json!([0.4, 0.4, 0.2]), json!([0.3, 0.5, 0.2]), Mode::Argmax);
    assert_eq!(d, strs("", "label=0 score=0.4", "label=1 score=0.5"));
}

#[test]
fn argmax_mixes_integer_and_float_scores() {
    assert_eq!(argmax(&[json!(1), json!(2.5), json!(2)]), 1);
}

#[test]
fn argmax_of_one_element_rows_compares_values() {
    // [2] vs [1] are class labels, not scores: argmax would say 0 == 0.
    assert_eq!(
        row(json!([2]), json!([1]), Mode::Argmax),
        strs("/0", "2", "1")
    );
    assert_eq!(row(json!([2]), json!([2.0]), Mode::Argmax), None);
}

#[test]
fn argmax_rows_of_different_length_mismatch() {
    let d = row(json!([0.1, 0.9]), json!([0.1, 0.9, 0.0]), Mode::Argmax);
    assert_eq!(d, strs("", "len=2", "len=3"));
}

#[test]
fn argmax_non_numeric_rows_fall_back_to_value() {
    assert_eq!(
        row(json!(["a", "b"]), json!(["a", "b"]), Mode::Argmax),
        None
    );
    let d = row(json!(["a", "b"]), json!(["a", "c"]), Mode::Argmax);
    assert_eq!(d, strs("/1", "\"b\"", "\"c\""));
    assert_eq!(
        row(json!([0.1, 0.9]), json!("x"), Mode::Argmax),
        strs("", "[0.1,0.9]", "\"x\"")
    );
}

#[test]
fn cosine_accepts_small_angle_and_reports_similarity_otherwise() {
    let a = json!([0.0123, -0.0456, 0.0789, 0.1011]);
    let near = json!([0.0124, -0.0455, 0.0790, 0.1010]);
    assert_eq!(row(a.clone(), near, Mode::Cosine), None);
    let far = json!([0.1011, 0.0789, -0.0456, 0.0123]);
    let (p, s, c) = row(a, far, Mode::Cosine).expect("dissimilar");
    assert_eq!((p.as_str(), c.as_str()), ("", "min_cosine=0.999"));
    let sim: f64 = s
        .strip_prefix("cosine=")
        .and_then(|x| x.parse().ok())
        .expect("similarity");
    assert!(sim < 0.0, "{sim}"); // these two point in rather different directions
}

#[test]
fn cosine_ignores_vector_scale() {
    assert_eq!(
        row(json!([1.0, 2.0, 3.0]), json!([10, 20, 30]), Mode::Cosine),
        None
    );
}

#[test]
fn cosine_threshold_is_inclusive() {
    let (a, b) = (json!([1.0, 0.0]), json!([0.0, 1.0]));
    let r = Rules {
        min_cosine: 0.0,
        ..rules(Mode::Cosine)
    };
    assert_eq!(row_with(a.clone(), b.clone(), &r), None);
    let r = Rules {
        min_cosine: 1e-12,
        ..r
    };
    assert_eq!(
        row_with(a, b, &r),
        strs("", "cosine=0", "min_cosine=0.000000000001")
    );
}

#[test]
fn cosine_identical_vectors_meet_threshold_one() {
    let r = Rules {
        min_cosine: 1.0,
        ..rules(Mode::Cosine)
    };
    let a = json!([0.1, 0.2, 0.30000000000000004, 1e-9]);
    assert_eq!(row_with(a.clone(), a, &r), None);
    let r = Rules {
        min_cosine: 1.0,
        ..r
    };
    assert!(row_with(json!([0.1, 0.2]), json!([0.1, 0.2000001]), &r).is_some());
}

#[test]
fn cosine_two_zero_vectors_match_one_zero_vector_does_not() {
    assert_eq!(
        row(json!([0, 0.0, 0]), json!([0.0, -0.0, 0]), Mode::Cosine),
        None
    );
    let d = row(json!([0, 0, 0]), json!([0, 1e-9, 0]), Mode::Cosine);
    assert_eq!(d, strs("", "zero vector", "non-zero vector"));
    let d = row(json!([1, 0]), json!([0, 0]), Mode::Cosine);
    assert_eq!(d, strs("", "non-zero vector", "zero vector"));
}

#[test]
fn cosine_vectors_of_different_length_mismatch() {
    assert_eq!(
        row(json!([1, 2, 3]), json!([1, 2]), Mode::Cosine),
        strs("", "len=3", "len=2")
    );
}

#[test]
fn cosine_survives_huge_and_tiny_magnitudes() {
    let big = cosine(&[json!(1e300), json!(1e300)], &[json!(2e300), json!(2e300)]);
    assert!(
        matches!(big, Cosine::Similarity(s) if (s - 1.0).abs() < 1e-12),
        "{big:?}"
    );
    let tiny = cosine(&[json!(1e-300), json!(0)], &[json!(0), json!(3e-300)]);
    assert_eq!(tiny, Cosine::Similarity(0.0));
    let opposite = cosine(&[json!(1), json!(0)], &[json!(-1), json!(0)]);
    assert_eq!(opposite, Cosine::Similarity(-1.0));
}

#[test]
fn flat_rows_report_offset_into_the_data_array() {
    let a = [json!(0.1), json!(0.2), json!(0.7)];
    let b = [json!(0.8), json!(0.1), json!(0.1)];
    let pair = RowPair::Flat {
        stable: &a,
        candidate: &b,
        start: 3,
    };
    let f = compare_row(pair, &rules(Mode::Argmax)).expect("labels differ");
    assert_eq!(f.rev_path, [Seg::Index(3)]);
    let f = compare_row(pair, &rules(Mode::Value)).expect("values differ");
    assert_eq!(f.rev_path, [Seg::Index(3)]);
}

#[test]
fn tally_keeps_first_difference_and_counts_rows() {
    let t = tally(json!([1, 2, 3, 4]), json!([1, 9, 3, 8]));
    assert_eq!(
        t,
        (
            ElementCounts {
                matched: 2,
                mismatched: 2
            },
            Some("/1".to_owned())
        )
    );
}

#[test]
fn extra_rows_count_as_mismatched_and_length_is_reported_first() {
    let t = tally(json!([1, 9, 3]), json!([1, 2, 3, 4, 5]));
    assert_eq!(
        t,
        (
            ElementCounts {
                matched: 2,
                mismatched: 3
            },
            Some(String::new())
        )
    );
}

#[test]
fn rows_against_non_array_mismatch_every_stable_row() {
    let t = tally(json!([1, 2, 3]), json!({"error": "x"}));
    assert_eq!(
        t,
        (
            ElementCounts {
                matched: 0,
                mismatched: 3
            },
            Some(String::new())
        )
    );
}
