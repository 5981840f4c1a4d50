//! LLM answers end to end: toy OpenAI-compatible servers behind the real
//! proxy with `preset = "openai"`. Event streams reach the client as they
//! are sent, byte for byte, while the mirror captures them; mirrored
//! streams that agree, differ or break off are counted as their outcomes.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::harness::series::comparisons;
use support::{harness, http_client, send};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use understudy::sse;
use understudy::toy::llm::{self, ToyLlmConfig, answer};

const WAIT: Duration = Duration::from_secs(10);
const OPENAI: &str = "[compare]\npreset = \"openai\"\n";

fn chat_request(prompt: &str, stream: bool) -> String {
    json!({"model": "toy", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
        .to_string()
}

/// Two toys and a proxy mirroring every request from one to the other.
struct Setup {
    proxy: harness::Proxy,
    toys: [llm::ToyLlm; 2],
    stop: CancellationToken,
}

impl Setup {
    async fn start(stable: ToyLlmConfig, candidate: ToyLlmConfig, extra: &str) -> Setup {
        let stop = CancellationToken::new();
        let stable = llm::spawn(stable, stop.clone()).await.unwrap();
        let candidate = llm::spawn(candidate, stop.clone()).await.unwrap();
        let config = format!("{OPENAI}{extra}");
        let proxy = harness::start(&stable.url(), Some(&candidate.url()), &config).await;
        Setup {
            proxy,
            toys: [stable, candidate],
            stop,
        }
    }

    async fn post(&self, path: &str, body: String) -> Bytes {
        let url = format!("{}{path}", self.proxy.url);
        let (status, headers, body) = send(&http_client(), Method::POST, &url, &[], body).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-understudy-backend"], "stable");
        body
    }

    async fn stop(self) {
        self.proxy.stop().await;
        self.stop.cancel();
        for toy in self.toys {
            toy.stopped().await;
        }
    }
}

#[tokio::test]
async fn an_event_stream_reaches_the_client_as_sent_byte_for_byte_while_mirrored() {
    let prompt = "Why do we shadow traffic?";
    let ask = answer::parse(
        answer::Endpoint::Chat,
        chat_request(prompt, true).as_bytes(),
    )
    .unwrap();
    let (tokens, finish) = answer::tokens(&ask, false, 0);
    // The first token after 20 ms, the last one a second after it.
    let gap = Duration::from_millis(1000) / (tokens.len() as u32 - 1);
    let toy = ToyLlmConfig::default().with_delays(Duration::from_millis(20), gap);
    let setup = Setup::start(toy.clone(), toy, "").await;

    let request = Request::post(format!("{}/v1/chat/completions", setup.proxy.url))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat_request(prompt, true))))
        .unwrap();
    let sent = Instant::now();
    let response = http_client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(sse::is_event_stream(
        response.headers()["content-type"].as_bytes()
    ));
    let mut body = response.into_body();
    let mut received = Vec::new();
    let mut first_token = None;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            received.extend_from_slice(&data);
            if first_token.is_none() && sse::events(&received).any(|e| sse::carries_output(&e.data))
            {
                first_token = Some(sent.elapsed());
            }
        }
    }
    let (first_token, end) = (first_token.expect("a token arrived"), sent.elapsed());
    assert!(
        first_token < Duration::from_millis(500),
        "the first token was held back: {first_token:?}"
    );
    assert!(
        end - first_token >= Duration::from_millis(900),
        "the stream arrived in a burst: first token {first_token:?}, end {end:?}"
    );
    // Byte for byte what the toy sent: the same events, spelled out here.
    let first = sse::events(&received).next().unwrap();
    let created = serde_json::from_str::<Value>(&first.data).unwrap()["created"]
        .as_u64()
        .unwrap();
    let expected = answer::chunks(&ask, &answer::id(&ask, 0), created, &tokens, finish).concat();
    assert_eq!(String::from_utf8(received).unwrap(), expected);
    // And the mirror compared the two streams.
    setup
        .proxy
        .wait_metric(&comparisons("match"), 1.0, WAIT)
        .await;
    setup.stop().await;
}

#[tokio::test]
async fn alike_toys_match_streamed_or_not_on_both_endpoints() {
    let setup = Setup::start(ToyLlmConfig::default(), ToyLlmConfig::default(), "").await;
    for prompt in ["one", "two", "three"] {
        setup
            .post("/v1/chat/completions", chat_request(prompt, true))
            .await;
    }
    setup
        .post("/v1/chat/completions", chat_request("four", false))
        .await;
    let completion = json!({"model": "toy", "prompt": "Once upon", "stream": true, "stream_options": {"include_usage": true}});
    setup.post("/v1/completions", completion.to_string()).await;
    let metrics = setup
        .proxy
        .wait_metric(&comparisons("match"), 5.0, WAIT)
        .await;
    for result in ["mismatch", "stable_error", "shadow_error", "uncomparable"] {
        assert_eq!(harness::metric(&metrics, &comparisons(result)), Some(0.0));
    }
    setup.stop().await;
}

