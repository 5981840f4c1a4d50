//! The fast comparison path for 2xx JSON pairs: reads both bodies with the validating
//! scanner, extracts only the target, and decides "every row matches" straight from
//! the extracted numbers and byte spans. Anything else (a row that may differ, a shape
//! outside the fast subset) is decided by the reference code on the target alone,
//! parsed from its span with serde_json.
//!
//! Must never return a result the tree path would not: it only ever claims a match
//! when each row surely matches under the same arithmetic, and hands every other
//! case, with the target's span, to the same layout code the tree path runs.

use std::cell::RefCell;

use serde_json::Value;

use super::extract::{Item, Node, Output, Part, Side};
use super::pointer::IgnorePath;
use super::preset::Layout;
use super::rows::{Cosine, Rules, argmax_by, cosine_by};
use super::{Comparator, Comparison, Mode, Outcome, reason};

#[cfg(test)]
thread_local! {
    /// Pairs this thread's fast path decided without the reference code, so tests
    /// can tell that they exercise it.
    pub(super) static DECIDED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// Number buffers kept per thread between comparisons: the worker that compares one
// pair compares the next, so the fast path allocates (and faults in) its two
// `f64` buffers once per thread rather than per pair. No lock: thread-local.
thread_local! {
    static BUFFERS: RefCell<Vec<Vec<f64>>> = const { RefCell::new(Vec::new()) };
}

/// The largest buffer kept for reuse: 2^19 numbers (4 MiB), as many as a body of the
/// default 1 MiB capture cap can hold (`0,` per number); a larger one, from a raised
/// cap, is freed rather than held by an idle thread.
const MAX_KEPT_NUMBERS: usize = 1 << 19;

fn buffer() -> Vec<f64> {
    BUFFERS
        .try_with(|b| b.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn recycle(mut nums: Vec<f64>) {
    if nums.capacity() > MAX_KEPT_NUMBERS {
        return;
    }
    nums.clear();
    // During thread teardown the buffer is simply dropped.
    let _ = BUFFERS.try_with(|b| {
        let mut kept = b.borrow_mut();
        if kept.len() < 2 {
            kept.push(nums);
        }
    });
}

/// Compares two 2xx JSON bodies. `inner` are the ignore paths that reach inside the
/// target, relative to it (ignores that could remove the target never get here).
pub(super) fn compare(
    cmp: &Comparator,
    s_body: &[u8],
    c_body: &[u8],
    inner: &[IgnorePath],
) -> Comparison {
    let tokens = cmp.target.tokens();
    let Ok(stable) = Side::read(s_body, tokens, cmp.layout, buffer()) else {
        return Comparison::bare(Outcome::Uncomparable, Some(reason::STABLE_NOT_JSON));
    };
    if s_body == c_body {
        let result = decide(cmp, &stable, &stable, true, inner, s_body, c_body);
        recycle(stable.nums);
        return result;
    }
    let Ok(candidate) = Side::read(c_body, tokens, cmp.layout, buffer()) else {
        recycle(stable.nums);
        return Comparison::bare(Outcome::Uncomparable, Some(reason::SHADOW_NOT_JSON));
    };
    let result = decide(cmp, &stable, &candidate, false, inner, s_body, c_body);
    recycle(stable.nums);
    recycle(candidate.nums);
    result
}

/// Rules 7 and 8 on two valid bodies' extractions.
fn decide(
    cmp: &Comparator,
    stable: &Side<'_>,
    candidate: &Side<'_>,
    identical: bool,
    inner: &[IgnorePath],
    s_body: &[u8],
    c_body: &[u8],
) -> Comparison {
    if stable.target.is_none() && candidate.target.is_none() {
        return Comparison::bare(Outcome::Uncomparable, Some(reason::POINTER_MISSING));
    }
    // Two integer literals beyond 2^53 compare exactly in the tree path, which f64
    // cannot do; a body against itself is equal whatever its numbers.
    let exact = identical || !(stable.big_int || candidate.big_int);
    if inner.is_empty() && exact {
        let values = Values {
            s: stable,
            c: candidate,
            rules: &cmp.rules,
        };
        if let Some(rows) = values.agree(cmp.layout) {
            #[cfg(test)]
            DECIDED.with(|n| n.set(n.get() + 1));
            return Comparison::matched(rows);
        }
    }
    span_path(cmp, stable, candidate, identical, inner)
        .unwrap_or_else(|| cmp.compare_tree(s_body, c_body, true))
}

/// The reference comparison of the two targets, parsed from their spans: the same
/// values the tree path would resolve, so the same result by construction. `None`
/// if a span does not parse on its own (never expected; the caller then runs the
/// whole tree path).
fn span_path(
    cmp: &Comparator,
    stable: &Side<'_>,
    candidate: &Side<'_>,
    identical: bool,
    inner: &[IgnorePath],
) -> Option<Comparison> {
    let parse = |side: &Side<'_>| -> Option<Option<Value>> {
        let Some((_, bytes)) = &side.target else {
            return Some(None);
        };
        let mut value = serde_json::from_slice::<Value>(bytes).ok()?;
        for ignore in inner {
            ignore.remove_from(&mut value);
        }
        Some(Some(value))
    };
    let s = parse(stable)?;
    if identical {
        return Some(cmp.compare_targets(s.as_ref(), s.as_ref()));
    }
    let c = parse(candidate)?;
    Some(cmp.compare_targets(s.as_ref(), c.as_ref()))
}

/// An array target's elements.
#[derive(Clone, Copy)]
enum Elements<'p, 'b> {
    Nums(&'p [f64]),
    Nodes(&'p [Node<'b>]),
}

impl<'b> Elements<'_, 'b> {
    fn of<'p>(part: &'p Part<'b>, side: &'p Side<'b>) -> Option<Elements<'p, 'b>> {
        match part {
            Part::One(Node::Nums(a, b)) => Some(Elements::Nums(side.slice(*a, *b))),
            Part::Many(nodes) => Some(Elements::Nodes(nodes)),
            _ => None,
        }
    }

    fn len(self) -> usize {
        match self {
            Elements::Nums(xs) => xs.len(),
            Elements::Nodes(xs) => xs.len(),
        }
    }

    fn get(self, i: usize) -> Option<Node<'b>> {
        match self {
            Elements::Nums(xs) => xs.get(i).map(|&x| Node::Num(x)),
            Elements::Nodes(xs) => xs.get(i).copied(),
        }
    }
}

