//! End-to-end tests of the `openai` preset on chat and completions answers,
//! streamed and not, under each `compare.text` mode.
//!
//! Must never depend on files outside this module (answers are inlined).

use super::tests::{counts, diff, ok, run};
use super::*;

fn openai(text: Option<TextMode>) -> CompareSpec {
    CompareSpec {
        preset: Some(Preset::Openai),
        text,
        ..Default::default()
    }
}

fn chat(content: &str, finish: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    })
    .to_string()
}

/// A chat stream of `pieces`, with `[DONE]` when `done`.
fn chat_stream(pieces: &[&str], finish: Option<&str>, done: bool) -> String {
    let mut out = String::from(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    );
    for piece in pieces {
        let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    if let Some(finish) = finish {
        let chunk =
            serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

#[test]
fn equal_chat_answers_match_whatever_their_ids_and_usage() {
    let a = chat("Paris.", "stop");
    let b = a
        .replace("chatcmpl-1", "chatcmpl-2")
        .replace("\"total_tokens\":5", "\"total_tokens\":6");
    let c = run(&openai(None), ok(&a), ok(&b));
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(1, 0)));
}

#[test]
fn exact_text_reports_where_and_both_texts_near_the_difference() {
    let a = chat(&format!("{}Paris is the capital.", "x ".repeat(40)), "stop");
    let b = chat(&format!("{}Lyon is the capital.", "x ".repeat(40)), "stop");
    let c = run(&openai(None), ok(&a), ok(&b));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 1))
    );
    assert_eq!(
        diff(&c),
        (
            "/choices/0/message/content",
            "…\"x x x x x x x x Paris is the capital.\"",
            "…\"x x x x x x x x Lyon is the capital.\""
        )
    );
    let long = chat(&"é".repeat(1000), "stop");
    let c = run(&openai(None), ok(&long), ok(&chat("", "stop")));
    assert_eq!(c.difference.unwrap().stable.chars().count(), MAX_CHARS);
}

#[test]
fn finish_reason_always_compares_exactly() {
    for mode in [
        TextMode::Exact,
        TextMode::Normalized,
        TextMode::Similarity,
        TextMode::Json,
    ] {
        let c = run(
            &openai(Some(mode)),
            ok(&chat("Hi", "stop")),
            ok(&chat("Hi", "length")),
        );
        assert_eq!(
            diff(&c),
            ("/choices/0/finish_reason", "\"stop\"", "\"length\"")
        );
    }
}

#[test]
fn normalized_text_ignores_whitespace_runs_and_case_only() {
    let spec = openai(Some(TextMode::Normalized));
    let same = [
        ("Hello  World", " hello\n\tworld "),
        ("ΟΔΟΣ", "οδος"),
        ("STRAẞE", "straße"),
        ("你好\u{3000}世界", "你好 世界"),
        ("OK 👍", "ok\u{00A0}👍"),
    ];
    for (a, b) in same {
        let c = run(&spec, ok(&chat(a, "stop")), ok(&chat(b, "stop")));
        assert_eq!(c.outcome, Outcome::Match, "{a:?} vs {b:?}");
    }
    let differ = [
        ("STRASSE", "straße"),        // no full case folding
        ("caf\u{e9}", "cafe\u{301}"), // no NFC
        ("你好世界", "你好 世界"),    // added whitespace counts
        ("👍", "👍🏽"),                 // a skin-tone modifier is a character
    ];
    for (a, b) in differ {
        let c = run(&spec, ok(&chat(a, "stop")), ok(&chat(b, "stop")));
        assert_eq!(c.outcome, Outcome::Mismatch, "{a:?} vs {b:?}");
    }
}

