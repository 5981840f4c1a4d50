//! The `openai` preset on LLM answers: chat completions and completions,
//! streamed (an event stream) or not (a JSON object with `choices`).
//!
//! Which shape a pair has is read from the bodies, so one preset covers an
//! OpenAI-compatible server whichever endpoint the client calls: a body that
//! reads as an event stream is a streamed answer, a JSON answer with `/data`
//! is embeddings (the existing rules), and one without `/data` but with
//! `/choices` is a chat or completions answer.
//!
//! Per choice (a row, paired by position after streams are put in `index`
//! order) it compares `message.content`, each tool call's `function.name`
//! (exactly) and `function.arguments`, `text`, and `finish_reason` (exactly);
//! texts under `compare.text`. Nothing else of an answer matters (`id`,
//! `created`, `model`, `usage`, `logprobs`, roles, tool-call ids, which
//! servers draw at random).
//!
//! Must never render anything for a pair that matches, and never report a
//! value longer than [`MAX_CHARS`](super::MAX_CHARS).

use serde_json::Value;

use super::llm_stream::reassemble;
use super::preset::Layout;
use super::render::{clip, compact_json, difference};
use super::text::{TextMode, normalize, similarity};
use super::value::{Found, Tolerance, diff_values};
use super::{Comparator, Comparison, Difference, ElementCounts, Outcome, reason};
use crate::sse;

/// `compare.text` and `compare.min_similarity`, compiled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TextRules {
    pub(crate) mode: TextMode,
    pub(crate) min_similarity: f64,
}

impl Comparator {
    /// Decides a 2xx pair of which at least one body is an event stream, under
    /// the `openai` preset; `None` otherwise. A stream that did not end with
    /// `data: [DONE]`, or left a choice without a `finish_reason`, broke off:
    /// the stable side's is `stable_error`, else the candidate's is
    /// `shadow_error`, as a body whose connection broke off is. A stream
    /// against a JSON answer is a mismatch at "" (the client would have got
    /// another kind of answer).
    pub(super) fn llm_stream(&self, s: &[u8], c: &[u8], success: bool) -> Option<Comparison> {
        if !success || self.layout != Layout::OpenaiEmbeddings {
            return None;
        }
        let s_stream = sse::looks_like_event_stream(s).then(|| reassemble(s));
        let c_stream = sse::looks_like_event_stream(c).then(|| reassemble(c));
        if s_stream.is_none() && c_stream.is_none() {
            return None;
        }
        if s_stream.as_ref().is_some_and(|r| !r.complete) {
            return Some(Comparison::bare(Outcome::StableError, None));
        }
        if c_stream.as_ref().is_some_and(|r| !r.complete) {
            return Some(Comparison::bare(Outcome::ShadowError, None));
        }
        let (Some(mut s_doc), Some(mut c_doc)) = (s_stream, c_stream) else {
            let name = |stream: bool| if stream { "event stream" } else { "JSON" };
            let s_is = sse::looks_like_event_stream(s);
            return Some(Comparison::mismatched(
                ElementCounts::default(),
                Difference {
                    pointer: String::new(),
                    stable: name(s_is).to_owned(),
                    candidate: name(!s_is).to_owned(),
                    ..Difference::default()
                },
            ));
        };
        for ignore in &self.ignores {
            ignore.remove_from(&mut s_doc.doc);
            ignore.remove_from(&mut c_doc.doc);
        }
        Some(self.compare_answers(&s_doc.doc, &c_doc.doc))
    }

    /// Takes over a 2xx JSON pair that the embeddings rules found no `/data`
    /// in, when either document has `choices`; otherwise keeps `compared`.
    pub(super) fn llm_json(
        &self,
        compared: Comparison,
        s: &[u8],
        c: &[u8],
        success: bool,
    ) -> Comparison {
        if !success
            || self.layout != Layout::OpenaiEmbeddings
            || compared.reason != Some(reason::POINTER_MISSING)
        {
            return compared;
        }
        let (Ok(mut s_doc), Ok(mut c_doc)) = (
            serde_json::from_slice::<Value>(s),
            serde_json::from_slice::<Value>(c),
        ) else {
            return compared;
        };
        for ignore in &self.ignores {
            ignore.remove_from(&mut s_doc);
            ignore.remove_from(&mut c_doc);
        }
        if s_doc.get("choices").is_none() && c_doc.get("choices").is_none() {
            return compared;
        }
        self.compare_answers(&s_doc, &c_doc)
    }

