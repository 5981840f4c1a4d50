//! State machine tests: judged transitions, hold logging, max_step_duration,
//! the decision log's bound, restore and serde (operator commands are in
//! `tests/commands.rs`).

use super::*;
use crate::rollout::judge::{JudgeInput, SideWindow, Thresholds};
use hdrhistogram::Histogram;

mod commands;

const T0: u64 = 1_700_000_000_000;
const MIN: u64 = 60_000;

/// A window where both backends saw `n` requests at a flat 50 ms.
struct Window {
    n: u64,
    candidate_errors: u64,
    matched: u64,
    elapsed_ms: u64,
    latency: Histogram<u64>,
}

impl Window {
    fn new(n: u64, elapsed_ms: u64) -> Self {
        let mut latency = Histogram::new(2).expect("valid");
        latency.saturating_record_n(50_000, n);
        Window {
            n,
            candidate_errors: 0,
            matched: n,
            elapsed_ms,
            latency,
        }
    }

    /// Passes: plenty of clean data after the interval.
    fn pass() -> Self {
        Window::new(1000, MIN)
    }

    /// Fails: half the candidate's requests error.
    fn fail() -> Self {
        Window {
            candidate_errors: 500,
            ..Window::pass()
        }
    }

    /// Holds: too early, too little.
    fn hold() -> Self {
        Window::new(10, 5_000)
    }

    fn input(&self) -> JudgeInput<'_> {
        let side = |errors| SideWindow {
            requests: self.n,
            errors,
            client_errors: 0,
            latency_us: &self.latency,
        };
        JudgeInput {
            stable: side(0),
            candidate: side(self.candidate_errors),
            compared: self.n,
            matched: self.matched,
            elapsed: Duration::from_millis(self.elapsed_ms),
            looks: crate::rollout::judge::Looks::EveryTick,
            rows: Default::default(),
            ttft: None,
        }
    }
}

fn machine() -> RolloutMachine {
    RolloutMachine::new(RolloutSettings::default(), T0)
}

/// A machine restored into `phase` (canary at step 1 / 25% where relevant).
fn in_phase(phase: Phase) -> RolloutMachine {
    let mut m = machine();
    let ev = |m: &mut RolloutMachine, at| m.evaluate(at, &Window::pass().input());
    match phase {
        Phase::Shadow => {}
        Phase::Canary => {
            ev(&mut m, T0 + MIN);
            ev(&mut m, T0 + 2 * MIN);
        }
        Phase::Paused => {
            ev(&mut m, T0 + MIN);
            m.command(T0 + 2 * MIN, Command::Pause).expect("pausable");
        }
        Phase::Promoted => {
            m.command(T0 + MIN, Command::Promote).expect("promotable");
        }
        Phase::RolledBack => {
            m.command(T0 + MIN, Command::Rollback)
                .expect("rollbackable");
        }
    }
    assert_eq!(m.state().phase, phase);
    m
}

#[test]
fn a_new_rollout_starts_in_shadow_at_weight_zero() {
    let m = machine();
    let s = m.state();
    assert_eq!(
        (s.phase, s.step, s.weight, s.step_started_ms),
        (Phase::Shadow, 0, 0.0, T0)
    );
    assert!(s.decisions.is_empty() && s.paused_from.is_none());
}

#[test]
fn passing_shadow_starts_the_canary_at_the_first_step() {
    let mut m = machine();
    let c = m
        .evaluate(T0 + MIN, &Window::pass().input())
        .expect("changed");
    assert_eq!(
        (c.from, c.to, c.weight, c.reset_window),
        (Phase::Shadow, Phase::Canary, 5.0, true)
    );
    let d = c.decision.expect("recorded");
    assert_eq!(
        (d.action.as_str(), d.verdict, d.phase, d.weight),
        ("advance to 5%", Verdict::Pass, Phase::Shadow, 0.0)
    );
    assert!(d.evidence.is_some() && !d.manual);
    assert_eq!((m.state().step, m.state().step_started_ms), (0, T0 + MIN));
}

#[test]
fn passing_every_step_walks_the_weights_then_promotes() {
    let mut m = machine();
    let mut weights = Vec::new();
    for i in 1..=5 {
        let c = m
            .evaluate(T0 + i * MIN, &Window::pass().input())
            .expect("changed");
        weights.push((c.to, c.weight));
    }
    use Phase::{Canary, Promoted};
    let expected = [
        (Canary, 5.0),
        (Canary, 25.0),
        (Canary, 50.0),
        (Canary, 100.0),
        (Promoted, 100.0),
    ];
    assert_eq!(weights, expected);
    assert_eq!(
        m.state().decisions.last().map(|d| d.action.as_str()),
        Some("promote")
    );
    assert_eq!(m.evaluate(T0 + 9 * MIN, &Window::pass().input()), None);
}

