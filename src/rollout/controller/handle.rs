//! [`RolloutHandle`]: what the admin API and the server do with a running
//! rollout — operator commands, status, settings — and the way in for
//! states decided elsewhere (`adopt`, `commit`). Every change goes through
//! the controller's `apply`, so it is persisted and announced like the
//! judge's own; this file never writes the state file or logs a decision
//! itself.

use serde_json::{Value, json};

use super::{RolloutHandle, settings_from};
use crate::config;
use crate::rollout::durable::Durability;
use crate::rollout::machine::{Change, Command, CommandError, Phase, RolloutMachine, RolloutState};

impl RolloutHandle {
    /// Applies an operator command. The answer says whether the change is
    /// on disk yet (`durable`); when it is not, it took effect in memory and
    /// `warning` says what a restart would do.
    pub fn command(&self, command: Command) -> Result<Value, CommandError> {
        let now = self.shared.clock.now_ms();
        let mut machine = self.shared.lock();
        let change = machine.command(now, command)?;
        let durability = self.shared.apply(&machine, &change);
        let mut status = status_of(&machine);
        status["durable"] = json!(durability == Durability::Durable);
        if let Durability::Pending(error) = durability {
            status["warning"] = json!(format!(
                "applied in memory but not yet written to the state file ({error}); a restart \
                 now would resume from the older state on disk; retrying until it is written"
            ));
        }
        status["state_file"] = self.shared.writer.status_json();
        Ok(status)
    }

    /// Unix milliseconds on the rollout's clock.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// A copy of the machine, to try a change on before it is agreed on.
    pub fn machine(&self) -> RolloutMachine {
        self.shared.lock().clone()
    }

    /// What identifies this rollout (its backends).
    pub fn identity(&self) -> &str {
        &self.shared.identity
    }

    /// Takes a state decided elsewhere: applies its weight, starts a new
    /// step window when asked, and keeps it in the state file (as a cache
    /// for a restart while the place it was decided is unreachable).
    pub fn adopt(&self, state: RolloutState, new_window: bool) {
        let mut machine = self.shared.lock();
        *machine = RolloutMachine::restore(machine.settings().clone(), state);
        self.shared.apply_routing(machine.state());
        if new_window {
            self.shared.stats.reset_step();
        }
        self.shared.writer.submit(machine.state(), None);
    }

    /// Installs a machine whose `change` this process made and others
    /// agreed on: applied and recorded exactly like a local decision.
    pub fn commit(&self, changed: RolloutMachine, change: &Change) {
        let mut machine = self.shared.lock();
        *machine = changed;
        self.shared.apply(&machine, change);
    }

    /// The rollout part of `GET /status`.
    pub fn status_json(&self) -> Value {
        let mut status = status_of(&self.shared.lock());
        status["state_file"] = self.shared.writer.status_json();
        status
    }

    /// True while the state file on disk is older than the rollout state
    /// in memory (its writes are failing and being retried).
    pub fn state_file_behind(&self) -> bool {
        self.shared.writer.is_behind()
    }

    /// Current phase and weight.
    pub fn phase_and_weight(&self) -> (Phase, f64) {
        let machine = self.shared.lock();
        (machine.state().phase, machine.state().weight)
    }

    /// Config reload: new thresholds and steps apply to the next judgement.
    pub fn update_settings(&self, rollout: &config::Rollout) {
        let settings = settings_from(rollout);
        if let Err(error) = settings.validate() {
            tracing::error!(%error, "reloaded rollout settings rejected");
            return;
        }
        self.shared.lock().set_settings(settings);
    }
}

fn status_of(machine: &RolloutMachine) -> Value {
    let state = machine.state();
    let settings = machine.settings();
    json!({
        "phase": state.phase.as_str(),
        "weight": state.weight,
        "step": (state.phase == Phase::Canary || state.weight > 0.0).then_some(state.step),
        "steps": settings.steps,
        "step_started_ms": state.step_started_ms,
        "paused_from": state.paused_from.map(|p| p.as_str()),
        "rollout_configured": true,
        "thresholds": settings.thresholds,
        "max_step_duration_s": settings.max_step_duration.map(|d| d.as_secs_f64()),
        "decisions": state.decisions,
        "current": machine.current().map(|(at_ms, j)| json!({
            "at_ms": at_ms,
            "verdict": j.verdict,
            "reasons": j.reasons,
            "checks": j.checks,
            "evidence": j.evidence,
        })),
    })
}
