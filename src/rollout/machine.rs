//! The rollout state machine: shadow → canary steps → promoted, with
//! rolled_back and paused on the side. Pure and synchronous: time comes in
//! as `now_ms` (unix milliseconds), verdicts come from [`judge`], commands
//! from the operator; every transition returns a [`Change`] for the shell to
//! persist and apply. It never does I/O, reads clocks or panics.
//!
//! # Decisions made here
//! * **Decision log**: pass, fail, pause and manual decisions are always
//!   recorded. A hold is recorded when it is the first judgement logged in
//!   the step or when its per-criterion verdicts ([`Criteria`]) differ from
//!   the last logged hold's — and then at most once per
//!   [`HOLD_LOG_MIN_GAP_MS`], so a criterion flapping at its boundary cannot
//!   flush the log. The log keeps the last [`MAX_DECISIONS`].
//! * **Steps**: in canary, `step` is the index of the first configured step
//!   whose weight is `>=` the current weight. A pass moves to the first step
//!   strictly above the current weight, or to promoted (weight 100) when none
//!   is left — so passing the last step promotes even if it is not 100.
//!   A pass in shadow moves to the first step above 0.
//! * **max_step_duration**: a step (shadow or canary) whose judgement is
//!   still hold once `now - step_started_ms >= max_step_duration` pauses at
//!   its weight, recording "pause: step inconclusive for …" with the hold's
//!   reasons and evidence. Age is counted from the step start, so a restart
//!   (fresh window, old step) does not restart the clock.
//! * **Resume** returns to `paused_from` at the current weight with a fresh
//!   step (window reset, `step_started_ms = now`). From shadow with weight 0
//!   it is shadow again; with any weight above 0 (a manual weight) it is
//!   canary at that weight, and its next pass moves to the first configured
//!   step above it.
//! * **Commands** on a finished rollout fail, except rollback after
//!   promotion (the emergency brake). `SetWeight` pauses automation at that
//!   weight (also from paused, keeping the original `paused_from`).

#[cfg(test)]
mod tests;
mod types;

pub use types::{
    Change, Command, CommandError, Decision, HOLD_LOG_MIN_GAP_MS, MAX_DECISIONS, Phase,
    RolloutSettings, RolloutState, SettingsError,
};

use super::judge::{Criteria, Evidence, JudgeInput, Judgement, Verdict, judge};
use std::time::Duration;

/// The rollout state machine; see the module doc.
#[derive(Clone, Debug)]
pub struct RolloutMachine {
    settings: RolloutSettings,
    state: RolloutState,
    /// The latest judgement and when it was made: shown while it holds,
    /// never persisted (the decision log keeps only changes).
    current: Option<(u64, Judgement)>,
}

impl RolloutMachine {
    /// A new rollout in shadow (candidate weight 0) starting at `now_ms`.
    pub fn new(settings: RolloutSettings, now_ms: u64) -> Self {
        let state = RolloutState {
            phase: Phase::Shadow,
            step: 0,
            weight: 0.0,
            step_started_ms: now_ms,
            paused_from: None,
            decisions: Vec::new(),
            updated_ms: now_ms,
        };
        Self {
            settings,
            state,
            current: None,
        }
    }

    /// Continues exactly where a persisted state left off (only an
    /// over-long decision log is trimmed).
    pub fn restore(settings: RolloutSettings, mut state: RolloutState) -> Self {
        trim(&mut state.decisions);
        Self {
            settings,
            state,
            current: None,
        }
    }

    /// The current state (persist this).
    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    /// The latest judgement (`now_ms`, judgement); `None` before the first
    /// evaluation in shadow or canary.
    pub fn current(&self) -> Option<&(u64, Judgement)> {
        self.current.as_ref()
    }

    /// The settings in force.
    pub fn settings(&self) -> &RolloutSettings {
        &self.settings
    }

    /// Replaces the settings (config reload). The weight is kept; the step
    /// index is recomputed against the new steps.
    pub fn set_settings(&mut self, settings: RolloutSettings) {
        self.settings = settings;
        if matches!(self.state.phase, Phase::Canary | Phase::Paused) {
            self.state.step = self.settings.step_at_or_above(self.state.weight);
        }
    }

