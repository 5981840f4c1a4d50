//! The fleet session: one task per replica that keeps its lease alive,
//! publishes its window, watches the fleet's keys, and — on the leader —
//! judges the merged window and writes the rollout state.
//!
//! A session is: lease → read everything under the prefix → watch from the
//! revision after that read → loop. Any failed call or broken stream ends
//! the session; the next one starts over on the next etcd member after a
//! backoff, so a re-opened watch never misses an event and a compacted one
//! re-reads. While no session runs, routing keeps the last applied weight
//! and nothing is decided: the fleet's evidence is not reachable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, KeyValue, PutOptions, WatchOptions};
use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::document::{Evidence, FleetState, Keys};
use super::report::{self, Report};
use super::store::{self, Guarded, StoreError, call, created_at, modified_at};
use super::{CommandRequest, FleetShared};
use crate::config::Fleet;
use crate::rollout::RolloutHandle;
use crate::rollout::controller::judge;
use crate::rollout::machine::Command;
use crate::stats::StatsHandle;
use crate::telemetry::FleetGauges;

/// Reports, judgement and the evidence document, once a second.
const TICK: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An operator command tries this often when others write at the same time.
const COMMAND_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the lease expired (this replica was cut off for longer than lease_ttl)")]
    LeaseLost,
    #[error("the {0} stream ended")]
    StreamEnded(&'static str),
    #[error("the watch was cancelled ({0}); reading the keys again")]
    WatchCancelled(String),
}

/// Why an operator command did not happen.
enum CommandFailure {
    /// Refused on its merits (HTTP status and message for the operator).
    Refused(StatusCode, String),
    /// etcd failed: the operator gets 503 and the session starts over.
    Store(StoreError),
}

/// What this replica knows of the fleet.
#[derive(Default)]
struct View {
    connected: bool,
    lease: Option<i64>,
    /// The leader key's create revision while this replica leads: the
    /// fencing token every leader write is conditioned on.
    term: Option<i64>,
    /// Who leads (replica id, leader key create revision), as last seen.
    leader: Option<(String, i64)>,
    have_state: bool,
    /// Mod revision of `PREFIX/state` as last seen or written.
    state_revision: i64,
    epoch: u64,
    reports: BTreeMap<String, (Report, Instant)>,
    evidence: Option<Evidence>,
    stale_writes_rejected: u64,
}

pub struct FleetTask {
    pub(super) config: Fleet,
    pub(super) keys: Keys,
    pub(super) rollout: RolloutHandle,
    pub(super) stats: StatsHandle,
    pub(super) gauges: FleetGauges,
    pub(super) shared: Arc<FleetShared>,
    pub(super) commands: mpsc::Receiver<CommandRequest>,
    view: View,
}

