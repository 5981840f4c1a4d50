//! Server-sent events, as LLM servers stream them: the event stream format
//! of the WHATWG HTML standard (`text/event-stream`), read from bytes that
//! have already arrived, and the one question every reader of an OpenAI
//! stream asks: does this event carry output?
//!
//! Reading never fails. A stream that breaks off mid-event simply ends
//! before that event: an event counts only once the blank line that
//! dispatches it has arrived, as a browser's `EventSource` would count it.
//! Only the `data` field matters here; `event`, `id`, `retry` and comment
//! lines are skipped.

use serde_json::Value;

/// The response content type of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// Whether a `Content-Type` value names an event stream (parameters such
/// as `; charset=utf-8` are allowed).
pub fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
}

/// Whether a body reads as an event stream when its content type is not at
/// hand: after an optional byte order mark and blank lines, its first line is
/// a comment or starts with a field name of the format (`data`, `event`,
/// `id`, `retry`) and a colon. No JSON document starts that way.
pub fn looks_like_event_stream(body: &[u8]) -> bool {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .unwrap_or(body.len());
    let body = &body[start..];
    body.starts_with(b":")
        || [&b"data:"[..], b"event:", b"id:", b"retry:"]
            .iter()
            .any(|field| body.starts_with(field))
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `data` lines joined with `\n`, as `EventSource` delivers them.
    pub data: String,
    /// The offset in the stream just past the blank line that dispatched
    /// the event: when it had arrived, the event had.
    pub end: usize,
}

/// The events of `stream`, in order. Lines end with CRLF, LF or CR; a
/// leading byte order mark is skipped; bytes that are not UTF-8 are
/// replaced, as a decoder would.
pub fn events(stream: &[u8]) -> Events<'_> {
    let start = if stream.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    Events { stream, at: start }
}

/// Iterator over the dispatched events of a byte stream.
pub struct Events<'a> {
    stream: &'a [u8],
    at: usize,
}

impl Iterator for Events<'_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        let mut data: Option<String> = None;
        loop {
            let (line, next) = self.line()?;
            self.at = next;
            if line.is_empty() {
                match data.take() {
                    Some(data) => return Some(Event { data, end: next }),
                    // A blank line with no data dispatches nothing.
                    None => continue,
                }
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(0) => continue, // a comment
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            if field == b"data" {
                let value = String::from_utf8_lossy(value);
                match &mut data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(&value);
                    }
                    None => data = Some(value.into_owned()),
                }
            }
        }
    }
}

impl<'a> Events<'a> {
    /// The next complete line and the offset after its end; `None` when
    /// the rest of the stream holds no line end (an unfinished line).
    fn line(&self) -> Option<(&'a [u8], usize)> {
        let rest = &self.stream[self.at..];
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let after = match (rest[end], rest.get(end + 1)) {
            (b'\r', Some(b'\n')) => end + 2,
            // A CR at the very end may be the first half of a CRLF that
            // has not arrived: wait for the next byte.
            (b'\r', None) => return None,
            _ => end + 1,
        };
        Some((&rest[..end], self.at + after))
    }
}

/// The data of the event that ends an OpenAI stream.
pub const DONE: &str = "[DONE]";

/// Whether an OpenAI streaming chunk (`chat.completion.chunk` or a
/// `text_completion` chunk) carries output: non-empty `delta.content`,
/// `delta.reasoning_content` or `text`, or a tool call's name or arguments,
/// in any choice. A chunk with only the role, only a `finish_reason`, only
/// `usage`, or that is not JSON carries none: time to first token is
/// measured to the first chunk that does.
pub fn carries_output(data: &str) -> bool {
    let Ok(chunk) = serde_json::from_str::<Value>(data) else {
        return false;
    };
    let Some(choices) = chunk.get("choices").and_then(Value::as_array) else {
        return false;
    };
    let non_empty = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    choices.iter().any(|choice| {
        let delta = choice.get("delta");
        let field = |name| delta.and_then(|d| d.get(name));
        non_empty(field("content"))
            || non_empty(field("reasoning_content"))
            || non_empty(choice.get("text"))
            || field("tool_calls")
                .and_then(Value::as_array)
                .is_some_and(|calls| {
                    calls.iter().any(|call| {
                        let function = call.get("function");
                        non_empty(function.and_then(|f| f.get("name")))
                            || non_empty(function.and_then(|f| f.get("arguments")))
                    })
                })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(stream: &[u8]) -> Vec<String> {
        events(stream).map(|e| e.data).collect()
    }

    #[test]
    fn events_end_at_blank_lines_with_any_line_ending() {
        let stream = b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n";
        assert_eq!(data(stream), ["a", "b", "c"]);
        let ends: Vec<usize> = events(stream).map(|e| e.end).collect();
        assert_eq!(ends, [9, 20, 29]);
    }

    #[test]
    fn data_lines_join_and_other_fields_are_skipped() {
        let stream = b": keep-alive\nevent: x\nid: 7\ndata: {\"a\":\ndata:1}\nretry: 5\n\n\n\n";
        assert_eq!(data(stream), ["{\"a\":\n1}"]);
    }

    #[test]
    fn an_unfinished_event_or_line_is_not_an_event() {
        assert_eq!(data(b"data: a\n\ndata: b\n"), ["a"]);
        assert_eq!(data(b"data: a\r"), Vec::<String>::new());
        assert_eq!(data(b"data: a\n\r"), Vec::<String>::new());
    }

    #[test]
    fn a_leading_bom_and_invalid_utf8_do_not_stop_reading() {
        assert_eq!(data(b"\xEF\xBB\xBFdata: \xFFx\n\n"), ["\u{FFFD}x"]);
    }

    #[test]
    fn event_streams_are_told_from_json_by_their_first_line() {
        assert!(looks_like_event_stream(b"data: {\"a\":1}\n\n"));
        assert!(looks_like_event_stream(b"\xEF\xBB\xBF\r\n: ping\n\n"));
        assert!(looks_like_event_stream(b"event: message\ndata: x\n\n"));
        assert!(!looks_like_event_stream(b"{\"data\": 1}"));
        assert!(!looks_like_event_stream(b"\n  {}"));
        assert!(!looks_like_event_stream(b""));
        assert!(!looks_like_event_stream(b"database"));
    }

    #[test]
    fn content_type_essence_is_matched_without_parameters() {
        assert!(is_event_stream(b"text/event-stream"));
        assert!(is_event_stream(b"Text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream(b"application/json"));
    }

    #[test]
    fn output_is_content_text_or_a_tool_call_never_role_or_finish_alone() {
        let yes = [
            r#"{"choices":[{"delta":{"content":"Hi"}}]}"#,
            r#"{"choices":[{"text":" the"}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"delta":{}},{"delta":{"content":"x"}}]}"#,
        ];
        let no = [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"completion_tokens":3}}"#,
            DONE,
            "not json",
        ];
        for d in yes {
            assert!(carries_output(d), "{d}");
        }
        for d in no {
            assert!(!carries_output(d), "{d}");
        }
    }
}
