//! The fleet session: one task per replica that keeps its lease alive,
//! watches the fleet's keys, publishes its window and, once a second,
//! takes its part in leadership.
//!
//! A session is: lease → read everything under the prefix → watch from the
//! revision after that read → loop. Any failed call or broken stream ends
//! the session; the next one starts over on the next etcd member after a
//! backoff, so a re-opened watch never misses an event and a compacted one
//! re-reads. While no session runs, routing keeps the last applied weight,
//! nothing is decided and operator commands are refused: the fleet's
//! evidence is not reachable.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::commands::CommandFailure;
use super::document::Keys;
use super::replica::Replica;
use super::report::Report;
use super::store::{self, Entry, StoreError, call};
use super::{CommandRequest, FleetCommandError, FleetShared};
use crate::config::Fleet;
use crate::rollout::RolloutHandle;
use crate::stats::StatsHandle;
use crate::telemetry::FleetGauges;

/// Reports, judgement and the evidence document, once a second.
const TICK: Duration = Duration::from_secs(1);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

/// The task that carries one replica's part in the fleet; must run for the
/// fleet to work.
pub struct FleetTask {
    config: Fleet,
    replica: Replica,
    stats: StatsHandle,
    gauges: FleetGauges,
    shared: Arc<FleetShared>,
    commands: mpsc::Receiver<CommandRequest>,
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
        let keys = Keys::new(&config.prefix);
        Self {
            replica: Replica::new(keys, config.replica_id.clone(), rollout),
            config,
            stats,
            gauges,
            shared,
            commands,
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
            let view = &mut self.replica.view;
            if matches!(error, SessionError::LeaseLost) {
                view.lease = None;
                view.term = None;
            }
            let was_connected = view.connected;
            if was_connected {
                tracing::warn!(%error, member = %url, "fleet: etcd session ended; serving on the last known weight, no decisions until it is back");
                // The next member may well be fine: try it soon.
                backoff = BACKOFF_START;
            } else {
                tracing::debug!(%error, member = %url, "fleet: etcd still unreachable");
            }
            view.connected = false;
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
        if let (Some(client), Some(lease)) = (&mut client, self.replica.view.lease) {
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
                    let _ = request.reply.send(Err(FleetCommandError::Unreachable));
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
        let root = self.replica.view.keys.root.clone();
        let (entries, revision) = store::get_prefix(client, &root).await?;
        self.replica.resync(&entries);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut watch = call("the watch", client.watch(root.as_str(), Some(options))).await?;
        if !self.replica.view.connected {
            tracing::info!(lease, revision, "fleet: connected to etcd");
        }
        self.replica.view.connected = true;
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
                                EventType::Put => self.replica.on_put(&Entry::from(kv)),
                                EventType::Delete => self
                                    .replica
                                    .view
                                    .delete(&String::from_utf8_lossy(kv.key())),
                            }
                        }
                    }
                    Ok(None) => return Err(SessionError::StreamEnded("watch")),
                    Err(e) => return Err(StoreError::from(e).into()),
                },
                Some(request) = self.commands.recv() => {
                    match self.replica.command(client, request.command).await {
                        Ok(status) => { let _ = request.reply.send(Ok(status)); }
                        Err(CommandFailure::Refused(error)) => {
                            let _ = request.reply.send(Err(error));
                        }
                        Err(CommandFailure::Store(error)) => {
                            let _ = request.reply.send(Err(FleetCommandError::Unreachable));
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
        let view = &mut self.replica.view;
        if let Some(id) = view.lease {
            let alive = call("a lease lookup", client.lease_time_to_live(id, None)).await?;
            if alive.ttl() > 0 {
                return Ok(id);
            }
            tracing::warn!(
                lease = id,
                "fleet: our lease expired while cut off; taking a new one"
            );
            view.term = None;
        }
        let ttl = self.config.lease_ttl.as_secs() as i64;
        let granted = call("a lease grant", client.lease_grant(ttl, None)).await?;
        view.lease = Some(granted.id());
        Ok(granted.id())
    }

    async fn tick(&mut self, client: &mut Client, lease: i64) -> Result<(), SessionError> {
        self.replica.take_part(client, lease).await?;
        if self.replica.view.have_state {
            self.publish_report(client, lease).await?;
        }
        Ok(())
    }

    /// Publishes this replica's step window under its lease, for the
    /// leader to merge.
    async fn publish_report(
        &mut self,
        client: &mut Client,
        lease: i64,
    ) -> Result<(), SessionError> {
        let Some(snapshot) = self.stats.snapshot().await else {
            return Ok(());
        };
        let rollout = &self.replica.rollout;
        let report = Report {
            replica_id: self.config.replica_id.clone(),
            epoch: self.replica.view.epoch,
            at_ms: rollout.now_ms(),
            weight: rollout.phase_and_weight().1,
            window: (&snapshot.step).into(),
        };
        let body = serde_json::to_vec(&report).unwrap_or_default();
        let key = self.replica.view.keys.replica(&self.config.replica_id);
        let options = PutOptions::new().with_lease(lease);
        match call("the report", client.put(key, body, Some(options))).await {
            Err(StoreError::Etcd(etcd_client::Error::GRpcStatus(status)))
                if status.code() == tonic::Code::NotFound =>
            {
                return Err(SessionError::LeaseLost);
            }
            other => other?,
        };
        self.replica
            .view
            .reports
            .insert(self.config.replica_id.clone(), (report, Instant::now()));
        Ok(())
    }

    fn publish_status(&self) {
        let view = &self.replica.view;
        self.gauges
            .connected
            .set(f64::from(u8::from(view.connected)));
        self.gauges.leader.set(f64::from(u8::from(view.leading())));
        self.gauges.replicas.set(view.reports.len() as f64);
        *self.shared.lock_status() = view.status_json(&self.config.prefix);
    }
}

/// Where a replica starts in the endpoint list: spread by its id, so the
/// fleet's sessions do not all land on the first member.
fn start_index(replica_id: &str, endpoints: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(replica_id.as_bytes()) % endpoints.max(1) as u64) as usize
}