    /// Two answers in the non-streamed shape, choice by choice.
    fn compare_answers<'a>(&self, s: &'a Value, c: &'a Value) -> Comparison {
        let choices = |doc: &'a Value| doc.get("choices").and_then(Value::as_array);
        let (s_choices, c_choices) = match (choices(s), choices(c)) {
            (Some(a), Some(b)) => (a, b),
            (a, b) => {
                let rows = a.or(b).map_or(1, |x| x.len().max(1));
                let shown = |v: Option<&Value>| v.map_or("(absent)".to_owned(), compact_json);
                return Comparison::mismatched(
                    ElementCounts {
                        matched: 0,
                        mismatched: rows as u64,
                    },
                    Difference {
                        pointer: "/choices".to_owned(),
                        stable: shown(s.get("choices")),
                        candidate: shown(c.get("choices")),
                        ..Difference::default()
                    },
                );
            }
        };
        let mut counts = ElementCounts::default();
        let mut first = None;
        if s_choices.len() != c_choices.len() {
            first = Some(Difference {
                pointer: "/choices".to_owned(),
                stable: format!("len={}", s_choices.len()),
                candidate: format!("len={}", c_choices.len()),
                ..Difference::default()
            });
            counts.mismatched = s_choices.len().abs_diff(c_choices.len()) as u64;
        }
        for (i, (a, b)) in s_choices.iter().zip(c_choices).enumerate() {
            let rows = Rows {
                text: &self.text,
                tol: &self.rules.tol,
                choice: i,
            };
            match rows.choice(a, b, first.is_none()) {
                Verdict::Same => counts.matched += 1,
                Verdict::Differs(found) => {
                    counts.mismatched += 1;
                    first = first.or(found);
                }
            }
        }
        match first {
            None => Comparison::matched(counts.matched),
            Some(difference) => Comparison::mismatched(counts, difference),
        }
    }
}

enum Verdict {
    Same,
    /// The report, when one was asked for.
    Differs(Option<Difference>),
}

/// Where in a choice a difference is, turned into a pointer only when reported.
#[derive(Clone, Copy)]
enum At {
    Content,
    ToolCalls,
    ToolName(usize),
    ToolArguments(usize),
    Text,
    FinishReason,
}

struct Rows<'r> {
    text: &'r TextRules,
    tol: &'r Tolerance,
    choice: usize,
}

