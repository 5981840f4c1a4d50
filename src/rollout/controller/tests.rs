//! The controller on a full disk: the judge makes no step towards the
//! candidate while the state file is behind, and takes it once the file is
//! current again.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::compare::Outcome;
use crate::full_fs::FullFs;
use crate::stats::window::{WindowStats, latency_histogram, outcome_index};

/// Both backends alike, 1,000 requests each, all compared and matching:
/// a window the judge passes.
fn healthy_window() -> WindowStats {
    let mut window = WindowStats::default();
    for side in [&mut window.stable.serve, &mut window.candidate.shadow] {
        side.by_class[2] = 1_000;
        let mut latency = latency_histogram();
        for i in 0..1_000u64 {
            latency.saturating_record(40_000 + i * 10);
        }
        side.latency_us = latency;
    }
    window.comparisons[outcome_index(Outcome::Match)] = 1_000;
    window
}

#[tokio::test(start_paused = true)]
async fn the_judge_steps_up_only_once_the_state_file_is_current() {
    let Some(fs) = FullFs::mount("controller") else {
        return;
    };
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n\
         [backends.stable]\nurl = \"http://127.0.0.1:1\"\n\
         [backends.candidate]\nurl = \"http://127.0.0.1:2\"\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100\n\
         state_file = \"{}\"\n",
        fs.path("state.json").display()
    );
    let config = Config::parse(&text, "test").unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stats, _stats_task) = crate::stats::channel(metrics.clone(), 10);
    let routing = Arc::new(Routing::new(0, true));
    let (handle, task) = start(&config, false, routing, stats, metrics).unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;

    fs.fill();
    // Any write now fails and leaves the file behind.
    handle.adopt(handle.machine().state().clone(), false);
    assert!(handle.state_file_behind());
    task.evaluate(&healthy_window());
    assert_eq!(handle.phase_and_weight(), (Phase::Shadow, 0.0));

    fs.free();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while handle.state_file_behind() {
        assert!(std::time::Instant::now() < deadline, "never caught up");
        std::thread::sleep(Duration::from_millis(20));
    }
    task.evaluate(&healthy_window());
    assert_eq!(handle.phase_and_weight(), (Phase::Canary, 50.0));
    let on_disk = persist::load(&fs.path("state.json"), handle.identity())
        .unwrap()
        .unwrap();
    assert_eq!((on_disk.phase, on_disk.weight), (Phase::Canary, 50.0));
}
