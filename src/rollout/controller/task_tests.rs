//! [`RolloutTask`] on tokio's paused clock: it judges the step window once
//! a second, steps up on a healthy window and starts a new one, and rolls
//! back on a failing candidate. Virtual seconds: no test waits for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::compare::{ElementCounts, Outcome};
use crate::split::Backend;
use crate::stats::{Event, Role};

/// A rollout (steps 50 and 100, judged after 1 s on at least 100
/// requests) whose task and stats task run on the paused clock.
struct Running {
    handle: RolloutHandle,
    stats: StatsHandle,
    routing: Arc<Routing>,
    /// The rollout's clock when it started.
    t0: u64,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn run_rollout() -> Running {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "understudy-rollout-task-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n\
         [backends.stable]\nurl = \"http://127.0.0.1:1\"\n\
         [backends.candidate]\nurl = \"http://127.0.0.1:2\"\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100\n\
         state_file = \"{}\"\n",
        dir.join("state.json").display()
    );
    let config = Config::parse(&text, "test").unwrap();
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (stats, stats_task) = crate::stats::channel(metrics.clone(), 10);
    tokio::spawn(stats_task.run(shutdown.clone()));
    let routing = Arc::new(Routing::new(0, true));
    let (handle, task) = start(&config, false, routing.clone(), stats.clone(), metrics).unwrap();
    tokio::spawn(task.run(shutdown.clone()));
    Running {
        t0: handle.now_ms(),
        handle,
        stats,
        routing,
        shutdown,
    }
}

impl Running {
    /// `n` requests served by stable and mirrored to the candidate, which
    /// answers `candidate_status`; both take 40 to 40 + n/100 ms.
    fn traffic(&self, n: usize, candidate_status: u16) {
        let outcome = match candidate_status {
            200 => Outcome::Match,
            _ => Outcome::ShadowError,
        };
        for i in 0..n as u64 {
            let latency = Duration::from_micros(40_000 + i * 10);
            self.stats.record(Event::Response {
                backend: Backend::Stable,
                role: Role::Serve,
                status: 200,
                latency,
            });
            self.stats.record(Event::Mirrored {
                backend: Backend::Candidate,
                status: candidate_status,
                latency,
                outcome,
                elements: ElementCounts::default(),
                mismatch: None,
            });
        }
    }

    /// Whole seconds on the rollout's clock at its latest judgement.
    fn judged_at_s(&self) -> u64 {
        let at_ms = self.handle.status_json()["current"]["at_ms"].as_u64();
        (at_ms.expect("a judgement") - self.t0) / 1_000
    }

    async fn step_window_requests(&self) -> u64 {
        let snapshot = self.stats.snapshot().await.unwrap();
        snapshot.step.stable.combined().requests()
    }
}

#[tokio::test(start_paused = true)]
async fn the_task_judges_the_window_once_a_second() {
    let rollout = run_rollout();
    sleep(Duration::from_millis(1_500)).await;
    assert_eq!(rollout.judged_at_s(), 1);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(rollout.judged_at_s(), 2);
    let status = rollout.handle.status_json();
    assert_eq!(status["current"]["verdict"], "hold", "{status}");
    assert_eq!(rollout.handle.phase_and_weight(), (Phase::Shadow, 0.0));
}

#[tokio::test(start_paused = true)]
async fn a_healthy_window_steps_up_and_the_next_step_waits_for_a_new_window() {
    let rollout = run_rollout();
    rollout.traffic(1_000, 200);
    sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rollout.handle.phase_and_weight(),
        (Phase::Shadow, 0.0),
        "the interval has not passed"
    );
    sleep(Duration::from_secs(1)).await;
    assert_eq!(rollout.handle.phase_and_weight(), (Phase::Canary, 50.0));
    assert_eq!(rollout.routing.weight_bp(), 5_000);
    assert_eq!(rollout.step_window_requests().await, 0, "a new window");

    // The evidence for 50% is not evidence for 100%.
    sleep(Duration::from_secs(2)).await;
    assert_eq!(rollout.handle.phase_and_weight(), (Phase::Canary, 50.0));
    rollout.traffic(1_000, 200);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(rollout.handle.phase_and_weight(), (Phase::Canary, 100.0));
    assert_eq!(rollout.routing.weight_bp(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn a_failing_candidate_is_rolled_back_on_the_next_tick() {
    let rollout = run_rollout();
    sleep(Duration::from_millis(1_500)).await;
    rollout.traffic(1_000, 500);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(rollout.handle.phase_and_weight(), (Phase::RolledBack, 0.0));
    assert!(
        !rollout.routing.mirroring(),
        "a rolled-back candidate gets no mirrors"
    );
    let status = rollout.handle.status_json();
    let last = status["decisions"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (&last["verdict"], &last["action"]),
        (&"fail".into(), &"rollback".into())
    );
}
