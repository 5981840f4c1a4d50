//! `understudy demo`: two toy model servers, the real proxy in front of
//! them, and a load generator, walking a compressed rollout live.
//!
//! Everything binds to 127.0.0.1 on ports the OS picks, the state file lives
//! in a fresh temp directory, and every task is stopped before `run`
//! returns, so the demo leaves nothing behind. [`llm`] is the same for LLM
//! servers streaming their answers (`understudy demo --llm`).

pub mod llm;
pub mod loadgen;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::rollout::machine::Phase;
use crate::server::{self, StartOptions};
use crate::status::WindowReport;
use crate::toy::{self, ToyModelConfig};
use crate::units::ms_or_dash;
use loadgen::{LoadConfig, LoadStats};

/// Requests per second the demo sends: enough evidence for a step in a few
/// seconds, light enough for a laptop.
const DEMO_RATE: f64 = 200.0;
/// The candidate disagrees with stable on this share of inputs.
const CANDIDATE_DISAGREEMENT: f64 = 0.02;

/// Runs the demo for at most `limit`; returns once everything has stopped.
pub async fn run(limit: Duration) -> Result<ExitCode, crate::cli::CliError> {
    let stop = CancellationToken::new();
    let stable = toy::spawn(
        ToyModelConfig::new("iris", "v1")
            .with_latency(Duration::from_millis(4), Duration::from_millis(2)),
        stop.clone(),
    )
    .await?;
    let candidate = toy::spawn(
        ToyModelConfig::new("iris", "v2")
            .with_latency(Duration::from_micros(4_300), Duration::from_millis(2))
            .with_disagree_rate(CANDIDATE_DISAGREEMENT),
        stop.clone(),
    )
    .await?;
    let state_dir = std::env::temp_dir().join(format!("understudy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir)?;
    let config = Config::parse(
        &demo_config(
            &stable.url(),
            &candidate.url(),
            &state_dir.join("state.json"),
        ),
        "demo config",
    )?;
    let running = server::start(
        config,
        StartOptions {
            reset_state: true,
            source: None,
        },
    )
    .await?;
    println!(
        "understudy demo: stable v1 at {}, candidate v2 at {} (disagrees on {:.0}% of inputs, a little slower)",
        stable.url(),
        candidate.url(),
        CANDIDATE_DISAGREEMENT * 100.0
    );
    println!(
        "proxy on http://{}  admin on http://{}  (try: curl http://{}/status)",
        running.data_addr, running.admin_addr, running.admin_addr
    );
    println!(
        "rollout: shadow -> 5% -> 25% -> 50% -> 100%, each step judged after 4 s and 200 requests\n"
    );

    let load_stats = Arc::new(LoadStats::default());
    let load = tokio::spawn(loadgen::run(
        LoadConfig {
            target: format!("http://{}", running.data_addr),
            path: "/v2/models/iris/infer".into(),
            rate: DEMO_RATE,
            concurrency: 16,
            duration: limit,
            rows_per_request: 1,
        },
        load_stats.clone(),
        stop.clone(),
    ));

    let started = Instant::now();
    let mut seen_decisions = 0;
    let mut finished_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => { println!("\ninterrupted"); break; }
        }
        let Some(rollout) = running.rollout() else {
            break;
        };
        let status = rollout.status_json();
        let Some(snapshot) = running.stats().snapshot().await else {
            break;
        };
        let window = WindowReport::from_window(&snapshot.sliding);
        let load = load_stats.snapshot();
        println!(
            "{:>3}s  {:<9} weight {:>5.1}%  sent {:>6} (candidate served {:>5})  match {:>6}  stable p50/p99 {}/{}  candidate p50/p99 {}/{}",
            started.elapsed().as_secs(),
            status["phase"].as_str().unwrap_or("?"),
            status["weight"].as_f64().unwrap_or(0.0),
            load.sent,
            load.served_by_candidate,
            window
                .comparisons
                .match_rate
                .map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            ms_or_dash(window.stable.total.p50_ms),
            ms_or_dash(window.stable.total.p99_ms),
            ms_or_dash(window.candidate.total.p50_ms),
            ms_or_dash(window.candidate.total.p99_ms),
        );
        if let Some(decisions) = status["decisions"].as_array() {
            for decision in decisions.iter().skip(seen_decisions) {
                println!(
                    "      decision: {} -> {}",
                    decision["verdict"].as_str().unwrap_or("?"),
                    decision["action"].as_str().unwrap_or("?")
                );
                for reason in decision["reasons"].as_array().into_iter().flatten() {
                    println!("        - {}", reason.as_str().unwrap_or(""));
                }
            }
            seen_decisions = decisions.len();
        }
        let (phase, _) = rollout.phase_and_weight();
        if phase.is_finished() && finished_at.is_none() {
            finished_at = Some(Instant::now());
        }
        // Show two more seconds of traffic after the end of the rollout.
        if finished_at.is_some_and(|t| t.elapsed() >= Duration::from_secs(2))
            || started.elapsed() >= limit
        {
            break;
        }
    }

    stop.cancel();
    let _ = load.await;
    let final_status = running.rollout().map(|r| r.phase_and_weight());
    let snapshot = running.stats().snapshot().await;
    running.shutdown().await;
    stable.stopped().await;
    candidate.stopped().await;
    let _ = std::fs::remove_dir_all(&state_dir);

    let load = load_stats.snapshot();
    println!("\nsummary");
    println!(
        "  client requests {}  ok {}  failed {}",
        load.sent, load.ok, load.failed
    );
    if let Some(snapshot) = snapshot {
        let report = WindowReport::from_window(&snapshot.cumulative);
        println!(
            "  comparisons {}  match rate {}  rows matched {} / mismatched {}",
            report.comparisons.compared,
            report
                .comparisons
                .match_rate
                .map(|r| format!("{:.2}%", r * 100.0))
                .unwrap_or_else(|| "-".into()),
            report.comparisons.elements_matched,
            report.comparisons.elements_mismatched,
        );
        for (name, b) in [("stable", &report.stable), ("candidate", &report.candidate)] {
            println!(
                "  {name:<9} served {:>6} shadowed {:>6} errors {:>4}  p50 {}  p99 {}",
                b.serve.requests,
                b.shadow.requests,
                b.total.errors,
                ms_or_dash(b.total.p50_ms),
                ms_or_dash(b.total.p99_ms)
            );
        }
    }
    match final_status {
        Some((Phase::Promoted, _)) => println!("  result: candidate promoted"),
        Some((phase, weight)) => {
            println!("  result: rollout ended {} at {weight}%", phase.as_str())
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn demo_config(stable: &str, candidate: &str, state_file: &std::path::Path) -> String {
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
preset = "kserve-v2"

[rollout]
steps = [5, 25, 50, 100]
interval = "4s"
min_requests = 200
state_file = "{}"
"#,
        state_file.display()
    )
}