#[test]
fn similarity_text_passes_at_and_above_the_threshold() {
    let spec = CompareSpec {
        min_similarity: 0.8,
        ..openai(Some(TextMode::Similarity))
    };
    // 9 of 10 words in common: F1 0.9.
    let a = "the quick brown fox jumps over the lazy dog today";
    let b = "the quick brown fox leaps over the lazy dog today";
    assert_eq!(
        run(&spec, ok(&chat(a, "stop")), ok(&chat(b, "stop"))).outcome,
        Outcome::Match
    );
    // CJK compares per character: 4 of 6 in common.
    let c = run(
        &spec,
        ok(&chat("我喜欢吃苹果", "stop")),
        ok(&chat("我喜欢吃香蕉", "stop")),
    );
    assert_eq!(c.outcome, Outcome::Mismatch);
    assert_eq!(
        diff(&c),
        (
            "/choices/0/message/content",
            "\"我喜欢吃苹果\"",
            "similarity=0.667 \"我喜欢吃香蕉\""
        )
    );
    let exact_threshold = CompareSpec {
        min_similarity: 0.9,
        ..spec
    };
    assert_eq!(
        run(&exact_threshold, ok(&chat(a, "stop")), ok(&chat(b, "stop"))).outcome,
        Outcome::Match
    );
}

#[test]
fn json_text_compares_structured_output_with_tolerances() {
    let spec = openai(Some(TextMode::Json));
    let a = chat(r#"{"answer": "Paris", "confidence": 0.91234}"#, "stop");
    let b = chat(r#"{"confidence":0.912345,  "answer":"Paris"}"#, "stop");
    assert_eq!(run(&spec, ok(&a), ok(&b)).outcome, Outcome::Match);
    let b = chat(r#"{"confidence": 0.5, "answer": "Paris"}"#, "stop");
    let c = run(&spec, ok(&a), ok(&b));
    assert_eq!(
        diff(&c),
        ("/choices/0/message/content/confidence", "0.91234", "0.5")
    );
    // JSON on one side only differs; JSON on neither side compares as text.
    let c = run(&spec, ok(&a), ok(&chat("Paris", "stop")));
    assert_eq!(c.outcome, Outcome::Mismatch);
    assert_eq!(
        run(
            &spec,
            ok(&chat("Paris", "stop")),
            ok(&chat("Paris", "stop"))
        )
        .outcome,
        Outcome::Match
    );
    // Exact mode sees the spelling.
    let b = chat(r#"{"confidence":0.91234,"answer":"Paris"}"#, "stop");
    assert_eq!(
        run(&openai(None), ok(&a), ok(&b)).outcome,
        Outcome::Mismatch
    );
}

fn tool_answer(name: &str, arguments: &str, id: &str) -> String {
    serde_json::json!({
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]}}],
    })
    .to_string()
}

