//! Recording through the proxy (`[record]`) and `understudy validate` as CI
//! runs it: the real binary, on recordings made by the in-process proxy,
//! against the built-in toy iris models (or fake upstreams) on 127.0.0.1.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::harness;
use support::harness::validate::{
    INFER, REQUESTS, Toys, config, read_json, record_traffic, rows, s, validate,
};
use support::{FakeUpstream, Reply};
use understudy::toy::iris;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_keeps_allow_listed_headers_bodies_and_responses() {
    let dir = harness::TempDir::new("record");
    let rows = rows(50);
    let path = record_traffic(&dir, &rows).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), rows.len());
    let mut seen = Vec::new();
    for line in &lines {
        assert_eq!(line["method"], "POST", "{line}");
        assert_eq!(line["path"], INFER, "{line}");
        assert_eq!(
            line["headers"],
            serde_json::json!({"content-type": "application/json"})
        );
        assert!(
            line.get("body_base64").is_none(),
            "JSON body stored inline: {line}"
        );
        assert_eq!(line["response"]["status"], 200, "{line}");
        assert_eq!(line["response"]["backend"], "stable", "{line}");
        assert!(line["response"]["body"]["outputs"].is_array(), "{line}");
        assert!(
            line["request_id"].is_string() && line["time"].is_string(),
            "{line}"
        );
        seen.push(line["body"]["inputs"][0]["data"].clone());
    }
    assert!(!text.contains("secret"), "authorization was recorded");
    for row in &rows {
        assert!(
            seen.contains(&serde_json::json!(row)),
            "{row:?} not recorded"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_backends_pass_with_exit_0() {
    let dir = harness::TempDir::new("validate-pass");
    let traffic = record_traffic(&dir, &rows(REQUESTS)).await;
    let toys = Toys::start(0.0, Duration::from_millis(10)).await;
    let config = config(&dir, &toys.stable.url(), &toys.candidate.url());
    let report = dir.path("report.json");
    let run = validate(&[
        "-c",
        s(&config),
        "--requests",
        s(&traffic),
        "--report",
        s(&report),
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains('\r'),
        "progress printed without a terminal"
    );
    assert!(run.stdout.contains("verdict: PASS"), "{}", run.stdout);
    let r = read_json(&report);
    assert_eq!(r["verdict"], "pass", "{r:#}");
    assert_eq!(r["requests"], REQUESTS);
    assert_eq!(r["skipped_lines"], 0);
    assert_eq!(r["match_rate"], 1.0);
    let ci = r["match_rate_ci"].as_array().unwrap();
    let (low, high) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
    assert!(low > 0.98 && high > 0.9999, "{r:#}");
    for backend in ["stable", "candidate"] {
        let b = &r[backend];
        assert_eq!(b["requests"], REQUESTS, "{r:#}");
        assert_eq!(b["error_rate"], 0.0, "{r:#}");
        let (p50, p99) = (b["p50_ms"].as_f64().unwrap(), b["p99_ms"].as_f64().unwrap());
        assert!((10.0..p99 + 0.001).contains(&p50), "{b:#}");
        assert!(b["p90_ms"].is_number());
    }
    assert_eq!(r["mismatches"], serde_json::json!([]));
    assert_eq!(r["evidence"]["criteria"]["matching"], "pass", "{r:#}");
    assert_eq!(r["evidence"]["thresholds"]["interval"], 0.0);
    // Every criterion with its verdict; durations as a person writes them.
    let checks = r["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 5, "{r:#}");
    assert!(checks.iter().all(|c| c["verdict"] == "pass"), "{r:#}");
    assert!(run.stdout.contains("in step >= 0s"), "{}", run.stdout);
    assert!(!run.stdout.contains("0ns"), "{}", run.stdout);
    // The paired test saw the requests (a pair exactly at the tolerance
    // carries no sign and is left out) and the latency reason names it.
    let pairs = r["paired_latency"]["pairs"].as_u64().unwrap();
    assert!(pairs + 10 >= REQUESTS as u64, "{r:#}");
    let latency = checks.iter().find(|c| c["criterion"] == "latency").unwrap();
    let reason = latency["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("latency p90:") && reason.contains("paired latency"),
        "{reason}"
    );
    assert_eq!(toys.candidate.requests(), REQUESTS as u64);
    toys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_disagreeing_on_20_percent_fails_with_the_rate_and_its_interval() {
    let dir = harness::TempDir::new("validate-disagree");
    let rows = rows(REQUESTS);
    let traffic = record_traffic(&dir, &rows).await;
    let toys = Toys::start(0.2, Duration::ZERO).await;
    let config = config(&dir, &toys.stable.url(), &toys.candidate.url());
    let report = dir.path("report.json");
    let run = validate(&[
        "-c",
        s(&config),
        "--requests",
        s(&traffic),
        "--report",
        s(&report),
    ])
    .await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let r = read_json(&report);
    assert_eq!(r["verdict"], "fail");
    let agree = rows.iter().filter(|row| !iris::disagrees(row, 0.2)).count();
    let expected = agree as f64 / REQUESTS as f64;
    let rate = r["match_rate"].as_f64().unwrap();
    assert!((rate - expected).abs() < 1e-9, "{rate} vs {expected}");
    assert!((rate - 0.8).abs() < 0.08, "{rate}");
    let ci: Vec<f64> = r["match_rate_ci"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(ci[0] < 0.8 && 0.8 < ci[1], "CI {ci:?} misses the true rate");
    assert!(ci[0] < rate && rate < ci[1], "{ci:?}");
    assert!(ci[1] - ci[0] < 0.12, "{ci:?}");
    let reasons = r["reasons"].to_string();
    assert!(reasons.contains("match rate"), "{reasons}");
    let first = &r["mismatches"][0];
    assert!(
        first["pointer"].as_str().unwrap().starts_with("/outputs/"),
        "{first}"
    );
    assert!(
        first["line"].as_u64().unwrap() >= 1 && first["path"] == INFER,
        "{first}"
    );
    // Each replayed request is a trace of its own, named in the report.
    let traces: std::collections::HashSet<&str> = r["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["trace_id"].as_str().expect("a trace id"))
        .collect();
    assert_eq!(traces.len(), r["mismatches"].as_array().unwrap().len());
    assert!(
        traces.iter().all(|t| t.len() == 32
            && t.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())),
        "{traces:?}"
    );
    assert!(run.stdout.contains("95% CI"), "{}", run.stdout);
    toys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_reported_by_number_skipped_and_counted() {
    let dir = harness::TempDir::new("validate-malformed");
    let traffic = record_traffic(&dir, &rows(REQUESTS)).await;
    let mut lines: Vec<Vec<u8>> = std::fs::read(&traffic)
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    lines.insert(1, b"{oops".to_vec());
    lines.insert(49, vec![0xff, 0xfe, b'{']);
    lines.insert(99, br#"{"path":"/no-method"}"#.to_vec());
    let broken = dir.path("broken.jsonl");
    std::fs::write(&broken, lines.join(&b'\n')).unwrap();
    let toys = Toys::start(0.0, Duration::from_millis(10)).await;
    let config = config(&dir, &toys.stable.url(), &toys.candidate.url());
    let report = dir.path("report.json");
    let run = validate(&[
        "-c",
        s(&config),
        "--requests",
        s(&broken),
        "--report",
        s(&report),
    ])
    .await;
    for n in [2, 50, 100] {
        assert!(
            run.stderr.contains(&format!("line {n}: skipped")),
            "{}",
            run.stderr
        );
    }
    assert_eq!(run.stderr.matches("skipped:").count(), 3, "{}", run.stderr);
    let r = read_json(&report);
    assert_eq!(r["skipped_lines"], 3, "{r:#}");
    assert_eq!(r["requests"], REQUESTS);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    toys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_is_one_self_contained_page_with_escaped_mismatches() {
    let dir = harness::TempDir::new("validate-html");
    let traffic = record_traffic(&dir, &rows(20)).await;
    let stable = FakeUpstream::builder()
        .respond(Reply::json(
            200,
            r#"{"label":"<script src=\"http://evil.example/x.js\"></script>"}"#,
        ))
        .start()
        .await;
    let candidate = FakeUpstream::builder()
        .respond(Reply::json(200, r#"{"label":"https://other.example/&"}"#))
        .start()
        .await;
    let config_path = dir.path("plain.toml");
    std::fs::write(
        &config_path,
        harness::config_text(&stable.url(), Some(&candidate.url()), ""),
    )
    .unwrap();
    let (html, json) = (dir.path("out.html"), dir.path("out.json"));
    let args = ["-c", s(&config_path), "--requests", s(&traffic)];
    let run = validate(&[&args[..], &["--report", s(&html), "--report", s(&json)]].concat()).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(
        page.contains("<svg") && page.matches("<polyline").count() == 2,
        "{page}"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "{page}"
    );
    assert!(
        !page.contains("<script"),
        "unescaped or external script: {page}"
    );
    assert!(
        page.contains("&lt;script src="),
        "mismatch value missing: {page}"
    );
    assert!(page.contains("verdict: FAIL"), "{page}");
    assert!(
        !page.contains(&stable.addr().to_string()),
        "backend address in the page"
    );
    assert_eq!(read_json(&json)["verdict"], "fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_that_is_down_fails_with_a_reason_about_its_errors() {
    let dir = harness::TempDir::new("validate-down");
    let traffic = record_traffic(&dir, &rows(REQUESTS)).await;
    let toys = Toys::start(0.0, Duration::ZERO).await;
    let config = config(&dir, &toys.stable.url(), &toys.candidate.url());
    let down = format!("http://{}", support::refused_addr().await);
    let report = dir.path("report.json");
    let run = validate(&[
        "-c",
        s(&config),
        "--requests",
        s(&traffic),
        "--stable",
        &down,
        "--report",
        s(&report),
    ])
    .await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let r = read_json(&report);
    assert_eq!(r["verdict"], "fail");
    assert_eq!(r["stable"]["error_rate"], 1.0, "{r:#}");
    let first = r["reasons"][0].as_str().unwrap();
    assert!(
        first.contains("stable errors") && first.contains("connect"),
        "{r:#}"
    );
    assert_eq!(toys.stable.requests(), 0);
    toys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_request_bodies_are_posted_to_path() {
    let dir = harness::TempDir::new("validate-bodies");
    let bodies: Vec<String> = rows(REQUESTS)
        .iter()
        .enumerate()
        .map(|(i, row)| iris::infer_body(&[*row], &format!("b{i}")))
        .collect();
    let file = dir.path("bodies.jsonl");
    std::fs::write(&file, bodies.join("\n") + "\n").unwrap();
    let toys = Toys::start(0.0, Duration::from_millis(10)).await;
    let config = config(&dir, &toys.stable.url(), &toys.candidate.url());
    let report = dir.path("report.json");
    let run = validate(&[
        "-c",
        s(&config),
        "--requests",
        s(&file),
        "--path",
        INFER,
        "--report",
        s(&report),
        "--concurrency",
        "16",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let r = read_json(&report);
    assert_eq!(
        (r["requests"].as_u64(), r["match_rate"].as_f64()),
        (Some(REQUESTS as u64), Some(1.0))
    );
    assert_eq!(toys.stable.requests(), REQUESTS as u64);
    // Without --path the same file is not a recording: every line skipped.
    let run = validate(&["-c", s(&config), "--requests", s(&file)]).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(
        run.stderr.matches("skipped:").count(),
        REQUESTS,
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("not enough evidence"), "{}", run.stdout);
    toys.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_config_and_file_errors_exit_2() {
    let dir = harness::TempDir::new("validate-usage");
    let traffic = dir.path("t.jsonl");
    std::fs::write(&traffic, "").unwrap();
    let bad = dir.path("bad.toml");
    std::fs::write(
        &bad,
        "[backends.stable]\nurl = \"http://127.0.0.1:1\"\n[rollout]\nmax_error_rat = 0.1\n",
    )
    .unwrap();
    let run = validate(&["-c", s(&bad), "--requests", s(&traffic)]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("max_error_rat"), "{}", run.stderr);

    let good = config(&dir, "http://127.0.0.1:1", "http://127.0.0.1:2");
    let missing = dir.path("missing.jsonl");
    let run = validate(&["-c", s(&good), "--requests", s(&missing)]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("missing.jsonl"), "{}", run.stderr);

    for bad_flag in [
        ["--report", "r.txt"],
        ["--stable", "ftp://x"],
        ["--path", "no-slash"],
    ] {
        let mut args = vec!["-c", s(&good), "--requests", s(&traffic)];
        args.extend(bad_flag);
        let run = validate(&args).await;
        assert_eq!(run.code, Some(2), "{bad_flag:?}: {}", run.stderr);
    }

    let only_stable = dir.path("stable-only.toml");
    std::fs::write(
        &only_stable,
        "[backends.stable]\nurl = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let run = validate(&["-c", s(&only_stable), "--requests", s(&traffic)]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--candidate"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_writes_the_partial_report_and_exits_1() {
    let dir = harness::TempDir::new("validate-interrupt");
    let bodies: Vec<String> = rows(200)
        .iter()
        .map(|r| iris::infer_body(&[*r], "x"))
        .collect();
    let file = dir.path("bodies.jsonl");
    std::fs::write(&file, bodies.join("\n")).unwrap();
    let toys = Toys::start(0.0, Duration::from_millis(200)).await;
    let config = config(&dir, &toys.stable.url(), &toys.candidate.url());
    let report = dir.path("partial.json");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "validate",
            "-c",
            s(&config),
            "--requests",
            s(&file),
            "--path",
            INFER,
        ])
        .args(["--concurrency", "2", "--report", s(&report)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait until some requests went through, then interrupt.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while toys.candidate.requests() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no requests replayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("validate did not stop after Ctrl-C")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
    let r = read_json(&report);
    assert_eq!(r["interrupted"], true, "{r:#}");
    let done = r["requests"].as_u64().unwrap();
    assert!((1..200).contains(&done), "{r:#}");
    assert!(
        r["reasons"][0].as_str().unwrap().starts_with("interrupted"),
        "{r:#}"
    );
    toys.stop().await;
}

/// `validate --noise` against a stable model that agrees with itself
/// about 80% of the time: a candidate agreeing with stable about 78% of the
/// time passes the relative gate (`max_match_rate_drop`) where the absolute
/// `min_match_rate = 0.95` fails it on the same kind of traffic; a
/// candidate at about 60% fails the relative gate. The report shows the
/// self-agreement and suggests ignoring `/id`, which differs in every pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_noise_judges_the_candidate_against_stables_self_agreement() {
    use support::noisy::{CLOSE_A, FAR_A, STABLE_A, enqueue};
    const N: usize = 1000;
    let dir = harness::TempDir::new("validate-noise");
    let bodies: String = (0..N).map(|i| format!("{{\"x\":{i}}}\n")).collect();
    let file = dir.path("bodies.jsonl");
    std::fs::write(&file, bodies).unwrap();
    let stable = FakeUpstream::start(Reply::json(200, r#"{"label":"a"}"#)).await;
    let candidate = FakeUpstream::start(Reply::json(200, r#"{"label":"a"}"#)).await;
    let write_config = |name: &str, rollout: &str| {
        let path = dir.path(name);
        let text = format!(
            "[backends.stable]\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
             [backends.candidate]\nurl = \"{}\"\ntimeout = \"5s\"\n\n\
             [compare]\npointer = \"/label\"\nnoise_percent = 100\n\n\
             [rollout]\nmin_requests = 300\nmax_latency_increase = 10.0\n\
             max_latency_increase_ms = 50\n{rollout}state_file = \"{}\"\n",
            stable.url(),
            candidate.url(),
            dir.path("state.json").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let relative = write_config("relative.toml", "max_match_rate_drop = 0.12\n");
    let absolute = write_config("absolute.toml", "min_match_rate = 0.95\n");
    let run = async |config: &std::path::Path, candidate_a: f64, seed: u64| {
        enqueue(&stable, 2 * N, STABLE_A, seed);
        enqueue(&candidate, N, candidate_a, seed + 1);
        let report = dir.path(&format!("report-{seed}.json"));
        let run = validate(&[
            "-c",
            s(config),
            "--requests",
            s(&file),
            "--path",
            "/predict",
            "--noise",
            "--report",
            s(&report),
        ])
        .await;
        (run, read_json(&report))
    };
    let match_check = |report: &Value| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["criterion"] == "match")
            .cloned()
            .unwrap()
    };

    let (close, report) = run(&relative, CLOSE_A, 1).await;
    let noise = &report["noise"];
    let own = noise["self_agreement"].as_f64().unwrap();
    let rate = report["match_rate"].as_f64().unwrap();
    println!("self-agreement {own:.3}, candidate {rate:.3}");
    assert!((0.75..0.86).contains(&own), "{noise:#}");
    assert!((0.73..0.83).contains(&rate), "{report:#}");
    assert_eq!(noise["compared"], N as u64, "{noise:#}");
    assert_eq!(
        report["compared"], N as u64,
        "stable-vs-stable pairs are apart"
    );
    assert_eq!(noise["fields"][0]["pointer"], "/id", "{noise:#}");
    assert_eq!(noise["fields"][0]["share"], 1.0, "{noise:#}");
    assert_eq!(noise["suggestion"]["ignore"], serde_json::json!(["/id"]));
    assert!(close.stdout.contains("self-agreement"), "{}", close.stdout);
    assert!(
        close.stdout.contains(r#"ignore = ["/id"]"#),
        "{}",
        close.stdout
    );
    let gate = &report["evidence"]["relative"];
    assert!(gate["pass_lower"].as_f64().unwrap() >= -0.12, "{gate:#}");
    assert_eq!(match_check(&report)["verdict"], "pass", "{report:#}");
    assert_eq!(close.code, Some(0), "{}", close.stdout);

    let (strict, report) = run(&absolute, CLOSE_A, 3).await;
    assert_eq!(match_check(&report)["verdict"], "fail", "{report:#}");
    assert!(report["evidence"].get("relative").is_none());
    assert_eq!(strict.code, Some(1), "{}", strict.stdout);

    let (far, report) = run(&relative, FAR_A, 5).await;
    let check = match_check(&report);
    assert_eq!(check["verdict"], "fail", "{report:#}");
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .contains("below the floor"),
        "{check:#}"
    );
    assert_eq!(far.code, Some(1), "{}", far.stdout);
    stable.shutdown().await;
    candidate.shutdown().await;
}
