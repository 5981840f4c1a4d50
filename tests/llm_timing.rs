//! Event-stream timing through the real proxy: time to first token (TTFT),
//! inter-token latency (ITL) and decode rate of both backends, as
//! `/status` and `/metrics` show them, and the rollout judge gating on
//! TTFT. The backends are fake LLM servers streaming on a fixed schedule
//! (`support::sse_upstream`) over loopback sockets.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::harness::{self, metric};
use support::http_client;
use support::sse_upstream::{Schedule, SseUpstream};
use tokio::time::Instant;

const CHAT: &str = "/v1/chat/completions";
/// Streams timed per backend in the measurement test.
const STREAMS: usize = 5;
const PROMPT: &str = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

/// One at a time: each measures milliseconds on a shared two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the client saw of one streamed answer: when its first frame and
/// its first token arrived, counted from sending the request.
struct Seen {
    first_frame: Duration,
    first_token: Duration,
    body: Vec<u8>,
}

async fn stream_once(client: &support::TestClient, url: &str) -> Seen {
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(PROMPT.as_bytes())))
        .unwrap();
    let sent = Instant::now();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut first_frame, mut first_token) = (None, None);
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            first_frame.get_or_insert(sent.elapsed());
            collected.extend_from_slice(&data);
            if first_token.is_none() && String::from_utf8_lossy(&collected).contains("\"w0 \"") {
                first_token = Some(sent.elapsed());
            }
        }
    }
    Seen {
        first_frame: first_frame.expect("a frame"),
        first_token: first_token.expect("a token"),
        body: collected,
    }
}

