//! What the toy LLM answers and how it is spelled: the prompt of a chat or
//! completions request, the tokens answered for it, and the OpenAI JSON of
//! whole answers and stream chunks.
//!
//! Pure functions only: no sockets, no clocks (the caller passes `created`).
//! The answer must be a function of the prompt and the deviation knobs
//! alone, so two toys configured alike answer alike.

use serde_json::{Value, json};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Words answers are made of.
const WORDS: [&str; 24] = [
    "the",
    "model",
    "answers",
    "with",
    "a",
    "short",
    "sentence",
    "about",
    "rollouts",
    "shadow",
    "traffic",
    "and",
    "candidate",
    "servers",
    "that",
    "compare",
    "every",
    "token",
    "they",
    "stream",
    "to",
    "clients",
    "quickly",
    "today",
];

/// Words a deviating answer draws from instead.
const OTHER_WORDS: [&str; 8] = [
    "perhaps",
    "another",
    "phrasing",
    "entirely",
    "différent",
    "mot",
    "回答",
    "🙂",
];

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

/// A parsed request: the parts of it the toy's answer depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub endpoint: Endpoint,
    /// The chat messages' contents (or the completion prompt), joined by newlines.
    pub prompt: String,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// `max_tokens` (or `max_completion_tokens`).
    pub max_tokens: Option<usize>,
}

/// Reads a request body; the error is the message of a 400 answer.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Ask, String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let prompt = match endpoint {
        Endpoint::Chat => {
            let messages = request
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("'messages' must be an array")?;
            let texts: Vec<&str> = messages
                .iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect();
            texts.join("\n")
        }
        Endpoint::Completions => match request.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => return Err("'prompt' must be a string or an array of strings".into()),
        },
    };
    let max_tokens = ["max_tokens", "max_completion_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
        .map(|n| n as usize);
    Ok(Ask {
        endpoint,
        prompt,
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("toy")
            .to_owned(),
        stream: request.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true),
        max_tokens,
    })
}

/// A share in [0, 1) drawn from the prompt and a salt: the same for every
/// toy, so the set of prompts below a lower rate is a subset of the set
/// below a higher one.
pub fn draw(prompt: &str, seed: u64, salt: u64) -> f64 {
    let hash = xxh3_64_with_seed(prompt.as_bytes(), seed ^ salt);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Salt of the deviation draw.
pub const DEVIATE: u64 = 0x5eed_0001;
/// Salt of the broken-stream draw.
pub const BREAK: u64 = 0x5eed_0002;
/// Salt of the per-request sampling draw.
pub const SAMPLE: u64 = 0x5eed_0003;

/// The answer's tokens (the first without, the others with a leading
/// space) and its finish reason. A deviating answer replaces every third
/// word from its middle on, all drawn from `seed`, so deviating toys with
/// one seed deviate alike.
pub fn tokens(ask: &Ask, deviates: bool, seed: u64) -> (Vec<String>, &'static str) {
    let hash = xxh3_64_with_seed(ask.prompt.as_bytes(), 0);
    let count = 8 + (hash % 17) as usize;
    let mut words: Vec<&str> = (0..count)
        .map(|i| {
            let h = xxh3_64_with_seed(ask.prompt.as_bytes(), i as u64 + 1);
            WORDS[(h % WORDS.len() as u64) as usize]
        })
        .collect();
    if deviates {
        for (i, word) in words.iter_mut().enumerate().skip(count / 2).step_by(3) {
            let h = xxh3_64_with_seed(ask.prompt.as_bytes(), seed.wrapping_add(i as u64));
            *word = OTHER_WORDS[(h % OTHER_WORDS.len() as u64) as usize];
        }
    }
    let (words, finish) = match ask.max_tokens {
        Some(max) if max < words.len() => (&words[..max], "length"),
        _ => (&words[..], "stop"),
    };
    let tokens = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                (*w).to_owned()
            } else {
                format!(" {w}")
            }
        })
        .collect();
    (tokens, finish)
}

/// The answer's `id`: drawn from the prompt and seed rather than at random,
/// so a test can spell out the bytes a toy sends.
pub fn id(ask: &Ask, seed: u64) -> String {
    let prefix = match ask.endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let hash = xxh3_64_with_seed(ask.prompt.as_bytes(), seed);
    format!("{prefix}-{hash:016x}")
}

