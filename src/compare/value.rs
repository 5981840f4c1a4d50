//! Value-mode equality of two parsed JSON values: numbers within tolerance, everything
//! else exactly, arrays by position, objects by key. Finds the first differing location.
//!
//! Must never allocate or format unless a difference is found, never panic, and never
//! treat two different values as equal because of key order or int/float spelling.

use serde_json::{Number, Value};

/// Numeric tolerance: `|a-b| <= abs + rel * max(|a|,|b|)`, boundary inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tolerance {
    pub(crate) abs: f64,
    pub(crate) rel: f64,
}

impl Tolerance {
    /// Whether two JSON numbers count as equal.
    pub(crate) fn numbers_equal(&self, a: &Number, b: &Number) -> bool {
        if let (Some(x), Some(y)) = (as_int(a), as_int(b)) {
            if x == y {
                return true;
            }
            if self.abs == 0.0 && self.rel == 0.0 {
                return false;
            }
            // The difference is exact in i128; only the final comparison is in f64, so
            // large integers are not both rounded before subtracting.
            let diff = (x - y).unsigned_abs() as f64;
            let larger = x.unsigned_abs().max(y.unsigned_abs()) as f64;
            return diff <= self.abs + self.rel * larger;
        }
        match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => self.floats_equal(x, y),
            _ => a == b,
        }
    }

    /// Whether two floats count as equal; non-finite values only equal themselves.
    pub(crate) fn floats_equal(&self, x: f64, y: f64) -> bool {
        if x == y {
            return true;
        }
        if !x.is_finite() || !y.is_finite() {
            // Otherwise rel * inf would make infinity "equal" to every number.
            return false;
        }
        (x - y).abs() <= self.abs + self.rel * x.abs().max(y.abs())
    }
}

fn as_int(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// One reference token of a reported location.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// What a report shows for one side at the differing location. Kept unrendered so that
/// rows after the first difference cost no formatting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shown<'a> {
    /// The JSON value there (rendered compact, truncated).
    Json(&'a Value),
    /// The location does not exist on this side.
    Absent,
    /// An argmax label (the index of the row's largest score) and that score.
    Label { index: usize, score: f64 },
    /// A cosine similarity below the threshold.
    Cosine(f64),
    /// The configured threshold, shown opposite [`Shown::Cosine`].
    MinCosine(f64),
    /// Length of a numeric row.
    Len(usize),
    /// A fixed description.
    Note(&'static str),
}

/// The first difference found inside some subtree. `rev_path` is relative to that
/// subtree and innermost-first, because callers append their own token while returning.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Found<'a> {
    pub(crate) rev_path: Vec<Seg<'a>>,
    pub(crate) stable: Shown<'a>,
    pub(crate) candidate: Shown<'a>,
    /// The output tensor it lies in (KServe V2), by name.
    pub(crate) output: Option<&'a str>,
    /// The row it lies in, counted from 0 within the output (or the target).
    pub(crate) row: Option<u64>,
}

impl<'a> Found<'a> {
    /// A difference right at the subtree's root.
    pub(crate) fn at(stable: Shown<'a>, candidate: Shown<'a>) -> Found<'a> {
        Found {
            rev_path: Vec::new(),
            stable,
            candidate,
            output: None,
            row: None,
        }
    }

    /// The same difference, placed in row `row` (an inner row wins).
    pub(crate) fn in_row(mut self, row: u64) -> Found<'a> {
        self.row.get_or_insert(row);
        self
    }

    /// The same difference, placed in the output tensor called `name`.
    pub(crate) fn in_output(mut self, name: Option<&'a str>) -> Found<'a> {
        self.output = self.output.or(name);
        self
    }

    /// The same difference, seen from one level further out.
    pub(crate) fn under(mut self, seg: Seg<'a>) -> Found<'a> {
        self.rev_path.push(seg);
        self
    }
}

/// The first difference between `a` (stable) and `b` (candidate), or `None` when equal.
/// Arrays of different length differ at the array itself; objects are walked in key
/// order (serde_json's map is sorted), then keys only the candidate has.
/// Recursion depth is bounded by serde_json's parse depth limit (128).
pub(crate) fn diff_values<'a>(a: &'a Value, b: &'a Value, tol: &Tolerance) -> Option<Found<'a>> {
    let differs = || Some(Found::at(Shown::Json(a), Shown::Json(b)));
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if tol.numbers_equal(x, y) {
                None
            } else {
                differs()
            }
        }
        (Value::String(x), Value::String(y)) if x == y => None,
        (Value::Bool(x), Value::Bool(y)) if x == y => None,
        (Value::Null, Value::Null) => None,
        (Value::Array(xs), Value::Array(ys)) => {
            if xs.len() != ys.len() {
                return differs();
            }
            diff_slices(xs, ys, 0, tol)
        }
        (Value::Object(xs), Value::Object(ys)) => {
            for (key, x) in xs {
                let found = match ys.get(key) {
                    Some(y) => diff_values(x, y, tol),
                    None => Some(Found::at(Shown::Json(x), Shown::Absent)),
                };
                if let Some(f) = found {
                    return Some(f.under(Seg::Key(key)));
                }
            }
            ys.iter()
                .find(|(key, _)| !xs.contains_key(key.as_str()))
                .map(|(key, y)| Found::at(Shown::Absent, Shown::Json(y)).under(Seg::Key(key)))
        }
        _ => differs(),
    }
}

