//! Response comparison: decides, for one mirrored pair of responses (stable and
//! candidate), which outcome it is (`match`, `mismatch`, `stable_error`, `shadow_error`,
//! `uncomparable`), how many rows (elements) of a batch agree, and where the first
//! difference is.
//!
//! It is pure: no I/O, no clock, no state between calls that affects a result. It must never panic on any
//! input, never copy a body, never format anything unless a difference is reported,
//! and never put a whole body into a report: reported values are cut to 128 characters.
//!
//! # Two paths, one answer
//! The **tree path** ([`Comparator::compare_reference`]) parses both bodies whole into
//! `serde_json::Value` (once when they are byte-identical), removes `ignore`d parts in
//! place, resolves the target and compares it row by row (`preset`, `kserve`, `rows`,
//! `value`). It is the reference: the rules below are its rules.
//!
//! The **fast path** ([`Comparator::compare`] for 2xx JSON pairs) gives the same
//! result for every input, costing about one read of the bytes:
//! 1. `scan` validates each body whole, accepting exactly what serde_json accepts
//!    (UTF-8 and escapes in strings, number grammar and f64 range, depth 128, no
//!    trailing commas or bytes), without building anything; `extract` resolves the
//!    target on the way (the last duplicate key wins) and reads only the target: numbers
//!    straight into one `f64` buffer per body (KServe flat `data`, embeddings,
//!    predictions rows, any numeric array), anything else as raw byte spans.
//! 2. `fast` decides "every row matches" from those: numbers under the same tolerance
//!    and argmax/cosine arithmetic (shared with `rows`), other values by byte equality,
//!    rows counted as the layouts count them.
//! 3. Anything else falls back. A row that may differ, or a target outside the fast
//!    subset (unaligned or malformed KServe outputs, base64 embeddings that differ,
//!    strings with escapes, two integer literals beyond 2^53, which the tree path
//!    compares exactly in i128, ignores reaching inside the target), goes to the
//!    reference layout code on the target alone, parsed from its byte span: the same
//!    values the tree path would resolve, so the same result by construction. Only
//!    ignores that may remove the target or an ancestor of it, and non-2xx pairs
//!    (compared whole), take the tree path from the start. So a matching pair costs
//!    the scan, and a mismatching one the scan plus serde_json on the two targets,
//!    somewhat more than the tree path alone.
//!
//! The fast path keeps its two number buffers per thread between calls (no lock);
//! that is its only state, and it never changes a result.
//!
//! Numbers are converted during the validating scan. The common spelling
//! (`-?digits(.digits)?`, at most 19 digits, mantissa below 2^52, no exponent) takes
//! Clinger's exact fast path: one correctly rounded division of two exact floats.
//! Every other spelling goes to Rust's `str::parse::<f64>` (Eisel-Lemire with a
//! big-decimal fallback, correctly rounded), so every value equals serde_json's
//! `float_roundtrip` value (a test checks 200,000 random spellings bit for bit).
//! Measured on the 64,000 seven-decimal floats of the KServe benchmark payload,
//! conversion only, on the shared 2-core machine: `str::parse` 141 MB/s,
//! `lexical-core` 249 MB/s, `fast-float2` 272 MB/s, Clinger + `str::parse` 385 MB/s
//! (serde_json into `Value`: 118 MB/s). Clinger wins because the scan has already
//! accumulated the digits, so no crate is needed. The scan reads a fraction's digits
//! eight at a time (SWAR, see `digits`); doing the same for the integer part made each
//! number's end wait on two such computations and measured slower.
//!
//! # Rules, in order
//! 1. Stable failed (transport error, timeout) or answered 5xx: `stable_error`, even if
//!    the candidate failed too. Else candidate failed or 5xx: `shadow_error`.
//! 2. Different statuses (e.g. 200 vs 400): `mismatch` at pointer `""` with the two
//!    statuses as values, and zero elements (no rows were compared).
//! 3. A body flagged truncated (over the capture cap): `uncomparable` (`body_truncated`).
//! 4. `format = "bytes"`: exact byte equality, one element.
//! 5. Equal non-2xx statuses: error bodies do not have the success shape, so the pointer
//!    and preset do not apply: byte-identical bodies match, otherwise the whole JSON
//!    documents (after `ignore`) are compared by value as one element.
//! 6. Bodies that are not JSON (including `NaN`/`Infinity` literals and numbers beyond
//!    f64 range such as `1e400`, which serde_json rejects): `uncomparable`.
//! 7. `ignore` pointers are removed from both documents (see [`CompareSpec::ignore`]),
//!    then the target (`pointer` or the preset's) is resolved: absent on both sides is
//!    `uncomparable` (`pointer_missing`), absent on one side is a `mismatch` there.
//! 8. The target is split into rows and compared under the mode; any differing row
//!    makes the pair a `mismatch`.
//!
//! The `openai` preset's chat and completions answers (event streams, or JSON with
//! `/choices` where rule 7 finds no `/data`) follow rules of their own after rule 5,
//! in `llm`: a stream that broke off is its side's error, texts compare under
//! `compare.text`, each choice is a row.
//!
//! # KServe V2 over gRPC
//! Under `kserve-v2`, [`Comparator::compare_call`] reads a 2xx answer to the gRPC
//! `ModelInfer` call as one `ModelInferResponse` (`grpc`), writes its outputs as the REST
//! document with the same values, and runs rules 7 and 8 on that (tree path only).
//!
//! # Rows (`elements.matched` / `elements.mismatched`)
//! * No preset, value mode: an array target's elements are rows; any other target is
//!   one row. Argmax/cosine: a non-empty flat array of numbers is one row (one vector),
//!   an array of anything else has its elements as rows, anything else is one row.
//! * `tf-serving`: each element of `/predictions`; `openai`: each element of `/data`.
//! * `kserve-v2`: rows of every output tensor, summed over outputs (see [`Preset`]).
//! * An empty array matches with zero elements. A row present on one side only (longer
//!   array, missing output, missing target) counts as mismatched; an array length
//!   difference is reported at the array, before any row inside it.
//! * Argmax and cosine apply to rows that are arrays of numbers with more than one
//!   element on both sides; other rows (one-element rows such as class labels, strings,
//!   objects) are compared by value.