impl FleetTask {
    pub(super) fn new(
        config: Fleet,
        rollout: RolloutHandle,
        stats: StatsHandle,
        gauges: FleetGauges,
        shared: Arc<FleetShared>,
        commands: mpsc::Receiver<CommandRequest>,
    ) -> Self {
        Self {
            keys: Keys::new(&config.prefix),
            config,
            rollout,
            stats,
            gauges,
            shared,
            commands,
            view: View::default(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(replica = %self.config.replica_id, prefix = %self.config.prefix,
            endpoints = ?self.config.endpoints, "fleet mode: joining the rollout through etcd");
        self.publish_status();
        let mut backoff = BACKOFF_START;
        let mut client = None;
        // One member at a time: the client's balancer keeps picking a dead
        // member after it died, so a failed session moves on to
        // the next endpoint instead. Replicas start at different members.
        let endpoints = self.config.endpoints.len();
        let mut endpoint = start_index(&self.config.replica_id, endpoints);
        loop {
            let url = self.config.endpoints[endpoint].clone();
            let outcome = match &mut client {
                Some(client) => self.session(client, &shutdown).await,
                None => match store::connect(&self.config, &url).await {
                    Ok(c) => {
                        client = Some(c);
                        continue;
                    }
                    Err(e) => Err(e.into()),
                },
            };
            let error = match outcome {
                Ok(()) => break,
                Err(error) => error,
            };
            if matches!(error, SessionError::LeaseLost) {
                self.view.lease = None;
                self.view.term = None;
            }
            let was_connected = self.view.connected;
            if was_connected {
                tracing::warn!(%error, member = %url, "fleet: etcd session ended; serving on the last known weight, no decisions until it is back");
                // The next member may well be fine: try it soon.
                backoff = BACKOFF_START;
            } else {
                tracing::debug!(%error, member = %url, "fleet: etcd still unreachable");
            }
            self.view.connected = false;
            self.publish_status();
            client = None;
            endpoint = (endpoint + 1) % endpoints;
            if self.wait(backoff, &shutdown).await {
                break;
            }
            if !was_connected {
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        if let (Some(client), Some(lease)) = (&mut client, self.view.lease) {
            // Our report and, if we lead, the leader key go now: another
            // replica takes over at once instead of after the lease TTL.
            match call("the lease revoke", client.lease_revoke(lease)).await {
                Ok(_) => tracing::info!("fleet: left the fleet (lease revoked)"),
                Err(error) => {
                    tracing::warn!(%error, "fleet: could not revoke the lease; it expires by itself")
                }
            }
        }
    }

    /// Sleeps for `backoff`, refusing operator commands meanwhile; true on
    /// shutdown.
    async fn wait(&mut self, backoff: Duration, shutdown: &CancellationToken) -> bool {
        let deadline = tokio::time::sleep(backoff);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = &mut deadline => return false,
                Some(request) = self.commands.recv() => {
                    let _ = request.reply.send(Err(unreachable_error()));
                }
            }
        }
    }

    async fn session(
        &mut self,
        client: &mut Client,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let lease = self.lease(client).await?;
        let (mut keeper, mut alive) =
            call("the lease keep-alive", client.lease_keep_alive(lease)).await?;
        let (kvs, revision) = store::get_prefix(client, &self.keys.root).await?;
        self.resync(kvs);
        let mut watch = call(
            "the watch",
            client.watch(
                self.keys.root.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            ),
        )
        .await?;
        if !self.view.connected {
            tracing::info!(lease, revision, "fleet: connected to etcd");
        }
        self.view.connected = true;
        self.publish_status();

        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(self.config.lease_ttl / 3);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // Biased: after a pause (SIGSTOP) the tick runs first, so a
            // replica that believes it leads tries its fenced write — and
            // learns it no longer leads — before anything else.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => self.tick(client, lease).await?,
                _ = refresh.tick() => call("a lease keep-alive", keeper.keep_alive()).await?,
                reply = alive.message() => match reply {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    Ok(Some(_)) => return Err(SessionError::LeaseLost),
                    Ok(None) => return Err(SessionError::StreamEnded("keep-alive")),
                    Err(e) => return Err(StoreError::from(e).into()),
                },
                message = watch.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() {
                            return Err(SessionError::WatchCancelled(format!(
                                "compacted at revision {}: {}",
                                response.compact_revision(),
                                response.cancel_reason()
                            )));
                        }
                        for event in response.events() {
                            let Some(kv) = event.kv() else { continue };
                            match event.event_type() {
                                EventType::Put => self.on_put(kv),
                                EventType::Delete => self.on_delete(kv.key()),
                            }
                        }
                    }
                    Ok(None) => return Err(SessionError::StreamEnded("watch")),
                    Err(e) => return Err(StoreError::from(e).into()),
                },
                Some(request) = self.commands.recv() => {
                    match self.command(client, request.command).await {
                        Ok(status) => { let _ = request.reply.send(Ok(status)); }
                        Err(CommandFailure::Refused(code, message)) => {
                            let _ = request.reply.send(Err((code, message)));
                        }
                        Err(CommandFailure::Store(error)) => {
                            let _ = request.reply.send(Err(unreachable_error()));
                            return Err(error.into());
                        }
                    }
                }
            }
            self.publish_status();
        }
    }

    /// The lease of this replica: the one it had if etcd still knows it
    /// (leadership survives a short disconnection), else a new one.
    async fn lease(&mut self, client: &mut Client) -> Result<i64, SessionError> {
        if let Some(id) = self.view.lease {
            let alive = call("a lease lookup", client.lease_time_to_live(id, None)).await?;
            if alive.ttl() > 0 {
                return Ok(id);
            }
            tracing::warn!(
                lease = id,
                "fleet: our lease expired while cut off; taking a new one"
            );
            self.view.term = None;
        }
        let ttl = self.config.lease_ttl.as_secs() as i64;
        let granted = call("a lease grant", client.lease_grant(ttl, None)).await?;
        self.view.lease = Some(granted.id());
        Ok(granted.id())
    }

    /// Rebuilds the view from a full read of the prefix.
    fn resync(&mut self, kvs: Vec<KeyValue>) {
        let was_leading = self.view.term;
        self.view.reports.clear();
        self.view.leader = None;
        self.view.evidence = None;
        self.view.have_state = false;
        self.view.state_revision = 0;
        for kv in &kvs {
            self.on_put(kv);
        }
        // Still leading only if the leader key we created is still there.
        let me = self.config.replica_id.as_str();
        self.view.term = match &self.view.leader {
            Some((id, revision)) if id == me && Some(*revision) == was_leading => was_leading,
            _ => None,
        };
        if was_leading.is_some() && self.view.term.is_none() {
            tracing::warn!("fleet: lost the leadership while cut off from etcd");
        }
    }

    fn on_put(&mut self, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key());
        if key == self.keys.state {
            match serde_json::from_slice::<FleetState>(kv.value()) {
                Ok(doc) => self.adopt(doc, kv.mod_revision()),
                Err(error) => {
                    tracing::error!(%error, key = %key, "fleet: unreadable rollout state in etcd; keeping the current weight")
                }
            }
        } else if key == self.keys.leader {
            let id = String::from_utf8_lossy(kv.value()).into_owned();
            self.view.leader = Some((id, kv.create_revision()));
        } else if key == self.keys.evidence {
            self.view.evidence = serde_json::from_slice(kv.value()).ok();
        } else if let Some(id) = key.strip_prefix(&self.keys.replicas) {
            match serde_json::from_slice::<Report>(kv.value()) {
                Ok(report) => {
                    self.view
                        .reports
                        .insert(id.to_owned(), (report, Instant::now()));
                }
                Err(error) => {
                    tracing::warn!(%error, replica = id, "fleet: unreadable replica report; left out of the merge")
                }
            }
        }
    }

    fn on_delete(&mut self, key: &[u8]) {
        let key = String::from_utf8_lossy(key);
        if key == self.keys.state {
            self.forget_state();
        } else if key == self.keys.leader {
            self.view.leader = None;
        } else if key == self.keys.evidence {
            self.view.evidence = None;
        } else if let Some(id) = key.strip_prefix(&self.keys.replicas) {
            self.view.reports.remove(id);
        }
    }

    /// The state key is gone (deleted to start over): the leader writes a
    /// new one; until then the weight stays.
    fn forget_state(&mut self) {
        self.view.have_state = false;
        self.view.state_revision = 0;
    }

    /// Applies the fleet's state: its weight within the watch latency, and
    /// a fresh step window when the epoch moved.
    fn adopt(&mut self, doc: FleetState, revision: i64) {
        if doc.identity != self.rollout.identity() {
            tracing::warn!(fleet = %doc.identity, ours = %self.rollout.identity(),
                "fleet: the rollout in etcd names other backends than this replica's config; applying it anyway (one prefix, one rollout)");
        }
        let new_window = doc.epoch != self.view.epoch;
        self.view.epoch = doc.epoch;
        self.view.state_revision = revision;
        self.view.have_state = true;
        self.rollout.adopt(doc.state, new_window);
    }

    async fn tick(&mut self, client: &mut Client, lease: i64) -> Result<(), SessionError> {
        // Leader work first: after a pause, the fenced write is what tells
        // an old leader that it was replaced.
        match self.view.term {
            Some(term) => self.lead(client, term).await?,
            None if self.view.leader.is_none() => self.campaign(client, lease).await?,
            None => {}
        }
        if self.view.have_state {
            self.publish_report(client, lease).await?;
        }
        Ok(())
    }

    async fn publish_report(
        &mut self,
        client: &mut Client,
        lease: i64,
    ) -> Result<(), SessionError> {
        let Some(snapshot) = self.stats.snapshot().await else {
            return Ok(());
        };
        let report = Report {
            replica_id: self.config.replica_id.clone(),
            epoch: self.view.epoch,
            at_ms: self.rollout.now_ms(),
            weight: self.rollout.phase_and_weight().1,
            window: (&snapshot.step).into(),
        };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let key = self.keys.replica(&self.config.replica_id);
        let options = PutOptions::new().with_lease(lease);
        match call("the report", client.put(key, body, Some(options))).await {
            Err(StoreError::Etcd(etcd_client::Error::GRpcStatus(status)))
                if status.code() == tonic::Code::NotFound =>
            {
                return Err(SessionError::LeaseLost);
            }
            other => other?,
        };
        self.view
            .reports
            .insert(self.config.replica_id.clone(), (report, Instant::now()));
        Ok(())
    }

    /// Tries to become the leader: create the leader key with our lease,
    /// only if no one holds it.
    async fn campaign(&mut self, client: &mut Client, lease: i64) -> Result<(), SessionError> {
        let me = self.config.replica_id.clone();
        let key = self.keys.leader.clone();
        let when = vec![created_at(&key, 0)];
        match store::put_if(
            client,
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
            Guarded::Refused(Some(kv)) => {
                self.view.leader = Some((
                    String::from_utf8_lossy(kv.value()).into_owned(),
                    kv.create_revision(),
                ));
            }
            Guarded::Refused(None) => {}
        }
        Ok(())
    }

    /// The leader's second: start the fleet state if there is none, judge
    /// the merged window, publish the evidence. Every write is fenced on
    /// `term`.
    async fn lead(&mut self, client: &mut Client, term: i64) -> Result<(), SessionError> {
        if !self.view.have_state {
            return self.start_state(client, term).await;
        }
        let now = self.rollout.now_ms();
        let merged = report::merge(self.view.reports.values().map(|(r, _)| r), self.view.epoch);
        let mut machine = self.rollout.machine();
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
                created_at(&self.keys.leader, term),
                modified_at(&self.keys.state, self.view.state_revision),
            ];
            let state_key = self.keys.state.clone();
            let leader_key = self.keys.leader.clone();
            match store::put_if(
                client,
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
            leader: self.config.replica_id.clone(),
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
        let (key, leader_key) = (self.keys.evidence.clone(), self.keys.leader.clone());
        match store::put_if(
            client,
            "the evidence",
            vec![created_at(&leader_key, term)],
            &key,
            body,
            None,
            &leader_key,
        )
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
    async fn start_state(&mut self, client: &mut Client, term: i64) -> Result<(), SessionError> {
        let state = self.rollout.machine().state().clone();
        let epoch = self.view.epoch + 1;
        let doc = self.document(state.clone(), epoch);
        let when = vec![
            created_at(&self.keys.leader, term),
            created_at(&self.keys.state, 0),
        ];
        let (key, leader_key) = (self.keys.state.clone(), self.keys.leader.clone());
        match store::put_if(
            client,
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

    /// A fenced write was refused. True when the reason is that another
    /// replica leads now: this one steps down.
    fn refused(&mut self, leader_now: Option<KeyValue>, term: i64) -> bool {
        let leader_now = leader_now.map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision(),
            )
        });
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

    fn document(&self, state: crate::rollout::machine::RolloutState, epoch: u64) -> Vec<u8> {
        let doc = FleetState {
            state,
            epoch,
            written_by: self.config.replica_id.clone(),
            identity: self.rollout.identity().to_owned(),
        };
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// An operator command from this replica's admin API, written as a
    /// compare-and-swap on the state so that it never overwrites a change
    /// it has not seen.
    async fn command(
        &mut self,
        client: &mut Client,
        command: Command,
    ) -> Result<Value, CommandFailure> {
        for _ in 0..COMMAND_ATTEMPTS {
            if !self.view.have_state {
                return Err(CommandFailure::Refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the fleet has no rollout state yet (no leader has started it); try again in a moment".into(),
                ));
            }
            let mut machine = self.rollout.machine();
            let now = self.rollout.now_ms();
            let change = machine
                .command(now, command)
                .map_err(|e| CommandFailure::Refused(StatusCode::CONFLICT, e.to_string()))?;
            let epoch = self.view.epoch + u64::from(change.reset_window);
            let doc = self.document(machine.state().clone(), epoch);
            let key = self.keys.state.clone();
            let when = vec![modified_at(&key, self.view.state_revision)];
            let written = store::put_if(client, "an operator command", when, &key, doc, None, &key)
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
                Guarded::Refused(None) => self.forget_state(),
            }
        }
        Err(CommandFailure::Refused(
            StatusCode::CONFLICT,
            "the fleet's rollout state kept changing; try the command again".into(),
        ))
    }

    fn publish_status(&self) {
        let view = &self.view;
        let is_leader = view.term.is_some();
        self.gauges
            .connected
            .set(f64::from(u8::from(view.connected)));
        self.gauges
            .leader
            .set(f64::from(u8::from(is_leader && view.connected)));
        self.gauges.replicas.set(view.reports.len() as f64);
        let replicas: Vec<Value> = view
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
        let status = json!({
            "replica_id": self.config.replica_id,
            "prefix": self.config.prefix,
            "connected": view.connected,
            "leader": view.leader.as_ref().map(|(id, _)| id),
            "is_leader": is_leader,
            "term": view.term.or(view.leader.as_ref().map(|(_, r)| *r)),
            "epoch": view.epoch,
            "state_revision": view.state_revision,
            "replicas": replicas,
            "window": view.evidence,
            "stale_writes_rejected": view.stale_writes_rejected,
        });
        *self.shared.lock_status() = status;
    }
}

/// Where a replica starts in the endpoint list: spread by its id, so the
/// fleet's sessions do not all land on the first member.
fn start_index(replica_id: &str, endpoints: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(replica_id.as_bytes()) % endpoints.max(1) as u64) as usize
}

fn unreachable_error() -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "etcd is unreachable: the fleet's rollout cannot change now (serving on the last known weight)".into(),
    )
}
