//! The live rollout page (`GET /` on the admin port) in a real headless
//! Chromium, against the real binary and fake backends: it shows what
//! `/status` says, draws the latency chart from its polls, shows a model
//! output carrying markup as text, and pauses the rollout through the
//! token prompt, without a JavaScript error.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use support::harness::{self, Binary, TempDir};
use support::{FakeUpstream, Reply, get_json, http_client, post_json, send};

const TOKEN: &str = "live-page-token";
/// The candidate's answer on `/xss`: a script and an image with an
/// event handler, each of which would run if the page parsed it as markup.
const HOSTILE: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
const PREDICTION: &str = r#"{"predictions":["ok"]}"#;

/// Every request shadowed, the token set, and a rollout that holds (huge
/// volume gate, and a match floor the few hostile mismatches stay above)
/// while the judge evaluates every second.
fn config(dir: &TempDir, stable: &str, candidate: &str) -> std::path::PathBuf {
    let extra = format!(
        "[shadow]\npercent = 100\n\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"1h\"\nmin_requests = 100000\n\
         min_match_rate = 0.5\nstate_file = \"{}\"\n",
        dir.path("state.json").display()
    );
    let text = harness::config_text(stable, Some(candidate), &extra).replacen(
        "[admin]\n",
        &format!("[admin]\ntoken = \"{TOKEN}\"\n"),
        1,
    );
    let path = dir.path("understudy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Sends `n` requests through the proxy, one in ten to `/xss`.
async fn traffic(url: &str, n: usize) {
    let client = http_client();
    for i in 0..n {
        let path = if i % 10 == 0 { "/xss" } else { "/predict" };
        let (status, _, body) =
            send(&client, Method::POST, &format!("{url}{path}"), &[], "{}").await;
        assert_eq!(status, 200, "{body:?}");
    }
}

fn text_of(id: &str) -> String {
    format!("document.getElementById({}).textContent", json!(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_rollout_and_pauses_it_through_the_token_prompt() {
    let Some(chromium) = browser::chromium_or_skip("live_page") else {
        return;
    };
    let stable = FakeUpstream::start(Reply::json(200, PREDICTION)).await;
    let candidate = FakeUpstream::builder()
        .respond(Reply::json(200, PREDICTION))
        .route(
            "/xss",
            Reply::json(200, json!({ "predictions": [HOSTILE] }).to_string()),
        )
        .start()
        .await;
    let dir = TempDir::new("live-page");
    let proxy = Binary::start(&config(&dir, &stable.url(), &candidate.url()), &[]).await;
    let admin = proxy.admin.clone();

    // Canary at 50%, so the page has a step and a weight to show: setting
    // the weight pauses the rollout there, resuming makes it a canary.
    let (code, body) = post_json(
        &format!("{admin}/rollout/weight"),
        r#"{"percent": 50}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = post_json(&format!("{admin}/rollout/resume"), "", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    traffic(&proxy.url, 40).await;
    let mismatches = get_json(&format!("{admin}/mismatches")).await;
    assert!(
        mismatches.to_string().contains("window.__xss=1"),
        "no hostile mismatch recorded: {mismatches}"
    );

    // The page itself: HTML with a policy that allows only its own blocks.
    let client = http_client();
    let (status, headers, _) = send(&client, Method::GET, &format!("{admin}/"), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self'; "), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let (status, _, _) = send(&client, Method::POST, &format!("{admin}/"), &[], "").await;
    assert_eq!(status, 405);

    // Traffic goes on while the page polls, so the chart has something to draw.
    let load = {
        let url = proxy.url.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                traffic(&url, 10).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let browser = browser::Browser::launch(&chromium).await;
    let page = browser.new_page().await;
    page.navigate(&format!("{admin}/")).await;

    // Phase and weight as /status has them.
    let status = get_json(&format!("{admin}/status")).await;
    assert_eq!(status["phase"], "canary", "{status}");
    let want_weight = format!("{}%", status["weight"].as_f64().unwrap());
    let phase = page
        .wait_until(
            "phase shown",
            &text_of("phase"),
            Duration::from_secs(10),
            |v| v == "canary",
        )
        .await;
    assert_eq!(phase, "canary");
    assert_eq!(page.eval(&text_of("weight")).await, want_weight.as_str());
    let step = page.eval(&text_of("step")).await;
    assert!(
        step.as_str().unwrap().starts_with("1 of 2"),
        "step {step} for {status}"
    );

    // The judge's evaluation, a row per criterion.
    let criteria = page
        .wait_until(
            "judge's checks shown",
            "[...document.querySelectorAll('#checks tr td:first-child')].map(td => td.textContent)",
            Duration::from_secs(10),
            |v| v.as_array().is_some_and(|a| a.len() == 5),
        )
        .await;
    assert_eq!(
        criteria,
        json!(["interval", "volume", "errors", "latency", "match"])
    );

    // The chart: every series has a line of at least three polls.
    let lines = page
        .wait_until(
            "latency chart drawn",
            "[...document.querySelectorAll('#chart polyline')]\
             .map(p => [p.dataset.series, p.getAttribute('points').trim().split(' ').filter(Boolean).length])",
            Duration::from_secs(15),
            |v| {
                v.as_array()
                    .is_some_and(|a| a.len() == 6 && a.iter().all(|s| s[1].as_u64() >= Some(3)))
            },
        )
        .await;
    let names: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "stable-p50",
            "stable-p90",
            "stable-p99",
            "candidate-p50",
            "candidate-p90",
            "candidate-p99"
        ]
    );

    // The hostile output is text: readable, not parsed, not run.
    let shown = page
        .wait_until(
            "hostile mismatch shown",
            &text_of("mismatches"),
            Duration::from_secs(10),
            |v| v.as_str().is_some_and(|t| t.contains("window.__xss=1")),
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("<script>window.__xss=1</script>"), "{shown}");
    assert!(shown.contains("onerror=\\\"window.__xss=2\\\""), "{shown}");
    assert!(shown.contains("/predictions/0"), "{shown}");
    let injected = page
        .eval(
            "({ xss: typeof window.__xss, \
                elements: document.querySelectorAll('#mismatches script, #mismatches img').length, \
                scripts: document.scripts.length })",
        )
        .await;
    assert_eq!(
        injected,
        json!({ "xss": "undefined", "elements": 0, "scripts": 1 })
    );

    // Pause: the first POST answers 401, the page prompts for the token,
    // keeps it in sessionStorage, and sends the command again with it.
    assert_eq!(page.eval("sessionStorage.length").await, 0);
    let mark = page.mark();
    page.click("pause").await;
    let message = page.answer_dialog("prompt", mark, true, TOKEN).await;
    assert!(message.contains("token"), "{message}");
    let paused = support::wait_json(&format!("{admin}/status"), Duration::from_secs(10), |s| {
        s["phase"] == "paused"
    })
    .await;
    assert_eq!(paused["paused_from"], "canary");
    page.wait_until(
        "paused shown",
        &text_of("phase"),
        Duration::from_secs(10),
        |v| v == "paused",
    )
    .await;
    let stored = page.eval("Object.values(sessionStorage)").await;
    assert_eq!(stored, json!([TOKEN]));

    // Rollback asks first; declined, nothing is sent.
    let mark = page.mark();
    page.click("rollback").await;
    page.answer_dialog("confirm", mark, false, "").await;
    page.wait_until(
        "declined rollback reported",
        &text_of("action-result"),
        Duration::from_secs(10),
        |v| v == "rollback: cancelled",
    )
    .await;
    // Resume goes straight through with the kept token: no dialog.
    let mark = page.mark();
    page.click("resume").await;
    let resumed = support::wait_json(&format!("{admin}/status"), Duration::from_secs(10), |s| {
        s["phase"] == "canary"
    })
    .await;
    assert_eq!(resumed["weight"], status["weight"]);
    let dialogs = browser.events()[mark..]
        .iter()
        .filter(|e| e["method"] == "Page.javascriptDialogOpening")
        .count();
    assert_eq!(dialogs, 0, "resume asked again");
    let decisions: Vec<Value> = resumed["decisions"].as_array().unwrap().clone();
    let actions: Vec<&str> = decisions
        .iter()
        .filter(|d| d["manual"] == true)
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert!(
        !actions.iter().any(|a| a.contains("rollback")),
        "{actions:?}"
    );

    // No JavaScript error, CSP refusal or failed load but the one 401 of
    // the pause, which is the point of the prompt.
    let errors = page.errors(|url| url.ends_with("/rollout/pause"));
    assert!(errors.is_empty(), "errors in the page: {errors:#?}");

    load.await.unwrap();
    browser.close().await;
}
