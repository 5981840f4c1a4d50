//! Turns the first found difference into the bounded, printable [`Difference`] that goes
//! into the mismatch ring buffer.
//!
//! Must never render more than [`MAX_CHARS`] characters per value, and never serialise a
//! whole large value to truncate it afterwards: serialisation stops once enough is written.

use std::io;

use serde_json::Value;

use super::Difference;
use super::pointer::push_token;
use super::value::{Found, Seg, Shown};

/// Longest rendered value, in characters, including the trailing "…".
pub const MAX_CHARS: usize = 128;

/// Enough bytes to hold MAX_CHARS + 1 characters of any width, so we can tell whether
/// the value was longer than MAX_CHARS.
const MAX_BYTES: usize = (MAX_CHARS + 1) * 4;

/// Builds the report for `found`, whose path is relative to the node at `base`.
pub(crate) fn difference(base: &[String], found: &Found<'_>) -> Difference {
    let mut pointer = String::new();
    for token in base {
        push_token(&mut pointer, token);
    }
    for seg in found.rev_path.iter().rev() {
        match seg {
            Seg::Key(key) => push_token(&mut pointer, key),
            Seg::Index(i) => {
                pointer.push('/');
                pointer.push_str(&i.to_string());
            }
        }
    }
    Difference {
        pointer,
        output: found.output.map(clip),
        row: found.row,
        stable: shown(&found.stable),
        candidate: shown(&found.candidate),
    }
}

fn shown(s: &Shown<'_>) -> String {
    match s {
        Shown::Json(v) => compact_json(v),
        Shown::Absent => "(absent)".to_owned(),
        Shown::Label { index, score } => format!("label={index} score={score}"),
        Shown::Cosine(c) => format!("cosine={c}"),
        Shown::MinCosine(m) => format!("min_cosine={m}"),
        Shown::Len(n) => format!("len={n}"),
        Shown::Note(n) => (*n).to_owned(),
    }
}

/// Compact JSON of `v`, at most [`MAX_CHARS`] characters.
pub(crate) fn compact_json(v: &Value) -> String {
    let mut out = Capped {
        buf: Vec::with_capacity(64),
    };
    // An error here only means the cap was hit; the prefix written so far is what we show.
    let _ = serde_json::to_writer(&mut out, v);
    clip(&String::from_utf8_lossy(&out.buf))
}

/// Shows a raw body from a little before `at` (the first differing byte) as a JSON
/// string, prefixed with "…" when bytes before it were skipped.
pub(crate) fn body_excerpt(body: &[u8], at: usize) -> String {
    const CONTEXT: usize = 16;
    let start = at.saturating_sub(CONTEXT).min(body.len());
    let end = start.saturating_add(MAX_BYTES).min(body.len());
    let window = body.get(start..end).unwrap_or_default();
    let text = Value::String(String::from_utf8_lossy(window).into_owned());
    let json = compact_json(&text);
    if start > 0 {
        clip(&format!("…{json}"))
    } else {
        json
    }
}

/// Cuts `s` to [`MAX_CHARS`] characters, marking a cut with "…".
pub(crate) fn clip(s: &str) -> String {
    if s.chars().nth(MAX_CHARS).is_none() {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// A writer that refuses to grow past [`MAX_BYTES`], aborting serialisation.
struct Capped {
    buf: Vec<u8>,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = MAX_BYTES.saturating_sub(self.buf.len());
        if data.len() > room {
            self.buf
                .extend_from_slice(data.get(..room).unwrap_or_default());
            return Err(io::Error::other("render cap reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointer_joins_base_and_path_with_escaping() {
        let found = Found::at(Shown::Json(&Value::Null), Shown::Absent)
            .under(Seg::Key("c~d"))
            .under(Seg::Index(3))
            .under(Seg::Key("a/b"));
        let d = difference(&["outputs".to_owned(), "x/y".to_owned()], &found);
        assert_eq!(d.pointer, "/outputs/x~1y/a~1b/3/c~0d");
        assert_eq!(d.stable, "null");
        assert_eq!(d.candidate, "(absent)");
    }

    #[test]
    fn root_difference_has_empty_pointer() {
        let label = |index, score| Shown::Label { index, score };
        let d = difference(&[], &Found::at(label(2, 0.75), label(0, 0.5)));
        assert_eq!(
            (d.pointer.as_str(), d.stable.as_str(), d.candidate.as_str()),
            ("", "label=2 score=0.75", "label=0 score=0.5")
        );
    }

    #[test]
    fn values_render_as_compact_json() {
        let v = json!({"b": [1, 2.5, "x"], "a": null});
        assert_eq!(compact_json(&v), r#"{"a":null,"b":[1,2.5,"x"]}"#);
    }

    #[test]
    fn long_values_are_truncated_to_128_chars_with_ellipsis() {
        let v = Value::Array((0..10_000).map(|i| json!(i)).collect());
        let s = compact_json(&v);
        assert_eq!(s.chars().count(), MAX_CHARS);
        assert!(s.starts_with("[0,1,2,3,"));
        assert!(s.ends_with('…'));
    }

    #[test]
    fn value_of_exactly_128_chars_is_not_truncated() {
        let v = json!("a".repeat(126)); // plus two quotes
        let s = compact_json(&v);
        assert_eq!(s.chars().count(), 128);
        assert!(!s.ends_with('…'));
        let s = compact_json(&json!("a".repeat(127)));
        assert_eq!(s.chars().count(), 128);
        assert!(s.ends_with("a…"));
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let s = compact_json(&json!("é".repeat(500)));
        assert_eq!(s.chars().count(), MAX_CHARS);
        assert!(!s.contains('\u{fffd}'));
    }

    #[test]
    fn cosine_and_lengths_render_with_names() {
        let d = difference(&[], &Found::at(Shown::Cosine(0.5), Shown::MinCosine(0.999)));
        assert_eq!(
            (d.stable.as_str(), d.candidate.as_str()),
            ("cosine=0.5", "min_cosine=0.999")
        );
        let d = difference(&[], &Found::at(Shown::Len(4), Shown::Len(3)));
        assert_eq!(
            (d.stable.as_str(), d.candidate.as_str()),
            ("len=4", "len=3")
        );
    }

    #[test]
    fn body_excerpt_starts_near_first_difference() {
        let body = format!("{}XYZ", "a".repeat(100));
        assert_eq!(
            body_excerpt(body.as_bytes(), 100),
            format!("…\"{}XYZ\"", "a".repeat(16))
        );
        assert_eq!(
            body_excerpt(b"Internal Server Error", 0),
            "\"Internal Server Error\""
        );
        assert_eq!(body_excerpt(b"", 0), "\"\"");
        assert_eq!(body_excerpt(b"\xff\xfe", 1), "\"\u{fffd}\u{fffd}\"");
    }

    #[test]
    fn body_excerpt_of_long_body_is_bounded() {
        let body = vec![b'q'; 100_000];
        assert_eq!(body_excerpt(&body, 50_000).chars().count(), MAX_CHARS);
    }
}
