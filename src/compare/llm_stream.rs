//! Reassembles a streamed OpenAI answer (`chat.completion.chunk` or
//! `text_completion` chunks in an event stream) into the document the same
//! request would have got without `stream: true`, so that both are compared
//! by one set of rules.
//!
//! Must never fail or panic on any bytes: what cannot be read is left out,
//! and whether the stream ended properly is reported beside the document.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::sse::{self, DONE};

/// A reassembled stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reassembled {
    /// `{"choices": [...]}` in the non-streamed shape, choices in `index`
    /// order: `{"index", "message": {"content", "tool_calls"?}, "finish_reason"}`
    /// for chat, `{"index", "text", "finish_reason"}` for completions.
    pub(crate) doc: Value,
    /// `data: [DONE]` arrived and every choice had a `finish_reason`.
    pub(crate) complete: bool,
}

#[derive(Default)]
struct Choice {
    /// Chunks carried a `delta` (chat) rather than `text` (completions).
    chat: bool,
    content: String,
    text: String,
    tool_calls: BTreeMap<u64, ToolCall>,
    finish_reason: Option<Value>,
}

#[derive(Default)]
struct ToolCall {
    id: Option<Value>,
    kind: Option<Value>,
    name: String,
    arguments: String,
}

/// Reads the chunks of `stream` up to `data: [DONE]`: per choice `index`,
/// `delta.content` (chat) or `text` (completions) concatenated; tool calls
/// per their `index`, the first `id` and `function.name` kept and
/// `function.arguments` concatenated; the last non-null `finish_reason`.
/// Events that are not JSON objects, chunks without `choices` (a usage
/// chunk) and everything after `[DONE]` are skipped.
pub(crate) fn reassemble(stream: &[u8]) -> Reassembled {
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    let mut done = false;
    for event in sse::events(stream) {
        if event.data.trim() == DONE {
            done = true;
            break;
        }
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        let Some(Value::Array(parts)) = chunk.get("choices") else {
            continue;
        };
        for (position, part) in parts.iter().enumerate() {
            let index = part
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            add(choices.entry(index).or_default(), part);
        }
    }
    let complete = done && choices.values().all(|c| c.finish_reason.is_some());
    let choices = choices
        .into_iter()
        .map(|(index, c)| finish(index, c))
        .collect();
    Reassembled {
        doc: json!({ "choices": Value::Array(choices) }),
        complete,
    }
}

fn add(choice: &mut Choice, part: &Value) {
    if let Some(delta) = part.get("delta") {
        choice.chat = true;
        if let Some(content) = delta.get("content").and_then(Value::as_str) {
            choice.content.push_str(content);
        }
        for (position, call) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let slot = choice.tool_calls.entry(index).or_default();
            let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
            if slot.id.is_none() {
                slot.id = present(call.get("id"));
            }
            if slot.kind.is_none() {
                slot.kind = present(call.get("type"));
            }
            let function = call.get("function");
            let field = |name| function.and_then(|f| f.get(name)).and_then(Value::as_str);
            if slot.name.is_empty()
                && let Some(name) = field("name")
            {
                slot.name = name.to_owned();
            }
            if let Some(arguments) = field("arguments") {
                slot.arguments.push_str(arguments);
            }
        }
    }
    if let Some(text) = part.get("text").and_then(Value::as_str) {
        choice.text.push_str(text);
    }
    if let Some(reason) = part.get("finish_reason").filter(|r| !r.is_null()) {
        choice.finish_reason = Some(reason.clone());
    }
}

fn finish(index: u64, c: Choice) -> Value {
    let mut out = Map::new();
    out.insert("index".into(), index.into());
    if c.chat {
        let mut message = Map::new();
        message.insert("role".into(), "assistant".into());
        message.insert("content".into(), c.content.into());
        if !c.tool_calls.is_empty() {
            let calls = c
                .tool_calls
                .into_values()
                .map(|t| {
                    json!({
                        "id": t.id.unwrap_or(Value::Null),
                        "type": t.kind.unwrap_or(Value::Null),
                        "function": {"name": t.name, "arguments": t.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        out.insert("message".into(), Value::Object(message));
    } else {
        out.insert("text".into(), c.text.into());
    }
    out.insert(
        "finish_reason".into(),
        c.finish_reason.unwrap_or(Value::Null),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&str]) -> String {
        chunks.iter().map(|c| format!("data: {c}\n\n")).collect()
    }

    #[test]
    fn chat_deltas_concatenate_per_choice_in_index_order() {
        let body = stream(&[
            r#"{"object":"chat.completion.chunk","choices":[{"index":1,"delta":{"role":"assistant","content":""},"finish_reason":null},{"index":0,"delta":{"role":"assistant"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Bon"}},{"index":1,"delta":{"content":"日本"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"jour 👋🏽"}},{"index":1,"delta":{"content":"語"},"finish_reason":"length"}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"completion_tokens":4}}"#,
            DONE,
            r#"{"choices":[{"index":0,"delta":{"content":"after done"}}]}"#,
        ]);
        let r = reassemble(body.as_bytes());
        assert!(r.complete);
        assert_eq!(
            r.doc,
            json!({"choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Bonjour 👋🏽"}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": "日本語"}, "finish_reason": "length"},
            ]})
        );
    }

    #[test]
    fn tool_call_deltas_reassemble_per_call_index() {
        let body = stream(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Zürich\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            DONE,
        ]);
        let r = reassemble(body.as_bytes());
        assert!(r.complete);
        assert_eq!(
            r.doc["choices"][0]["message"]["tool_calls"],
            json!([
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ])
        );
        assert_eq!(r.doc["choices"][0]["message"]["content"], "");
    }

    #[test]
    fn completion_chunks_concatenate_text() {
        let body = stream(&[
            r#"{"object":"text_completion","choices":[{"index":0,"text":" once","finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"text":" upon","finish_reason":"length"}]}"#,
            DONE,
        ]);
        let r = reassemble(body.as_bytes());
        assert!(r.complete);
        assert_eq!(
            r.doc,
            json!({"choices": [{"index": 0, "text": " once upon", "finish_reason": "length"}]})
        );
    }

    #[test]
    fn a_stream_without_done_or_finish_reason_is_incomplete() {
        let content = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        let finish = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert!(!reassemble(stream(&[content, finish]).as_bytes()).complete);
        assert!(!reassemble(stream(&[content, DONE]).as_bytes()).complete);
        assert!(reassemble(stream(&[content, finish, DONE]).as_bytes()).complete);
        // A [DONE] whose blank line never arrived did not end the stream.
        let cut = format!("{}data: [DONE]\n", stream(&[content, finish]));
        assert!(!reassemble(cut.as_bytes()).complete);
        // Junk events and error objects are skipped, not fatal.
        let junk = stream(&["not json", r#"{"error":{"message":"overloaded"}}"#, DONE]);
        let r = reassemble(junk.as_bytes());
        assert!(r.complete);
        assert_eq!(r.doc, json!({"choices": []}));
    }
}
