//! The async shell around the pure rollout state machine.
//!
//! Once a second the [`RolloutTask`] takes the stats' step window, asks the
//! machine to judge it, and applies what changed: the weight and mirroring
//! (through [`Routing`], read lock-free by the data path), the metrics, the
//! state file, one log line per decision, and a webhook event per phase
//! change. Admin commands go through the same [`RolloutHandle`]. The machine
//! sits behind a mutex that only this control plane touches (a tick or an
//! admin call, microseconds each); the data path never takes it.
//!
//! A change takes effect in memory at once; its log line, counters and
//! webhook wait until the state file holds it ([`StateWriter`]), so the file
//! is never older than the last announced decision. While the file is
//! behind (a full disk), the judge makes no change that moves traffic
//! towards the candidate; rollbacks, pauses and holds still apply.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::durable::{Announcement, Durability, StateWriter};
use super::judge::{CombinedWindow, JudgeInput, Looks, Thresholds, Verdict};
use super::machine::{Change, Decision, Phase, RolloutMachine, RolloutSettings};
use super::persist::{self, LoadError};
use super::webhook::{Webhook, WebhookTask};
use crate::config::{self, Config};
use crate::routing::Routing;
use crate::split;
use crate::stats::{StatsHandle, WindowStats};
use crate::telemetry::Metrics;

mod handle;
#[cfg(test)]
mod task_tests;
#[cfg(test)]
mod tests;

/// How often the judge looks at the window.
const TICK: Duration = Duration::from_secs(1);
/// How long shutdown waits for a state file write being retried: long
/// enough for a write or two, short against a drain timeout.
const SHUTDOWN_SETTLE: Duration = Duration::from_secs(2);

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
    #[error("cannot set up rollout.webhook: {0}")]
    Webhook(#[source] crate::tls::TlsError),
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
    writer: Arc<StateWriter>,
    identity: String,
    webhook: Option<Webhook>,
    clock: Clock,
}

/// Control and inspection of the rollout; cheap to clone.
#[derive(Clone)]
pub struct RolloutHandle {
    shared: Arc<Shared>,
}

/// The background task that judges the window every second.
pub struct RolloutTask {
    shared: Arc<Shared>,
    /// The webhook's delivery task until the server takes it to spawn
    /// (in fleet mode too, where this task itself never runs).
    webhook: Option<WebhookTask>,
}

