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
            let label = |index, scores: &[Value]| Shown::Label {
                index,
                score: scores.get(index).map_or(f64::NAN, f),
            };
            (x != y).then(|| Found::at(label(x, a), label(y, b)))
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
        tally.row(row(x, y).map(|f| f.under(Seg::Index(i)).in_row(i as u64)));
    }
}

/// Row-split targets whose other side is not an array: one difference at the target,
/// and every stable row (at least one) counts as mismatched.
fn whole_mismatch<'a>(stable: &'a Value, candidate: &'a Value, tally: &mut Tally<'a>) {
    let rows = stable.as_array().map_or(1, |xs| xs.len().max(1) as u64);
    tally.mismatched(Found::at(Shown::Json(stable), Shown::Json(candidate)), rows);
}

#[cfg(test)]
mod tests;
