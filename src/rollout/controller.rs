//! The async shell around the pure rollout state machine.
//!
//! Once a second the [`RolloutTask`] takes the stats' step window, asks the
//! machine to judge it, and applies what changed: the weight and mirroring
//! (through [`Routing`], read lock-free by the data path), the metrics, the
//! state file, one log line per decision, and a webhook event per phase
//! change. Admin commands go through the same [`RolloutHandle`]. The machine
//! sits behind a mutex that only this control plane touches (a tick or an
//! admin call, microseconds each); the data path never takes it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::judge::{JudgeInput, Looks, SideWindow, Verdict};
use super::machine::{Change, Command, Decision, Phase, RolloutMachine, RolloutSettings};
use super::persist::{self, LoadError};
use super::webhook::Webhook;
use crate::config::{self, Config};
use crate::routing::Routing;
use crate::split;
use crate::stats::{StatsHandle, WindowStats};
use crate::telemetry::Metrics;

/// How often the judge looks at the window.
const TICK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RolloutStartError {
    #[error(transparent)]
    State(#[from] LoadError),
    #[error("invalid rollout settings: {0}")]
    Settings(String),
    #[error("cannot write rollout state file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Wall-clock milliseconds that advance with tokio's clock, so paused-time
/// tests move the rollout's clock too.
#[derive(Clone, Copy)]
struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    fn new() -> Self {
        Self {
            base_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            base: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }
}

struct Shared {
    machine: Mutex<RolloutMachine>,
    routing: Arc<Routing>,
    stats: StatsHandle,
    metrics: Arc<Metrics>,
    state_file: PathBuf,
    identity: String,
    webhook: Option<Webhook>,
    clock: Clock,
    /// Set in fleet mode: commands then go through etcd.
    #[cfg(feature = "fleet")]
    fleet: std::sync::OnceLock<crate::fleet::FleetHandle>,
}

/// Control and inspection of the rollout; cheap to clone.
#[derive(Clone)]
pub struct RolloutHandle {
    shared: Arc<Shared>,
}

/// The background task that judges the window every second.
pub struct RolloutTask {
    shared: Arc<Shared>,
}

/// Converts the config's `[rollout]` into the machine's settings.
pub fn settings_from(rollout: &config::Rollout) -> RolloutSettings {
    RolloutSettings {
        steps: rollout.steps.clone(),
        thresholds: super::judge::Thresholds {
            min_requests: rollout.min_requests,
            interval: rollout.interval,
            max_error_rate: rollout.max_error_rate,
            max_latency_increase: rollout.max_latency_increase,
            max_latency_increase_ms: rollout.max_latency_increase_ms,
            min_match_rate: rollout.min_match_rate,
            match_unit: rollout.match_unit,
        },
        max_step_duration: rollout.max_step_duration,
    }
}

/// Restores (or starts) the rollout and applies its weight before the
/// first request is served.
pub fn start(
    config: &Config,
    reset_state: bool,
    routing: Arc<Routing>,
    stats: StatsHandle,
    metrics: Arc<Metrics>,
) -> Result<(RolloutHandle, RolloutTask), RolloutStartError> {
    let rollout = config
        .rollout
        .as_ref()
        .ok_or_else(|| RolloutStartError::Settings("no [rollout] section".into()))?;
    let settings = settings_from(rollout);
    settings
        .validate()
        .map_err(|e| RolloutStartError::Settings(e.to_string()))?;
    let clock = Clock::new();
    let identity = config.identity();
    let path = rollout.state_file.clone();
    let now = clock.now_ms();
    if reset_state && path.exists() {
        tracing::warn!(path = %path.display(), "--reset-state: discarding the persisted rollout state");
    }
    let loaded = if reset_state {
        Ok(None)
    } else {
        persist::load(&path, &identity)
    };
    let machine = match loaded {
        Ok(Some(state)) => {
            tracing::info!(path = %path.display(), phase = state.phase.as_str(), weight = state.weight, "resuming rollout from persisted state");
            RolloutMachine::restore(settings, state)
        }
        Ok(None) => RolloutMachine::new(settings, now),
        Err(error @ LoadError::Corrupt { .. }) => {
            let aside = persist::quarantine(&path).ok();
            tracing::error!(%error, moved_to = ?aside, "starting safe: all traffic on stable, rollout paused");
            safe_start(settings, now, &error.to_string())
        }
        Err(error) => return Err(error.into()),
    };
    persist::save(&path, &identity, machine.state()).map_err(|source| {
        RolloutStartError::Write {
            path: path.clone(),
            source,
        }
    })?;
    let shared = Arc::new(Shared {
        machine: Mutex::new(machine),
        routing,
        stats,
        metrics,
        state_file: path,
        identity,
        webhook: rollout.webhook.clone().map(Webhook::spawn),
        clock,
        #[cfg(feature = "fleet")]
        fleet: std::sync::OnceLock::new(),
    });
    shared.apply_routing(&shared.lock().state().clone());
    Ok((
        RolloutHandle {
            shared: shared.clone(),
        },
        RolloutTask { shared },
    ))
}

/// A paused rollout on stable, with the reason in the decision log.
fn safe_start(settings: RolloutSettings, now: u64, reason: &str) -> RolloutMachine {
    let mut state = RolloutMachine::new(settings.clone(), now).state().clone();
    state.phase = Phase::Paused;
    state.paused_from = Some(Phase::Shadow);
    state.decisions.push(Decision {
        at_ms: now,
        phase: Phase::Paused,
        step: 0,
        weight: 0.0,
        verdict: Verdict::Hold,
        action: "pause: persisted state unusable, all traffic on stable".into(),
        reasons: vec![
            reason.to_owned(),
            "resume to start the rollout over in shadow".into(),
        ],
        evidence: None,
        manual: false,
    });
    RolloutMachine::restore(settings, state)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RolloutMachine> {
        // A panic while holding the lock leaves a consistent machine (its
        // methods do not panic midway), so poisoning is safe to ignore.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply_routing(&self, state: &super::machine::RolloutState) {
        let mirroring = !matches!(state.phase, Phase::Promoted | Phase::RolledBack);
        self.routing
            .set(split::weight_to_bp(state.weight), mirroring);
        self.metrics.weight.set(state.weight);
        self.metrics.set_phase(state.phase.as_str());
    }

    /// Applies and records a change; called with the machine locked so
    /// changes are persisted in the order they happened.
    fn apply(&self, machine: &RolloutMachine, change: &Change) {
        let state = machine.state();
        self.apply_routing(state);
        if change.reset_window {
            self.stats.reset_step();
        }
        if let Some(decision) = &change.decision {
            let index = match decision.verdict {
                Verdict::Pass => 0,
                Verdict::Fail => 1,
                Verdict::Hold => 2,
            };
            self.metrics.decisions[index].increment(1);
            tracing::info!(
                target: "understudy::decision",
                verdict = ?decision.verdict,
                action = %decision.action,
                phase = state.phase.as_str(),
                weight = state.weight,
                reasons = %decision.reasons.join("; "),
                evidence = %decision.evidence.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()).unwrap_or_default(),
                "rollout decision"
            );
        }
        if change.to == Phase::RolledBack && change.from != Phase::RolledBack {
            self.metrics.rollbacks.increment(1);
        }
        if let Err(error) = persist::save(&self.state_file, &self.identity, state) {
            tracing::error!(path = %self.state_file.display(), %error, "cannot persist rollout state");
        }
        if change.from != change.to
            && let Some(webhook) = &self.webhook
        {
            webhook.send(json!({
                "event": "phase_change",
                "from": change.from.as_str(),
                "to": change.to.as_str(),
                "weight": state.weight,
                "step": state.step,
                "at_ms": state.updated_ms,
                "decision": change.decision,
            }));
        }
    }
}

impl RolloutTask {
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("rollout controller started");
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let Some(snapshot) = self.shared.stats.snapshot().await else {
                break;
            };
            self.evaluate(&snapshot.step);
        }
        let machine = self.shared.lock();
        if let Err(error) = persist::save(
            &self.shared.state_file,
            &self.shared.identity,
            machine.state(),
        ) {
            tracing::error!(%error, "cannot persist rollout state on shutdown");
        }
        tracing::info!("rollout controller stopped");
    }

    fn evaluate(&self, window: &WindowStats) {
        let now = self.shared.clock.now_ms();
        let mut machine = self.shared.lock();
        if let Some(change) = judge(&mut machine, now, window) {
            self.shared.apply(&machine, &change);
        }
    }
}