/// Both sides' extractions under the rules. Every method answers "surely equal"
/// (`true` / `Some(rows)`); `false` / `None` means "maybe not": the caller then asks
/// the reference code.
struct Values<'v, 'b> {
    s: &'v Side<'b>,
    c: &'v Side<'b>,
    rules: &'v Rules,
}

impl<'b> Values<'_, 'b> {
    /// Rows of the target when every row matches, as `Layout::compare` would count.
    fn agree(&self, layout: Layout) -> Option<u64> {
        let (sp, _) = self.s.target.as_ref()?;
        let (cp, _) = self.c.target.as_ref()?;
        let s_elements = Elements::of(sp, self.s);
        match (layout, sp, cp) {
            (Layout::KserveV2, Part::Outputs(xs), Part::Outputs(ys)) => self.outputs(xs, ys),
            (Layout::OpenaiEmbeddings, Part::Items(xs), Part::Items(ys)) => self.items(xs, ys),
            (Layout::KserveV2 | Layout::OpenaiEmbeddings, Part::One(x), Part::One(y)) => {
                // Not an array: one row, by value (kserve) or as a row (openai); a
                // non-array row is compared by value in every mode.
                self.same(*x, *y).then_some(1)
            }
            (Layout::TfServing, _, _) if s_elements.is_some() => {
                self.rows(s_elements?, Elements::of(cp, self.c)?)
            }
            (Layout::Generic, _, _) if s_elements.is_some() => {
                let xs = s_elements?;
                // `preset::splits`: value mode, empty, or not all numbers.
                let splits = self.rules.mode == Mode::Value
                    || xs.len() == 0
                    || matches!(xs, Elements::Nodes(_));
                if splits {
                    self.rows(xs, Elements::of(cp, self.c)?)
                } else {
                    let (Part::One(x), Part::One(y)) = (sp, cp) else {
                        return None;
                    };
                    self.row(*x, *y).then_some(1)
                }
            }
            (Layout::TfServing | Layout::Generic, Part::One(x), Part::One(y)) => {
                self.row(*x, *y).then_some(1)
            }
            _ => None,
        }
    }

    /// `rows::compare_rows` with `compare_row` per element.
    fn rows(&self, xs: Elements<'_, 'b>, ys: Elements<'_, 'b>) -> Option<u64> {
        if xs.len() != ys.len() {
            return None;
        }
        for i in 0..xs.len() {
            if !self.row(xs.get(i)?, ys.get(i)?) {
                return None;
            }
        }
        Some(xs.len() as u64)
    }

    /// OpenAI items: through their embeddings, else whole.
    fn items(&self, xs: &[Item<'b>], ys: &[Item<'b>]) -> Option<u64> {
        if xs.len() != ys.len() {
            return None;
        }
        for (x, y) in xs.iter().zip(ys) {
            let equal = match (x.embedding, y.embedding) {
                (Some(a), Some(b)) => self.row(a, b),
                _ => x.whole == y.whole,
            };
            if !equal {
                return None;
            }
        }
        Some(xs.len() as u64)
    }

    /// `rows::compare_row` on two nodes.
    fn row(&self, x: Node<'b>, y: Node<'b>) -> bool {
        if self.rules.mode != Mode::Value
            && let (Node::Nums(a0, a1), Node::Nums(b0, b1)) = (x, y)
        {
            let (a, b) = (self.s.slice(a0, a1), self.c.slice(b0, b1));
            if a.len() > 1 || b.len() > 1 {
                return self.vectors(a, b);
            }
        }
        self.same(x, y)
    }

    /// `value::diff_values` finds no difference.
    fn same(&self, x: Node<'b>, y: Node<'b>) -> bool {
        match (x, y) {
            (Node::Num(a), Node::Num(b)) => self.rules.tol.floats_equal(a, b),
            (Node::Nums(a0, a1), Node::Nums(b0, b1)) => {
                self.numbers(self.s.slice(a0, a1), self.c.slice(b0, b1))
            }
            (Node::Raw(a), Node::Raw(b)) => a == b,
            _ => false,
        }
    }

    /// Element-wise within tolerance (`value::diff_slices`).
    fn numbers(&self, a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| self.rules.tol.floats_equal(x, y))
    }

    /// `rows::compare_vectors` finds no difference.
    fn vectors(&self, a: &[f64], b: &[f64]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        match self.rules.mode {
            Mode::Value => self.numbers(a, b),
            Mode::Argmax => argmax_by(a, |&x| x) == argmax_by(b, |&x| x),
            Mode::Cosine => match cosine_by(a, b, |&x| x) {
                Cosine::Equal => true,
                Cosine::Similarity(s) => s >= self.rules.min_cosine,
                Cosine::StableZero | Cosine::CandidateZero => false,
            },
        }
    }

    /// KServe V2 outputs (`kserve::compare_outputs`), when they line up by name and
    /// every one is a tensor of numbers.
    fn outputs(&self, xs: &[Output<'b>], ys: &[Output<'b>]) -> Option<u64> {
        if xs.len() != ys.len() {
            return None;
        }
        let mut rows = 0u64;
        for (x, y) in xs.iter().zip(ys) {
            let same_name = match (x.name, y.name) {
                (None, None) => true,
                // Different raw bytes may still be equal text (escapes): not decided.
                (Some(a), Some(b)) => a.quoted == b.quoted,
                _ => false,
            };
            if !(x.object && y.object && same_name) {
                return None;
            }
            let (tx, ty) = (Tensor::of(x, self.s)?, Tensor::of(y, self.c)?);
            if tx.dims != ty.dims {
                return None;
            }
            if tx.row_len == 0 {
                rows = rows.saturating_add(tx.rows);
                continue;
            }
            for (a, b) in tx
                .data
                .chunks_exact(tx.row_len)
                .zip(ty.data.chunks_exact(tx.row_len))
            {
                let equal = if self.rules.mode != Mode::Value && a.len() > 1 {
                    self.vectors(a, b)
                } else {
                    self.numbers(a, b)
                };
                if !equal {
                    return None;
                }
                rows = rows.saturating_add(1);
            }
        }
        Some(rows)
    }
}

/// `kserve::tensor` for an output whose shape is plain and whose data is numbers.
struct Tensor<'p> {
    dims: &'p [u64],
    data: &'p [f64],
    rows: u64,
    row_len: usize,
}

impl<'p> Tensor<'p> {
    fn of(out: &Output<'_>, side: &'p Side<'_>) -> Option<Tensor<'p>> {
        let (d0, d1) = out.shape?;
        let Some(Node::Nums(n0, n1)) = out.data else {
            return None;
        };
        let dims = side.dims.get(d0..d1)?;
        let data = side.slice(n0, n1);
        let rows = dims.first().copied().unwrap_or(1);
        let row_len = dims
            .get(1..)
            .unwrap_or_default()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        if rows.checked_mul(row_len)? != u64::try_from(data.len()).ok()? {
            return None;
        }
        Some(Tensor {
            dims,
            data,
            rows,
            row_len: usize::try_from(row_len).ok()?,
        })
    }
}