mod comparison;
mod digits;
mod extract;
mod fast;
mod grpc;
mod kserve;
mod llm;
mod llm_stream;
mod pointer;
mod preset;
mod render;
mod rows;
mod scan;
mod spec;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gen;
#[cfg(test)]
mod tests_grpc;
#[cfg(test)]
mod tests_http;
#[cfg(test)]
mod tests_llm;
#[cfg(test)]
mod tests_presets;
#[cfg(test)]
mod tests_prop;
#[cfg(test)]
mod tests_scan;
mod text;
pub mod v2_proto;
mod value;

use serde_json::Value;

pub use crate::labels::Outcome;
pub use comparison::{Comparison, Difference, ElementCounts, reason};
pub use render::MAX_CHARS;
pub use spec::SpecError;
pub use text::TextMode;

use llm::TextRules;
use pointer::{IgnorePath, Pointer};
use preset::Layout;
use rows::{Rules, Tally};
use value::{Found, Shown};

/// How bodies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Parsed as JSON and compared structurally.
    #[default]
    Json,
    /// Compared byte for byte, as one element.
    Bytes,
}

/// How rows of the compared part are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Structural equality with numeric tolerances.
    Value,
    /// Same index of the maximum score per row (ties go to the lowest index). Rows of
    /// one element (class labels) and non-numeric rows are compared by value.
    Argmax,
    /// Cosine similarity >= `min_cosine` per vector; two zero vectors match, one does not.
    /// Rows of one element and non-numeric rows are compared by value.
    Cosine,
}