#[test]
fn tool_calls_compare_names_exactly_and_arguments_under_the_text_mode() {
    let json = openai(Some(TextMode::Json));
    let a = tool_answer("get_weather", r#"{"city": "Zürich"}"#, "call_1");
    let b = tool_answer("get_weather", r#"{"city":"Zürich"}"#, "call_2");
    assert_eq!(run(&json, ok(&a), ok(&b)).outcome, Outcome::Match);
    assert_eq!(
        diff(&run(&openai(None), ok(&a), ok(&b))).0,
        "/choices/0/message/tool_calls/0/function/arguments"
    );
    let b = tool_answer("get_Weather", r#"{"city":"Zürich"}"#, "call_1");
    let normalized = openai(Some(TextMode::Normalized));
    assert_eq!(
        diff(&run(&normalized, ok(&a), ok(&b))),
        (
            "/choices/0/message/tool_calls/0/function/name",
            "\"get_weather\"",
            "\"get_Weather\""
        )
    );
    let c = run(&json, ok(&a), ok(&chat("It is sunny.", "stop")));
    assert_eq!(c.outcome, Outcome::Mismatch);
}

#[test]
fn each_choice_is_a_row_and_a_missing_choice_is_reported_at_choices() {
    let two = |x: &str, y: &str| {
        serde_json::json!({"choices": [
            {"index": 0, "text": x, "finish_reason": "stop"},
            {"index": 1, "text": y, "finish_reason": "stop"},
        ]})
        .to_string()
    };
    let c = run(&openai(None), ok(&two("a", "b")), ok(&two("a", "c")));
    assert_eq!(c.difference.as_ref().and_then(|d| d.row), Some(1));
    assert_eq!(
        (c.elements.clone(), diff(&c)),
        (counts(1, 1), ("/choices/1/text", "\"b\"", "\"c\""))
    );
    let one = serde_json::json!({"choices": [{"index": 0, "text": "a", "finish_reason": "stop"}]})
        .to_string();
    let c = run(&openai(None), ok(&two("a", "b")), ok(&one));
    assert_eq!(
        (c.elements.clone(), diff(&c)),
        (counts(1, 1), ("/choices", "len=2", "len=1"))
    );
    let c = run(
        &openai(None),
        ok(&one),
        ok(r#"{"error": {"message": "overloaded"}}"#),
    );
    assert_eq!(diff(&c).0, "/choices");
}

#[test]
fn a_stream_and_its_non_streamed_twin_compare_by_the_same_rules() {
    let spec = openai(None);
    let s = chat_stream(&["Par", "is."], Some("stop"), true);
    let c = run(
        &spec,
        ok(&s),
        ok(&chat_stream(&["Pa", "ris", "."], Some("stop"), true)),
    );
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(1, 0)));
    let c = run(
        &spec,
        ok(&s),
        ok(&chat_stream(&["Lyon."], Some("stop"), true)),
    );
    assert_eq!(
        diff(&c),
        ("/choices/0/message/content", "\"Paris.\"", "\"Lyon.\"")
    );
    // Another form of answer is a mismatch at the root.
    let c = run(&spec, ok(&s), ok(&chat("Paris.", "stop")));
    assert_eq!(
        (c.outcome, diff(&c)),
        (Outcome::Mismatch, ("", "event stream", "JSON"))
    );
    // The reference path agrees.
    let cmp = Comparator::new(&spec).unwrap();
    let t = chat_stream(&["Lyon."], Some("stop"), true);
    assert_eq!(
        cmp.compare_reference(&ok(&s), &ok(&t)),
        cmp.compare(&ok(&s), &ok(&t))
    );
}

#[test]
fn a_stream_that_broke_off_is_its_sides_error() {
    let spec = openai(None);
    let whole = chat_stream(&["Hi"], Some("stop"), true);
    let no_done = chat_stream(&["Hi"], Some("stop"), false);
    let no_finish = chat_stream(&["Hi"], None, true);
    for broken in [&no_done, &no_finish] {
        assert_eq!(
            run(&spec, ok(&whole), ok(broken)).outcome,
            Outcome::ShadowError
        );
        assert_eq!(
            run(&spec, ok(broken), ok(&whole)).outcome,
            Outcome::StableError
        );
        assert_eq!(
            run(&spec, ok(broken), ok(broken)).outcome,
            Outcome::StableError
        );
    }
    // A broken stream against a JSON answer is still the stream's side's error.
    assert_eq!(
        run(&spec, ok(&chat("Hi", "stop")), ok(&no_done)).outcome,
        Outcome::ShadowError
    );
}

#[test]
fn embeddings_keep_their_rules_and_other_presets_ignore_streams() {
    let emb = r#"{"object":"list","data":[{"embedding":[0.1,0.2]}]}"#;
    let c = run(&openai(Some(TextMode::Exact)), ok(emb), ok(emb));
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(1, 0)));
    let neither = run(&openai(None), ok("{}"), ok("{}"));
    assert_eq!(neither.reason, Some(reason::POINTER_MISSING));
    let s = chat_stream(&["Hi"], Some("stop"), true);
    let c = run(&CompareSpec::default(), ok(&s), ok(&s));
    assert_eq!(c.reason, Some(reason::STABLE_NOT_JSON));
}

#[test]
fn ignore_pointers_apply_to_reassembled_streams_too() {
    let spec = CompareSpec {
        ignore: vec!["/choices/*/finish_reason".into()],
        ..openai(None)
    };
    let a = chat_stream(&["Hi"], Some("stop"), true);
    let b = chat_stream(&["Hi"], Some("length"), true);
    assert_eq!(run(&spec, ok(&a), ok(&b)).outcome, Outcome::Match);
}
