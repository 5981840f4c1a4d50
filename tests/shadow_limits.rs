//! The shadow's limits with ML-sized payloads: the comparison pool sheds
//! pairs (and stops starting mirrors) when it cannot keep up, and the byte
//! budget bounds what mirrors hold, while every client keeps getting the
//! stable answer.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use support::harness::{self, metric};
use support::memory::RssSampler;
use support::{FakeUpstream, Reply, http_client, send};

/// A TF Serving-style answer of `rows` rows of 1,000 scores (~10 KB a row).
fn predictions(rows: usize) -> String {
    let row: Vec<String> = (0..1000)
        .map(|i| format!("{:.7}", (i * 7919 % 1000) as f64 / 1000.0))
        .collect();
    let row = format!("[{}]", row.join(","));
    format!(r#"{{"predictions":[{}]}}"#, vec![row; rows].join(","))
}

fn series(name: &str, label: &str, value: &str) -> String {
    format!(r#"{name}{{{label}="{value}"}}"#)
}

fn count(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or(0.0)
}

/// Keeps every core busy at normal priority until dropped: the CPU a
/// fully loaded proxy host leaves to `SCHED_IDLE` threads (next to none).
struct Hogs(Arc<AtomicBool>);

impl Hogs {
    fn start() -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        for core in allowed_cores() {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // One hog per core, pinned: left to the scheduler, two hogs
                // can share a core for a while, and the other core's idle
                // time then goes to the comparison thread.
                pin_to_core(core);
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            });
        }
        Hogs(stop)
    }
}

