//! `understudy demo --llm`: two toy LLM servers streaming chat answers, the
//! real proxy in front with `preset = "openai"` mirroring every request, and
//! a small load of streamed chat requests; prints, each second and at the
//! end, what each backend did and how their answers compared.
//!
//! Both toys sample a few answers (a temperature), and a quarter of the
//! stable-served requests go to stable twice, so the noise floor shows how
//! often stable agrees with itself. The candidate starts its answers later,
//! rewords a tenth of them and breaks off a few streams, so every outcome
//! shows up. Everything binds to
//! 127.0.0.1 on ports the OS picks and is stopped before `run` returns.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::loadgen::LoadStats;
use crate::config::Config;
use crate::server::{self, StartOptions};
use crate::stats::Snapshot;
use crate::status::{BackendReport, WindowReport};
use crate::toy::llm::{self, ToyLlmConfig};
use crate::units::ms_or_dash;

/// Concurrent streamed chats: each waits for its whole answer.
const CHATS: usize = 8;
/// Distinct prompts; answers are a function of the prompt.
const PROMPTS: u32 = 500;
/// Share of requests both toys answer with sampled words: neither agrees
/// with itself every time, and the noise floor shows by how much.
const TEMPERATURE: f64 = 0.05;
/// Share of stable-served requests sent to stable a second time.
const NOISE_PERCENT: u32 = 25;

/// Runs the LLM demo for `limit`; returns once everything has stopped.
pub async fn run(limit: Duration) -> Result<ExitCode, crate::cli::CliError> {
    let stop = CancellationToken::new();
    let token = Duration::from_millis(15);
    let stable = llm::spawn(
        ToyLlmConfig::default()
            .with_delays(Duration::from_millis(40), token)
            .with_temperature(TEMPERATURE),
        stop.clone(),
    )
    .await?;
    let candidate = llm::spawn(
        ToyLlmConfig::default()
            .with_delays(Duration::from_millis(120), token)
            .with_temperature(TEMPERATURE)
            .with_deviation(0.10, 7)
            .with_break_rate(0.02),
        stop.clone(),
    )
    .await?;
    let config = Config::parse(&config(&stable.url(), &candidate.url()), "demo config")?;
    let running = server::start(config, StartOptions::default()).await?;
    println!(
        "understudy demo --llm: stable toy LLM at {} (first token after 40 ms), candidate at {} (after 120 ms, rewords 10% of answers, breaks off 2% of streams); both sample {:.0}% of answers, and {NOISE_PERCENT}% of requests go to stable twice (the noise floor)",
        stable.url(),
        candidate.url(),
        TEMPERATURE * 100.0
    );
    println!(
        "proxy on http://{}  admin on http://{}  (try: curl http://{}/status)\n",
        running.data_addr, running.admin_addr, running.admin_addr
    );

    let load = Arc::new(LoadStats::default());
    // The chats stop first, so no toy is stopped in the middle of a stream.
    let stop_chats = CancellationToken::new();
    let mut chats = JoinSet::new();
    let url = format!("http://{}/v1/chat/completions", running.data_addr);
    for _ in 0..CHATS {
        chats.spawn(chat_loop(
            url.clone(),
            Arc::clone(&load),
            stop_chats.clone(),
        ));
    }

    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while started.elapsed() < limit {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => { println!("\ninterrupted"); break; }
        }
        let Some(snapshot) = running.stats().snapshot().await else {
            break;
        };
        let window = WindowReport::from_window(&snapshot.sliding);
        let outcomes = &window.comparisons.outcomes;
        println!(
            "{:>3}s  chats {:>5}  match {:>6}  stable vs itself {:>6}  mismatch {:>4}  shadow_error {:>3}  stable {}  candidate {}",
            started.elapsed().as_secs(),
            load.sent.load(Ordering::Relaxed),
            rate(&window),
            self_agreement(&window),
            outcomes.get("mismatch").copied().unwrap_or(0),
            outcomes.get("shadow_error").copied().unwrap_or(0),
            backend(&window.stable),
            backend(&window.candidate),
        );
    }

    stop_chats.cancel();
    while chats.join_next().await.is_some() {}
    let snapshot = running.stats().snapshot().await;
    running.shutdown().await;
    stop.cancel();
    stable.stopped().await;
    candidate.stopped().await;
    if let Some(snapshot) = snapshot {
        summary(&snapshot, &load);
    }
    Ok(ExitCode::SUCCESS)
}