/// Lets the machine judge `window` at `now`; what single-node mode does
/// every second and a fleet leader does with the merged window.
pub(crate) fn judge(
    machine: &mut RolloutMachine,
    now: u64,
    window: &WindowStats,
) -> Option<Change> {
    let elapsed = Duration::from_millis(now.saturating_sub(machine.state().step_started_ms));
    let stable = window.stable.combined();
    let candidate = window.candidate.combined();
    let input = JudgeInput {
        stable: side(&stable),
        candidate: side(&candidate),
        compared: window.compared(),
        matched: window.comparisons_of(crate::compare::Outcome::Match),
        elapsed,
        looks: Looks::EveryTick,
        rows: window.row_clusters,
    };
    machine.evaluate(now, &input)
}

fn side(stats: &crate::stats::RoleStats) -> SideWindow<'_> {
    SideWindow {
        requests: stats.requests(),
        errors: stats.errors(),
        client_errors: stats.client_errors(),
        latency_us: &stats.latency_us,
    }
}

impl RolloutHandle {
    /// Applies an operator command.
    pub fn command(&self, command: Command) -> Result<Value, String> {
        let now = self.shared.clock.now_ms();
        let mut machine = self.shared.lock();
        let change = machine.command(now, command).map_err(|e| e.to_string())?;
        self.shared.apply(&machine, &change);
        Ok(status_of(&machine))
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
    pub fn adopt(&self, state: super::machine::RolloutState, new_window: bool) {
        let mut machine = self.shared.lock();
        *machine = RolloutMachine::restore(machine.settings().clone(), state);
        self.shared.apply_routing(machine.state());
        if new_window {
            self.shared.stats.reset_step();
        }
        if let Err(error) = persist::save(
            &self.shared.state_file,
            &self.shared.identity,
            machine.state(),
        ) {
            tracing::error!(path = %self.shared.state_file.display(), %error, "cannot cache the fleet's rollout state");
        }
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
        #[cfg(feature = "fleet")]
        if let Some(fleet) = self.shared.fleet.get() {
            status["fleet"] = fleet.status_json();
        }
        status
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
