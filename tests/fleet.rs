#![cfg(feature = "fleet")]
//! Fleet mode end to end: a 3-member etcd cluster on loopback
//! and three real `understudy` binaries running one rollout under one
//! prefix. Every observation is made the way an operator would: each
//! replica's `/status` and `/metrics`, the admin API, the keys in etcd.
//!
//! Run with `cargo test --features fleet --test fleet` (needs `etcd`,
//! `etcdctl` and `protoc`). Each test has its own etcd cluster, temp
//! directory and ports, so tests run in parallel. Waits poll with generous
//! deadlines and never assert on speed, except the leader takeover, which
//! the issue bounds (about 2 × the lease TTL; asserted with a margin).
//! On failure every replica's status, its log tail and the fleet's etcd
//! keys are printed.

mod support;

/// Only this suite needs etcd; the other suites do not compile its helpers.
#[path = "support/fleet/mod.rs"]
mod fleet_support;

use std::time::Duration;

use http::Method;
use serde_json::Value;
use support::harness;
use support::{Reply, http_client, send};
use tokio::time::Instant;

use fleet_support::replicas::{
    Fleet, FleetSpec, PREDICTION, READY_TIMEOUT, agreed_leader, live_ids,
};
use fleet_support::{EtcdCluster, INFER, Load, Tally};

/// `[fleet] lease_ttl` of every test fleet, in seconds.
const TTL_SECS: u64 = 2;
/// How long a change may take to reach every replica. The design says
/// about a second; this is a deadline for a loaded machine, not a target
/// (the measured time is printed).
const CONVERGE: Duration = Duration::from_secs(15);
/// How long an automatic rollout may take to finish.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(90);
/// The weight gauge every replica exports.
const WEIGHT_METRIC: &str = "understudy_canary_weight_percent";

const ALL: [usize; 3] = [0, 1, 2];

fn ttl() -> Duration {
    Duration::from_secs(TTL_SECS)
}

/// The two replicas other than `i`.
fn others(i: usize) -> Vec<usize> {
    ALL.into_iter().filter(|&j| j != i).collect()
}

/// `POST /rollout/weight` on replica `via`, then waits until every replica
/// is paused at that weight.
async fn set_weight_everywhere(fleet: &Fleet, via: usize, percent: f64) {
    let body = format!("{{\"percent\": {percent}}}");
    fleet.post_ok(via, "weight", &body).await;
    fleet
        .wait_all("the weight everywhere", &ALL, CONVERGE, |s| {
            is(s, "paused", percent)
        })
        .await;
}

/// Fails (with the fleet's report) unless every status is `phase` at
/// `weight`; `otherwise` says what went wrong.
async fn check_every(fleet: &Fleet, statuses: &[Value], phase: &str, weight: f64, otherwise: &str) {
    for status in statuses {
        fleet
            .check(is(status, phase, weight), || {
                format!("{}: {otherwise}", status["fleet"]["replica_id"])
            })
            .await;
    }
}

fn is(status: &Value, phase: &str, weight: f64) -> bool {
    status["phase"] == phase && status["weight"] == weight
}

/// Sends `n` requests one by one to a proxy; every one must answer 200
/// with the prediction. Returns how many the candidate served.
async fn candidate_share(url: &str, n: usize) -> usize {
    let client = http_client();
    let mut candidate = 0;
    for _ in 0..n {
        let (status, headers, body) =
            send(&client, Method::POST, &format!("{url}{INFER}"), &[], "{}").await;
        assert_eq!(status, 200, "{url}: {body:?}");
        assert_eq!(body, PREDICTION, "{url}");
        match headers.get("x-understudy-backend").map(|v| v.as_bytes()) {
            Some(b"candidate") => candidate += 1,
            Some(b"stable") => {}
            other => panic!("{url}: x-understudy-backend {other:?}"),
        }
    }
    candidate
}