fn rate(window: &WindowReport) -> String {
    window
        .comparisons
        .match_rate
        .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// How often stable agreed with itself on the requests sent to it twice.
fn self_agreement(window: &WindowReport) -> String {
    window
        .noise
        .as_ref()
        .and_then(|noise| noise.self_agreement)
        .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// One backend's results as `/status` reports them: time to first token and
/// inter-token latency of its streams (a stream's head comes before its first
/// token, so head latency says little here), and errors.
fn backend(report: &BackendReport) -> String {
    let streams = report.total.streams.as_ref();
    format!(
        "ttft p50/p99 {}/{} itl p50 {} errors {}",
        ms_or_dash(streams.and_then(|s| s.ttft_p50_ms)),
        ms_or_dash(streams.and_then(|s| s.ttft_p99_ms)),
        ms_or_dash(streams.and_then(|s| s.itl_p50_ms)),
        report.total.errors
    )
}

fn summary(snapshot: &Snapshot, load: &LoadStats) {
    let report = WindowReport::from_window(&snapshot.cumulative);
    let load = load.snapshot();
    println!("\nsummary");
    println!(
        "  chats {}  ok {}  failed {}",
        load.sent, load.ok, load.failed
    );
    println!(
        "  comparisons {}  match rate {}  choices matched {} / mismatched {}",
        report.comparisons.compared,
        rate(&report),
        report.comparisons.elements_matched,
        report.comparisons.elements_mismatched
    );
    for (outcome, n) in &report.comparisons.outcomes {
        println!("    {outcome:<13} {n}");
    }
    if let Some(noise) = &report.noise {
        println!(
            "  stable vs itself {} of {} pairs (the noise floor the candidate is measured against)",
            self_agreement(&report),
            noise.compared
        );
    }
    for (name, b) in [("stable", &report.stable), ("candidate", &report.candidate)] {
        println!(
            "  {name:<9} served {:>5} shadowed {:>5}  {}",
            b.serve.requests,
            b.shadow.requests,
            backend(b)
        );
    }
    if let Some(m) = snapshot.mismatches.last() {
        println!(
            "  last mismatch at {}:\n    stable    {}\n    candidate {}",
            m.difference.pointer, m.difference.stable, m.difference.candidate
        );
    }
}

/// Sends streamed chats back to back until `stop`, reading every answer to
/// its end.
async fn chat_loop(url: String, load: Arc<LoadStats>, stop: CancellationToken) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    loop {
        let prompt = format!(
            "Question {}: how should we roll out the new model?",
            rand::rng().random_range(0..PROMPTS)
        );
        let body = serde_json::json!({
            "model": "toy", "stream": true,
            "messages": [{"role": "user", "content": prompt}],
        });
        let Ok(request) = Request::post(url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
        else {
            return;
        };
        load.sent.fetch_add(1, Ordering::Relaxed);
        let exchange = async {
            let response = client.request(request).await.ok()?;
            let success = response.status().is_success();
            response.into_body().collect().await.ok()?;
            Some(success)
        };
        let counter = tokio::select! {
            () = stop.cancelled() => return,
            done = exchange => match done {
                Some(true) => &load.ok,
                _ => &load.failed,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn config(stable: &str, candidate: &str) -> String {
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
drain_timeout = "5s"

[admin]
addr = "127.0.0.1:0"

[backends.stable]
url = "{stable}"

[backends.candidate]
url = "{candidate}"

[shadow]
percent = 100

[compare]
preset = "openai"
text = "exact"
noise_percent = {NOISE_PERCENT}
"#
    )
}