/// Element-wise comparison of equally long slices; `start` is the index of the first
/// element in the enclosing array (flat tensor rows start mid-array).
pub(crate) fn diff_slices<'a>(
    xs: &'a [Value],
    ys: &'a [Value],
    start: usize,
    tol: &Tolerance,
) -> Option<Found<'a>> {
    if xs.len() != ys.len() {
        return Some(Found::at(Shown::Len(xs.len()), Shown::Len(ys.len())));
    }
    xs.iter()
        .zip(ys)
        .enumerate()
        .find_map(|(i, (x, y))| diff_values(x, y, tol).map(|f| f.under(Seg::Index(start + i))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXACT: Tolerance = Tolerance { abs: 0.0, rel: 0.0 };
    const DEFAULT: Tolerance = Tolerance {
        abs: 1e-6,
        rel: 1e-4,
    };

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON parses")
    }

    fn path<'a>(f: &Found<'a>) -> Vec<Seg<'a>> {
        f.rev_path.iter().rev().copied().collect()
    }

    #[test]
    fn key_order_does_not_matter() {
        let a = parse(r#"{"a": 1, "b": {"x": [1, 2], "y": "s"}}"#);
        let b = parse(r#"{"b": {"y": "s", "x": [1, 2]}, "a": 1}"#);
        assert_eq!(diff_values(&a, &b, &EXACT), None);
    }

    #[test]
    fn nested_difference_reports_full_path_and_both_values() {
        let a = json!({"a": {"b": [1, {"c": "x"}]}});
        let b = json!({"a": {"b": [1, {"c": "y"}]}});
        let f = diff_values(&a, &b, &EXACT).expect("differs");
        assert_eq!(
            path(&f),
            [Seg::Key("a"), Seg::Key("b"), Seg::Index(1), Seg::Key("c")]
        );
        assert_eq!(f.stable, Shown::Json(&json!("x")));
        assert_eq!(f.candidate, Shown::Json(&json!("y")));
    }

    #[test]
    fn first_difference_follows_sorted_key_order() {
        let a = json!({"z": 1, "b": 1, "m": 1});
        let b = json!({"z": 2, "b": 2, "m": 1});
        let f = diff_values(&a, &b, &EXACT).expect("differs");
        assert_eq!(path(&f), [Seg::Key("b")]);
    }

    #[test]
    fn key_missing_on_either_side_differs_at_that_key() {
        let a = json!({"a": 1, "b": 2});
        let b = json!({"a": 1});
        let f = diff_values(&a, &b, &EXACT).expect("differs");
        assert_eq!(
            (path(&f), f.candidate),
            (vec![Seg::Key("b")], Shown::Absent)
        );
        let f = diff_values(&b, &a, &EXACT).expect("differs");
        assert_eq!((path(&f), f.stable), (vec![Seg::Key("b")], Shown::Absent));
    }

    #[test]
    fn array_length_difference_is_at_the_array() {
        let a = json!({"p": [1, 2, 3]});
        let b = json!({"p": [1, 9]});
        let f = diff_values(&a, &b, &EXACT).expect("differs");
        assert_eq!(path(&f), [Seg::Key("p")]);
        assert_eq!(f.stable, Shown::Json(&json!([1, 2, 3])));
    }

    #[test]
    fn types_differ_even_when_rendering_looks_alike() {
        for (a, b) in [
            (json!("1"), json!(1)),
            (json!(null), json!(false)),
            (json!([]), json!({})),
            (json!(0), json!(false)),
        ] {
            assert!(diff_values(&a, &b, &DEFAULT).is_some(), "{a} vs {b}");
        }
    }

    #[test]
    fn strings_and_bools_compare_exactly() {
        assert!(diff_values(&json!("abc"), &json!("abd"), &DEFAULT).is_some());
        assert!(diff_values(&json!(true), &json!(false), &DEFAULT).is_some());
        assert_eq!(diff_values(&json!("é"), &json!("\u{e9}"), &EXACT), None);
    }

    #[test]
    fn int_and_float_spellings_compare_numerically() {
        assert_eq!(diff_values(&parse("1"), &parse("1.0"), &EXACT), None);
        assert_eq!(diff_values(&parse("-0.0"), &parse("0"), &EXACT), None);
        assert_eq!(diff_values(&parse("1e2"), &parse("100"), &EXACT), None);
        assert!(diff_values(&parse("1"), &parse("1.5"), &EXACT).is_some());
    }

    #[test]
    fn large_u64_compares_exactly_without_tolerance() {
        let a = parse("18446744073709551615");
        let b = parse("18446744073709551614");
        assert!(diff_values(&a, &b, &EXACT).is_some());
        assert_eq!(diff_values(&a, &a.clone(), &EXACT), None);
        // 2^53 + 1 and 2^53 round to the same f64 but are different integers.
        assert!(
            diff_values(
                &parse("9007199254740993"),
                &parse("9007199254740992"),
                &EXACT
            )
            .is_some()
        );
        assert!(
            diff_values(
                &parse("-9223372036854775808"),
                &parse("9223372036854775807"),
                &EXACT
            )
            .is_some()
        );
    }

    #[test]
    fn large_integers_use_exact_difference_under_tolerance() {
        let tol = Tolerance { abs: 1.0, rel: 0.0 };
        let a = parse("18446744073709551615");
        assert_eq!(diff_values(&a, &parse("18446744073709551614"), &tol), None);
        assert!(diff_values(&a, &parse("18446744073709551613"), &tol).is_some());
    }

    #[test]
    fn abs_tolerance_boundary_is_inclusive() {
        let tol = Tolerance { abs: 0.5, rel: 0.0 };
        assert_eq!(diff_values(&json!(1.0), &json!(1.5), &tol), None);
        assert_eq!(diff_values(&json!(1), &json!(0.5), &tol), None);
        assert!(diff_values(&json!(1.0), &json!(1.5000001), &tol).is_some());
        assert!(diff_values(&json!(1), &json!(2), &tol).is_some());
    }

    #[test]
    fn rel_tolerance_boundary_is_inclusive_and_uses_larger_magnitude() {
        let tol = Tolerance { abs: 0.0, rel: 0.5 };
        // |1-2| = 1 = 0.5 * max(1, 2)
        assert_eq!(diff_values(&json!(1.0), &json!(2.0), &tol), None);
        assert_eq!(diff_values(&json!(2), &json!(1), &tol), None);
        assert_eq!(diff_values(&json!(-2.0), &json!(-1.0), &tol), None);
        assert!(diff_values(&json!(1.0), &json!(2.0000001), &tol).is_some());
        assert!(diff_values(&json!(1), &json!(3), &tol).is_some());
    }

    #[test]
    fn abs_and_rel_tolerances_add_up() {
        let tol = Tolerance {
            abs: 0.25,
            rel: 0.25,
        };
        // allowed = 0.25 + 0.25 * 3 = 1.0
        assert_eq!(diff_values(&json!(2.0), &json!(3.0), &tol), None);
        assert!(diff_values(&json!(2.0), &json!(3.0078125), &tol).is_some());
    }

    #[test]
    fn default_tolerance_absorbs_float_noise_but_not_real_drift() {
        assert_eq!(
            diff_values(
                &json!(0.7959152977094849),
                &json!(0.795915297709485),
                &DEFAULT
            ),
            None
        );
        assert!(diff_values(&json!(0.7959), &json!(0.7969), &DEFAULT).is_some());
    }

    #[test]
    fn non_finite_floats_only_equal_themselves() {
        let tol = Tolerance { abs: 1.0, rel: 1.0 };
        assert!(tol.floats_equal(f64::INFINITY, f64::INFINITY));
        assert!(!tol.floats_equal(f64::INFINITY, 1.0));
        assert!(!tol.floats_equal(f64::NAN, f64::NAN));
        assert!(!tol.floats_equal(f64::MAX, -f64::MAX));
    }

    #[test]
    fn diff_slices_reports_absolute_index() {
        let a = [json!(1), json!(2)];
        let b = [json!(1), json!(3)];
        let f = diff_slices(&a, &b, 6, &EXACT).expect("differs");
        assert_eq!(path(&f), [Seg::Index(7)]);
    }

    #[test]
    fn empty_containers_are_equal() {
        assert_eq!(diff_values(&json!([]), &json!([]), &EXACT), None);
        assert_eq!(diff_values(&json!({}), &json!({}), &EXACT), None);
    }
}