    /// Judges the current window in shadow or canary (other phases: `None`).
    /// Returns `Some` when the state changed, including a logged hold.
    pub fn evaluate(&mut self, now_ms: u64, input: &JudgeInput) -> Option<Change> {
        let phase = self.state.phase;
        if !matches!(phase, Phase::Shadow | Phase::Canary) {
            return None;
        }
        let j = judge(input, &self.settings.thresholds);
        self.current = Some((now_ms, j.clone()));
        match j.verdict {
            Verdict::Fail => Some(self.finish(now_ms, Phase::RolledBack, "rollback", Some(j))),
            Verdict::Pass => Some(self.advance(now_ms, j)),
            Verdict::Hold => self.hold(now_ms, j),
        }
    }

    /// Applies an operator command; see the module doc for what each does.
    pub fn command(&mut self, now_ms: u64, cmd: Command) -> Result<Change, CommandError> {
        let phase = self.state.phase;
        let finished = |action| CommandError::Finished { action, phase };
        match cmd {
            Command::Rollback if phase == Phase::RolledBack => Err(finished("roll back")),
            Command::Rollback => {
                Ok(self.finish(now_ms, Phase::RolledBack, "manual rollback", None))
            }
            _ if phase.is_finished() => Err(finished(cmd.verb())),
            Command::Promote => Ok(self.finish(now_ms, Phase::Promoted, "manual promote", None)),
            Command::Pause if phase == Phase::Paused => Err(CommandError::AlreadyPaused),
            Command::Pause => {
                let action = Some("manual pause".to_owned());
                Ok(self.pause(now_ms, self.state.weight, action))
            }
            Command::SetWeight(w) if !(0.0..=100.0).contains(&w) => {
                Err(CommandError::InvalidWeight(w))
            }
            Command::SetWeight(w) => {
                Ok(self.pause(now_ms, w, Some(format!("manual set weight {w}%"))))
            }
            Command::Resume if phase != Phase::Paused => Err(CommandError::NotPaused { phase }),
            Command::Resume => Ok(self.resume(now_ms)),
        }
    }

    fn advance(&mut self, now_ms: u64, j: Judgement) -> Change {
        let next = self.settings.step_above(self.state.weight);
        match next {
            Some((step, weight)) => {
                let action = format!("advance to {weight}%");
                let decision =
                    self.decision(now_ms, j.verdict, action, j.reasons, Some(j.evidence));
                self.enter(now_ms, Phase::Canary, step, weight, decision)
            }
            None => self.finish(now_ms, Phase::Promoted, "promote", Some(j)),
        }
    }

    fn hold(&mut self, now_ms: u64, j: Judgement) -> Option<Change> {
        let age = now_ms.saturating_sub(self.state.step_started_ms);
        if let Some(max) = self.settings.max_step_duration
            && u128::from(age) >= max.as_millis()
        {
            let action = format!("pause: step inconclusive for {}", fmt_duration(max));
            let d = self.decision(now_ms, Verdict::Hold, action, j.reasons, Some(j.evidence));
            let change = self.pause(now_ms, self.state.weight, None);
            return Some(self.with_decision(change, d));
        }
        if !self.hold_worth_logging(now_ms, &j.evidence.criteria) {
            return None;
        }
        let d = self.decision(
            now_ms,
            Verdict::Hold,
            "hold".into(),
            j.reasons,
            Some(j.evidence),
        );
        self.state.updated_ms = now_ms;
        Some(self.record(self.state.phase, false, d))
    }

    fn hold_worth_logging(&self, now_ms: u64, criteria: &Criteria) -> bool {
        let s = &self.state;
        let last_hold_in_step = s
            .decisions
            .last()
            .filter(|d| !d.manual && d.verdict == Verdict::Hold && d.at_ms >= s.step_started_ms);
        match last_hold_in_step {
            None => true,
            Some(d) => {
                let same = d.evidence.as_ref().map(|e| e.criteria) == Some(*criteria);
                !same && now_ms.saturating_sub(d.at_ms) >= HOLD_LOG_MIN_GAP_MS
            }
        }
    }