/// A server family whose response shape the comparator knows. A preset sets what is
/// compared and how it splits into rows; it cannot be combined with `pointer`, but
/// `ignore`, the tolerances and `mode` still apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// KServe V2 / Open Inference Protocol. Only `/outputs` is compared, so `id`,
    /// `model_name`, `model_version` and top-level `parameters` never matter. Outputs
    /// pair by `name` (order irrelevant; the k-th output of a name pairs with the k-th
    /// of the same name); an output on one side only is a mismatch. Per output, `shape`
    /// must be equal (else a mismatch at `/outputs/i/shape`), then the flat `data` is
    /// cut into `shape[0]` rows of product(`shape[1..]`) values (rank 1: rows of one
    /// value; rank 0: one row) and compared row by row. `datatype` and per-output
    /// `parameters` are not compared. An output whose `data` is not a flat array of
    /// product(`shape`) values is compared as a whole object, as one row. Top-level
    /// `id`, `model_version` and `parameters` are ignored (this matters only for equal
    /// non-2xx responses, which are compared whole). gRPC `ModelInfer` answers are
    /// decoded and compared the same way ([`Comparator::compare_call`]).
    KserveV2,
    /// TensorFlow Serving REST predict: `/predictions`, each element a row (value mode
    /// by default).
    TfServing,
    /// An OpenAI-compatible server, whichever endpoint is called; the answer's shape
    /// chooses the rules, so one preset serves a server that offers embeddings, chat
    /// and completions on one address (a preset per endpoint would need a proxy per
    /// endpoint):
    /// * embeddings (a JSON answer with `/data`): each element of `/data` is a row
    ///   compared through its `embedding` (cosine by default), by position; the items'
    ///   `object`/`index` never matter, and top-level `id`, `created`, `model`, `usage`
    ///   are ignored. Items without an `embedding` on either side are compared whole.
    /// * chat completions and completions (an event stream, or a JSON answer with
    ///   `/choices` and no `/data`): each choice is a row; message content, completion
    ///   text and tool-call arguments are compared under `compare.text`, tool-call
    ///   names and `finish_reason` exactly. A stream is reassembled into the
    ///   non-streamed shape first, and one that broke off (no `data: [DONE]`, or a
    ///   choice without `finish_reason`) is its side's error. See `docs/llm.md`.
    Openai,
}

impl Preset {
    /// The configuration spelling: "kserve-v2", "tf-serving", "openai".
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::KserveV2 => "kserve-v2",
            Preset::TfServing => "tf-serving",
            Preset::Openai => "openai",
        }
    }
}

/// What the user configured (already type-checked by the config layer).
#[derive(Debug, Clone, PartialEq)]
pub struct CompareSpec {
    /// JSON (default) or exact bytes.
    pub format: Format,
    /// Known response shape; excludes `pointer`.
    pub preset: Option<Preset>,
    /// RFC 6901 pointer to the compared part; the whole document when `None`.
    pub pointer: Option<String>,
    /// RFC 6901 pointers, from the document root, removed from both documents before
    /// comparing. A `*` segment matches every array index and every object key (so a
    /// literal key "*" cannot be named). Removed array elements become `null` rather
    /// than shifting later elements, so reported pointers keep their indices.
    pub ignore: Vec<String>,
    /// Absolute numeric tolerance, default 1e-6.
    pub abs_tolerance: f64,
    /// Relative numeric tolerance, default 1e-4.
    pub rel_tolerance: f64,
    /// `None` = the preset's default (cosine for `openai`), else value.
    pub mode: Option<Mode>,
    /// Cosine threshold (inclusive), default 0.999.
    pub min_cosine: f64,
    /// How generated texts compare (`openai` preset only); `None` = exact.
    pub text: Option<TextMode>,
    /// Similarity threshold (inclusive) of `text = "similarity"`, default 0.9.
    pub min_similarity: f64,
}

