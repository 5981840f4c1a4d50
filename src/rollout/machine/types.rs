//! The rollout machine's vocabulary: phases, the persistable state, decision
//! records, settings, commands, changes and errors. Plain data plus small
//! lookups; no transitions happen here (they live in `machine.rs`).

use crate::rollout::judge::{Evidence, Thresholds, Verdict};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The decision log keeps this many entries (oldest dropped first).
pub const MAX_DECISIONS: usize = 100;
/// A changed hold is logged at most this often (ms) within one step.
pub const HOLD_LOG_MIN_GAP_MS: u64 = 30_000;

pub use crate::labels::Phase;

// `Phase` is a label set (defined in `labels`, so metrics can name every
// phase); what a phase means for the machine lives here.
impl Phase {
    /// Promoted or rolled back: nothing more happens automatically.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack)
    }
}

/// Everything needed to continue a rollout after a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Current phase.
    pub phase: Phase,
    /// Index of the first configured step whose weight is `>=` the current
    /// weight (meaningful in canary and paused).
    pub step: usize,
    /// Candidate share in percent, 0..=100.
    pub weight: f64,
    /// When the current step (and its judging window) started.
    pub step_started_ms: u64,
    /// The phase a pause came from.
    pub paused_from: Option<Phase>,
    /// The last [`MAX_DECISIONS`] decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// Last change of this state.
    pub updated_ms: u64,
}

/// One recorded decision. `phase`, `step` and `weight` are where the rollout
/// was when it was taken (before the action).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When (unix ms).
    pub at_ms: u64,
    /// Phase before the action.
    pub phase: Phase,
    /// Step before the action.
    pub step: usize,
    /// Weight before the action.
    pub weight: f64,
    /// The judge's verdict; for manual commands: pass for promote, fail for
    /// rollback, hold otherwise.
    pub verdict: Verdict,
    /// What was done: "advance to 25%", "rollback", "hold", "promote",
    /// "pause: step inconclusive for 30m", "manual pause", …
    pub action: String,
    /// Why, citing numbers ("operator command" for manual ones).
    pub reasons: Vec<String>,
    /// The judge's numbers; `None` for manual commands.
    pub evidence: Option<Evidence>,
    /// Taken by an operator command rather than by the judge.
    #[serde(default)]
    pub manual: bool,
}

/// How a rollout proceeds.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutSettings {
    /// Canary weights in percent, strictly increasing (default 5, 25, 50, 100).
    pub steps: Vec<f64>,
    /// What each step is judged against.
    pub thresholds: Thresholds,
    /// A step still inconclusive after this long pauses.
    pub max_step_duration: Option<Duration>,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            steps: vec![5.0, 25.0, 50.0, 100.0],
            thresholds: Thresholds::default(),
            max_step_duration: None,
        }
    }
}

/// Why settings were rejected by [`RolloutSettings::validate`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// No canary steps.
    #[error("steps must list at least one canary weight, e.g. [5, 25, 50, 100]")]
    NoSteps,
    /// A step outside (0, 100] or not above the previous one.
    #[error("steps must be increasing percentages in (0, 100], got {0:?}")]
    BadSteps(Vec<f64>),
    /// A threshold out of its range.
    #[error("{name} must be {range}, got {value}")]
    BadThreshold {
        /// Field name.
        name: &'static str,
        /// Allowed range, human-readable.
        range: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A zero max_step_duration would pause every step at once.
    #[error("max_step_duration must be greater than zero")]
    ZeroMaxStepDuration,
}

impl RolloutSettings {
    /// Checks the settings for a config loader. The machine itself never
    /// panics on bad settings, it just behaves oddly.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.steps.is_empty() {
            return Err(SettingsError::NoSteps);
        }
        let in_range = self.steps.iter().all(|s| *s > 0.0 && *s <= 100.0);
        if !in_range || self.steps.windows(2).any(|w| w[0] >= w[1]) {
            return Err(SettingsError::BadSteps(self.steps.clone()));
        }
        let t = &self.thresholds;
        let checks = [
            (
                "max_error_rate",
                "between 0 and 1",
                t.max_error_rate,
                (0.0..=1.0),
            ),
            (
                "min_match_rate",
                "between 0 and 1",
                t.min_match_rate,
                (0.0..=1.0),
            ),
            (
                "max_latency_increase",
                ">= 0",
                t.max_latency_increase,
                (0.0..=f64::MAX),
            ),
            (
                "max_latency_increase_ms",
                ">= 0",
                t.max_latency_increase_ms,
                (0.0..=f64::MAX),
            ),
        ];
        for (name, range, value, ok) in checks {
            if !ok.contains(&value) {
                return Err(SettingsError::BadThreshold { name, range, value });
            }
        }
        if self.max_step_duration == Some(Duration::ZERO) {
            return Err(SettingsError::ZeroMaxStepDuration);
        }
        Ok(())
    }

    /// Index of the first step whose weight is `>= weight` (`steps.len()`
    /// when none is).
    pub fn step_at_or_above(&self, weight: f64) -> usize {
        let pos = self.steps.iter().position(|s| sane(*s) >= weight);
        pos.unwrap_or(self.steps.len())
    }

    /// The first step strictly above `weight`, with its (clamped) weight.
    pub fn step_above(&self, weight: f64) -> Option<(usize, f64)> {
        let pos = self.steps.iter().position(|s| sane(*s) > weight);
        pos.map(|i| (i, sane(self.steps[i])))
    }
}

/// A weight usable as traffic share: clamped to 0..=100, NaN → 0.
fn sane(w: f64) -> f64 {
    if w.is_nan() { 0.0 } else { w.clamp(0.0, 100.0) }
}

/// An operator command.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Stop automation at the current weight.
    Pause,
    /// Continue automation from where it was paused.
    Resume,
    /// Send everything to the candidate now. Final.
    Promote,
    /// Send nothing to the candidate now. Final.
    Rollback,
    /// Set the candidate weight (percent) and pause automation.
    SetWeight(f64),
}

impl Command {
    /// The command as a verb, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Promote => "promote",
            Command::Rollback => "roll back",
            Command::SetWeight(_) => "set the weight",
        }
    }
}

/// A state change for the shell to persist and apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Phase before.
    pub from: Phase,
    /// Phase after (may equal `from`, e.g. a logged hold).
    pub to: Phase,
    /// Candidate weight to apply now, in percent.
    pub weight: f64,
    /// Start a fresh judging window (a new step began).
    pub reset_window: bool,
    /// The decision recorded, if any.
    pub decision: Option<Decision>,
}

/// Why an operator command was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// Resume while not paused.
    #[error("cannot resume: the rollout is {phase}, not paused")]
    NotPaused {
        /// Current phase.
        phase: Phase,
    },
    /// Pause while paused.
    #[error("the rollout is already paused")]
    AlreadyPaused,
    /// Any command but rollback-after-promotion on a finished rollout.
    #[error("cannot {action}: the rollout is already {phase}")]
    Finished {
        /// The refused command, as a verb.
        action: &'static str,
        /// Current phase.
        phase: Phase,
    },
    /// SetWeight outside 0..=100 or not a number.
    #[error("weight must be a percentage between 0 and 100, got {0}")]
    InvalidWeight(f64),
}