    /// Pauses at `weight`. A manual `action` is recorded; `None` leaves the
    /// decision to the caller (see `with_decision`).
    fn pause(&mut self, now_ms: u64, weight: f64, action: Option<String>) -> Change {
        let reasons = vec!["operator command".to_owned()];
        let d = action.map(|a| self.decision(now_ms, Verdict::Hold, a, reasons, None));
        let from = self.state.phase;
        if from != Phase::Paused {
            self.state.paused_from = Some(from);
        }
        self.state.phase = Phase::Paused;
        self.state.weight = weight;
        self.state.step = self.settings.step_at_or_above(weight);
        self.state.updated_ms = now_ms;
        let change = Change {
            from,
            to: Phase::Paused,
            weight,
            reset_window: false,
            decision: None,
        };
        match d {
            Some(d) => self.with_decision(change, Decision { manual: true, ..d }),
            None => change,
        }
    }

    fn resume(&mut self, now_ms: u64) -> Change {
        let weight = self.state.weight;
        let back_to_shadow = weight <= 0.0 && self.state.paused_from == Some(Phase::Shadow);
        let (phase, step) = if back_to_shadow {
            (Phase::Shadow, 0)
        } else {
            (Phase::Canary, self.settings.step_at_or_above(weight))
        };
        let action = format!("manual resume: {} at {weight}%", phase.as_str());
        let reasons = vec!["operator command".into()];
        let d = self.decision(now_ms, Verdict::Hold, action, reasons, None);
        self.enter(now_ms, phase, step, weight, Decision { manual: true, ..d })
    }

    /// Starts a fresh step (new window) in `phase` at `weight`.
    fn enter(
        &mut self,
        now_ms: u64,
        phase: Phase,
        step: usize,
        weight: f64,
        d: Decision,
    ) -> Change {
        let from = self.state.phase;
        let s = &mut self.state;
        (s.phase, s.step, s.weight, s.paused_from) = (phase, step, weight, None);
        (s.step_started_ms, s.updated_ms) = (now_ms, now_ms);
        self.record(from, true, d)
    }

    /// Ends the rollout: promoted (weight 100) or rolled back (weight 0).
    fn finish(&mut self, now_ms: u64, to: Phase, action: &str, j: Option<Judgement>) -> Change {
        let weight = if to == Phase::Promoted { 100.0 } else { 0.0 };
        let manual = j.is_none();
        let (verdict, reasons, evidence) = match j {
            Some(j) => (j.verdict, j.reasons, Some(j.evidence)),
            None if to == Phase::Promoted => (Verdict::Pass, vec!["operator command".into()], None),
            None => (Verdict::Fail, vec!["operator command".into()], None),
        };
        let d = self.decision(now_ms, verdict, action.into(), reasons, evidence);
        let from = self.state.phase;
        let step = self.settings.step_at_or_above(weight);
        let s = &mut self.state;
        (s.phase, s.weight, s.paused_from, s.updated_ms) = (to, weight, None, now_ms);
        s.step = if to == Phase::Promoted { step } else { s.step };
        self.record(from, true, Decision { manual, ..d })
    }

    fn decision(
        &self,
        now_ms: u64,
        verdict: Verdict,
        action: String,
        reasons: Vec<String>,
        evidence: Option<Evidence>,
    ) -> Decision {
        Decision {
            at_ms: now_ms,
            phase: self.state.phase,
            step: self.state.step,
            weight: self.state.weight,
            verdict,
            action,
            reasons,
            evidence,
            manual: false,
        }
    }

    /// Appends `d` to the log and describes the change from `from`.
    fn record(&mut self, from: Phase, reset_window: bool, d: Decision) -> Change {
        self.state.decisions.push(d.clone());
        trim(&mut self.state.decisions);
        Change {
            from,
            to: self.state.phase,
            weight: self.state.weight,
            reset_window,
            decision: Some(d),
        }
    }

    /// Records `d` for a change already applied to the state.
    fn with_decision(&mut self, change: Change, d: Decision) -> Change {
        let rest = self.record(change.from, change.reset_window, d);
        Change {
            from: change.from,
            ..rest
        }
    }
}

fn trim(decisions: &mut Vec<Decision>) {
    let excess = decisions.len().saturating_sub(MAX_DECISIONS);
    decisions.drain(..excess);
}

/// "30m", "1h30m", "45s", "1500ms".
fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (v, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out
}