impl Default for CompareSpec {
    fn default() -> Self {
        CompareSpec {
            format: Format::Json,
            preset: None,
            pointer: None,
            ignore: Vec::new(),
            abs_tolerance: 1e-6,
            rel_tolerance: 1e-4,
            mode: None,
            min_cosine: 0.999,
            text: None,
            min_similarity: 0.9,
        }
    }
}

/// Compiled, immutable, cheap to share (Send + Sync); built once per config.
#[derive(Debug, Clone)]
pub struct Comparator {
    format: Format,
    target: Pointer,
    layout: Layout,
    ignores: Vec<IgnorePath>,
    /// The ignores that reach inside the target, relative to it, for the fast path;
    /// `None` when an ignore may remove the target or an ancestor of it (then every
    /// pair takes the tree path).
    inner_ignores: Option<Vec<IgnorePath>>,
    rules: Rules,
    text: TextRules,
}

/// One backend's answer as the proxy saw it.
#[derive(Debug, Clone, Copy)]
pub enum Observed<'a> {
    /// Connect error, reset, timeout: no usable response.
    Failed,
    /// A response; `truncated` when the body exceeded the capture cap.
    Response {
        status: u16,
        body: &'a [u8],
        truncated: bool,
    },
}

impl Comparator {
    /// Validates and compiles `spec`.
    pub fn new(spec: &CompareSpec) -> Result<Comparator, SpecError> {
        spec::compile(spec)
    }

    /// The effective mode (the user's, else the preset's default, else value).
    pub fn mode(&self) -> Mode {
        self.rules.mode
    }

    /// Compares one mirrored pair; see the module documentation for the rules.
    pub fn compare(&self, stable: &Observed<'_>, candidate: &Observed<'_>) -> Comparison {
        let (s_body, c_body, success) = match self.bodies(stable, candidate) {
            Ok(bodies) => bodies,
            Err(decided) => return decided,
        };
        if let Some(decided) = self.llm_stream(s_body, c_body, success) {
            return decided;
        }
        let compared = match &self.inner_ignores {
            Some(inner) if success => fast::compare(self, s_body, c_body, inner),
            _ => self.compare_tree(s_body, c_body, success),
        };
        self.llm_json(compared, s_body, c_body, success)
    }

    /// The reference implementation of [`Comparator::compare`]: both bodies parsed
    /// whole into `serde_json::Value`. Kept for tests and fuzzing, which require the
    /// fast path to agree with it on every input.
    #[doc(hidden)]
    pub fn compare_reference(&self, stable: &Observed<'_>, candidate: &Observed<'_>) -> Comparison {
        match self.bodies(stable, candidate) {
            Ok((s_body, c_body, success)) => {
                self.llm_stream(s_body, c_body, success).unwrap_or_else(|| {
                    let compared = self.compare_tree(s_body, c_body, success);
                    self.llm_json(compared, s_body, c_body, success)
                })
            }
            Err(decided) => decided,
        }
    }