#[test]
fn passing_the_last_step_promotes_even_below_100() {
    let settings = RolloutSettings {
        steps: vec![10.0, 50.0],
        ..RolloutSettings::default()
    };
    let mut m = RolloutMachine::new(settings, T0);
    for i in 1..=3 {
        m.evaluate(T0 + i * MIN, &Window::pass().input());
    }
    assert_eq!(
        (m.state().phase, m.state().weight),
        (Phase::Promoted, 100.0)
    );
}

#[test]
fn a_fail_in_shadow_rolls_back_without_ever_serving() {
    let mut m = machine();
    let c = m
        .evaluate(T0 + 1000, &Window::fail().input())
        .expect("changed");
    assert_eq!(
        (c.from, c.to, c.weight),
        (Phase::Shadow, Phase::RolledBack, 0.0)
    );
    let d = c.decision.expect("recorded");
    assert_eq!((d.action.as_str(), d.verdict), ("rollback", Verdict::Fail));
    assert!(d.reasons[0].starts_with("errors:"), "{:?}", d.reasons);
}

#[test]
fn a_fail_in_canary_sets_the_weight_to_zero_at_once() {
    let mut m = in_phase(Phase::Canary);
    let c = m
        .evaluate(T0 + 3 * MIN, &Window::fail().input())
        .expect("changed");
    assert_eq!(
        (c.from, c.to, c.weight),
        (Phase::Canary, Phase::RolledBack, 0.0)
    );
    assert_eq!(m.state().weight, 0.0);
}

#[test]
fn only_shadow_and_canary_are_judged() {
    for phase in [Phase::Paused, Phase::Promoted, Phase::RolledBack] {
        let mut m = in_phase(phase);
        let before = m.state().clone();
        assert_eq!(
            m.evaluate(T0 + 9 * MIN, &Window::fail().input()),
            None,
            "{phase}"
        );
        assert_eq!(m.state(), &before);
    }
}

#[test]
fn a_hold_is_logged_once_then_only_when_its_kind_changes() {
    let mut m = machine();
    let first = m
        .evaluate(T0 + 1000, &Window::hold().input())
        .expect("first hold logged");
    assert_eq!((first.to, first.reset_window), (Phase::Shadow, false));
    assert_eq!(first.decision.map(|d| d.action), Some("hold".to_owned()));
    // Same kind, later, with other numbers: not logged.
    assert_eq!(m.evaluate(T0 + 2000, &Window::new(20, 6_000).input()), None);
    // New kind (volume now met) but too soon after the last logged hold.
    assert_eq!(
        m.evaluate(T0 + 3000, &Window::new(500, 20_000).input()),
        None
    );
    let later = m.evaluate(T0 + 31_000, &Window::new(500, 31_000).input());
    assert!(later.is_some(), "changed kind logged after the gap");
    assert_eq!(m.state().decisions.len(), 2);
}

#[test]
fn an_inconclusive_step_pauses_after_max_step_duration() {
    let settings = RolloutSettings {
        max_step_duration: Some(Duration::from_secs(30 * 60)),
        ..RolloutSettings::default()
    };
    let mut m = RolloutMachine::new(settings, T0);
    m.evaluate(T0 + MIN, &Window::pass().input());
    let started = m.state().step_started_ms;
    assert!(
        m.evaluate(started + 29 * MIN, &Window::hold().input())
            .is_some()
    );
    let c = m
        .evaluate(started + 30 * MIN, &Window::hold().input())
        .expect("paused");
    assert_eq!(
        (c.from, c.to, c.weight, c.reset_window),
        (Phase::Canary, Phase::Paused, 5.0, false)
    );
    let d = c.decision.expect("recorded");
    assert_eq!(d.action, "pause: step inconclusive for 30m");
    assert!(d.evidence.is_some() && !d.reasons.is_empty() && !d.manual);
    assert_eq!(m.state().paused_from, Some(Phase::Canary));
    // Resuming starts the step afresh instead of pausing again at once.
    let r = m
        .command(started + 31 * MIN, Command::Resume)
        .expect("resumes");
    assert_eq!((r.to, r.weight, r.reset_window), (Phase::Canary, 5.0, true));
    assert_eq!(m.state().step_started_ms, started + 31 * MIN);
}

