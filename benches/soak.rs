//! Soak: the real binary under steady load for a long time while the
//! candidate flaps (up for a few seconds, down for a few seconds), reporting
//! the proxy's RSS over time, client errors and shadow outcomes.
//!
//! Run: `cargo bench --bench soak` (10 minutes; `SOAK_SECS=60` for a short
//! run, `SOAK_RATE` requests/s, default 400). Linux only (reads /proc).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use understudy::demo::loadgen::{self, LoadConfig, LoadStats};
use understudy::toy::{self, ToyModelConfig};

/// How long the candidate stays up, then down.
const FLAP: Duration = Duration::from_secs(3);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn metrics_text(admin: &str) -> String {
    let output = tokio::process::Command::new("curl")
        .args(["-s", &format!("http://{admin}/metrics")])
        .output()
        .await;
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let seconds: u64 = env_or("SOAK_SECS", 600);
    let rate: f64 = env_or("SOAK_RATE", 400.0);
    let stop = CancellationToken::new();
    let stable = toy::spawn(
        ToyModelConfig::new("iris", "v1")
            .with_latency(Duration::from_millis(2), Duration::from_millis(2)),
        stop.clone(),
    )
    .await
    .expect("stable toy model");
    // The candidate's address stays fixed across flaps.
    let candidate_config = ToyModelConfig::new("iris", "v2")
        .with_latency(Duration::from_millis(3), Duration::from_millis(2))
        .with_disagree_rate(0.02);
    let probe_stop = CancellationToken::new();
    let probe = toy::spawn(candidate_config.clone(), probe_stop.clone())
        .await
        .expect("candidate toy model");
    let candidate_addr = probe.addr();
    probe_stop.cancel();
    probe.stopped().await;

    let dir = std::env::temp_dir().join(format!("understudy-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\naddr = \"127.0.0.1:{data_port}\"\n[admin]\naddr = \"127.0.0.1:{admin_port}\"\n\
             [backends.stable]\nurl = \"{}\"\n[backends.candidate]\nurl = \"http://{candidate_addr}\"\nconnect_timeout = \"200ms\"\n\
             [shadow]\ntimeout = \"1s\"\n[compare]\npreset = \"kserve-v2\"\n",
            stable.url()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args(["run", "-c"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .expect("start understudy");
    let pid = child.id().expect("pid");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The flapping candidate.
    let flapper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let up = CancellationToken::new();
                if let Ok(model) = toy::spawn(
                    candidate_config.clone().with_bind(candidate_addr),
                    up.clone(),
                )
                .await
                {
                    tokio::select! { _ = tokio::time::sleep(FLAP) => {}, _ = stop.cancelled() => {} }
                    up.cancel();
                    model.stopped().await;
                }
                tokio::select! { _ = tokio::time::sleep(FLAP) => {}, _ = stop.cancelled() => {} }
            }
        })
    };

    let load = Arc::new(LoadStats::default());
    let generator = tokio::spawn(loadgen::run(
        LoadConfig {
            target: format!("http://127.0.0.1:{data_port}"),
            path: "/v2/models/iris/infer".into(),
            rate,
            concurrency: 32,
            duration: Duration::from_secs(seconds),
            rows_per_request: 4,
        },
        load.clone(),
        stop.clone(),
    ));

    println!(
        "soak: {seconds} s at {rate} req/s, candidate up/down every {FLAP:?}, proxy pid {pid}"
    );
    println!(
        "{:>6} {:>10} {:>9} {:>8} {:>10}",
        "t(s)", "rss(KiB)", "sent", "failed", "in-flight"
    );
    let started = Instant::now();
    let mut rss_start = 0;
    let mut rss_max = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(if seconds >= 120 { 30 } else { 5 })).await;
        let rss = rss_kib(pid);
        if rss_start == 0 {
            rss_start = rss;
        }
        rss_max = rss_max.max(rss);
        let snapshot = load.snapshot();
        let text = metrics_text(&format!("127.0.0.1:{admin_port}")).await;
        println!(
            "{:>6} {:>10} {:>9} {:>8} {:>10}",
            started.elapsed().as_secs(),
            rss,
            snapshot.sent,
            snapshot.failed,
            sample(&text, "understudy_shadow_in_flight")
        );
        if started.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
    }
    let _ = generator.await;
    // Let the last mirrors finish before the final reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = rss_kib(pid);
    let text = metrics_text(&format!("127.0.0.1:{admin_port}")).await;
    let snapshot = load.snapshot();
    stop.cancel();
    let _ = flapper.await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nsummary");
    println!(
        "  client requests {}  ok {}  failed {}",
        snapshot.sent, snapshot.ok, snapshot.failed
    );
    println!("  proxy RSS: first sample {rss_start} KiB, max {rss_max} KiB, end {rss_end} KiB");
    println!(
        "  candidate flaps (down periods) {}",
        seconds / (2 * FLAP.as_secs())
    );
    for result in ["sent", "error", "dropped_overload", "skipped_body"] {
        println!(
            "  shadow {result:<17} {}",
            sample(
                &text,
                &format!("understudy_shadow_total{{result=\"{result}\"}}")
            )
        );
    }
    for result in ["match", "mismatch", "shadow_error", "uncomparable"] {
        println!(
            "  comparisons {result:<12} {}",
            sample(
                &text,
                &format!("understudy_comparisons_total{{result=\"{result}\"}}")
            )
        );
    }
    println!(
        "  mirrors in flight at the end {}",
        sample(&text, "understudy_shadow_in_flight")
    );
}
