//! One replica's part in the fleet, apart from the etcd session that
//! carries it: its [`View`] of the fleet and the rollout it applies the
//! fleet's state to. Leadership (`leader.rs`) and operator commands
//! (`commands.rs`) act through it; the session feeds it what etcd says.

use super::document::{FleetState, Keys};
use super::store::Entry;
use super::view::{Adopt, View};
use crate::rollout::RolloutHandle;
use crate::rollout::machine::RolloutState;

pub struct Replica {
    pub view: View,
    pub rollout: RolloutHandle,
}

impl Replica {
    pub fn new(keys: Keys, id: String, rollout: RolloutHandle) -> Self {
        Self {
            view: View::new(keys, id),
            rollout,
        }
    }

    /// This replica's id.
    pub fn id(&self) -> &str {
        &self.view.me
    }

    /// Takes in a key read or watched; a new fleet state reaches the
    /// rollout at once.
    pub fn on_put(&mut self, entry: &Entry) {
        if let Some(adopt) = self.view.put(entry) {
            self.adopt(adopt);
        }
    }

    /// Starts the view over from a full read of the prefix.
    pub fn resync(&mut self, entries: &[Entry]) {
        if let Some(adopt) = self.view.resync(entries) {
            self.adopt(adopt);
        }
    }

    /// Applies the fleet's state: its weight within the watch latency, and
    /// a fresh step window when the epoch moved.
    fn adopt(&self, adopt: Adopt) {
        let Adopt { doc, new_window } = adopt;
        if doc.identity != self.rollout.identity() {
            tracing::warn!(fleet = %doc.identity, ours = %self.rollout.identity(),
                "fleet: the rollout in etcd names other backends than this replica's config; applying it anyway (one prefix, one rollout)");
        }
        self.rollout.adopt(doc.state, new_window);
    }

    /// The state document this replica writes for `state` at `epoch`.
    pub fn document(&self, state: RolloutState, epoch: u64) -> Vec<u8> {
        let doc = FleetState {
            state,
            epoch,
            written_by: self.id().to_owned(),
            identity: self.rollout.identity().to_owned(),
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}
