//! [`RolloutHandle`]: what the admin API, the fleet and the server do with
//! a running rollout — operator commands, status, settings, and states
//! decided elsewhere. Every change goes through the controller's `apply`,
//! so it is persisted and announced like the judge's own; this file never
//! writes the state file or logs a decision itself.

use http::StatusCode;
use serde_json::{Value, json};

use super::{RolloutHandle, settings_from};
use crate::config;
use crate::rollout::durable::Durability;
use crate::rollout::machine::{Change, Command, Phase, RolloutMachine, RolloutState};

impl RolloutHandle {
    /// Applies an operator command. The answer says whether the change is
    /// on disk yet (`durable`); when it is not, it took effect in memory and
    /// `warning` says what a restart would do.
    pub fn command(&self, command: Command) -> Result<Value, String> {
        let now = self.shared.clock.now_ms();
        let mut machine = self.shared.lock();
        let change = machine.command(now, command).map_err(|e| e.to_string())?;
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

    /// `POST /rollout/{command}` with its JSON body.
    pub async fn command_from_http(
        &self,
        command: &str,
        body: &[u8],
    ) -> Result<Value, (StatusCode, String)> {
        let command = match command {
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "promote" => Command::Promote,
            "rollback" => Command::Rollback,
            "weight" => {
                let value: Value = serde_json::from_slice(body).map_err(|e| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("expected JSON like {{\"percent\": 10}}: {e}"),
                    )
                })?;
                let percent = value["percent"].as_f64().ok_or_else(|| {
                    (
                        StatusCode::BAD_REQUEST,
                        "expected JSON like {\"percent\": 10}".to_owned(),
                    )
                })?;
                Command::SetWeight(percent)
            }
            other => {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown rollout command {other:?}: use pause, resume, promote, rollback or weight"
                    ),
                ));
            }
        };
        #[cfg(feature = "fleet")]
        if let Some(fleet) = self.shared.fleet.get() {
            return fleet.command(command).await;
        }
        self.command(command).map_err(|m| (StatusCode::CONFLICT, m))
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

    /// Takes a state decided elsewhere (by the fleet): applies its weight,
    /// starts a new step window when asked, and keeps it in the state file
    /// as a cache for a restart while etcd is unreachable.
    pub fn adopt(&self, state: RolloutState, new_window: bool) {
        let mut machine = self.shared.lock();
        *machine = RolloutMachine::restore(machine.settings().clone(), state);
        self.shared.apply_routing(machine.state());
        if new_window {
            self.shared.stats.reset_step();
        }
        self.shared.writer.submit(machine.state(), None);
    }

    /// Installs a machine whose `change` this replica made and the fleet
    /// accepted: applied and recorded exactly like a local decision.
    pub fn commit(&self, changed: RolloutMachine, change: &Change) {
        let mut machine = self.shared.lock();
        *machine = changed;
        self.shared.apply(&machine, change);
    }

    /// Fleet mode: operator commands go through `fleet` from now on.
    #[cfg(feature = "fleet")]
    pub fn attach_fleet(&self, fleet: crate::fleet::FleetHandle) {
        let _ = self.shared.fleet.set(fleet);
    }

    /// The rollout part of `GET /status`.
    pub fn status_json(&self) -> Value {
        #[allow(unused_mut)]
        let mut status = status_of(&self.shared.lock());
        status["state_file"] = self.shared.writer.status_json();
        #[cfg(feature = "fleet")]
        if let Some(fleet) = self.shared.fleet.get() {
            status["fleet"] = fleet.status_json();
        }
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
