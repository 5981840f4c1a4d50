use std::time::Duration;

use super::*;
use crate::compare::Difference;

fn response(backend: Backend, role: Role, status: u16, ms: u64) -> Event {
    Event::Response {
        backend,
        role,
        status,
        latency: Duration::from_millis(ms),
    }
}

fn start() -> (StatsHandle, CancellationToken) {
    let (handle, task) = channel(Arc::new(Metrics::new()), 2);
    let shutdown = CancellationToken::new();
    tokio::spawn(task.run(shutdown.clone()));
    (handle, shutdown)
}

#[tokio::test]
async fn counts_requests_by_backend_role_and_class() {
    let (stats, _stop) = start();
    stats.record(response(Backend::Stable, Role::Serve, 200, 5));
    stats.record(response(Backend::Stable, Role::Serve, 503, 7));
    stats.record(response(Backend::Candidate, Role::Shadow, 404, 9));
    stats.record(Event::Failure {
        backend: Backend::Candidate,
        role: Role::Shadow,
        kind: FailureKind::Timeout,
        latency: Duration::from_secs(5),
    });
    let s = stats.snapshot().await.unwrap();
    let stable = &s.cumulative.stable.serve;
    assert_eq!(stable.requests(), 2);
    assert_eq!(stable.errors(), 1);
    let shadow = &s.cumulative.candidate.shadow;
    assert_eq!(shadow.requests(), 2);
    assert_eq!(shadow.client_errors(), 1);
    assert_eq!(shadow.errors(), 1, "a timeout is an error");
    assert_eq!(shadow.failures[FailureKind::Timeout.index()], 1);
    assert_eq!(s.cumulative.candidate.combined().requests(), 2);
}

#[tokio::test]
async fn body_failure_counts_an_error_but_not_another_request() {
    let (stats, _stop) = start();
    stats.record(response(Backend::Stable, Role::Serve, 200, 5));
    stats.record(Event::Failure {
        backend: Backend::Stable,
        role: Role::Serve,
        kind: FailureKind::Body,
        latency: Duration::from_millis(9),
    });
    let s = stats.snapshot().await.unwrap();
    assert_eq!(s.cumulative.stable.serve.requests(), 1);
    assert_eq!(s.cumulative.stable.serve.errors(), 1);
}

#[tokio::test]
async fn percentiles_come_from_the_histogram() {
    let (stats, _stop) = start();
    for ms in 1..=100 {
        stats.record(response(Backend::Stable, Role::Serve, 200, ms));
    }
    let s = stats.snapshot().await.unwrap();
    let p50 = s.cumulative.stable.serve.percentile_ms(0.5).unwrap();
    let p99 = s.cumulative.stable.serve.percentile_ms(0.99).unwrap();
    assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
    assert!((98.0..=100.0).contains(&p99), "p99 {p99}");
}

#[tokio::test]
async fn step_window_resets_but_cumulative_keeps_counting() {
    let (stats, _stop) = start();
    stats.record(response(Backend::Candidate, Role::Serve, 200, 1));
    stats.reset_step();
    stats.record(response(Backend::Candidate, Role::Serve, 200, 1));
    let s = stats.snapshot().await.unwrap();
    assert_eq!(s.cumulative.candidate.serve.requests(), 2);
    assert_eq!(s.step.candidate.serve.requests(), 1);
}

#[tokio::test]
async fn mismatch_ring_keeps_only_the_newest() {
    let (stats, _stop) = start();
    for i in 0..3 {
        stats.record(Event::Compared {
            outcome: Outcome::Mismatch,
            elements: ElementCounts {
                matched: 0,
                mismatched: 1,
            },
            mismatch: Some(Box::new(MismatchRecord {
                at_ms: i,
                request_id: format!("r{i}"),
                trace_id: Some(format!("{i:032x}")),
                method: "POST".into(),
                path: "/p".into(),
                difference: Difference {
                    pointer: "/predictions/0".into(),
                    stable: "1".into(),
                    candidate: "2".into(),
                    ..Difference::default()
                },
            })),
        });
    }
    let s = stats.snapshot().await.unwrap();
    let ids: Vec<&str> = s.mismatches.iter().map(|m| m.request_id.as_str()).collect();
    assert_eq!(ids, ["r2", "r1"]);
    assert_eq!(s.cumulative.comparisons_of(Outcome::Mismatch), 3);
    assert_eq!(s.cumulative.elements.mismatched, 3);
}

