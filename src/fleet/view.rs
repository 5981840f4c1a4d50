//! What one replica knows of the fleet: the keys under the prefix as its
//! last full read and its watch delivered them, its lease, and whether it
//! leads.
//!
//! Pure bookkeeping: no etcd calls and no rollout. A put of the state key
//! returns the state to adopt; the caller applies it to the rollout.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::document::{Evidence, FleetState, Keys};
use super::report::Report;
use super::store::Entry;

/// A fleet state to apply to this replica's rollout.
#[derive(Debug)]
pub struct Adopt {
    pub doc: FleetState,
    /// The epoch moved: the replica starts a fresh step window.
    pub new_window: bool,
}

/// This replica's knowledge of the fleet.
pub struct View {
    pub keys: Keys,
    /// This replica's id.
    pub me: String,
    pub connected: bool,
    pub lease: Option<i64>,
    /// The leader key's create revision while this replica leads: the
    /// fencing token every leader write is conditioned on.
    pub term: Option<i64>,
    /// Who leads (replica id, leader key create revision), as last seen.
    pub leader: Option<(String, i64)>,
    pub have_state: bool,
    /// Mod revision of `PREFIX/state` as last seen or written.
    pub state_revision: i64,
    pub epoch: u64,
    /// Every live replica's report, and when this replica saw it.
    pub reports: BTreeMap<String, (Report, Instant)>,
    pub evidence: Option<Evidence>,
    pub stale_writes_rejected: u64,
}

impl View {
    pub fn new(keys: Keys, me: String) -> Self {
        Self {
            keys,
            me,
            connected: false,
            lease: None,
            term: None,
            leader: None,
            have_state: false,
            state_revision: 0,
            epoch: 0,
            reports: BTreeMap::new(),
            evidence: None,
            stale_writes_rejected: 0,
        }
    }

    /// Rebuilds the view from a full read of the prefix. This replica
    /// still leads only if the leader key it created is still there.
    pub fn resync(&mut self, entries: &[Entry]) -> Option<Adopt> {
        let was_leading = self.term;
        self.reports.clear();
        self.leader = None;
        self.evidence = None;
        self.forget_state();
        let mut adopt = None;
        for entry in entries {
            adopt = self.put(entry).or(adopt);
        }
        self.term = match &self.leader {
            Some((id, revision)) if *id == self.me && Some(*revision) == was_leading => was_leading,
            _ => None,
        };
        if was_leading.is_some() && self.term.is_none() {
            tracing::warn!("fleet: lost the leadership while cut off from etcd");
        }
        adopt
    }

    /// A key was written (or read): remembers it; the state key's document
    /// comes back to be adopted.
    pub fn put(&mut self, entry: &Entry) -> Option<Adopt> {
        let key = entry.key.as_str();
        if key == self.keys.state {
            match serde_json::from_slice::<FleetState>(&entry.value) {
                Ok(doc) => return Some(self.take_state(doc, entry.mod_revision)),
                Err(error) => {
                    tracing::error!(%error, key, "fleet: unreadable rollout state in etcd; keeping the current weight")
                }
            }
        } else if key == self.keys.leader {
            self.leader = Some(leader_of(entry));
        } else if key == self.keys.evidence {
            self.evidence = serde_json::from_slice(&entry.value).ok();
        } else if let Some(id) = key.strip_prefix(&self.keys.replicas) {
            match serde_json::from_slice::<Report>(&entry.value) {
                Ok(report) => {
                    self.reports.insert(id.to_owned(), (report, Instant::now()));
                }
                Err(error) => {
                    tracing::warn!(%error, replica = id, "fleet: unreadable replica report; left out of the merge")
                }
            }
        }
        None
    }

    /// A key was deleted (or its lease expired).
    pub fn delete(&mut self, key: &str) {
        if key == self.keys.state {
            self.forget_state();
        } else if key == self.keys.leader {
            self.leader = None;
        } else if key == self.keys.evidence {
            self.evidence = None;
        } else if let Some(id) = key.strip_prefix(&self.keys.replicas) {
            self.reports.remove(id);
        }
    }

    /// The state key is gone (deleted to start over): the leader writes a
    /// new one; until then the weight stays.
    pub fn forget_state(&mut self) {
        self.have_state = false;
        self.state_revision = 0;
    }

    /// The fleet's state at `revision` is the one in force now.
    fn take_state(&mut self, doc: FleetState, revision: i64) -> Adopt {
        let new_window = doc.epoch != self.epoch;
        self.epoch = doc.epoch;
        self.state_revision = revision;
        self.have_state = true;
        Adopt { doc, new_window }
    }

    /// Leads, and is connected to the etcd that says so.
    pub fn leading(&self) -> bool {
        self.term.is_some() && self.connected
    }

    /// The `fleet` part of `GET /status`.
    pub fn status_json(&self, prefix: &str) -> Value {
        let replicas: Vec<Value> = self
            .reports
            .iter()
            .map(|(id, (report, seen))| {
                json!({
                    "id": id,
                    "report_age_ms": seen.elapsed().as_millis() as u64,
                    "epoch": report.epoch,
                    "weight": report.weight,
                    "requests": report.window.requests(),
                })
            })
            .collect();
        json!({
            "replica_id": self.me,
            "prefix": prefix,
            "connected": self.connected,
            "leader": self.leader.as_ref().map(|(id, _)| id),
            "is_leader": self.term.is_some(),
            "term": self.term.or(self.leader.as_ref().map(|(_, r)| *r)),
            "epoch": self.epoch,
            "state_revision": self.state_revision,
            "replicas": replicas,
            "window": self.evidence,
            "stale_writes_rejected": self.stale_writes_rejected,
        })
    }
}

/// (replica id, term) of a leader key.
pub fn leader_of(entry: &Entry) -> (String, i64) {
    (
        String::from_utf8_lossy(&entry.value).into_owned(),
        entry.create_revision,
    )
}

#[cfg(test)]
mod tests;