fn usage(ask: &Ask, completion: usize) -> Value {
    let prompt = ask.prompt.split_whitespace().count();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The non-streamed answer.
pub fn whole(ask: &Ask, id: &str, created: u64, tokens: &[String], finish: &str) -> Value {
    let text: String = tokens.concat();
    let (object, choice) = match ask.endpoint {
        Endpoint::Chat => (
            "chat.completion",
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish}),
        ),
        Endpoint::Completions => (
            "text_completion",
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
        ),
    };
    json!({
        "id": id, "object": object, "created": created, "model": ask.model,
        "choices": [choice], "usage": usage(ask, tokens.len()),
    })
}

/// The stream's events, each a whole `data: ...\n\n`: for chat a role-only
/// chunk first, then one chunk per token, a finish chunk, a usage chunk when
/// asked for, and `data: [DONE]`.
pub fn chunks(ask: &Ask, id: &str, created: u64, tokens: &[String], finish: &str) -> Vec<String> {
    let object = match ask.endpoint {
        Endpoint::Chat => "chat.completion.chunk",
        Endpoint::Completions => "text_completion",
    };
    let chunk = |choices: Value| json!({"id": id, "object": object, "created": created, "model": ask.model, "choices": choices});
    let choice = |token: &str, finish: Option<&str>| match ask.endpoint {
        Endpoint::Chat => {
            let delta = if finish.is_some() {
                json!({})
            } else {
                json!({ "content": token })
            };
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
        }
        Endpoint::Completions => {
            json!([{"index": 0, "text": token, "logprobs": null, "finish_reason": finish}])
        }
    };
    let mut out = Vec::with_capacity(tokens.len() + 4);
    if ask.endpoint == Endpoint::Chat {
        out.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])));
    }
    for token in tokens {
        out.push(chunk(choice(token, None)));
    }
    out.push(chunk(choice("", Some(finish))));
    if ask.include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage(ask, tokens.len());
        out.push(last);
    }
    let mut events: Vec<String> = out.iter().map(|c| format!("data: {c}\n\n")).collect();
    events.push(format!("data: {}\n\n", crate::sse::DONE));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(endpoint: Endpoint, prompt: &str) -> Ask {
        Ask {
            endpoint,
            prompt: prompt.into(),
            model: "toy".into(),
            stream: true,
            include_usage: true,
            max_tokens: None,
        }
    }

    #[test]
    fn requests_are_read_for_both_endpoints() {
        let chat = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}"#;
        let a = parse(Endpoint::Chat, chat).unwrap();
        assert_eq!(
            (a.prompt.as_str(), a.stream, a.include_usage, a.max_tokens),
            ("Be brief.\nHi", true, true, Some(5))
        );
        let a = parse(Endpoint::Completions, br#"{"prompt":"Once"}"#).unwrap();
        assert_eq!((a.prompt.as_str(), a.stream), ("Once", false));
        assert!(parse(Endpoint::Chat, br#"{"prompt":"x"}"#).is_err());
    }

    #[test]
    fn answers_are_a_function_of_the_prompt_and_deviations_of_the_seed() {
        let a = ask(Endpoint::Chat, "What is a shadow deployment?");
        assert_eq!(tokens(&a, false, 1), tokens(&a, false, 2));
        assert_eq!(tokens(&a, true, 7), tokens(&a, true, 7));
        assert_ne!(tokens(&a, false, 7).0, tokens(&a, true, 7).0);
        let other = ask(Endpoint::Chat, "Another prompt");
        assert_ne!(tokens(&a, false, 0).0, tokens(&other, false, 0).0);
        let short = Ask {
            max_tokens: Some(3),
            ..a
        };
        let (t, finish) = tokens(&short, false, 0);
        assert_eq!((t.len(), finish), (3, "length"));
    }

    #[test]
    fn stream_tokens_join_into_the_whole_answers_text() {
        for endpoint in [Endpoint::Chat, Endpoint::Completions] {
            let a = ask(endpoint, "p");
            let (t, finish) = tokens(&a, false, 0);
            let stream: String = chunks(&a, "id", 1, &t, finish).concat();
            assert!(stream.ends_with("data: [DONE]\n\n"));
            let first = crate::sse::events(stream.as_bytes()).next().unwrap();
            assert_eq!(
                crate::sse::carries_output(&first.data),
                endpoint == Endpoint::Completions
            );
            let whole = whole(&a, "id", 1, &t, finish);
            let text = match endpoint {
                Endpoint::Chat => &whole["choices"][0]["message"]["content"],
                Endpoint::Completions => &whole["choices"][0]["text"],
            };
            assert_eq!(text.as_str().unwrap(), t.concat());
            assert!(stream.contains("\"usage\""));
        }
    }
}