/// Converts the config's `[rollout]` into the machine's settings.
pub fn settings_from(rollout: &config::Rollout) -> RolloutSettings {
    RolloutSettings {
        steps: rollout.steps.clone(),
        thresholds: Thresholds::from(rollout),
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
    // Before the state file is touched: a webhook that cannot be set up
    // fails the start with nothing changed.
    let (webhook, webhook_task) = match &rollout.webhook {
        Some(url) => {
            let (webhook, task) = Webhook::channel(url.clone(), rollout.webhook_ca.as_deref())
                .map_err(RolloutStartError::Webhook)?;
            (Some(webhook), Some(task))
        }
        None => (None, None),
    };
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
    let writer = StateWriter::new(
        path,
        identity.clone(),
        metrics.state_persist_failures.clone(),
        metrics.state_file_behind.clone(),
    );
    let shared = Arc::new(Shared {
        machine: Mutex::new(machine),
        routing,
        stats,
        metrics,
        writer,
        identity,
        webhook,
        clock,
    });
    shared.apply_routing(&shared.lock().state().clone());
    Ok((
        RolloutHandle {
            shared: shared.clone(),
        },
        RolloutTask {
            shared,
            webhook: webhook_task,
        },
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
        self.metrics.set_canary_weight(state.weight);
        self.metrics.set_phase(state.phase);
    }

    /// Applies and records a change; called with the machine locked so
    /// changes are persisted in the order they happened. The routing takes
    /// effect at once; the decision is announced once it is on disk.
    fn apply(&self, machine: &RolloutMachine, change: &Change) -> Durability {
        let state = machine.state();
        self.apply_routing(state);
        if change.reset_window {
            self.stats.reset_step();
        }
        self.writer.submit(state, self.announcement(state, change))
    }

    /// The change's log line, counters and webhook event, to release once
    /// the state holding it is durable.
    fn announcement(
        &self,
        state: &super::machine::RolloutState,
        change: &Change,
    ) -> Option<Announcement> {
        let rolled_back = change.to == Phase::RolledBack && change.from != Phase::RolledBack;
        let event = (change.from != change.to && self.webhook.is_some()).then(|| {
            json!({
                "event": "phase_change",
                "from": change.from.as_str(),
                "to": change.to.as_str(),
                "weight": state.weight,
                "step": state.step,
                "at_ms": state.updated_ms,
                "decision": change.decision,
            })
        });
        if change.decision.is_none() && !rolled_back && event.is_none() {
            return None;
        }
        let decision = change.decision.clone();
        let (phase, weight) = (state.phase, state.weight);
        let metrics = self.metrics.clone();
        let webhook = self.webhook.clone();
        Some(Box::new(move || {
            if let Some(decision) = &decision {
                metrics.decisions[decision.verdict.index()].increment(1);
                tracing::info!(
                    target: "understudy::decision",
                    verdict = ?decision.verdict,
                    action = %decision.action,
                    phase = phase.as_str(),
                    weight,
                    reasons = %decision.reasons.join("; "),
                    evidence = %decision.evidence.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()).unwrap_or_default(),
                    "rollout decision"
                );
            }
            if rolled_back {
                metrics.rollbacks.increment(1);
            }
            if let (Some(webhook), Some(event)) = (&webhook, event) {
                webhook.send(event);
            }
        }))
    }
}

impl RolloutTask {
    /// The webhook's delivery task (when `rollout.webhook` is set), for the
    /// caller to spawn with its shutdown token; `None` once taken.
    pub fn take_webhook(&mut self) -> Option<WebhookTask> {
        self.webhook.take()
    }

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
        let state = self.shared.lock().state().clone();
        self.shared.writer.submit(&state, None);
        if !self.shared.writer.settle(SHUTDOWN_SETTLE).await {
            tracing::error!(
                state_file = %self.shared.writer.status_json(),
                "stopping with the rollout state file behind: the next start resumes from the \
                 older state on disk"
            );
        }
        tracing::info!("rollout controller stopped");
    }

    fn evaluate(&self, window: &WindowStats) {
        let now = self.shared.clock.now_ms();
        let mut machine = self.shared.lock();
        if self.shared.writer.is_behind() {
            // Judged on a copy: a step towards the candidate waits until the
            // file is current, so memory and disk never drift further apart
            // than the operator's own commands take them.
            let mut trial = machine.clone();
            if let Some(change) = judge(&mut trial, now, window) {
                if towards_candidate(&machine, &trial) {
                    tracing::debug!(
                        to = change.to.as_str(),
                        weight = trial.state().weight,
                        "the state file is behind; holding this step until it is current"
                    );
                    return;
                }
                *machine = trial;
                self.shared.apply(&machine, &change);
            }
            return;
        }
        if let Some(change) = judge(&mut machine, now, window) {
            self.shared.apply(&machine, &change);
        }
    }
}

/// Whether `after` gives the candidate more traffic than `before`.
fn towards_candidate(before: &RolloutMachine, after: &RolloutMachine) -> bool {
    after.state().weight > before.state().weight
        || (after.state().phase == Phase::Promoted && before.state().phase != Phase::Promoted)
}

/// Lets the machine judge `window` at `now`; what single-node mode does
/// every second and a fleet leader does with the merged window.
pub(crate) fn judge(
    machine: &mut RolloutMachine,
    now: u64,
    window: &WindowStats,
) -> Option<Change> {
    let elapsed = Duration::from_millis(now.saturating_sub(machine.state().step_started_ms));
    let combined = CombinedWindow::of(window);
    let input = JudgeInput::from_window(&combined, elapsed, Looks::EveryTick);
    machine.evaluate(now, &input)
}