#[tokio::test(start_paused = true)]
async fn sliding_window_forgets_old_slots() {
    let (stats, _stop) = start();
    stats.record(response(Backend::Stable, Role::Serve, 200, 1));
    // Let the task see the event, then move past the whole window.
    let _ = stats.snapshot().await;
    for _ in 0..(SLOTS as u64 * SLOT_LENGTH.as_secs() + 2) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stats.record(response(Backend::Stable, Role::Serve, 200, 1));
    let s = stats.snapshot().await.unwrap();
    assert_eq!(s.sliding.stable.serve.requests(), 1);
    assert_eq!(s.cumulative.stable.serve.requests(), 2);
}

#[tokio::test]
async fn metrics_follow_the_events() {
    let metrics = Arc::new(Metrics::new());
    let (stats, task) = channel(metrics.clone(), 10);
    tokio::spawn(task.run(CancellationToken::new()));
    stats.record(response(Backend::Stable, Role::Serve, 200, 3));
    stats.record(Event::Shadow(ShadowResult::DroppedOverload));
    let _ = stats.snapshot().await;
    let text = metrics.render();
    assert!(
        text.contains(
            r#"understudy_requests_total{backend="stable",role="serve",status_class="2xx"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"understudy_shadow_total{result="dropped_overload"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_mirrored_event_counts_as_its_three_parts() {
    let one = || ElementCounts {
        matched: 1,
        mismatched: 2,
    };
    let combined = Arc::new(Metrics::new());
    let (stats, task) = channel(combined.clone(), 10);
    tokio::spawn(task.run(CancellationToken::new()));
    stats.record(Event::Mirrored {
        backend: Backend::Candidate,
        status: 503,
        latency: Duration::from_millis(12),
        outcome: Outcome::ShadowError,
        elements: one(),
        mismatch: None,
    });
    let together = stats.snapshot().await.unwrap();

    let separate = Arc::new(Metrics::new());
    let (stats, task) = channel(separate.clone(), 10);
    tokio::spawn(task.run(CancellationToken::new()));
    stats.record(response(Backend::Candidate, Role::Shadow, 503, 12));
    stats.record(Event::Shadow(ShadowResult::Sent));
    stats.record(Event::Compared {
        outcome: Outcome::ShadowError,
        elements: one(),
        mismatch: None,
    });
    let apart = stats.snapshot().await.unwrap();

    for (a, b) in [
        (&together.cumulative, &apart.cumulative),
        (&together.step, &apart.step),
        (&together.sliding, &apart.sliding),
    ] {
        assert_eq!(a.candidate.shadow.requests(), 1);
        assert_eq!(a.candidate.shadow.errors(), b.candidate.shadow.errors());
        assert_eq!(
            a.candidate.shadow.percentile_ms(0.5),
            b.candidate.shadow.percentile_ms(0.5)
        );
        assert_eq!(a.shadow, b.shadow);
        assert_eq!(a.comparisons_of(Outcome::ShadowError), 1);
        assert_eq!(a.elements.mismatched, b.elements.mismatched);
    }
    // The exposition's order of series varies between registries, and the
    // process's own figures (CPU time, memory, threads) move between renders.
    let lines = |metrics: &Metrics| {
        let mut lines: Vec<String> = metrics
            .render()
            .lines()
            .filter(|line| !line.contains("process_"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(lines(&combined), lines(&separate));
}
