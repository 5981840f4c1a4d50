//! Per-row comparison under the configured mode (value, argmax, cosine) and the tally of
//! per-row agreement (`elements.matched` / `elements.mismatched`).
//!
//! Must never panic on any row shape, never count a row twice, and never record a later
//! difference over the first one.

use serde_json::Value;

use super::value::{Found, Seg, Shown, Tolerance, diff_slices, diff_values};
use super::{ElementCounts, Mode};

/// The compiled comparison rules shared by every row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rules {
    pub(crate) mode: Mode,
    pub(crate) tol: Tolerance,
    pub(crate) min_cosine: f64,
}

/// Per-row counts plus the first difference seen.
#[derive(Debug, Default)]
pub(crate) struct Tally<'a> {
    pub(crate) counts: ElementCounts,
    pub(crate) first: Option<Found<'a>>,
}

impl<'a> Tally<'a> {
    /// Counts one compared row.
    pub(crate) fn row(&mut self, result: Option<Found<'a>>) {
        match result {
            None => self.matched(1),
            Some(found) => self.mismatched(found, 1),
        }
    }

    /// Counts `rows` rows that agree without being walked (e.g. empty tensor rows).
    pub(crate) fn matched(&mut self, rows: u64) {
        self.counts.matched = self.counts.matched.saturating_add(rows);
    }

    /// Counts `rows` disagreeing rows, keeping `found` if it is the first difference.
    pub(crate) fn mismatched(&mut self, found: Found<'a>, rows: u64) {
        self.counts.mismatched = self.counts.mismatched.saturating_add(rows);
        self.first.get_or_insert(found);
    }
}

/// Two rows to compare: JSON nodes, or equally placed slices of flat tensor data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowPair<'a> {
    /// Path of a difference is relative to the nodes.
    Nodes(&'a Value, &'a Value),
    /// Path of a difference is relative to the flat array; `start` is the row's offset.
    Flat {
        stable: &'a [Value],
        candidate: &'a [Value],
        start: usize,
    },
}

/// Compares one row. In argmax and cosine modes a row is a vector when both sides are
/// arrays of numbers with more than one element; anything else (one-element rows such
/// as class labels, strings, objects, nested arrays) is compared by value, because an
/// argmax or cosine of it says nothing.
pub(crate) fn compare_row<'a>(pair: RowPair<'a>, rules: &Rules) -> Option<Found<'a>> {
    if rules.mode != Mode::Value {
        let (a, b, start) = match pair {
            RowPair::Nodes(a, b) => (numbers(a), numbers(b), None),
            RowPair::Flat {
                stable,
                candidate,
                start,
            } => (all_numbers(stable), all_numbers(candidate), Some(start)),
        };
        if let (Some(a), Some(b)) = (a, b)
            && (a.len() > 1 || b.len() > 1)
        {
            let found = compare_vectors(a, b, rules)?;
            return Some(match start {
                Some(i) => found.under(Seg::Index(i)),
                None => found,
            });
        }
    }
    match pair {
        RowPair::Nodes(a, b) => diff_values(a, b, &rules.tol),
        RowPair::Flat {
            stable,
            candidate,
            start,
        } => diff_slices(stable, candidate, start, &rules.tol),
    }
}

fn numbers(v: &Value) -> Option<&[Value]> {
    v.as_array().and_then(|items| all_numbers(items))
}

fn all_numbers(items: &[Value]) -> Option<&[Value]> {
    items.iter().all(|v| v.as_f64().is_some()).then_some(items)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn compare_vectors<'a>(a: &'a [Value], b: &'a [Value], rules: &Rules) -> Option<Found<'a>> {
    if a.len() != b.len() {
        return Some(Found::at(Shown::Len(a.len()), Shown::Len(b.len())));
    }
    match rules.mode {
        Mode::Value => diff_slices(a, b, 0, &rules.tol),
        Mode::Argmax => {
            let (x, y) = (argmax(a), argmax(b));
            (x != y).then(|| Found::at(Shown::Label(x), Shown::Label(y)))
        }
        Mode::Cosine => match cosine(a, b) {
            Cosine::Equal => None,
            Cosine::StableZero => Some(Found::at(
                Shown::Note("zero vector"),
                Shown::Note("non-zero vector"),
            )),
            Cosine::CandidateZero => Some(Found::at(
                Shown::Note("non-zero vector"),
                Shown::Note("zero vector"),
            )),
            Cosine::Similarity(s) if s >= rules.min_cosine => None,
            Cosine::Similarity(s) => Some(Found::at(
                Shown::Cosine(s),
                Shown::MinCosine(rules.min_cosine),
            )),
        },
    }
}

/// Index of the largest score; ties go to the lowest index.
pub(crate) fn argmax(scores: &[Value]) -> usize {
    argmax_by(scores, f)
}

/// [`argmax`] over any numbers (`score` reads one); the fast path runs it on `f64`s
/// so that both paths share the arithmetic.
pub(crate) fn argmax_by<T>(scores: &[T], score: impl Fn(&T) -> f64) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, v) in scores.iter().enumerate() {
        let x = score(v);
        if i == 0 || x > best_score {
            best = i;
            best_score = x;
        }
    }
    best
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cosine {
    /// Element-wise identical (including two zero vectors): similarity 1 by definition,
    /// so `min_cosine = 1` accepts identical vectors despite rounding.
    Equal,
    StableZero,
    CandidateZero,
    Similarity(f64),
}