#[tokio::test]
async fn a_deviating_candidate_stream_is_a_mismatch_at_the_content() {
    let candidate = ToyLlmConfig::default().with_deviation(1.0, 7);
    let setup = Setup::start(ToyLlmConfig::default(), candidate, "").await;
    setup
        .post(
            "/v1/chat/completions",
            chat_request("What is a canary?", true),
        )
        .await;
    setup
        .proxy
        .wait_metric(&comparisons("mismatch"), 1.0, WAIT)
        .await;
    let mismatches = setup.proxy.mismatches().await;
    let record = &mismatches["mismatches"][0];
    assert_eq!(
        record["pointer"], "/choices/0/message/content",
        "{record:#}"
    );
    assert_ne!(record["stable"], record["candidate"], "{record:#}");
    setup.stop().await;
}

#[tokio::test]
async fn a_stream_that_breaks_off_is_its_sides_error() {
    let broken = ToyLlmConfig::default().with_break_rate(1.0);
    let setup = Setup::start(ToyLlmConfig::default(), broken.clone(), "").await;
    let body = setup
        .post("/v1/chat/completions", chat_request("Tell me more", true))
        .await;
    // The client got stable's whole stream.
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    setup
        .proxy
        .wait_metric(&comparisons("shadow_error"), 1.0, WAIT)
        .await;
    setup.stop().await;

    let setup = Setup::start(broken, ToyLlmConfig::default(), "").await;
    let body = setup
        .post("/v1/chat/completions", chat_request("Tell me more", true))
        .await;
    assert!(!body.ends_with(b"data: [DONE]\n\n"));
    let metrics = setup
        .proxy
        .wait_metric(&comparisons("stable_error"), 1.0, WAIT)
        .await;
    assert_eq!(harness::metric(&metrics, &comparisons("match")), Some(0.0));
    setup.stop().await;
}

#[tokio::test]
async fn similarity_text_lets_a_small_deviation_pass() {
    // A deviating answer changes about a sixth of its words.
    let candidate = ToyLlmConfig::default().with_deviation(1.0, 7);
    let extra = "text = \"similarity\"\nmin_similarity = 0.5\n";
    let setup = Setup::start(ToyLlmConfig::default(), candidate, extra).await;
    setup
        .post(
            "/v1/chat/completions",
            chat_request("What is a canary?", true),
        )
        .await;
    let metrics = setup
        .proxy
        .wait_metric(&comparisons("match"), 1.0, WAIT)
        .await;
    assert_eq!(
        harness::metric(&metrics, &comparisons("mismatch")),
        Some(0.0)
    );
    setup.stop().await;
}

#[tokio::test]
async fn a_toy_with_a_temperature_answers_one_prompt_differently_across_requests() {
    async fn answers(config: ToyLlmConfig) -> std::collections::BTreeSet<Bytes> {
        let stop = CancellationToken::new();
        let toy = llm::spawn(config, stop.clone()).await.unwrap();
        let url = format!("{}/v1/chat/completions", toy.url());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let body = chat_request("the same prompt", false);
            let (status, _, body) = send(&http_client(), Method::POST, &url, &[], body).await;
            assert_eq!(status, 200);
            // Only the message: `created` moves with the clock.
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            seen.insert(Bytes::from(answer["choices"].to_string()));
        }
        stop.cancel();
        toy.stopped().await;
        seen
    }
    assert_eq!(answers(ToyLlmConfig::default()).await.len(), 1);
    let sampled = answers(ToyLlmConfig::default().with_temperature(0.5)).await;
    assert!(sampled.len() >= 3, "{sampled:?}");
}

#[tokio::test]
async fn the_llm_demo_runs_and_reports_each_backend() {
    let output = harness::run_cli(&["demo", "--llm", "--duration", "3s"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("match rate"), "{stdout}");
    // Stable answered a sample twice: the summary shows the noise floor.
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("stable vs itself") && l.contains("pairs")),
        "{stdout}"
    );
    for backend in ["stable    served", "candidate served"] {
        let line = stdout.lines().find(|l| l.contains(backend));
        // Each backend's streams were timed: a time to first token is shown.
        assert!(
            line.is_some_and(|l| l.contains("ttft p50/p99 ") && !l.contains("ttft p50/p99 -")),
            "{stdout}"
        );
    }
}