fn within(what: &str, got: Option<f64>, low: f64, high: f64, context: &Value) {
    let got = got.unwrap_or_else(|| panic!("{what} missing: {context:#}"));
    assert!(
        (low..=high).contains(&got),
        "{what} = {got}, want {low}..={high}: {context:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttft_itl_and_rate_of_both_backends_show_in_status_and_metrics() {
    let _serial = SERIAL.lock().await;
    let stable = SseUpstream::start(Schedule {
        first_token: ms(200),
        gap: ms(30),
        tokens: 5,
    })
    .await;
    let candidate = SseUpstream::start(Schedule {
        first_token: ms(100),
        gap: ms(20),
        tokens: 5,
    })
    .await;
    let proxy = harness::start(
        &stable.url(),
        Some(&candidate.url()),
        "[shadow]\npercent = 100\n",
    )
    .await;
    // Several streams, one after another: the p50 shrugs off a scheduling
    // hiccup of a loaded machine in one of them.
    let client = http_client();
    let mut seen = Vec::new();
    for _ in 0..STREAMS {
        seen.push(stream_once(&client, &format!("{}{CHAT}", proxy.url)).await);
    }
    // The head and the role-only chunk leave the fake at once: the client
    // has them long before the first token, so nothing held them back.
    for s in &seen {
        assert!(
            s.first_token >= ms(200),
            "first token after {:?}",
            s.first_token
        );
        let early = s.first_token.saturating_sub(s.first_frame);
        assert!(
            early >= ms(100),
            "first frame only {early:?} before the first token"
        );
        assert!(String::from_utf8_lossy(&s.body).ends_with("data: [DONE]\n\n"));
    }
    let median = |pick: fn(&Seen) -> Duration| {
        let mut all: Vec<Duration> = seen.iter().map(pick).collect();
        all.sort();
        (all[STREAMS / 2], all)
    };
    let (first_frame, all) = median(|s| s.first_frame);
    assert!(first_frame < ms(50), "client's first frames after {all:?}");
    let (first_token, all) = median(|s| s.first_token);
    assert!(first_token < ms(215), "client's first tokens after {all:?}");

    let n = STREAMS as u64;
    let status = proxy
        .wait_status(Duration::from_secs(10), |s| {
            s["cumulative"]["stable"]["serve"]["streams"]["streams"] == n
                && s["cumulative"]["candidate"]["shadow"]["streams"]["streams"] == n
        })
        .await;
    let serve = &status["cumulative"]["stable"]["serve"]["streams"];
    let shadow = &status["cumulative"]["candidate"]["shadow"]["streams"];
    let f = |v: &Value, key: &str| v[key].as_f64();
    // Histograms keep two significant digits: a value reads up to 1% high.
    within(
        "stable TTFT p50",
        f(serve, "ttft_p50_ms"),
        200.0,
        205.0,
        &status,
    );
    // The p99 of five is their maximum: one slow scheduling shows there.
    within(
        "stable TTFT p99",
        f(serve, "ttft_p99_ms"),
        200.0,
        250.0,
        &status,
    );
    within(
        "candidate TTFT p50",
        f(shadow, "ttft_p50_ms"),
        100.0,
        105.0,
        &status,
    );
    within(
        "stable ITL p50",
        f(serve, "itl_p50_ms"),
        27.0,
        35.0,
        &status,
    );
    within(
        "candidate ITL p50",
        f(shadow, "itl_p50_ms"),
        17.0,
        25.0,
        &status,
    );
    // Four tokens after the first in the 120 ms (80 ms) from first to last.
    within(
        "stable tokens/s",
        f(serve, "tokens_per_second_p50"),
        30.0,
        36.0,
        &status,
    );
    within(
        "candidate tokens/s",
        f(shadow, "tokens_per_second_p50"),
        45.0,
        55.0,
        &status,
    );
    assert!(status["cumulative"]["stable"]["shadow"]["streams"].is_null());
    assert!(status["step_window"]["stable"]["total"]["streams"].is_object());

    let text = proxy.metrics().await;
    let series = |name: &str, backend: &str, role: &str| {
        metric(
            &text,
            &format!("{name}{{backend=\"{backend}\",role=\"{role}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {name} for {backend}/{role} in\n{text}"))
    };
    let ttft = "understudy_time_to_first_token_seconds";
    assert_eq!(
        series(&format!("{ttft}_count"), "stable", "serve"),
        n as f64
    );
    // Every stable first token between 0.1 s and 0.25 s, every candidate
    // one after 0.1 s: the buckets say so.
    let bucket = |backend: &str, role: &str, le: &str| {
        let name = format!("{ttft}_bucket{{backend=\"{backend}\",role=\"{role}\",le=\"{le}\"}}");
        metric(&text, &name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(bucket("stable", "serve", "0.1"), 0.0);
    assert_eq!(bucket("stable", "serve", "0.25"), n as f64);
    assert_eq!(bucket("candidate", "shadow", "0.05"), 0.0);
    assert_eq!(bucket("candidate", "shadow", "0.25"), n as f64);
    let itl = "understudy_inter_token_latency_seconds_count";
    assert_eq!(series(itl, "stable", "serve"), 4.0 * n as f64);
    let rate = "understudy_output_tokens_per_second_count";
    assert_eq!(series(rate, "candidate", "shadow"), n as f64);
    // The new series have their help text and are well formed.
    if let Some(Err(problems)) = support::promtool::check_metrics(&text).await {
        panic!("{problems}\n--- scraped:\n{text}");
    }
    proxy.stop().await;
}

/// Clients streaming back to back until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Load {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let workers = (0..workers)
            .map(|_| {
                let (stop, sent, url) = (stop.clone(), sent.clone(), url.clone());
                tokio::spawn(async move {
                    let client = http_client();
                    while !stop.load(Ordering::Relaxed) {
                        stream_once(&client, &url).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            workers,
        }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

/// A live rollout over two fake LLM servers whose heads come at once;
/// returns the status once the shadow phase is over.
async fn shadow_gate(stable: Schedule, candidate: Schedule, name: &str) -> Value {
    let stable = SseUpstream::start(stable).await;
    let candidate = SseUpstream::start(candidate).await;
    let dir = harness::TempDir::new(name);
    let extra = format!(
        "[shadow]\npercent = 100\n\n[compare]\nformat = \"bytes\"\n\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"2s\"\nstate_file = \"{}\"\n",
        dir.path("state.json").display()
    );
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let load = Load::start(format!("{}{CHAT}", proxy.url), 12);
    let ended = proxy
        .wait_status(Duration::from_secs(60), |s| s["phase"] != "shadow")
        .await;
    let sent = load.stop().await;
    println!("{name}: shadow gate ended after {sent} streams");
    proxy.stop().await;
    ended
}

fn decision<'a>(status: &'a Value, verdict: &str) -> &'a Value {
    status["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["verdict"] == verdict))
        .unwrap_or_else(|| panic!("no {verdict} decision in {status:#}"))
}

fn reasons(decision: &Value) -> Vec<String> {
    decision["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_a_late_first_token_and_equal_head_latency_is_rolled_back() {
    let _serial = SERIAL.lock().await;
    let quick = Schedule {
        first_token: ms(20),
        gap: ms(2),
        tokens: 3,
    };
    let late = Schedule {
        first_token: ms(100),
        ..quick
    };
    let ended = shadow_gate(quick, late, "ttft-late").await;
    assert_eq!(ended["phase"], "rolled_back", "{ended:#}");
    let fail = reasons(decision(&ended, "fail"));
    assert!(
        fail.iter().any(|r| r.starts_with("time to first token p")),
        "{fail:?}"
    );
    // The heads came as fast as stable's: head latency is not what failed.
    assert!(!fail.iter().any(|r| r.starts_with("latency")), "{fail:?}");
    let evidence = &decision(&ended, "fail")["evidence"];
    assert_eq!(evidence["criteria"]["ttft"], "fail", "{evidence:#}");
    assert!(evidence["ttft"]["test"]["candidate_p99"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_first_tokens_pass_the_shadow_gate_with_ttft_cited() {
    let _serial = SERIAL.lock().await;
    let schedule = Schedule {
        first_token: ms(20),
        gap: ms(2),
        tokens: 3,
    };
    let ended = shadow_gate(schedule, schedule, "ttft-equal").await;
    assert_eq!(ended["phase"], "canary", "{ended:#}");
    let pass = reasons(decision(&ended, "pass"));
    assert!(
        pass.iter().any(|r| r.starts_with("time to first token p")),
        "{pass:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_stream_is_timed_with_nothing_mirrored_or_recorded() {
    let _serial = SERIAL.lock().await;
    let stable = SseUpstream::start(Schedule {
        first_token: ms(150),
        gap: ms(10),
        tokens: 3,
    })
    .await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let client = http_client();
    for _ in 0..STREAMS {
        stream_once(&client, &format!("{}{CHAT}", proxy.url)).await;
    }
    let n = STREAMS as u64;
    let status = proxy
        .wait_status(Duration::from_secs(10), |s| {
            s["cumulative"]["stable"]["serve"]["streams"]["streams"] == n
        })
        .await;
    let serve = &status["cumulative"]["stable"]["serve"]["streams"];
    within(
        "stable TTFT p50",
        serve["ttft_p50_ms"].as_f64(),
        150.0,
        155.0,
        &status,
    );
    assert_eq!(status["cumulative"]["shadow"]["sent"], 0, "{status:#}");
    proxy.stop().await;
}

/// Records `STREAMS * 4` streamed requests through the proxy, then replays
/// them with `understudy validate` against two fake LLM servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reports_both_backends_streams_and_judges_ttft() {
    let _serial = SERIAL.lock().await;
    let dir = harness::TempDir::new("validate-ttft");
    let quick = Schedule {
        first_token: ms(50),
        gap: ms(5),
        tokens: 4,
    };
    let recorder = SseUpstream::start(quick).await;
    let traffic = dir.path("traffic.jsonl");
    let extra = format!(
        "[record]\npath = \"{}\"\npercent = 100\n",
        traffic.display()
    );
    let proxy = harness::start(&recorder.url(), None, &extra).await;
    let requests = STREAMS * 4;
    let client = http_client();
    for _ in 0..requests {
        stream_once(&client, &format!("{}{CHAT}", proxy.url)).await;
    }
    proxy
        .wait_metric(
            r#"understudy_record_total{result="written"}"#,
            requests as f64,
            Duration::from_secs(10),
        )
        .await;
    proxy.stop().await;

    let stable = SseUpstream::start(quick).await;
    let candidate = SseUpstream::start(Schedule {
        first_token: ms(150),
        ..quick
    })
    .await;
    let config = dir.path("validate.toml");
    let text = format!(
        "[backends.stable]\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
         [backends.candidate]\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
         [compare]\nformat = \"bytes\"\n\n\
         [rollout]\nstate_file = \"{}\"\n",
        stable.url(),
        candidate.url(),
        dir.path("state.json").display()
    );
    std::fs::write(&config, text).unwrap();
    let (json, html) = (dir.path("out.json"), dir.path("out.html"));
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let out = harness::run_cli(&[
        "validate",
        "-c",
        &path(&config),
        "--requests",
        &path(&traffic),
        "--report",
        &path(&json),
        "--report",
        &path(&html),
    ])
    .await;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let streams = |side: &str| report[side]["streams"].clone();
    assert_eq!(streams("stable")["streams"], requests, "{report:#}");
    assert_eq!(streams("candidate")["streams"], requests, "{report:#}");
    let p50 = |side: &str| streams(side)["ttft_p50_ms"].as_f64();
    within("stable TTFT p50", p50("stable"), 50.0, 55.0, &report);
    within(
        "candidate TTFT p50",
        p50("candidate"),
        150.0,
        155.0,
        &report,
    );
    let ttft = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["criterion"] == "ttft")
        .unwrap_or_else(|| panic!("no ttft check: {report:#}"));
    // 20 streams are too few to judge a quantile: the criterion holds.
    assert_eq!(ttft["verdict"], "hold", "{ttft}");
    assert_eq!(report["evidence"]["ttft"]["candidate_samples"], requests);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h2>Event streams</h2>"), "{page}");
}