/// Cosine similarity of equally long numeric vectors. Each vector is scaled by its
/// largest magnitude first so that squares of huge or tiny numbers cannot overflow to
/// infinity or underflow to zero.
pub(crate) fn cosine(a: &[Value], b: &[Value]) -> Cosine {
    cosine_by(a, b, f)
}

/// [`cosine`] over any numbers (`value` reads one), shared with the fast path.
pub(crate) fn cosine_by<T>(a: &[T], b: &[T], value: impl Fn(&T) -> f64) -> Cosine {
    if a.iter().zip(b).all(|(x, y)| value(x) == value(y)) {
        return Cosine::Equal;
    }
    let (ma, mb) = (max_abs(a, &value), max_abs(b, &value));
    match (ma == 0.0, mb == 0.0) {
        (true, true) => return Cosine::Equal,
        (true, false) => return Cosine::StableZero,
        (false, true) => return Cosine::CandidateZero,
        (false, false) => {}
    }
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (value(x) / ma, value(y) / mb);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    // NaN (only from non-finite input) stays NaN and so fails any threshold.
    Cosine::Similarity((dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0))
}

/// The largest magnitude in `v` (0 for an empty vector). Four running maxima rather
/// than one: a single chain of dependent `max` operations made this a third of the
/// cosine of an embedding. The result is the same whatever the grouping, because a
/// maximum is exact.
fn max_abs<T>(v: &[T], value: impl Fn(&T) -> f64) -> f64 {
    let mut lanes = [0.0f64; 4];
    let chunks = v.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(value(x).abs());
        }
    }
    for x in rest {
        lanes[0] = lanes[0].max(value(x).abs());
    }
    lanes[0].max(lanes[1]).max(lanes[2].max(lanes[3]))
}

/// Compares two arrays whose elements are rows, by position. A length difference is
/// reported at the array itself (before any row) and each row present on one side only
/// counts as mismatched. `row` compares one pair; its path is relative to the row.
pub(crate) fn compare_rows<'a>(
    stable: &'a Value,
    candidate: &'a Value,
    tally: &mut Tally<'a>,
    mut row: impl FnMut(&'a Value, &'a Value) -> Option<Found<'a>>,
) {
    let (Some(xs), Some(ys)) = (stable.as_array(), candidate.as_array()) else {
        return whole_mismatch(stable, candidate, tally);
    };
    if xs.len() != ys.len() {
        let extra = xs.len().abs_diff(ys.len()) as u64;
        tally.mismatched(
            Found::at(Shown::Json(stable), Shown::Json(candidate)),
            extra,
        );
    }
    for (i, (x, y)) in xs.iter().zip(ys).enumerate() {
        tally.row(row(x, y).map(|f| f.under(Seg::Index(i))));
    }
}

/// Row-split targets whose other side is not an array: one difference at the target,
/// and every stable row (at least one) counts as mismatched.
fn whole_mismatch<'a>(stable: &'a Value, candidate: &'a Value, tally: &mut Tally<'a>) {
    let rows = stable.as_array().map_or(1, |xs| xs.len().max(1) as u64);
    tally.mismatched(Found::at(Shown::Json(stable), Shown::Json(candidate)), rows);
}

#[cfg(test)]
mod tests {
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
        assert_eq!(d, strs("", "1", "0"));
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
        assert_eq!(d, strs("", "0", "1"));
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
}