#[test]
fn the_decision_log_keeps_the_last_100() {
    let mut m = machine();
    for i in 0..75 {
        m.command(T0 + 2 * i, Command::Pause).expect("pauses");
        m.command(T0 + 2 * i + 1, Command::Resume).expect("resumes");
    }
    let log = &m.state().decisions;
    assert_eq!(log.len(), MAX_DECISIONS);
    assert_eq!((log[0].at_ms, log[99].at_ms), (T0 + 50, T0 + 149));
}

#[test]
fn restore_continues_exactly_where_it_left_off() {
    let mut m = in_phase(Phase::Canary);
    m.evaluate(T0 + 2 * MIN + 1000, &Window::hold().input());
    let json = serde_json::to_string(m.state()).expect("serializes");
    let state: RolloutState = serde_json::from_str(&json).expect("parses");
    let mut restored = RolloutMachine::restore(RolloutSettings::default(), state);
    assert_eq!(restored.state().phase, Phase::Canary);
    assert_eq!((restored.state().weight, restored.state().step), (25.0, 1));
    assert_eq!(restored.state().step_started_ms, m.state().step_started_ms);
    // Same hold again: neither logs it (the log came back with the state).
    assert_eq!(
        restored.evaluate(T0 + 2 * MIN + 2000, &Window::hold().input()),
        None
    );
    let a = m
        .evaluate(T0 + 3 * MIN, &Window::pass().input())
        .map(|c| (c.to, c.weight));
    let b = restored
        .evaluate(T0 + 3 * MIN, &Window::pass().input())
        .map(|c| (c.to, c.weight));
    assert_eq!(
        (a, b),
        (Some((Phase::Canary, 50.0)), Some((Phase::Canary, 50.0)))
    );
}

#[test]
fn rollout_state_round_trips_through_json() {
    let mut m = in_phase(Phase::Paused);
    m.command(T0 + 3 * MIN, Command::SetWeight(12.5))
        .expect("accepted");
    let json = serde_json::to_value(m.state()).expect("serializes");
    assert_eq!(
        (json["phase"].as_str(), json["paused_from"].as_str()),
        (Some("paused"), Some("canary"))
    );
    let back: RolloutState = serde_json::from_value(json.clone()).expect("parses");
    let again = serde_json::to_value(&back).expect("serializes");
    crate::rollout::judge::tests::assert_json_near(&again, &json);
    assert_eq!(
        (back.phase, back.weight, back.decisions.len()),
        (Phase::Paused, 12.5, 3)
    );
}

#[test]
fn set_settings_keeps_the_weight_and_reindexes_the_step() {
    let mut m = in_phase(Phase::Canary);
    m.set_settings(RolloutSettings {
        steps: vec![1.0, 10.0, 25.0, 100.0],
        thresholds: Thresholds::default(),
        max_step_duration: None,
    });
    assert_eq!((m.state().weight, m.state().step), (25.0, 2));
}

#[test]
fn a_clock_going_backwards_does_not_panic() {
    let mut m = in_phase(Phase::Canary);
    m.set_settings(RolloutSettings {
        max_step_duration: Some(Duration::from_secs(1)),
        ..RolloutSettings::default()
    });
    assert!(m.evaluate(0, &Window::hold().input()).is_some());
}

#[test]
fn settings_validation_explains_what_is_wrong() {
    assert_eq!(RolloutSettings::default().validate(), Ok(()));
    let bad = |steps: Vec<f64>| {
        RolloutSettings {
            steps,
            ..RolloutSettings::default()
        }
        .validate()
    };
    assert_eq!(bad(vec![]), Err(SettingsError::NoSteps));
    assert!(matches!(
        bad(vec![5.0, 5.0]),
        Err(SettingsError::BadSteps(_))
    ));
    assert!(matches!(
        bad(vec![0.0, 50.0]),
        Err(SettingsError::BadSteps(_))
    ));
    assert!(matches!(
        bad(vec![50.0, f64::NAN]),
        Err(SettingsError::BadSteps(_))
    ));
    let mut s = RolloutSettings::default();
    s.thresholds.max_error_rate = 1.5;
    assert_eq!(
        s.validate().map_err(|e| e.to_string()),
        Err("max_error_rate must be between 0 and 1, got 1.5".into())
    );
}

#[test]
fn phases_have_stable_names() {
    let names: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        names,
        ["shadow", "canary", "paused", "promoted", "rolled_back"]
    );
    for p in Phase::ALL {
        assert_eq!(serde_json::to_value(p).expect("serializes"), p.as_str());
    }
}

#[test]
fn durations_print_compactly() {
    assert_eq!(fmt_duration(Duration::from_secs(30 * 60)), "30m");
    assert_eq!(fmt_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(fmt_duration(Duration::from_secs(45)), "45s");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
}
