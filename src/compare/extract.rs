//! Reads one body for the fast path: validates the whole document with the strict
//! [`Scanner`], resolves the compared target on the way (the last of duplicate keys
//! wins, as in serde_json), and extracts only what the layout compares: numbers into
//! one `f64` buffer, everything else as raw byte spans.
//!
//! Must never build a tree, never read a number outside the target into a buffer, and
//! never report a target serde_json would not resolve to (when in doubt it keeps the
//! raw bytes, which the caller only ever compares for byte equality).

use super::preset::Layout;
use super::scan::{Numbers, Res, Scanner, Str};

/// One JSON node inside the target.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Node<'b> {
    /// A number.
    Num(f64),
    /// An array of numbers only (possibly empty): `nums[start..end]` of its side.
    Nums(usize, usize),
    /// Anything else, as its bytes: equal bytes are equal values.
    Raw(&'b [u8]),
}

/// The target as the layout splits it.
#[derive(Debug)]
pub(crate) enum Part<'b> {
    /// A non-array, or an array of numbers only.
    One(Node<'b>),
    /// An array with some element that is not a number: its elements.
    Many(Vec<Node<'b>>),
    /// OpenAI `/data` (an array): its items.
    Items(Vec<Item<'b>>),
    /// KServe V2 `/outputs` (an array): its outputs.
    Outputs(Vec<Output<'b>>),
}

/// One element of OpenAI's `/data`.
#[derive(Debug)]
pub(crate) struct Item<'b> {
    /// The item's `embedding` member, when the item is an object that has one.
    pub(crate) embedding: Option<Node<'b>>,
    /// The whole item.
    pub(crate) whole: &'b [u8],
}

/// One element of KServe V2's `/outputs`.
#[derive(Debug)]
pub(crate) struct Output<'b> {
    /// Whether the output is an object at all.
    pub(crate) object: bool,
    /// `name` when it is a string.
    pub(crate) name: Option<Str<'b>>,
    /// `shape` when it is an array of integer literals that fit a u64 (serde_json's
    /// `as_u64`): `dims[start..end]` of its side.
    pub(crate) shape: Option<(usize, usize)>,
    /// `data`, when present.
    pub(crate) data: Option<Node<'b>>,
}

/// One side's extraction buffers and result.
#[derive(Debug, Default)]
pub(crate) struct Side<'b> {
    pub(crate) nums: Vec<f64>,
    pub(crate) dims: Vec<u64>,
    /// Some integer literal in the target is beyond 2^53 (see `scan::SAFE_INT_DIGITS`).
    pub(crate) big_int: bool,
    /// The target and its bytes, when the document has it.
    pub(crate) target: Option<(Part<'b>, &'b [u8])>,
}

impl<'b> Side<'b> {
    /// Validates `body` whole and extracts the target at `tokens` for `layout`;
    /// `nums` is an empty buffer to read numbers into (its capacity is reused).
    pub(crate) fn read(
        body: &'b [u8],
        tokens: &[String],
        layout: Layout,
        nums: Vec<f64>,
    ) -> Res<Side<'b>> {
        let mut side = Side {
            nums,
            ..Side::default()
        };
        let mut sc = Scanner::new(body);
        let target = walk(&mut sc, tokens, &mut |sc| {
            side.nums.clear();
            side.dims.clear();
            side.big_int = false;
            match layout {
                Layout::Generic | Layout::TfServing => rows(sc, &mut side),
                Layout::OpenaiEmbeddings => items(sc, &mut side),
                Layout::KserveV2 => outputs(sc, &mut side),
            }
        })?;
        sc.finish()?;
        side.target = target;
        Ok(side)
    }

    /// The numbers of a `Node::Nums`.
    pub(crate) fn slice(&self, start: usize, end: usize) -> &[f64] {
        self.nums.get(start..end).unwrap_or_default()
    }
}

type Found<'b> = Option<(Part<'b>, &'b [u8])>;

/// Follows `tokens` from the value at the cursor, validating everything it passes;
/// `extract` reads the target. Like `Pointer::resolve` on serde_json's tree: object
/// keys by text (the last duplicate wins), array indices in RFC 6901 form.
fn walk<'b>(
    sc: &mut Scanner<'b>,
    tokens: &[String],
    extract: &mut dyn FnMut(&mut Scanner<'b>) -> Res<Part<'b>>,
) -> Res<Found<'b>> {
    let first = sc.peek();
    let start = sc.pos();
    let Some((token, rest)) = tokens.split_first() else {
        let part = extract(sc)?;
        return Ok(Some((part, sc.since(start))));
    };
    let mut found = None;
    match first {
        Some(b'{') => sc.object(|sc, key| {
            if key.is(token) {
                found = walk(sc, rest, extract)?;
                Ok(())
            } else {
                sc.skip()
            }
        })?,
        Some(b'[') => {
            let wanted = super::pointer::array_index(token);
            sc.array(|sc, i| {
                if wanted == Some(i) {
                    found = walk(sc, rest, extract)?;
                    Ok(())
                } else {
                    sc.skip()
                }
            })?
        }
        _ => sc.skip()?,
    }
    Ok(found)
}

fn is_number_start(byte: Option<u8>) -> bool {
    matches!(byte, Some(b'-' | b'0'..=b'9'))
}

