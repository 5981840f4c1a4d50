//! Operator command tests: pause, resume, promote, rollback and manual
//! weights, from every phase.

use super::*;

#[test]
fn pause_holds_the_weight_and_resume_returns_to_it() {
    let mut m = in_phase(Phase::Canary);
    let p = m.command(T0 + 3 * MIN, Command::Pause).expect("pauses");
    assert_eq!(
        (p.from, p.to, p.weight, p.reset_window),
        (Phase::Canary, Phase::Paused, 25.0, false)
    );
    let d = p.decision.expect("recorded");
    assert!(d.manual && d.action == "manual pause" && d.evidence.is_none());
    let r = m.command(T0 + 4 * MIN, Command::Resume).expect("resumes");
    assert_eq!(
        (r.from, r.to, r.weight, r.reset_window),
        (Phase::Paused, Phase::Canary, 25.0, true)
    );
    assert_eq!((m.state().step, m.state().paused_from), (1, None));
}

#[test]
fn resume_from_a_shadow_pause_returns_to_shadow() {
    let mut m = machine();
    m.command(T0 + 1000, Command::Pause).expect("pauses");
    let r = m.command(T0 + 2000, Command::Resume).expect("resumes");
    assert_eq!((r.to, r.weight), (Phase::Shadow, 0.0));
}

#[test]
fn a_manual_weight_pauses_and_resume_continues_from_the_next_step_above() {
    let mut m = in_phase(Phase::Canary);
    let c = m
        .command(T0 + 3 * MIN, Command::SetWeight(30.0))
        .expect("accepted");
    assert_eq!(
        (c.from, c.to, c.weight),
        (Phase::Canary, Phase::Paused, 30.0)
    );
    assert_eq!(
        c.decision.map(|d| d.action),
        Some("manual set weight 30%".to_owned())
    );
    // A second manual weight while paused keeps where the pause came from.
    m.command(T0 + 4 * MIN, Command::SetWeight(30.0))
        .expect("accepted");
    assert_eq!(m.state().paused_from, Some(Phase::Canary));
    let r = m.command(T0 + 5 * MIN, Command::Resume).expect("resumes");
    assert_eq!((r.to, r.weight, m.state().step), (Phase::Canary, 30.0, 2));
    let next = m
        .evaluate(T0 + 6 * MIN, &Window::pass().input())
        .expect("advances");
    assert_eq!(next.weight, 50.0);
}

#[test]
fn a_manual_weight_in_shadow_resumes_as_canary_and_zero_as_shadow() {
    let mut m = machine();
    m.command(T0 + 1000, Command::SetWeight(0.5))
        .expect("accepted");
    let r = m.command(T0 + 2000, Command::Resume).expect("resumes");
    assert_eq!((r.to, r.weight, m.state().step), (Phase::Canary, 0.5, 0));
    let mut m = machine();
    m.command(T0 + 1000, Command::SetWeight(0.0))
        .expect("accepted");
    assert_eq!(
        m.command(T0 + 2000, Command::Resume).expect("resumes").to,
        Phase::Shadow
    );
}

#[test]
fn weights_outside_0_to_100_are_refused_with_a_readable_message() {
    let mut m = in_phase(Phase::Canary);
    for w in [-1.0, 100.5, f64::NAN, f64::INFINITY] {
        let err = m.command(T0, Command::SetWeight(w)).expect_err("refused");
        assert!(matches!(err, CommandError::InvalidWeight(_)));
        assert!(
            err.to_string()
                .starts_with("weight must be a percentage between 0 and 100")
        );
    }
    assert_eq!(m.state().phase, Phase::Canary);
}

/// Every command from every phase: the phase it leads to, or the error.
#[test]
fn every_command_from_every_phase() {
    use Phase::*;
    let cmds = [
        Command::Pause,
        Command::Resume,
        Command::Promote,
        Command::Rollback,
        Command::SetWeight(10.0),
    ];
    let expected: [(Phase, [Result<Phase, &str>; 5]); 5] = [
        (
            Shadow,
            [
                Ok(Paused),
                Err("cannot resume: the rollout is shadow, not paused"),
                Ok(Promoted),
                Ok(RolledBack),
                Ok(Paused),
            ],
        ),
        (
            Canary,
            [
                Ok(Paused),
                Err("cannot resume: the rollout is canary, not paused"),
                Ok(Promoted),
                Ok(RolledBack),
                Ok(Paused),
            ],
        ),
        (
            Paused,
            [
                Err("the rollout is already paused"),
                Ok(Canary),
                Ok(Promoted),
                Ok(RolledBack),
                Ok(Paused),
            ],
        ),
        (
            Promoted,
            [
                Err("cannot pause: the rollout is already promoted"),
                Err("cannot resume: the rollout is already promoted"),
                Err("cannot promote: the rollout is already promoted"),
                Ok(RolledBack),
                Err("cannot set the weight: the rollout is already promoted"),
            ],
        ),
        (
            RolledBack,
            [
                Err("cannot pause: the rollout is already rolled_back"),
                Err("cannot resume: the rollout is already rolled_back"),
                Err("cannot promote: the rollout is already rolled_back"),
                Err("cannot roll back: the rollout is already rolled_back"),
                Err("cannot set the weight: the rollout is already rolled_back"),
            ],
        ),
    ];
    for (phase, outcomes) in expected {
        for (cmd, want) in cmds.iter().zip(outcomes) {
            let mut m = in_phase(phase);
            let before = m.state().clone();
            let got = m
                .command(T0 + 5 * MIN, *cmd)
                .map(|c| c.to)
                .map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{cmd:?} from {phase}");
            if got.is_err() {
                assert_eq!(m.state(), &before, "a refused command changes nothing");
            }
        }
    }
}

#[test]
fn manual_promote_and_rollback_set_the_final_weights() {
    let mut m = in_phase(Phase::Canary);
    let c = m.command(T0 + 3 * MIN, Command::Promote).expect("promotes");
    let d = c.decision.expect("recorded");
    assert_eq!(
        (c.weight, d.verdict, d.manual, d.action.as_str()),
        (100.0, Verdict::Pass, true, "manual promote")
    );
    let c = m
        .command(T0 + 4 * MIN, Command::Rollback)
        .expect("emergency brake");
    let d = c.decision.expect("recorded");
    assert_eq!(
        (c.to, c.weight, d.verdict, d.phase),
        (Phase::RolledBack, 0.0, Verdict::Fail, Phase::Promoted)
    );
}
