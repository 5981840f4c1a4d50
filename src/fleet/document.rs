//! The documents the fleet keeps in etcd, and where.
//!
//! ```text
//! PREFIX/leader          replica id of the leader, with the leader's lease
//! PREFIX/state           FleetState: the rollout state all replicas apply
//! PREFIX/evidence        Evidence: the leader's merged window, every second
//! PREFIX/replicas/ID     Report: one replica's step window, with its lease
//! ```

use serde::{Deserialize, Serialize};

use crate::rollout::machine::RolloutState;

/// Key names under one rollout's prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    pub root: String,
    pub leader: String,
    pub state: String,
    pub evidence: String,
    pub replicas: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            root: format!("{prefix}/"),
            leader: format!("{prefix}/leader"),
            state: format!("{prefix}/state"),
            evidence: format!("{prefix}/evidence"),
            replicas: format!("{prefix}/replicas/"),
        }
    }

    pub fn replica(&self, id: &str) -> String {
        format!("{}{id}", self.replicas)
    }
}

/// The rollout state every replica applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    pub state: RolloutState,
    /// Bumped whenever a change starts a new judging window (a new step,
    /// a resume): every replica then restarts its step window, and the
    /// leader merges only windows of this epoch.
    pub epoch: u64,
    /// The replica that wrote it (the leader, or one taking an operator
    /// command).
    pub written_by: String,
    /// The backends this rollout is about.
    pub identity: String,
}

/// The leader's merged window, published every second so that every
/// replica's `/status` shows the fleet-wide evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub leader: String,
    /// The leader key's create revision: which leadership wrote this.
    pub term: i64,
    pub at_ms: u64,
    pub epoch: u64,
    /// Every live replica's window of this epoch is in it.
    pub fleet_wide: bool,
    /// Replicas merged.
    pub replicas: usize,
    /// Both roles, summed over the fleet.
    pub stable_requests: u64,
    pub candidate_requests: u64,
    pub compared: u64,
    pub matched: u64,
}