impl Rows<'_> {
    fn tokens(&self, at: At) -> Vec<String> {
        let mut out = vec!["choices".to_owned(), self.choice.to_string()];
        let rest: &[&str] = match at {
            At::Content => &["message", "content"],
            At::ToolCalls => &["message", "tool_calls"],
            At::ToolName(_) | At::ToolArguments(_) => &["message", "tool_calls"],
            At::Text => &["text"],
            At::FinishReason => &["finish_reason"],
        };
        out.extend(rest.iter().map(|t| (*t).to_owned()));
        match at {
            At::ToolName(j) => out.extend([j.to_string(), "function".into(), "name".into()]),
            At::ToolArguments(j) => {
                out.extend([j.to_string(), "function".into(), "arguments".into()]);
            }
            _ => {}
        }
        out
    }

    fn pointer(&self, at: At) -> String {
        self.tokens(at).iter().map(|t| format!("/{t}")).collect()
    }

    fn report(&self, at: At, stable: String, candidate: String) -> Difference {
        Difference {
            pointer: self.pointer(at),
            stable: clip(&stable),
            candidate: clip(&candidate),
            row: Some(self.choice as u64),
            ..Difference::default()
        }
    }

    /// A difference found inside a JSON value at `at`, in this choice's row.
    fn inside(&self, at: At, found: &Found<'_>) -> Difference {
        Difference {
            row: Some(self.choice as u64),
            ..difference(&self.tokens(at), found)
        }
    }

    fn choice<'a>(&self, a: &'a Value, b: &'a Value, render: bool) -> Verdict {
        let message = |v: &'a Value, name: &str| v.get("message").and_then(|m| m.get(name));
        if let Some(v) = self.text_field(
            At::Content,
            message(a, "content"),
            message(b, "content"),
            render,
        ) {
            return v;
        }
        let calls = |v: &'a Value| match v.get("message").and_then(|m| m.get("tool_calls")) {
            Some(Value::Array(calls)) => calls.as_slice(),
            _ => &[],
        };
        let (a_calls, b_calls) = (calls(a), calls(b));
        if a_calls.len() != b_calls.len() {
            return Verdict::Differs(render.then(|| {
                let len = |n: usize| format!("len={n}");
                self.report(At::ToolCalls, len(a_calls.len()), len(b_calls.len()))
            }));
        }
        for (j, (x, y)) in a_calls.iter().zip(b_calls).enumerate() {
            let function = |v: &'a Value, name: &str| v.get("function").and_then(|f| f.get(name));
            let (xn, yn) = (function(x, "name"), function(y, "name"));
            if !same(xn, yn) {
                return Verdict::Differs(
                    render.then(|| self.report(At::ToolName(j), shown(xn), shown(yn))),
                );
            }
            let (xa, ya) = (function(x, "arguments"), function(y, "arguments"));
            if let Some(v) = self.text_field(At::ToolArguments(j), xa, ya, render) {
                return v;
            }
        }
        let text = |v: &'a Value| v.get("text");
        if let Some(v) = self.text_field(At::Text, text(a), text(b), render) {
            return v;
        }
        let (af, bf) = (a.get("finish_reason"), b.get("finish_reason"));
        if !same(af, bf) {
            return Verdict::Differs(
                render.then(|| self.report(At::FinishReason, shown(af), shown(bf))),
            );
        }
        Verdict::Same
    }

    /// A generated text; absent and `null` count as empty. A value that is
    /// not a string on either side is compared as JSON, with the tolerances.
    fn text_field(
        &self,
        at: At,
        a: Option<&Value>,
        b: Option<&Value>,
        render: bool,
    ) -> Option<Verdict> {
        fn as_text(v: Option<&Value>) -> Option<&str> {
            match v {
                None | Some(Value::Null) => Some(""),
                Some(Value::String(s)) => Some(s),
                Some(_) => None,
            }
        }
        let (Some(x), Some(y)) = (as_text(a), as_text(b)) else {
            let (a, b) = (a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null));
            let found = diff_values(a, b, self.tol)?;
            return Some(Verdict::Differs(render.then(|| self.inside(at, &found))));
        };
        self.text(at, x, y, render)
    }

    fn text(&self, at: At, a: &str, b: &str, render: bool) -> Option<Verdict> {
        if a == b {
            return None;
        }
        let excerpts = || excerpts(a, b);
        match self.text.mode {
            TextMode::Exact => {}
            TextMode::Normalized => {
                if normalize(a) == normalize(b) {
                    return None;
                }
            }
            TextMode::Similarity => {
                let score = similarity(a, b);
                if score >= self.text.min_similarity {
                    return None;
                }
                return Some(Verdict::Differs(render.then(|| {
                    let (x, y) = excerpts();
                    self.report(at, x, format!("similarity={score:.3} {y}"))
                })));
            }
            // JSON on one side only differs; on neither, the texts already
            // differ exactly.
            TextMode::Json => {
                if let (Ok(x), Ok(y)) = (
                    serde_json::from_str::<Value>(a),
                    serde_json::from_str::<Value>(b),
                ) {
                    let found = diff_values(&x, &y, self.tol)?;
                    return Some(Verdict::Differs(render.then(|| self.inside(at, &found))));
                }
            }
        }
        Some(Verdict::Differs(render.then(|| {
            let (x, y) = excerpts();
            self.report(at, x, y)
        })))
    }
}

/// Equal, counting an absent value as `null`.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    a.unwrap_or(&Value::Null) == b.unwrap_or(&Value::Null)
}

fn shown(v: Option<&Value>) -> String {
    v.map_or("(absent)".to_owned(), compact_json)
}

/// Both texts as JSON strings from a little before their first differing
/// character, "…" marking skipped text; the caller cuts them to size.
fn excerpts(a: &str, b: &str) -> (String, String) {
    const CONTEXT: usize = 16;
    let at = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let start = at.saturating_sub(CONTEXT);
    let show = |s: &str| {
        let rest: String = s.chars().skip(start).take(super::MAX_CHARS + 1).collect();
        let json = compact_json(&Value::String(rest));
        if start > 0 {
            format!("…{json}")
        } else {
            json
        }
    };
    (show(a), show(b))
}