    /// Rules 1 to 5: decides the pair when that needs no JSON, else hands back both
    /// bodies and whether the (equal) status is 2xx.
    // The decided comparison is moved out once per pair, straight into the caller's
    // result; boxing it would only add an allocation to every pair decided here.
    #[allow(clippy::result_large_err)]
    fn bodies<'a>(
        &self,
        stable: &Observed<'a>,
        candidate: &Observed<'a>,
    ) -> Result<(&'a [u8], &'a [u8], bool), Comparison> {
        let (s_status, s_body, s_cut) = match *stable {
            Observed::Response {
                status,
                body,
                truncated,
            } if status < 500 => (status, body, truncated),
            _ => return Err(Comparison::bare(Outcome::StableError, None)),
        };
        let (c_status, c_body, c_cut) = match *candidate {
            Observed::Response {
                status,
                body,
                truncated,
            } if status < 500 => (status, body, truncated),
            _ => return Err(Comparison::bare(Outcome::ShadowError, None)),
        };
        if s_status != c_status {
            let difference = Difference {
                pointer: String::new(),
                stable: s_status.to_string(),
                candidate: c_status.to_string(),
                ..Difference::default()
            };
            return Err(Comparison::mismatched(ElementCounts::default(), difference));
        }
        if s_cut || c_cut {
            return Err(Comparison::bare(
                Outcome::Uncomparable,
                Some(reason::BODY_TRUNCATED),
            ));
        }
        let success = (200..300).contains(&s_status);
        if self.format == Format::Bytes || (!success && s_body == c_body) {
            return Err(compare_bytes(s_body, c_body));
        }
        Ok((s_body, c_body, success))
    }

    /// Rules 6 to 8 on whole parsed documents.
    fn compare_tree(&self, s_body: &[u8], c_body: &[u8], success: bool) -> Comparison {
        let Ok(mut s_doc) = serde_json::from_slice::<Value>(s_body) else {
            return Comparison::bare(Outcome::Uncomparable, Some(reason::STABLE_NOT_JSON));
        };
        for ignore in &self.ignores {
            ignore.remove_from(&mut s_doc);
        }
        if s_body == c_body {
            // Identical bodies stay identical after ignoring: parse and prune only one.
            return self.compare_docs(&s_doc, &s_doc, success);
        }
        let Ok(mut c_doc) = serde_json::from_slice::<Value>(c_body) else {
            return Comparison::bare(Outcome::Uncomparable, Some(reason::SHADOW_NOT_JSON));
        };
        for ignore in &self.ignores {
            ignore.remove_from(&mut c_doc);
        }
        self.compare_docs(&s_doc, &c_doc, success)
    }

    fn compare_docs(&self, s_doc: &Value, c_doc: &Value, success: bool) -> Comparison {
        if !success {
            let mut tally = Tally::default();
            tally.row(value::diff_values(s_doc, c_doc, &self.rules.tol));
            return finish(&[], tally);
        }
        self.compare_targets(self.target.resolve(s_doc), self.target.resolve(c_doc))
    }

    /// Rules 7 (missing targets) and 8 on the resolved targets of two 2xx documents.
    fn compare_targets(&self, s: Option<&Value>, c: Option<&Value>) -> Comparison {
        let mut tally = Tally::default();
        match (s, c) {
            (None, None) => {
                return Comparison::bare(Outcome::Uncomparable, Some(reason::POINTER_MISSING));
            }
            (Some(s), None) => {
                let rows = self.layout.row_count(s, self.rules.mode);
                tally.mismatched(Found::at(Shown::Json(s), Shown::Absent), rows);
            }
            (None, Some(c)) => {
                let rows = self.layout.row_count(c, self.rules.mode);
                tally.mismatched(Found::at(Shown::Absent, Shown::Json(c)), rows);
            }
            (Some(s), Some(c)) => self.layout.compare(s, c, &self.rules, &mut tally),
        }
        finish(self.target.tokens(), tally)
    }
}

/// Turns a tally into the verdict; `base` is the pointer the tally's paths start from.
fn finish(base: &[String], tally: Tally<'_>) -> Comparison {
    match &tally.first {
        None => Comparison::matched(tally.counts.matched),
        Some(found) => Comparison::mismatched(tally.counts, render::difference(base, found)),
    }
}

pub(crate) fn compare_bytes(stable: &[u8], candidate: &[u8]) -> Comparison {
    if stable == candidate {
        return Comparison::matched(1);
    }
    let at = stable
        .iter()
        .zip(candidate)
        .position(|(a, b)| a != b)
        .unwrap_or(stable.len().min(candidate.len()));
    let difference = Difference {
        pointer: String::new(),
        stable: render::body_excerpt(stable, at),
        candidate: render::body_excerpt(candidate, at),
        ..Difference::default()
    };
    let elements = ElementCounts {
        matched: 0,
        mismatched: 1,
    };
    Comparison::mismatched(elements, difference)
}