/// The cores this process may run on (a container's cpuset may not start
/// at 0).
fn allowed_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity(0, ..)
    // fills it for the calling thread, and CPU_ISSET reads within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let read = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(read, 0, "cannot read this process's CPU affinity");
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&core| libc::CPU_ISSET(core, &set))
            .collect()
    }
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set, CPU_SET writes within it,
    // and sched_setaffinity(0, ..) only reads it for the calling thread.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(pinned, 0, "cannot pin a hog thread to core {core}");
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starved_comparisons_shed_mirrors_without_touching_clients() {
    // 1 MB answers: a comparison takes tens of milliseconds of CPU here, so
    // the thread's sliver of a busy machine (SCHED_IDLE's weight of 3
    // against 1,024) cannot keep up with the requests.
    let body = predictions(100);
    let stable = FakeUpstream::start(Reply::json(200, body.clone())).await;
    let candidate = FakeUpstream::start(Reply::json(200, body.clone())).await;
    // One comparison thread at SCHED_IDLE (the default) behind a queue of
    // two: with every core busy it gets next to no CPU, so the queue fills.
    let extra = "[compare]\npointer = \"/predictions\"\nthreads = 1\nqueue = 2\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);

    let hogs = Hogs::start();
    for i in 0..30 {
        let (status, _, answer) = send(&client, Method::POST, &url, &[], "{}").await;
        assert_eq!(status, 200, "request {i}");
        assert!(answer == body.as_bytes(), "request {i} got another body");
        // Each mirror settles (queued, or dropped) before the next request
        // is decided: the queue, not the mirrors still on their way to it,
        // is what this test measures. (Under concurrent load, mirrors in
        // flight when the queue fills are dropped at their comparison.)
        proxy.settle_mirrors().await;
    }
    let during = proxy.metrics().await;
    let not_started = count(
        &during,
        &series("understudy_shadow_total", "result", "dropped_busy"),
    );
    let sent_to_candidate = candidate.received().await.len();
    drop(hogs);

    assert!(
        not_started >= 20.0,
        "with the comparison queue full, mirrors are not started (dropped_busy = {not_started})"
    );
    assert!(
        sent_to_candidate <= 10,
        "the candidate got {sent_to_candidate} mirrors while comparisons were saturated"
    );
    // Once the CPU is free, the queued pairs are compared; every mirror sent
    // is either compared or counted as dropped, and none is a mismatch.
    let done = |m: &str| count(m, "understudy_compare_queue_depth") == 0.0;
    let mut after = proxy.metrics().await;
    for _ in 0..300 {
        if done(&after) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = proxy.metrics().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = proxy.metrics().await;
    let sent = count(&after, &series("understudy_shadow_total", "result", "sent"));
    let matched = count(
        &after,
        &series("understudy_comparisons_total", "result", "match"),
    );
    let dropped = count(
        &after,
        &series("understudy_comparisons_dropped_total", "reason", "busy"),
    );
    assert_eq!(sent, sent_to_candidate as f64, "{after}");
    assert_eq!(
        matched + dropped,
        sent,
        "every sent mirror compared or dropped"
    );
    assert!(
        matched >= 1.0,
        "queued pairs are compared once the CPU is free"
    );
    for outcome in ["mismatch", "stable_error", "shadow_error", "uncomparable"] {
        let n = count(
            &after,
            &series("understudy_comparisons_total", "result", outcome),
        );
        assert_eq!(n, 0.0, "{outcome}: a dropped pair is no comparison");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_budget_holds_against_a_slow_ten_megabyte_candidate() {
    const BUDGET: usize = 2 << 20;
    const CLIENTS: usize = 8;
    let stable_body = r#"{"predictions":[[0.1,0.9]]}"#;
    let stable = FakeUpstream::start(Reply::json(200, stable_body)).await;
    // Ten 1 MiB chunks, 30 ms apart, without a content-length: the copy can
    // only be budgeted as it arrives.
    let chunk = vec![b' '; 1 << 20];
    let candidate = FakeUpstream::start(Reply::chunked(
        (0..10).map(|_| chunk.clone()),
        Duration::from_millis(30),
    ))
    .await;
    let extra = format!(
        "[shadow]\nmax_body_bytes = {}\nmax_buffered_bytes = {BUDGET}\ntimeout = \"20s\"\n",
        16 << 20
    );
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let url = format!("{}/v1/models/m:predict", proxy.url);

    let rss = RssSampler::start();
    let admin = proxy.admin.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let held = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut most = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                let text = support::get_text(&format!("{admin}/metrics")).await;
                most = most.max(count(&text, "understudy_shadow_buffered_bytes"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            most
        })
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http_client();
                for _ in 0..3 {
                    let (status, _, body) = send(&client, Method::POST, &url, &[], "{}").await;
                    assert_eq!(status, 200);
                    assert_eq!(&body[..], stable_body.as_bytes());
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let metrics = proxy.metrics().await;
    let over_budget = series("understudy_comparisons_dropped_total", "reason", "budget");
    for _ in 0..100 {
        let m = proxy.metrics().await;
        let dropped = count(&m, &over_budget)
            + count(
                &m,
                &series("understudy_shadow_total", "result", "dropped_budget"),
            );
        if dropped >= (3 * CLIENTS) as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let most_held = held.await.unwrap();
    let rise = rss.finish();
    let after = proxy.metrics().await;

    // Each pair is dropped for the budget: before it starts, while the
    // mirrors in flight hold half of it, or when the answer does not fit.
    let not_started = count(
        &after,
        &series("understudy_shadow_total", "result", "dropped_budget"),
    );
    assert_eq!(
        count(&after, &over_budget) + not_started,
        (3 * CLIENTS) as f64,
        "every pair dropped for the budget: {metrics}"
    );
    assert!(count(&after, &over_budget) >= 1.0, "{metrics}");
    assert!(
        most_held <= BUDGET as f64,
        "mirrors held {most_held} bytes against a budget of {BUDGET}"
    );
    assert_eq!(count(&after, "understudy_shadow_buffered_bytes"), 0.0);
    assert_eq!(
        count(
            &after,
            &series("understudy_comparisons_total", "result", "match")
        ),
        0.0
    );
    // 24 ten-megabyte answers, 8 at a time, would need 80 MiB or more.
    assert!(
        rise < 40 << 20,
        "RSS rose by {} MiB with a {} MiB budget",
        rise >> 20,
        BUDGET >> 20
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_declared_answer_too_large_for_the_budget_is_dropped_at_once() {
    let stable = FakeUpstream::start(Reply::json(200, "{}")).await;
    let candidate = FakeUpstream::start(Reply::large(10 << 20)).await;
    let extra = format!(
        "[shadow]\nmax_body_bytes = {}\nmax_buffered_bytes = {}\n",
        16 << 20,
        1 << 20
    );
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let client = http_client();
    let url = format!("{}/v1/models/m:predict", proxy.url);
    let (status, _, _) = send(&client, Method::POST, &url, &[], "{}").await;
    assert_eq!(status, 200);
    let over_budget = series("understudy_comparisons_dropped_total", "reason", "budget");
    let mut metrics = proxy.metrics().await;
    for _ in 0..100 {
        if count(&metrics, &over_budget) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = proxy.metrics().await;
    }
    assert_eq!(count(&metrics, &over_budget), 1.0, "{metrics}");
    // The shadow's answer still counts as its latency evidence.
    let sent = count(
        &metrics,
        &series("understudy_shadow_total", "result", "sent"),
    );
    assert_eq!(sent, 1.0);
    assert_eq!(count(&metrics, "understudy_shadow_buffered_bytes"), 0.0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_starts_only_the_mirrors_the_budget_can_hold() {
    // Pairs of 500 KB answers (about 1 MB a mirror) against a 4 MiB budget:
    // room for four mirrors at a time.
    const BUDGET: usize = 4 << 20;
    const BURST: usize = 24;
    let body = predictions(50);
    let stable = FakeUpstream::start(Reply::json(200, body.clone())).await;
    let candidate =
        FakeUpstream::start(Reply::json(200, body.clone()).delay(Duration::from_secs(1))).await;
    let extra = format!("[shadow]\nmax_buffered_bytes = {BUDGET}\ntimeout = \"10s\"\n");
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let url = format!("{}/v1/models/m:predict", proxy.url);

    // One mirror ends first, so the proxy knows what a mirror holds.
    let client = http_client();
    let (status, _, _) = send(&client, Method::POST, &url, &[], "{}").await;
    assert_eq!(status, 200);
    let matched = series("understudy_comparisons_total", "result", "match");
    for _ in 0..100 {
        if count(&proxy.metrics().await, &matched) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let clients: Vec<_> = (0..BURST)
        .map(|_| {
            let (url, body) = (url.clone(), body.clone());
            tokio::spawn(async move {
                let (status, _, answer) = send(&http_client(), Method::POST, &url, &[], "{}").await;
                assert_eq!(status, 200);
                assert!(
                    answer == body.as_bytes(),
                    "every client gets stable's answer"
                );
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    // Every client has its answer; the candidate is still working on the
    // mirrors it got (1 s), and has got only those the budget can hold.
    let mirrored = candidate.request_count() - 1;
    let metrics = proxy.metrics().await;
    let not_started = count(
        &metrics,
        &series("understudy_shadow_total", "result", "dropped_budget"),
    );
    assert!(
        (1..=4).contains(&mirrored),
        "{mirrored} of {BURST} requests were sent to the candidate with room for 4 mirrors"
    );
    assert_eq!(not_started as usize + mirrored, BURST, "{metrics}");
    let mut after = proxy.metrics().await;
    for _ in 0..200 {
        if count(&after, &matched) > mirrored as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = proxy.metrics().await;
    }
    assert_eq!(
        count(&after, &matched),
        (mirrored + 1) as f64,
        "the mirrors that were started are compared: {after}"
    );
    proxy.stop().await;
}
