//! The rollout end to end, over real sockets: toy KServe V2 model servers
//! as stable and candidate, understudy in-process, load driven from here,
//! and every observation made the way a user would (`/status`, `/metrics`,
//! the `x-understudy-backend` header, what the model servers received).
//! Manual control over the admin API is in `rollout_manual.rs`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method};
use serde_json::Value;
use support::harness;
use support::{http_client, send, try_send};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use understudy::toy::{self, ToyModel, ToyModelConfig};

const INFER: &str = "/v2/models/iris/infer";
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(45);

/// A stable and a candidate toy model server, stopped on drop.
struct Toys {
    stable: ToyModel,
    candidate: ToyModel,
    stop: CancellationToken,
}

impl Toys {
    async fn start(stable: ToyModelConfig, candidate: ToyModelConfig) -> Self {
        let stop = CancellationToken::new();
        Self {
            stable: toy::spawn(stable, stop.clone()).await.unwrap(),
            candidate: toy::spawn(candidate, stop.clone()).await.unwrap(),
            stop,
        }
    }
}

impl Drop for Toys {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An iris model with a few milliseconds of simulated inference, so both
/// sides' p99 is dominated by the same sleep rather than by scheduling noise.
fn model(version: &str) -> ToyModelConfig {
    ToyModelConfig::new("iris", version)
        .with_latency(Duration::from_millis(40), Duration::from_millis(2))
}

/// Shadow everything, compare KServe V2 outputs, and a fast rollout whose
/// state lives in `dir`; `extra` adds keys to `[rollout]`.
fn fast_rollout(dir: &harness::TempDir, min_requests: u64, extra: &str) -> String {
    format!(
        "[shadow]\npercent = 100\n\n[compare]\npreset = \"kserve-v2\"\n\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = {min_requests}\n\
         {extra}state_file = \"{}\"\n",
        dir.path("state.json").display()
    )
}

/// One KServe V2 infer request for a random iris row.
fn infer_request() -> String {
    let mut rng = rand::rng();
    toy::infer_body(&toy::random_rows(&mut rng, 1), "rollout-test")
}

fn backend_of(headers: &HeaderMap) -> &str {
    headers
        .get("x-understudy-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// What the load loop saw.
#[derive(Default, Debug)]
struct Tally {
    stable: AtomicU64,
    candidate: AtomicU64,
    unmarked: AtomicU64,
    not_ok: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A closed loop of concurrent infer requests against the proxy.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(proxy_url: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let url = format!("{proxy_url}{INFER}");
        let workers = (0..workers)
            .map(|_| {
                let (stop, tally, url) = (stop.clone(), tally.clone(), url.clone());
                tokio::spawn(async move {
                    let client = http_client();
                    let json = [("content-type", "application/json")];
                    while !stop.load(Ordering::Relaxed) {
                        let body = infer_request();
                        match try_send(&client, Method::POST, &url, &json, body).await {
                            Ok((status, headers, _)) => {
                                let counter = match backend_of(&headers) {
                                    "stable" => &tally.stable,
                                    "candidate" => &tally.candidate,
                                    _ => &tally.unmarked,
                                };
                                counter.fetch_add(1, Ordering::Relaxed);
                                if status != 200 {
                                    tally.not_ok.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tally,
            workers,
        }
    }

    /// Stops the loop and waits for the requests in flight.
    async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.unwrap();
        }
        self.tally
    }
}

fn finished(status: &Value) -> bool {
    status["phase"] == "promoted" || status["phase"] == "rolled_back"
}

fn decisions(status: &Value) -> &Vec<Value> {
    status["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no decisions array in {status:#}"))
}

/// Waits until no mirror is in flight, so counts at the model servers are
/// final.
async fn mirrors_settled(proxy: &harness::Proxy) {
    proxy
        .wait_status(Duration::from_secs(10), |s| s["mirrors_in_flight"] == 0)
        .await;
}

/// Sends `n` requests one by one; returns how many each backend served.
async fn sequential(url: &str, n: usize, user: Option<&str>) -> (usize, usize) {
    let client = http_client();
    let (mut stable, mut candidate) = (0, 0);
    for _ in 0..n {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(user.map(|u| ("x-user-id", u)));
        let (status, h, body) = send(
            &client,
            Method::POST,
            &format!("{url}{INFER}"),
            &headers,
            infer_request(),
        )
        .await;
        assert_eq!(status, 200, "{body:?}");
        match backend_of(&h) {
            "stable" => stable += 1,
            "candidate" => candidate += 1,
            other => panic!("x-understudy-backend {other:?}"),
        }
    }
    (stable, candidate)
}

/// Every user sends `n` requests in turn, users concurrently; returns
/// (stable, candidate) counts per user.
async fn per_user(url: &str, users: &[String], n: usize) -> Vec<(usize, usize)> {
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            let (url, user) = (url.to_owned(), user.clone());
            tokio::spawn(async move { sequential(&url, n, Some(&user)).await })
        })
        .collect();
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.unwrap());
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_walks_shadow_canary_to_promoted() {
    let toys = Toys::start(model("v1"), model("v2")).await;
    let dir = harness::TempDir::new("rollout-healthy");
    // Both models sleep the same, but on a busy 2-core test machine the
    // p99 of either side swings by tens of milliseconds, and a latency pass
    // needs the candidate's ~max sample within the factor of the stable's
    // p99 lower bound. A 2x allowance keeps the walk to a few seconds per
    // step; latency is still judged (it holds until both sides have 500
    // samples, asserted below).
    let settings = fast_rollout(&dir, 50, "max_latency_increase = 1.0\n");
    let proxy = harness::start(&toys.stable.url(), Some(&toys.candidate.url()), &settings).await;
    let start = proxy.status().await;
    assert_eq!(start["phase"], "shadow", "{start:#}");
    assert_eq!(start["weight"], 0.0);

    let load = Load::start(&proxy.url, 12);
    let canary = proxy
        .wait_status(ROLLOUT_TIMEOUT, |s| s["phase"] != "shadow")
        .await;
    assert_eq!(canary["phase"], "canary", "left shadow wrongly: {canary:#}");
    assert_eq!(canary["weight"], 50.0, "{canary:#}");
    // The current judgement, every criterion with its verdict and reason.
    let checks = canary["current"]["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no current checks in {canary:#}"));
    let names: Vec<&str> = checks
        .iter()
        .map(|c| c["criterion"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["interval", "volume", "errors", "latency", "match"],
        "{canary:#}"
    );
    assert!(
        checks
            .iter()
            .all(|c| c["reason"].as_str().is_some_and(|r| !r.is_empty())),
        "{canary:#}"
    );
    let metrics = proxy.metrics().await;
    let weight = harness::metric(&metrics, "understudy_canary_weight_percent");
    assert!(
        matches!(weight, Some(50.0 | 100.0)),
        "weight gauge {weight:?}"
    );
    let status = proxy.wait_status(ROLLOUT_TIMEOUT, finished).await;
    let tally = load.stop().await;

    assert_eq!(status["phase"], "promoted", "{status:#}");
    assert_eq!(status["weight"], 100.0);
    assert_eq!(Tally::get(&tally.failed), 0, "{tally:?}");
    assert_eq!(Tally::get(&tally.not_ok), 0, "{tally:?}");
    assert_eq!(Tally::get(&tally.unmarked), 0, "{tally:?}");
    assert!(Tally::get(&tally.candidate) > 0, "{tally:?}");

    // Three passes: shadow → 50%, 50% → 100%, 100% → promoted.
    let passes: Vec<&Value> = decisions(&status)
        .iter()
        .filter(|d| d["verdict"] == "pass")
        .collect();
    let summary: Vec<(&str, &str)> = passes
        .iter()
        .map(|d| (d["phase"].as_str().unwrap(), d["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("shadow", "advance to 50%"),
            ("canary", "advance to 100%"),
            ("canary", "promote"),
        ],
        "{status:#}"
    );
    assert!(
        decisions(&status).iter().all(|d| d["verdict"] != "fail"),
        "{status:#}"
    );
    for pass in passes {
        let reasons = pass["reasons"].as_array().unwrap();
        assert!(!reasons.is_empty(), "{pass:#}");
        assert!(reasons.iter().all(|r| !r.as_str().unwrap().is_empty()));
        let e = &pass["evidence"];
        assert_eq!(pass["manual"], false, "{pass:#}");
        assert!(e["elapsed_secs"].as_f64().unwrap() >= 1.0, "{pass:#}");
        assert!(
            e["candidate"]["requests"].as_u64().unwrap() >= 50,
            "{pass:#}"
        );
        assert!(e["matching"]["total"].as_u64().unwrap() >= 50, "{pass:#}");
        assert_eq!(e["matching"]["rate"], 1.0, "{pass:#}");
        assert_eq!(e["candidate"]["errors"]["hits"], 0, "{pass:#}");
        for side in ["stable", "candidate"] {
            let latency = &e[side]["latency"];
            assert!(latency["samples"].as_u64().unwrap() >= 500, "{pass:#}");
            assert!(latency["p99_us"].as_u64().unwrap() > 0, "{pass:#}");
        }
        assert_eq!(e["thresholds"]["min_requests"], 50, "{pass:#}");
        assert!(e["latency"]["quantile"].as_f64().is_some(), "{pass:#}");
        assert!(
            reasons
                .iter()
                .any(|r| r.as_str().unwrap().starts_with("latency p")),
            "{pass:#}"
        );
    }

    let metrics = proxy.metrics().await;
    let m = |series: &str| harness::metric(&metrics, series);
    assert_eq!(m("understudy_canary_weight_percent"), Some(100.0));
    assert_eq!(
        m(r#"understudy_rollout_phase{phase="promoted"}"#),
        Some(1.0)
    );
    assert_eq!(m(r#"understudy_rollout_phase{phase="shadow"}"#), Some(0.0));
    assert_eq!(m(r#"understudy_rollout_phase{phase="canary"}"#), Some(0.0));
    assert!(m(r#"understudy_rollout_decisions_total{verdict="pass"}"#) >= Some(3.0));
    assert_eq!(m("understudy_rollbacks_total").unwrap_or(0.0), 0.0);

    // Promoted: the candidate serves everyone.
    let (stable, candidate) = sequential(&proxy.url, 20, None).await;
    assert_eq!((stable, candidate), (0, 20));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_candidate_is_rolled_back_and_gets_no_more_traffic() {
    // Judged on errors, not latency: instant models keep the test short.
    let candidate = ToyModelConfig::new("iris", "v2").with_error_rate(0.33);
    let toys = Toys::start(ToyModelConfig::new("iris", "v1"), candidate).await;
    let dir = harness::TempDir::new("rollout-errors");
    let proxy = harness::start(
        &toys.stable.url(),
        Some(&toys.candidate.url()),
        &fast_rollout(&dir, 50, ""),
    )
    .await;
    // Put the candidate in front of clients first: canary at 50%.
    let weight = format!("{}/rollout/weight", proxy.admin);
    let (code, body) = support::post_json(&weight, r#"{"percent": 50}"#, None).await;
    assert_eq!(code, 200, "{body:#}");
    let resume = format!("{}/rollout/resume", proxy.admin);
    let (code, body) = support::post_json(&resume, "", None).await;
    assert_eq!(code, 200, "{body:#}");
    assert_eq!(
        (&body["phase"], &body["weight"]),
        (&"canary".into(), &50.0.into())
    );

    let load = Load::start(&proxy.url, 4);
    let status = proxy.wait_status(ROLLOUT_TIMEOUT, finished).await;
    let tally = load.stop().await;
    assert_eq!(status["phase"], "rolled_back", "{status:#}");
    assert_eq!(status["weight"], 0.0);
    assert!(Tally::get(&tally.candidate) > 0, "{tally:?}");

    let last = decisions(&status).last().unwrap();
    assert_eq!(last["verdict"], "fail", "{last:#}");
    assert_eq!(last["action"], "rollback", "{last:#}");
    assert_eq!(last["phase"], "canary", "{last:#}");
    assert_eq!(last["manual"], false, "{last:#}");
    let reasons = last["reasons"].to_string();
    assert!(reasons.contains("error"), "{last:#}");
    let errors = &last["evidence"]["candidate"]["errors"];
    assert!(errors["rate"].as_f64().unwrap() > 0.15, "{last:#}");
    assert!(errors["total"].as_u64().unwrap() > 0, "{last:#}");

    let metrics = proxy.metrics().await;
    let m = |series: &str| harness::metric(&metrics, series);
    assert_eq!(m("understudy_rollbacks_total"), Some(1.0));
    assert_eq!(m("understudy_canary_weight_percent"), Some(0.0));
    assert_eq!(
        m(r#"understudy_rollout_phase{phase="rolled_back"}"#),
        Some(1.0)
    );
    assert!(m(r#"understudy_rollout_decisions_total{verdict="fail"}"#) >= Some(1.0));

    // After the rollback: stable serves all, the candidate sees nothing.
    mirrors_settled(&proxy).await;
    let seen = toys.candidate.requests();
    let (stable, candidate) = sequential(&proxy.url, 100, None).await;
    assert_eq!((stable, candidate), (100, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    mirrors_settled(&proxy).await;
    assert_eq!(
        toys.candidate.requests(),
        seen,
        "the candidate still received requests after the rollback"
    );
    let after = proxy.status().await;
    assert_eq!(after["phase"], "rolled_back");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disagreeing_candidate_never_leaves_shadow() {
    let candidate = ToyModelConfig::new("iris", "v2").with_disagree_rate(0.2);
    let toys = Toys::start(ToyModelConfig::new("iris", "v1"), candidate).await;
    let dir = harness::TempDir::new("rollout-disagree");
    let proxy = harness::start(
        &toys.stable.url(),
        Some(&toys.candidate.url()),
        &fast_rollout(&dir, 50, ""),
    )
    .await;
    let load = Load::start(&proxy.url, 4);
    let status = proxy.wait_status(ROLLOUT_TIMEOUT, finished).await;
    let tally = load.stop().await;

    assert_eq!(status["phase"], "rolled_back", "{status:#}");
    assert_eq!(status["weight"], 0.0);
    assert_eq!(
        Tally::get(&tally.candidate),
        0,
        "a client was served by the candidate"
    );
    assert!(Tally::get(&tally.stable) > 0, "{tally:?}");
    assert_eq!(
        status["cumulative"]["candidate"]["serve"]["requests"], 0,
        "{status:#}"
    );
    assert!(
        toys.candidate.requests() > 0,
        "the candidate was never mirrored to"
    );
    for d in decisions(&status) {
        assert_eq!(d["phase"], "shadow", "left shadow: {status:#}");
        assert_eq!(d["weight"], 0.0, "{d:#}");
        assert_ne!(d["verdict"], "pass", "{d:#}");
    }
    let last = decisions(&status).last().unwrap();
    assert_eq!(
        (&last["verdict"], &last["action"]),
        (&"fail".into(), &"rollback".into())
    );
    assert!(last["reasons"].to_string().contains("match"), "{last:#}");
    let matching = &last["evidence"]["matching"];
    let rate = matching["rate"].as_f64().unwrap();
    assert!((0.6..0.92).contains(&rate), "{last:#}");
    assert_eq!(matching["threshold"], 0.95);
    let metrics = proxy.metrics().await;
    assert_eq!(
        harness::metric(&metrics, "understudy_rollbacks_total"),
        Some(1.0)
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_stay_put_and_only_move_towards_the_candidate() {
    let toys = Toys::start(
        ToyModelConfig::new("iris", "v1"),
        ToyModelConfig::new("iris", "v2"),
    )
    .await;
    let dir = harness::TempDir::new("rollout-sticky");
    let extra = format!(
        "{}\n[split]\nsticky = \"header:x-user-id\"\n",
        fast_rollout(&dir, 100_000, "")
    );
    let proxy = harness::start(&toys.stable.url(), Some(&toys.candidate.url()), &extra).await;
    let weight = format!("{}/rollout/weight", proxy.admin);
    let (code, body) = support::post_json(&weight, r#"{"percent": 50}"#, None).await;
    assert_eq!((code, &body["weight"]), (200, &50.0.into()), "{body:#}");

    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let mut on_candidate_at_50 = Vec::new();
    for (user, (stable, candidate)) in users.iter().zip(per_user(&proxy.url, &users, 20).await) {
        assert!(
            stable == 0 || candidate == 0,
            "{user} moved between backends at a fixed weight: {stable} stable, {candidate} candidate"
        );
        on_candidate_at_50.push(candidate > 0);
    }
    let count_50 = on_candidate_at_50.iter().filter(|c| **c).count();
    assert!(
        (5..=35).contains(&count_50),
        "{count_50} of 40 users on the candidate at 50%"
    );

    let (code, body) = support::post_json(&weight, r#"{"percent": 80}"#, None).await;
    assert_eq!((code, &body["weight"]), (200, &80.0.into()), "{body:#}");
    let mut count_80 = 0;
    let at_80 = per_user(&proxy.url, &users, 10).await;
    for ((user, was_candidate), (stable, candidate)) in
        users.iter().zip(&on_candidate_at_50).zip(at_80)
    {
        assert!(stable == 0 || candidate == 0, "{user} split at 80%");
        if *was_candidate {
            assert_eq!(
                stable, 0,
                "{user} moved from candidate back to stable at 80%"
            );
        }
        count_80 += usize::from(candidate > 0);
    }
    assert!(
        count_80 > count_50,
        "raising the weight moved nobody: {count_50} → {count_80}"
    );

    // Without a key each request is drawn: both backends serve.
    let (stable, candidate) = sequential(&proxy.url, 60, None).await;
    assert!(
        stable > 0 && candidate > 0,
        "{stable} stable, {candidate} candidate"
    );
    proxy.stop().await;
}
