//! Leadership: the campaign for the leader key, the leader's second (start
//! the fleet's state, judge the merged window, publish the evidence), and
//! fencing.
//!
//! The leader key is created with the replica's lease, so it disappears
//! when a leader stops renewing; its create revision is the leader's term.
//! Every leader write is conditioned on that create revision: a paused or
//! partitioned old leader's write is refused once another replica holds
//! the key, and that refusal is how the old leader learns to step down.

use super::document::Evidence;
use super::replica::Replica;
use super::report;
use super::store::{Entry, Guarded, Store, StoreError, created_at, modified_at};
use super::view::leader_of;
use crate::rollout::controller::judge;

impl Replica {
    /// This replica's share of leadership for one second: lead if it
    /// holds the term, campaign if no one leads. Leader work comes first
    /// in a tick: after a pause, the fenced write is what tells an old
    /// leader that it was replaced.
    pub async fn take_part<S: Store>(
        &mut self,
        store: &mut S,
        lease: i64,
    ) -> Result<(), StoreError> {
        match self.view.term {
            Some(term) => self.lead(store, term).await,
            None if self.view.leader.is_none() => self.campaign(store, lease).await,
            None => Ok(()),
        }
    }

    /// Tries to become the leader: create the leader key with our lease,
    /// only if no one holds it.
    async fn campaign<S: Store>(&mut self, store: &mut S, lease: i64) -> Result<(), StoreError> {
        let me = self.id().to_owned();
        let key = self.view.keys.leader.clone();
        let when = vec![created_at(&key, 0)];
        match store
            .put_if(
                "a leader campaign",
                when,
                &key,
                me.clone().into_bytes(),
                Some(lease),
                &key,
            )
            .await?
        {
            Guarded::Written(revision) => {
                tracing::info!(term = revision, "fleet: this replica leads the rollout now");
                self.view.term = Some(revision);
                self.view.leader = Some((me, revision));
            }
            Guarded::Refused(Some(entry)) => self.view.leader = Some(leader_of(&entry)),
            Guarded::Refused(None) => {}
        }
        Ok(())
    }

    /// The leader's second: start the fleet state if there is none, judge
    /// the merged window, publish the evidence. Every write is fenced on
    /// `term`.
    async fn lead<S: Store>(&mut self, store: &mut S, term: i64) -> Result<(), StoreError> {
        if !self.view.have_state {
            return self.start_state(store, term).await;
        }
        let now = self.rollout.now_ms();
        let merged = report::merge(self.view.reports.values().map(|(r, _)| r), self.view.epoch);
        let mut machine = self.rollout.machine();
        let (leader_key, state_key) = (self.view.keys.leader.clone(), self.view.keys.state.clone());
        // Only the whole fleet's evidence decides: a replica still on the
        // previous epoch (it has not seen the last change yet) holds the
        // judgement for a second.
        if merged.fleet_wide
            && !machine.state().phase.is_finished()
            && let Some(change) = judge(&mut machine, now, &merged.window)
        {
            let epoch = self.view.epoch + u64::from(change.reset_window);
            let doc = self.document(machine.state().clone(), epoch);
            let when = vec![
                created_at(&leader_key, term),
                modified_at(&state_key, self.view.state_revision),
            ];
            match store
                .put_if(
                    "a rollout decision",
                    when,
                    &state_key,
                    doc,
                    None,
                    &leader_key,
                )
                .await?
            {
                Guarded::Written(revision) => {
                    self.view.state_revision = revision;
                    self.view.epoch = epoch;
                    self.rollout.commit(machine, &change);
                }
                Guarded::Refused(current) => {
                    if self.refused(current, term) {
                        return Ok(());
                    }
                    // The state moved (an operator command): the watch brings
                    // it, and the next second judges again.
                }
            }
        }
        let evidence = Evidence {
            leader: self.id().to_owned(),
            term,
            at_ms: now,
            epoch: self.view.epoch,
            fleet_wide: merged.fleet_wide,
            replicas: merged.merged,
            stable_requests: merged.window.stable.combined().requests(),
            candidate_requests: merged.window.candidate.combined().requests(),
            compared: merged.window.compared(),
            matched: merged.window.comparisons_of(crate::compare::Outcome::Match),
        };
        let body = serde_json::to_vec(&evidence).unwrap_or_default();
        let key = self.view.keys.evidence.clone();
        let when = vec![created_at(&leader_key, term)];
        match store
            .put_if("the evidence", when, &key, body, None, &leader_key)
            .await?
        {
            Guarded::Written(_) => self.view.evidence = Some(evidence),
            Guarded::Refused(current) => {
                self.refused(current, term);
            }
        }
        Ok(())
    }

    /// A new fleet: the first leader starts it from its own state (the
    /// cached one after a restart, else a fresh rollout in shadow).
    async fn start_state<S: Store>(&mut self, store: &mut S, term: i64) -> Result<(), StoreError> {
        let state = self.rollout.machine().state().clone();
        let epoch = self.view.epoch + 1;
        let doc = self.document(state.clone(), epoch);
        let (key, leader_key) = (self.view.keys.state.clone(), self.view.keys.leader.clone());
        let when = vec![created_at(&leader_key, term), created_at(&key, 0)];
        match store
            .put_if(
                "the first rollout state",
                when,
                &key,
                doc,
                None,
                &leader_key,
            )
            .await?
        {
            Guarded::Written(revision) => {
                tracing::info!(
                    phase = state.phase.as_str(),
                    weight = state.weight,
                    "fleet: started the fleet's rollout state"
                );
                self.view.state_revision = revision;
                self.view.have_state = true;
                self.view.epoch = epoch;
                self.rollout.adopt(state, true);
            }
            Guarded::Refused(current) => {
                self.refused(current, term);
            }
        }
        Ok(())
    }

    /// A fenced write was refused; `leader_now` is the leader key as it is
    /// now. True when the reason is that another replica leads (or no one
    /// does): this one steps down.
    fn refused(&mut self, leader_now: Option<Entry>, term: i64) -> bool {
        let leader_now = leader_now.as_ref().map(leader_of);
        if leader_now.as_ref().map(|(_, revision)| *revision) == Some(term) {
            return false;
        }
        self.view.stale_writes_rejected += 1;
        self.view.term = None;
        tracing::warn!(
            term,
            leader_now = ?leader_now.as_ref().map(|(id, _)| id),
            "fleet: stale leader write rejected: another replica leads now; stepping down"
        );
        self.view.leader = leader_now;
        true
    }
}

#[cfg(test)]
mod tests;
