//! The noise floor end to end, in-process proxy over loopback sockets:
//! `compare.noise_percent = 100` sends every stable-served mirrored request
//! to a nondeterministic fake stable a second time. The stable-vs-stable
//! pairs are counted apart from the candidate's (metrics and `/status`),
//! `/status` names the field that differs in every pair and suggests
//! ignoring it, and the live rollout judges the candidate's match rate
//! against stable's self-agreement (`rollout.max_match_rate_drop`): a
//! candidate at ~78% against a floor of ~80% passes the shadow gate, one
//! at ~60% is rolled back.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::harness::{self, metric};
use support::noisy::{CLOSE_A, FAR_A, STABLE_A, enqueue};
use support::{FakeUpstream, Reply, http_client, wait_json};

const N: usize = 1200;

struct Run {
    /// `/status` once the rollout left the shadow phase.
    ended: Value,
    metrics: String,
    stable_requests: usize,
    candidate_requests: usize,
}

/// Drives `N` requests (8 at a time) through a proxy in front of a
/// nondeterministic stable and a candidate answering "a" with probability
/// `candidate_a`, until the rollout leaves the shadow phase.
async fn run(name: &str, candidate_a: f64, seed: u64) -> Run {
    let dir = harness::TempDir::new(name);
    let stable = FakeUpstream::start(Reply::json(200, r#"{"label":"a"}"#)).await;
    let candidate = FakeUpstream::start(Reply::json(200, r#"{"label":"a"}"#)).await;
    enqueue(&stable, 2 * N, STABLE_A, seed);
    enqueue(&candidate, N, candidate_a, seed + 1);
    let extra = format!(
        "[compare]\npointer = \"/label\"\nnoise_percent = 100\n\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 300\n\
         max_match_rate_drop = 0.12\nmax_latency_increase = 10.0\n\
         max_latency_increase_ms = 50\nstate_file = \"{}\"\n",
        dir.path("state.json").display()
    );
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let client = http_client();
    let url = format!("{}/predict", proxy.url);
    let status_url = format!("{}/status", proxy.admin);
    for chunk in 0..N / 8 {
        let sends: Vec<_> = (0..8)
            .map(|i| {
                let (client, url) = (client.clone(), url.clone());
                let body = format!("{{\"x\":{}}}", chunk * 8 + i);
                tokio::spawn(async move {
                    let headers = [("content-type", "application/json")];
                    support::send(&client, http::Method::POST, &url, &headers, body).await
                })
            })
            .collect();
        for send in sends {
            assert_eq!(send.await.unwrap().0, 200);
        }
        let status = support::get_json(&status_url).await;
        if status["phase"] != "shadow" {
            break;
        }
    }
    let ended = wait_json(&status_url, Duration::from_secs(20), |s| {
        s["phase"] != "shadow"
    })
    .await;
    let metrics = proxy.metrics().await;
    let run = Run {
        ended,
        metrics,
        stable_requests: stable.request_count(),
        candidate_requests: candidate.request_count(),
    };
    proxy.stop().await;
    stable.shutdown().await;
    candidate.shutdown().await;
    run
}

fn decision<'a>(status: &'a Value, verdict: &str) -> &'a Value {
    status["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["verdict"] == verdict))
        .unwrap_or_else(|| panic!("no {verdict} decision in {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_near_stables_self_agreement_passes_the_relative_gate_live() {
    let run = run("noise-close", CLOSE_A, 11).await;
    let status = &run.ended;
    assert_eq!(status["phase"], "canary", "{status:#}");
    let pass = decision(status, "pass");
    let reasons = pass["reasons"].to_string();
    assert!(reasons.contains("match (relative)"), "{pass:#}");
    assert!(reasons.contains("self-agreement"), "{pass:#}");

    // Stable against itself, apart from the candidate's comparisons.
    let noise = &status["cumulative"]["noise"];
    let own = status["self_agreement"].as_f64().unwrap();
    let rate = status["match_rate"].as_f64().unwrap();
    println!(
        "self-agreement {own:.3} ({} pairs), candidate {rate:.3}",
        noise["compared"]
    );
    assert!((0.72..0.88).contains(&own), "{noise:#}");
    assert!((0.70..0.86).contains(&rate), "{status:#}");
    let series = |name: &str, result: &str| {
        metric(&run.metrics, &format!("{name}{{result=\"{result}\"}}")).unwrap_or(0.0)
    };
    let noise_pairs = series("understudy_noise_comparisons_total", "match")
        + series("understudy_noise_comparisons_total", "mismatch");
    let pairs = series("understudy_comparisons_total", "match")
        + series("understudy_comparisons_total", "mismatch");
    assert_eq!(noise_pairs, noise["compared"].as_f64().unwrap());
    assert!(noise_pairs >= 300.0, "{noise:#}");
    // In the shadow phase stable serves every request and is asked twice.
    assert!(
        run.stable_requests as f64 >= pairs + noise_pairs,
        "{}",
        run.metrics
    );
    assert!(run.candidate_requests as f64 >= pairs);

    // The field that differs in every pair is suggested; the label, which
    // differs in about a fifth, is listed but not suggested.
    let fields = noise["fields"].as_array().unwrap();
    assert_eq!(fields[0]["pointer"], "/id", "{noise:#}");
    assert_eq!(fields[0]["share"], 1.0, "{noise:#}");
    let label = fields.iter().find(|f| f["pointer"] == "/label").unwrap();
    assert!(label["share"].as_f64().unwrap() < 0.3, "{noise:#}");
    assert_eq!(
        noise["suggestion"]["config_line"], r#"ignore = ["/id"]"#,
        "{noise:#}"
    );
    assert!(
        noise["suggestion"]["message"]
            .as_str()
            .unwrap()
            .contains("ignore them?")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_far_below_stables_self_agreement_is_rolled_back_live() {
    let run = run("noise-far", FAR_A, 21).await;
    let status = &run.ended;
    assert_eq!(status["phase"], "rolled_back", "{status:#}");
    let fail = decision(status, "fail");
    let reasons = fail["reasons"].to_string();
    assert!(reasons.contains("match (relative)"), "{fail:#}");
    assert!(reasons.contains("below the floor"), "{fail:#}");
}
