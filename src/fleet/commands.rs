//! Operator commands in fleet mode: any replica's admin API may take one,
//! and it reaches every replica as a compare-and-swap write of the fleet's
//! state, so it never overwrites a change it has not seen.

use serde_json::Value;

use super::FleetCommandError;
use super::replica::Replica;
use super::store::{Guarded, Store, StoreError, modified_at};
use crate::rollout::machine::Command;

/// An operator command tries this often when others write at the same time.
const COMMAND_ATTEMPTS: usize = 3;

/// Why an operator command did not happen.
pub enum CommandFailure {
    /// Refused, for the operator to see.
    Refused(FleetCommandError),
    /// etcd failed: the operator is told it is unreachable and the session
    /// starts over.
    Store(StoreError),
}

impl Replica {
    /// Applies `command` to the fleet's state as this replica last saw it
    /// and writes the result only if no one else wrote since. The answer is
    /// the rollout's status once it applies here.
    pub async fn command<S: Store>(
        &mut self,
        store: &mut S,
        command: Command,
    ) -> Result<Value, CommandFailure> {
        for _ in 0..COMMAND_ATTEMPTS {
            if !self.view.have_state {
                return Err(CommandFailure::Refused(FleetCommandError::NoState));
            }
            let mut machine = self.rollout.machine();
            let now = self.rollout.now_ms();
            let change = machine
                .command(now, command)
                .map_err(|e| CommandFailure::Refused(e.into()))?;
            let epoch = self.view.epoch + u64::from(change.reset_window);
            let doc = self.document(machine.state().clone(), epoch);
            let key = self.view.keys.state.clone();
            let when = vec![modified_at(&key, self.view.state_revision)];
            let written = store
                .put_if("an operator command", when, &key, doc, None, &key)
                .await
                .map_err(CommandFailure::Store)?;
            match written {
                Guarded::Written(revision) => {
                    self.view.state_revision = revision;
                    self.view.epoch = epoch;
                    self.rollout.commit(machine, &change);
                    tracing::info!(command = ?command, "fleet: operator command applied fleet-wide");
                    return Ok(self.rollout.status_json());
                }
                Guarded::Refused(Some(current)) => self.on_put(&current),
                Guarded::Refused(None) => self.view.forget_state(),
            }
        }
        Err(CommandFailure::Refused(FleetCommandError::Contended))
    }
}