fn number(sc: &mut Scanner<'_>, side: &mut Side<'_>) -> Res<f64> {
    let n = sc.number::<true>()?;
    side.big_int |= n.big_int;
    Ok(n.value)
}

/// Any value: numbers and arrays of numbers are read, anything else kept as bytes.
fn node<'b>(sc: &mut Scanner<'b>, side: &mut Side<'b>) -> Res<Node<'b>> {
    let first = sc.peek();
    let start = sc.pos();
    if is_number_start(first) {
        return Ok(Node::Num(number(sc, side)?));
    }
    if first != Some(b'[') {
        sc.skip()?;
        return Ok(Node::Raw(sc.since(start)));
    }
    let from = side.nums.len();
    match sc.numbers::<true>(&mut side.nums, &mut side.big_int)? {
        Numbers::Closed => Ok(Node::Nums(from, side.nums.len())),
        Numbers::Stopped(read) => {
            side.nums.truncate(from);
            sc.elements(read, |sc, _| sc.skip())?;
            Ok(Node::Raw(sc.since(start)))
        }
    }
}

/// Generic and TF Serving targets: an array's elements, or one node.
fn rows<'b>(sc: &mut Scanner<'b>, side: &mut Side<'b>) -> Res<Part<'b>> {
    if sc.peek() != Some(b'[') {
        return node(sc, side).map(Part::One);
    }
    let from = side.nums.len();
    match sc.numbers::<true>(&mut side.nums, &mut side.big_int)? {
        Numbers::Closed => Ok(Part::One(Node::Nums(from, side.nums.len()))),
        Numbers::Stopped(read) => {
            // Not all numbers: the numbers so far become nodes of their own.
            let mut nodes: Vec<Node<'b>> = side
                .slice(from, side.nums.len())
                .iter()
                .map(|&x| Node::Num(x))
                .collect();
            side.nums.truncate(from);
            sc.elements(read, |sc, _| {
                nodes.push(node(sc, side)?);
                Ok(())
            })?;
            Ok(Part::Many(nodes))
        }
    }
}

/// OpenAI `/data`: each item's `embedding`.
fn items<'b>(sc: &mut Scanner<'b>, side: &mut Side<'b>) -> Res<Part<'b>> {
    if sc.peek() != Some(b'[') {
        return node(sc, side).map(Part::One);
    }
    let mut items = Vec::new();
    sc.array(|sc, _| {
        let first = sc.peek();
        let start = sc.pos();
        let mut embedding = None;
        if first == Some(b'{') {
            sc.object(|sc, key| {
                if key.is("embedding") {
                    embedding = Some(node(sc, side)?);
                    Ok(())
                } else {
                    sc.skip()
                }
            })?;
        } else {
            sc.skip()?;
        }
        items.push(Item {
            embedding,
            whole: sc.since(start),
        });
        Ok(())
    })?;
    Ok(Part::Items(items))
}

/// KServe V2 `/outputs`: each output's `name`, `shape` and `data`.
fn outputs<'b>(sc: &mut Scanner<'b>, side: &mut Side<'b>) -> Res<Part<'b>> {
    if sc.peek() != Some(b'[') {
        return node(sc, side).map(Part::One);
    }
    let mut outputs = Vec::new();
    sc.array(|sc, _| {
        let mut out = Output {
            object: sc.peek() == Some(b'{'),
            name: None,
            shape: None,
            data: None,
        };
        if !out.object {
            return sc.skip().map(|()| outputs.push(out));
        }
        sc.object(|sc, key| {
            if key.is("name") {
                out.name = None;
                if sc.peek() == Some(b'"') {
                    out.name = Some(sc.string()?);
                    return Ok(());
                }
                sc.skip()
            } else if key.is("shape") {
                out.shape = dims(sc, side)?;
                Ok(())
            } else if key.is("data") {
                out.data = Some(node(sc, side)?);
                Ok(())
            } else {
                sc.skip()
            }
        })?;
        outputs.push(out);
        Ok(())
    })?;
    Ok(Part::Outputs(outputs))
}

/// A shape whose dimensions are all plain integer literals fitting a u64 (what
/// serde_json parses as unsigned integers), else `None` (validated and skipped).
fn dims(sc: &mut Scanner<'_>, side: &mut Side<'_>) -> Res<Option<(usize, usize)>> {
    if sc.peek() != Some(b'[') {
        return sc.skip().map(|()| None);
    }
    let from = side.dims.len();
    let mut plain = true;
    sc.array(|sc, _| {
        let first = sc.peek();
        let start = sc.pos();
        if !(plain && matches!(first, Some(b'0'..=b'9'))) {
            plain = false;
            return sc.skip();
        }
        sc.number::<false>()?;
        let dim = sc.since(start).iter().try_fold(0u64, |acc, &d| {
            let digit = char::from(d).to_digit(10)?;
            acc.checked_mul(10)?.checked_add(u64::from(digit))
        });
        match dim {
            Some(d) => side.dims.push(d),
            None => plain = false,
        }
        Ok(())
    })?;
    if plain {
        Ok(Some((from, side.dims.len())))
    } else {
        side.dims.truncate(from);
        Ok(None)
    }
}