/// `(phase, action, verdict)` of every decision in a status.
fn decision_summary(status: &Value) -> Vec<(String, String, String)> {
    status["decisions"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|d| {
                    (
                        d["phase"].as_str().unwrap_or("?").to_owned(),
                        d["action"].as_str().unwrap_or("?").to_owned(),
                        d["verdict"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Phase, weight, step and step start: what "the same step" means.
fn step_of(status: &Value) -> (Value, Value, Value, Value) {
    (
        status["phase"].clone(),
        status["weight"].clone(),
        status["step"].clone(),
        status["step_started_ms"].clone(),
    )
}

/// The helper itself: 3 members start healthy, serve puts and gets, lose
/// their raft leader without losing service, and take it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_helper_works() {
    let mut etcd = EtcdCluster::start("helper").await;
    assert_eq!(etcd.live_endpoints().len(), 3);
    etcd.put("/helper/a", "1").await;
    assert_eq!(etcd.get("/helper/a").await.unwrap().value, "1");

    let deadline = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        if let Some(leader) = etcd.raft_leader().await {
            break leader;
        }
        assert!(Instant::now() < deadline, "no raft leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    etcd.kill(leader).await;
    assert_eq!(etcd.live_endpoints().len(), 2);
    etcd.expect_healthy(Duration::from_secs(30)).await;
    etcd.put("/helper/b", "2").await;
    let keys: Vec<(String, String)> = etcd
        .get_prefix("/helper/")
        .await
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(
        keys,
        [
            ("/helper/a".into(), "1".into()),
            ("/helper/b".into(), "2".into())
        ]
    );

    // The killed member rejoins with its data and catches up.
    etcd.restart(leader);
    etcd.expect_healthy(Duration::from_secs(30)).await;
    let rejoined = vec![etcd.members[leader].client_url()];
    let out = etcd
        .etcdctl_at(&rejoined, &["get", "/helper/b", "--print-value-only"])
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    etcd.stop_all().await;
    assert!(etcd.live_endpoints().is_empty());
    for member in &etcd.members {
        std::net::TcpListener::bind(("127.0.0.1", member.client_port))
            .unwrap_or_else(|e| panic!("{} still holds its port: {e}", member.name));
    }
}

/// Merged evidence is the exact sum of what every replica saw; one leader
/// that all agree on; a weight set on a follower, a resume and a pause on
/// others reach every replica; the state lives in etcd; SIGTERM revokes
/// the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_agree_and_counts_merge() {
    let mut fleet = Fleet::start(FleetSpec::manual("merge")).await;
    let leader = fleet.wait_ready(&ALL, READY_TIMEOUT).await;
    let leader_id = fleet.replicas[leader].id.clone();

    for i in ALL {
        let is_leader = if i == leader { 1.0 } else { 0.0 };
        fleet
            .wait_metric("understudy_fleet_leader", is_leader, &[i], CONVERGE)
            .await;
    }
    fleet
        .wait_metric("understudy_fleet_connected", 1.0, &ALL, CONVERGE)
        .await;
    fleet
        .wait_metric("understudy_fleet_replicas", 3.0, &ALL, CONVERGE)
        .await;
    // The fleet gauges are valid exposition (HELP, TYPE) by Prometheus' own lint.
    let text = fleet.metrics(leader).await.expect("leader's /metrics");
    if let Some(Err(problems)) = support::promtool::check_metrics(&text).await {
        panic!("{problems}\n--- scraped:\n{text}");
    }

    // 30, 20 and 10 requests to the three replicas, concurrently.
    let sent = [30, 20, 10];
    let urls = fleet.urls(&ALL);
    let (a, b, c) = tokio::join!(
        candidate_share(&urls[0], sent[0]),
        candidate_share(&urls[1], sent[1]),
        candidate_share(&urls[2], sent[2]),
    );
    assert_eq!((a, b, c), (0, 0, 0), "weight 0 serves stable only");
    let total: u64 = sent.iter().map(|&n| n as u64).sum();

    let (statuses, took) = fleet
        .wait_all(
            "merged step window counts every request",
            &ALL,
            Duration::from_secs(30),
            |s| {
                let w = &s["fleet"]["window"];
                let at_least = |key: &str| w[key].as_u64().is_some_and(|n| n >= total);
                w["replicas"] == 3
                    && at_least("stable_requests")
                    && at_least("candidate_requests")
                    && at_least("compared")
            },
        )
        .await;
    println!("merged window complete on all replicas after {took:?}");
    for status in &statuses {
        let w = &status["fleet"]["window"];
        let id = &status["fleet"]["replica_id"];
        let exact = [
            "stable_requests",
            "candidate_requests",
            "compared",
            "matched",
        ]
        .iter()
        .all(|key| w[*key] == total);
        fleet
            .check(
                exact && w["fleet_wide"] == true && w["replicas"] == 3,
                || format!("{id}: merged window is not the exact sum {total} of {sent:?}: {w:#}"),
            )
            .await;
    }
    fleet
        .check(
            agreed_leader(&statuses).as_deref() == Some(leader_id.as_str()),
            || format!("replicas do not agree on leader {leader_id}"),
        )
        .await;
    for status in &statuses {
        let ids = live_ids(status);
        fleet
            .check(ids.len() == 3, || format!("fleet.replicas: {ids:?}"))
            .await;
    }

    // A weight set on a follower reaches everyone, on /status, /metrics
    // and the data path.
    let (follower, third) = (others(leader)[0], others(leader)[1]);
    let start = Instant::now();
    let answer = fleet
        .post_ok(follower, "weight", r#"{"percent": 25}"#)
        .await;
    println!(
        "POST weight on {} answered {answer}",
        fleet.replicas[follower].id
    );
    fleet
        .wait_all("weight 25 everywhere", &ALL, CONVERGE, |s| {
            is(s, "paused", 25.0)
        })
        .await;
    println!(
        "weight 25 reached all replicas {:?} after the POST",
        start.elapsed()
    );
    fleet.wait_metric(WEIGHT_METRIC, 25.0, &ALL, CONVERGE).await;
    let on_candidate = candidate_share(&fleet.replicas[third].binary.url, 100).await;
    assert!(
        (8..=45).contains(&on_candidate),
        "{on_candidate} of 100 on the candidate at 25% (replica {})",
        fleet.replicas[third].id
    );

    // Resume on the third replica, pause on the leader.
    fleet.post_ok(third, "resume", "{}").await;
    fleet
        .wait_all("resumed everywhere", &ALL, CONVERGE, |s| {
            is(s, "canary", 25.0)
        })
        .await;
    fleet.post_ok(leader, "pause", "{}").await;
    let (statuses, _) = fleet
        .wait_all("paused everywhere", &ALL, CONVERGE, |s| {
            is(s, "paused", 25.0) && s["paused_from"] == "canary"
        })
        .await;
    let logs: Vec<_> = statuses.iter().map(decision_summary).collect();
    fleet
        .check(logs.iter().all(|l| *l == logs[0]), || {
            format!("decision logs differ between replicas: {logs:#?}")
        })
        .await;

    // The state lives in etcd, and so do the leader and every replica.
    let (state, _) = fleet.etcd_state().await.expect("PREFIX/state exists");
    fleet
        .check(is(&state["state"], "paused", 25.0), || {
            format!("PREFIX/state: {state:#}")
        })
        .await;
    let keys = fleet.etcd_keys().await;
    let key = |suffix: &str| {
        let name = format!("{}/{suffix}", fleet.prefix);
        keys.iter().find(|kv| kv.key == name).cloned()
    };
    let leader_key = key("leader").expect("PREFIX/leader exists");
    assert_eq!(leader_key.value, leader_id);
    assert_ne!(leader_key.lease, 0, "the leader key has a lease");
    for id in fleet.ids() {
        let report = key(&format!("replicas/{id}"))
            .unwrap_or_else(|| panic!("PREFIX/replicas/{id} missing"));
        assert_ne!(report.lease, 0, "replicas/{id} has a lease");
    }

    // SIGTERM revokes the lease on the way out: by the time the process
    // has exited its keys are gone, and the others elect a new leader.
    let exit = fleet.terminate(leader).await;
    assert!(exit.success(), "SIGTERM exit {exit:?}");
    let leader_now = fleet.etcd.get(&format!("{}/leader", fleet.prefix)).await;
    let report = fleet
        .etcd
        .get(&format!("{}/replicas/{leader_id}", fleet.prefix))
        .await;
    fleet
        .check(
            report.is_none() && leader_now.as_ref().is_none_or(|kv| kv.value != leader_id),
            || format!("keys of {leader_id} survived its SIGTERM (lease not revoked)"),
        )
        .await;
    let (new_leader, took) = fleet
        .wait_leader(&others(leader), CONVERGE, |id| id != leader_id)
        .await;
    println!(
        "after SIGTERM of {leader_id}: {} leads after {took:?}",
        fleet.replicas[new_leader].id
    );
}

/// A healthy candidate walks shadow → 50% → 100% → promoted on evidence
/// merged from all three replicas, and every replica follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_promoted_fleet_wide() {
    // The same fixed delay on both sides keeps the p99s comparable on a
    // busy machine; a 2x allowance absorbs scheduling noise.
    let model = || Reply::json(200, PREDICTION).delay(Duration::from_millis(20));
    let fleet = Fleet::start(FleetSpec {
        name: "promote",
        stable: model(),
        candidate: model(),
        rollout: "steps = [50, 100]\ninterval = \"1s\"\nmin_requests = 20\n\
                  max_latency_increase = 1.0\n",
        extra: "",
        lease_ttl_secs: TTL_SECS,
    })
    .await;
    let load = Load::start(&fleet.urls(&ALL), 4, Duration::ZERO);
    let (statuses, took) = fleet
        .wait_all("rollout finished everywhere", &ALL, ROLLOUT_TIMEOUT, |s| {
            s["phase"] == "promoted" || s["phase"] == "rolled_back"
        })
        .await;
    let tally = load.stop().await;
    println!(
        "finished after {took:?}; load: {} ok, {} on the candidate",
        Tally::get(&tally.ok),
        Tally::get(&tally.candidate)
    );
    check_every(&fleet, &statuses, "promoted", 100.0, "not promoted").await;
    tally.assert_all_ok("clients during the rollout");
    assert!(Tally::get(&tally.candidate) > 0, "candidate never served");

    let logs: Vec<_> = statuses.iter().map(decision_summary).collect();
    fleet
        .check(logs.iter().all(|l| *l == logs[0]), || {
            format!("decision logs differ between replicas: {logs:#?}")
        })
        .await;
    let passes: Vec<(String, String)> = logs[0]
        .iter()
        .filter(|(_, _, verdict)| verdict == "pass")
        .map(|(phase, action, _)| (phase.clone(), action.clone()))
        .collect();
    let expected = [
        ("shadow", "advance to 50%"),
        ("canary", "advance to 100%"),
        ("canary", "promote"),
    ]
    .map(|(p, a)| (p.to_owned(), a.to_owned()));
    fleet
        .check(passes == expected, || format!("passes: {passes:?}"))
        .await;
    fleet
        .check(logs[0].iter().all(|(_, _, v)| v != "fail"), || {
            format!("a fail verdict: {:?}", logs[0])
        })
        .await;
    for decision in statuses[0]["decisions"].as_array().unwrap() {
        if decision["verdict"] == "pass" {
            let e = &decision["evidence"];
            assert!(
                e["candidate"]["requests"].as_u64().unwrap_or(0) >= 20,
                "{decision:#}"
            );
            assert_eq!(e["candidate"]["errors"]["hits"], 0, "{decision:#}");
        }
    }
    fleet
        .wait_metric(WEIGHT_METRIC, 100.0, &ALL, CONVERGE)
        .await;
}

/// A candidate answering 500 is rolled back on the fleet's evidence, on
/// every replica, while clients keep getting the stable's answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_candidate_rolled_back_fleet_wide() {
    let fleet = Fleet::start(FleetSpec {
        name: "rollback",
        stable: Reply::json(200, PREDICTION),
        candidate: Reply::status(500),
        rollout: "steps = [50, 100]\ninterval = \"1s\"\nmin_requests = 20\n",
        extra: "",
        lease_ttl_secs: TTL_SECS,
    })
    .await;
    let load = Load::start(&fleet.urls(&ALL), 2, Duration::from_millis(5));
    let (statuses, took) = fleet
        .wait_all("rollout finished everywhere", &ALL, ROLLOUT_TIMEOUT, |s| {
            s["phase"] == "promoted" || s["phase"] == "rolled_back"
        })
        .await;
    let tally = load.stop().await;
    println!(
        "finished after {took:?}; {} requests ok",
        Tally::get(&tally.ok)
    );
    check_every(&fleet, &statuses, "rolled_back", 0.0, "not rolled back").await;
    // Shadow only: the candidate's errors never reach a client.
    tally.assert_all_ok("clients during the rollout");
    assert_eq!(Tally::get(&tally.candidate), 0);
    for status in &statuses {
        let log = decision_summary(status);
        fleet
            .check(
                log.iter()
                    .any(|(_, action, verdict)| action == "rollback" && verdict == "fail"),
                || format!("no rollback decision: {log:?}"),
            )
            .await;
    }
    fleet.wait_metric(WEIGHT_METRIC, 0.0, &ALL, CONVERGE).await;
}

/// kill -9 of the leader mid-step: another replica leads within about
/// 2 × TTL and continues the very same step at the same weight; clients of
/// the survivors notice nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_step_new_leader_same_step() {
    let mut fleet = Fleet::start(FleetSpec::manual("leader-killed")).await;
    let leader = fleet.wait_ready(&ALL, READY_TIMEOUT).await;
    let old_id = fleet.replicas[leader].id.clone();
    let survivors = others(leader);

    // Canary at 25%: a weight by hand, then resume (a fresh step that the
    // huge volume gate holds).
    set_weight_everywhere(&fleet, survivors[0], 25.0).await;
    fleet.post_ok(survivors[1], "resume", "{}").await;
    let (before, _) = fleet
        .wait_statuses("canary at 25 everywhere", &ALL, CONVERGE, |all| {
            all.iter().all(|s| is(s, "canary", 25.0))
                && all.iter().all(|s| step_of(s) == step_of(&all[0]))
        })
        .await;
    let step = step_of(&before[0]);
    println!("before the kill: {step:?}, leader {old_id}");

    let load = Load::start(&fleet.urls(&survivors), 1, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.kill(leader).await;
    let killed = Instant::now();
    let (new_leader, _) = fleet
        .wait_leader(&survivors, Duration::from_secs(30), |id| id != old_id)
        .await;
    let takeover = killed.elapsed();
    let new_id = fleet.replicas[new_leader].id.clone();
    println!(
        "leader {old_id} killed: {new_id} took over after {takeover:?} (lease TTL {:?})",
        ttl()
    );
    let bound = ttl() * 3 + Duration::from_secs(2);
    fleet
        .check(takeover <= bound, || {
            format!("takeover took {takeover:?}, more than {bound:?} (about 2 x TTL expected)")
        })
        .await;

    // Same step, same weight, right after the takeover and a few judge
    // ticks of the new leader later.
    for pause in [Duration::ZERO, ttl() + Duration::from_secs(1)] {
        tokio::time::sleep(pause).await;
        for &i in &survivors {
            let status = match fleet.status(i).await {
                Ok(s) => s,
                Err(e) => fleet.fail(&e).await,
            };
            fleet
                .check(step_of(&status) == step, || {
                    format!(
                        "{} changed step after the takeover: {:?} != {step:?}",
                        fleet.replicas[i].id,
                        step_of(&status)
                    )
                })
                .await;
        }
    }
    fleet
        .wait_all(
            "dead replica leaves the membership",
            &survivors,
            Duration::from_secs(20),
            |s| {
                !live_ids(s).contains(&old_id)
                    && s["fleet"]["is_leader"] == (s["fleet"]["replica_id"] == new_id.as_str())
            },
        )
        .await;
    let leader_key = fleet.etcd.get(&format!("{}/leader", fleet.prefix)).await;
    assert_eq!(leader_key.map(|kv| kv.value), Some(new_id));
    let tally = load.stop().await;
    tally.assert_all_ok("clients of the survivors");
    fleet
        .wait_metric(WEIGHT_METRIC, 25.0, &survivors, CONVERGE)
        .await;
}

/// SIGSTOP the leader past its lease: another replica takes over; after
/// SIGCONT the old leader's next write is rejected by the fence, it steps
/// down and follows, and etcd still holds the new leader's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_write_is_rejected() {
    let mut fleet = Fleet::start(FleetSpec::manual("leader-stopped")).await;
    let leader = fleet.wait_ready(&ALL, READY_TIMEOUT).await;
    let old_id = fleet.replicas[leader].id.clone();
    let survivors = others(leader);
    set_weight_everywhere(&fleet, survivors[0], 25.0).await;
    // Give the leader something of its own to write: fresh evidence.
    let urls = fleet.urls(&ALL);
    for url in &urls {
        candidate_share(url, 10).await;
    }

    fleet.signal(leader, "STOP");
    let stopped = Instant::now();
    let (new_leader, took) = fleet
        .wait_leader(&survivors, Duration::from_secs(30), |id| id != old_id)
        .await;
    let new_id = fleet.replicas[new_leader].id.clone();
    println!("{old_id} stopped: {new_id} took over after {took:?}");
    // Stay stopped for more than 2 x TTL in all.
    let stop_for = ttl() * 2 + Duration::from_secs(1);
    if let Some(rest) = stop_for.checked_sub(stopped.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let (state_before, revision_before) = fleet.etcd_state().await.expect("PREFIX/state");
    fleet.signal(leader, "CONT");
    let resumed = Instant::now();

    let (old, _) = fleet
        .wait_all(
            "old leader saw its write rejected and stepped down",
            &[leader],
            Duration::from_secs(20),
            |s| {
                s["fleet"]["stale_writes_rejected"]
                    .as_u64()
                    .is_some_and(|n| n >= 1)
                    && s["fleet"]["is_leader"] == false
            },
        )
        .await;
    println!(
        "{old_id} stepped down {:?} after SIGCONT: {}",
        resumed.elapsed(),
        old[0]["fleet"]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fleet.replicas[leader]
        .binary
        .log_contains("stale leader write rejected")
    {
        if Instant::now() > deadline {
            fleet
                .fail("no log line \"stale leader write rejected\" on the old leader")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Everyone follows the new leader at the unchanged weight.
    fleet
        .wait_all("all follow the new leader", &ALL, CONVERGE, |s| {
            s["fleet"]["leader"] == new_id.as_str() && is(s, "paused", 25.0)
        })
        .await;
    let (state, revision) = fleet.etcd_state().await.expect("PREFIX/state");
    fleet
        .check(is(&state["state"], "paused", 25.0), || {
            format!("PREFIX/state after SIGCONT: {state:#}")
        })
        .await;
    fleet
        .check(
            revision == revision_before || state["written_by"] != old_id.as_str(),
            || {
                format!(
                    "the stale leader overwrote the state: before (rev {revision_before}) \
                     {state_before:#}\nafter (rev {revision}) {state:#}"
                )
            },
        )
        .await;
    let leader_key = fleet.etcd.get(&format!("{}/leader", fleet.prefix)).await;
    assert_eq!(leader_key.map(|kv| kv.value), Some(new_id));
}

/// kill -9 of one etcd member (its raft leader) under a steady stream of
/// client requests to all replicas: no client sees an error, and a weight
/// change afterwards still reaches everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_killed_no_client_error() {
    let mut fleet = Fleet::start(FleetSpec::manual("etcd-member")).await;
    let load = Load::start(&fleet.urls(&ALL), 2, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let raft_leader = fleet.etcd.raft_leader().await;
    let victim = raft_leader.unwrap_or(0);
    let before = load.answered();
    fleet.etcd.kill(victim).await;
    println!(
        "killed etcd member {} (the raft leader: {}) after {before} requests",
        fleet.etcd.members[victim].name,
        raft_leader.is_some()
    );
    fleet.etcd.expect_healthy(Duration::from_secs(30)).await;
    // Keep the stream going across lease renewals and watch re-opens, and
    // until the fleet has settled on the two remaining members.
    tokio::time::sleep(ttl() * 2 + Duration::from_secs(1)).await;
    let ready = fleet.try_wait_ready(&ALL, Duration::from_secs(30)).await;
    let tally = load.stop().await;
    println!(
        "{} requests during the run, {} after the kill",
        Tally::get(&tally.ok),
        Tally::get(&tally.ok) - before.min(Tally::get(&tally.ok))
    );
    tally.assert_all_ok("clients while an etcd member died");
    let leader = match ready {
        Ok(leader) => leader,
        Err(message) => {
            let message = format!("after an etcd member died: {message}");
            fleet.fail(&message).await
        }
    };

    let follower = others(leader)[0];
    let start = Instant::now();
    set_weight_everywhere(&fleet, follower, 25.0).await;
    println!("weight 25 everywhere {:?} after the POST", start.elapsed());
    fleet.wait_metric(WEIGHT_METRIC, 25.0, &ALL, CONVERGE).await;
}

/// All of etcd down: replicas keep serving at the last weight, say they are
/// disconnected and refuse admin changes with 503; once etcd is back they
/// reconnect and changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_keeps_last_weight() {
    let mut fleet = Fleet::start(FleetSpec::manual("etcd-down")).await;
    let leader = fleet.wait_ready(&ALL, READY_TIMEOUT).await;
    set_weight_everywhere(&fleet, others(leader)[0], 25.0).await;

    for i in 0..3 {
        fleet.etcd.kill(i).await;
    }
    let down = Instant::now();
    fleet
        .wait_metric(
            "understudy_fleet_connected",
            0.0,
            &ALL,
            Duration::from_secs(45),
        )
        .await;
    println!(
        "all replicas disconnected {:?} after etcd died",
        down.elapsed()
    );
    let (statuses, _) = fleet
        .wait_all("status while etcd is down", &ALL, CONVERGE, |s| {
            s["fleet"]["connected"] == false
        })
        .await;
    check_every(
        &fleet,
        &statuses,
        "paused",
        25.0,
        "weight moved without etcd",
    )
    .await;
    fleet.wait_metric(WEIGHT_METRIC, 25.0, &ALL, CONVERGE).await;
    let mut on_candidate = 0;
    for url in fleet.urls(&ALL) {
        on_candidate += candidate_share(&url, 60).await;
    }
    assert!(
        (15..=80).contains(&on_candidate),
        "{on_candidate} of 180 on the candidate at 25% while etcd is down"
    );
    // A change needs etcd: refused, and nothing moves locally either.
    let (code, body) = fleet.post(1, "weight", r#"{"percent": 40}"#).await;
    fleet
        .check(code == 503, || {
            format!("POST /rollout/weight without etcd answered {code}: {body}")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fleet
        .wait_all(
            "weight still 25 after a refused change",
            &ALL,
            CONVERGE,
            |s| is(s, "paused", 25.0),
        )
        .await;

    // etcd comes back with its data: the replicas reconnect by themselves.
    for i in 0..3 {
        fleet.etcd.restart(i);
    }
    fleet.etcd.expect_healthy(Duration::from_secs(30)).await;
    let back = Instant::now();
    fleet
        .wait_metric(
            "understudy_fleet_connected",
            1.0,
            &ALL,
            Duration::from_secs(60),
        )
        .await;
    let leader = fleet.wait_ready(&ALL, Duration::from_secs(60)).await;
    println!("reconnected {:?} after etcd came back", back.elapsed());
    fleet
        .wait_all("weight 25 after reconnecting", &ALL, CONVERGE, |s| {
            is(s, "paused", 25.0)
        })
        .await;
    fleet
        .post_ok(others(leader)[1], "weight", r#"{"percent": 30}"#)
        .await;
    fleet
        .wait_all("weight 30 everywhere", &ALL, CONVERGE, |s| {
            is(s, "paused", 30.0)
        })
        .await;
}

/// Starts a single etcd member that serves clients over TLS only and
/// requires a client certificate signed by `ca_pem`.
fn spawn_tls_etcd(
    dir: &harness::TempDir,
    (cert, key): &(std::path::PathBuf, std::path::PathBuf),
    ca_pem: &std::path::Path,
) -> (tokio::process::Child, String) {
    let ports = fleet_support::free_ports(2);
    let client_url = format!("https://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let child = tokio::process::Command::new("etcd")
        .args(["--name", "tls1", "--data-dir"])
        .arg(dir.path("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls1={peer_url}")])
        .arg("--cert-file")
        .arg(cert)
        .arg("--key-file")
        .arg(key)
        .arg("--client-cert-auth")
        .arg("--trusted-ca-file")
        .arg(ca_pem)
        .args(["--logger", "zap", "--log-outputs"])
        .arg(dir.path("etcd.log"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn etcd (is etcd-server installed?)");
    (child, client_url)
}

/// `[fleet.tls]`: a replica verifies etcd's certificate against its CA under
/// the name in `domain` and authenticates with a client certificate; it
/// connects and leads. A replica trusting another CA never connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_over_mutual_tls() {
    use support::tls::{Ca, install_provider};
    install_provider();
    let dir = harness::TempDir::new("fleet-tls");
    let ca = Ca::new("etcd test CA");
    let other_ca = Ca::new("some other CA");
    let ca_pem = ca.write(&dir.path("ca.pem"));
    let other_ca_pem = other_ca.write(&dir.path("other-ca.pem"));
    let server = ca
        .server_cert_for("etcd", &["etcd.test"])
        .write(&dir.0, "etcd");
    let (client_pem, client_key) = ca.client_cert("replica").write(&dir.0, "replica");
    let (_etcd, url) = spawn_tls_etcd(&dir, &server, &ca_pem);

    let stable = support::FakeUpstream::start(Reply::json(200, PREDICTION)).await;
    let candidate = support::FakeUpstream::start(Reply::json(200, PREDICTION)).await;
    let replica = |id: &str, trusted: &std::path::Path| {
        let extra = format!(
            "[rollout]\nmin_requests = 100000\nstate_file = \"{state}\"\n\n\
             [fleet]\nendpoints = [\"{url}\"]\nprefix = \"/understudy/tls\"\nreplica_id = \"{id}\"\n\
             lease_ttl = \"2s\"\n\n[fleet.tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
             domain = \"etcd.test\"\n",
            state = dir.path(&format!("{id}.json")).display(),
            ca = trusted.display(),
            cert = client_pem.display(),
            key = client_key.display(),
        );
        let path = dir.path(&format!("{id}.toml"));
        std::fs::write(
            &path,
            harness::config_text(&stable.url(), Some(&candidate.url()), &extra),
        )
        .unwrap();
        path
    };
    let good = harness::Binary::start(&replica("tls-good", &ca_pem), &[]).await;
    let wrong = harness::Binary::start(&replica("tls-wrong-ca", &other_ca_pem), &[]).await;

    let status = support::wait_json(
        &format!("{}/status", good.admin),
        Duration::from_secs(30),
        |s| s["fleet"]["connected"] == true && s["fleet"]["is_leader"] == true,
    )
    .await;
    assert_eq!(status["fleet"]["leader"], "tls-good", "{status}");
    // Let the other replica try a few times (backoff 0.5 s, 1 s, …): it
    // must never get in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = support::get_json(&format!("{}/status", wrong.admin)).await;
    assert_eq!(status["fleet"]["connected"], false, "{status}");
    assert_eq!(
        status["phase"], "shadow",
        "a replica that cannot reach etcd keeps its own state: {status}"
    );
}
