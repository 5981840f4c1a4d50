//! Leadership against an in-memory etcd stand-in whose leases expire on
//! tokio's paused clock: the campaign, the leader's judgement of the
//! fleet-wide window, and the fencing that keeps a paused old leader's
//! decision out of the fleet's state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::compare::Outcome;
use crate::config::Config;
use crate::fleet::document::{FleetState, Keys};
use crate::fleet::report::Report;
use crate::fleet::store::Condition;
use crate::rollout::machine::{Command, Phase};
use crate::routing::Routing;
use crate::stats::WindowStats;
use crate::stats::window::{latency_histogram, outcome_index};
use crate::telemetry::Metrics;

const TTL: Duration = Duration::from_secs(3);

/// The part of etcd that leadership relies on: revisions, guarded puts,
/// and leases whose keys vanish when they are not renewed.
#[derive(Default)]
struct Etcd {
    revision: i64,
    /// Key → (entry, lease).
    keys: BTreeMap<String, (Entry, Option<i64>)>,
    /// Lease → deadline.
    leases: BTreeMap<i64, Instant>,
    next_lease: i64,
}

#[derive(Clone, Default)]
struct FakeEtcd(Arc<Mutex<Etcd>>);

impl FakeEtcd {
    fn lock(&self) -> std::sync::MutexGuard<'_, Etcd> {
        let mut etcd = self.0.lock().unwrap();
        etcd.expire();
        etcd
    }

    fn grant(&self) -> i64 {
        let mut etcd = self.lock();
        etcd.next_lease += 1;
        let id = etcd.next_lease;
        etcd.leases.insert(id, Instant::now() + TTL);
        id
    }

    fn keep_alive(&self, lease: i64) {
        self.lock().leases.insert(lease, Instant::now() + TTL);
    }

    fn get(&self, key: &str) -> Option<Entry> {
        self.lock().keys.get(key).map(|(entry, _)| entry.clone())
    }

    /// What a full read of the prefix returns.
    fn entries(&self) -> Vec<Entry> {
        self.lock().keys.values().map(|(e, _)| e.clone()).collect()
    }
}

impl Etcd {
    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in expired {
            self.leases.remove(&lease);
            self.revision += 1;
            self.keys.retain(|_, (_, l)| *l != Some(lease));
        }
    }

    fn holds(&self, condition: &Condition) -> bool {
        let entry = |key: &str| self.keys.get(key).map(|(e, _)| e);
        match condition {
            Condition::CreatedAt(key, revision) => {
                entry(key).map_or(0, |e| e.create_revision) == *revision
            }
            Condition::ModifiedAt(key, revision) => {
                entry(key).map_or(0, |e| e.mod_revision) == *revision
            }
        }
    }
}

impl Store for FakeEtcd {
    async fn put_if(
        &mut self,
        _what: &'static str,
        when: Vec<Condition>,
        key: &str,
        value: Vec<u8>,
        lease: Option<i64>,
        reread: &str,
    ) -> Result<Guarded, StoreError> {
        let mut etcd = self.lock();
        if !when.iter().all(|c| etcd.holds(c)) {
            let current = etcd.keys.get(reread).map(|(e, _)| e.clone());
            return Ok(Guarded::Refused(current));
        }
        etcd.revision += 1;
        let revision = etcd.revision;
        let create_revision = etcd
            .keys
            .get(key)
            .map_or(revision, |(e, _)| e.create_revision);
        let entry = Entry {
            key: key.into(),
            value,
            create_revision,
            mod_revision: revision,
        };
        etcd.keys.insert(key.into(), (entry, lease));
        Ok(Guarded::Written(revision))
    }
}

/// A replica with its own rollout (steps 50 and 100, judged after 1 s on
/// at least 100 requests) and state file.
fn replica(id: &str) -> Replica {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "understudy-leader-{}-{}-{id}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n\
         [backends.stable]\nurl = \"http://127.0.0.1:1\"\n\
         [backends.candidate]\nurl = \"http://127.0.0.1:2\"\n\
         [rollout]\nsteps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100\n\
         state_file = \"{}\"\n",
        dir.join("state.json").display()
    );
    let config = Config::parse(&text, "test").unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stats, _) = crate::stats::channel(metrics.clone(), 10);
    let routing = Arc::new(Routing::new(0, true));
    let (rollout, _) = crate::rollout::start(&config, false, routing, stats, metrics).unwrap();
    Replica::new(Keys::new("/fleet"), id.into(), rollout)
}

/// Both backends alike, 1,000 requests each, all compared and matching.
fn healthy(id: &str, epoch: u64) -> (Report, Instant) {
    let mut window = WindowStats::default();
    for side in [&mut window.stable.serve, &mut window.candidate.shadow] {
        side.by_class[2] = 1_000;
        let mut latency = latency_histogram();
        for i in 0..1_000u64 {
            latency.saturating_record(40_000 + i * 10);
        }
        side.latency_us = latency;
    }
    window.comparisons[outcome_index(Outcome::Match)] = 1_000;
    let report = Report {
        replica_id: id.into(),
        epoch,
        at_ms: 1,
        weight: 0.0,
        window: (&window).into(),
    };
    (report, Instant::now())
}

fn fleet_state(etcd: &FakeEtcd) -> (FleetState, i64) {
    let entry = etcd.get("/fleet/state").expect("a fleet state");
    (
        serde_json::from_slice(&entry.value).unwrap(),
        entry.mod_revision,
    )
}

/// `a` leads (and started the fleet's state), `b` follows and has seen
/// both; one second on, so the step's interval has passed.
async fn fleet_led_by_a(etcd: &mut FakeEtcd) -> (Replica, i64, Replica, i64) {
    let (mut a, mut b) = (replica("a"), replica("b"));
    let (lease_a, lease_b) = (etcd.grant(), etcd.grant());
    a.take_part(etcd, lease_a).await.unwrap();
    assert!(a.view.term.is_some(), "the first campaign wins");
    b.take_part(etcd, lease_b).await.unwrap();
    assert_eq!(b.view.term, None, "the key is taken");
    assert_eq!(b.view.leader, Some(("a".into(), a.view.term.unwrap())));
    a.take_part(etcd, lease_a).await.unwrap();
    assert!(a.view.have_state, "the leader starts the fleet's state");
    b.resync(&etcd.entries());
    assert_eq!((b.view.have_state, b.view.epoch), (true, a.view.epoch));
    tokio::time::advance(Duration::from_secs(1)).await;
    (a, lease_a, b, lease_b)
}

#[tokio::test(start_paused = true)]
async fn the_leader_steps_up_only_on_the_whole_fleets_window() {
    let mut etcd = FakeEtcd::default();
    let (mut a, lease_a, _b, _) = fleet_led_by_a(&mut etcd).await;
    let epoch = a.view.epoch;

    // b's report is still of the previous epoch: not the whole fleet.
    a.view.reports.insert("a".into(), healthy("a", epoch));
    a.view.reports.insert("b".into(), healthy("b", epoch - 1));
    a.take_part(&mut etcd, lease_a).await.unwrap();
    assert_eq!(fleet_state(&etcd).0.state.phase, Phase::Shadow);
    let evidence = a.view.evidence.clone().expect("evidence published");
    assert_eq!((evidence.fleet_wide, evidence.replicas), (false, 1));

    a.view.reports.insert("b".into(), healthy("b", epoch));
    a.take_part(&mut etcd, lease_a).await.unwrap();
    let (doc, revision) = fleet_state(&etcd);
    assert_eq!((doc.state.phase, doc.state.weight), (Phase::Canary, 50.0));
    assert_eq!((doc.epoch, doc.written_by.as_str()), (epoch + 1, "a"));
    assert_eq!((a.view.epoch, a.view.state_revision), (epoch + 1, revision));
    assert_eq!(a.rollout.phase_and_weight(), (Phase::Canary, 50.0));
    let evidence = a.view.evidence.clone().unwrap();
    assert_eq!((evidence.fleet_wide, evidence.replicas), (true, 2));
    assert_eq!(evidence.epoch, epoch + 1);
}

#[tokio::test(start_paused = true)]
async fn a_leader_paused_past_its_lease_is_fenced_out_and_steps_down() {
    let mut etcd = FakeEtcd::default();
    let (mut a, lease_a, mut b, lease_b) = fleet_led_by_a(&mut etcd).await;
    let old_term = a.view.term.unwrap();

    // `a` stops (SIGSTOP) for longer than its lease; `b` keeps renewing.
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(1)).await;
        etcd.keep_alive(lease_b);
    }
    assert_eq!(etcd.get("/fleet/leader"), None, "a's lease expired");
    b.resync(&etcd.entries());
    b.take_part(&mut etcd, lease_b).await.unwrap();
    let new_term = b.view.term.expect("b leads now");
    assert!(new_term > old_term);

    // `a` wakes up still believing it leads, with a window that would
    // step the rollout up.
    let before = fleet_state(&etcd);
    let epoch = a.view.epoch;
    a.view.reports.insert("a".into(), healthy("a", epoch));
    a.take_part(&mut etcd, lease_a).await.unwrap();
    assert_eq!(a.view.term, None, "stepped down");
    assert_eq!(a.view.leader, Some(("b".into(), new_term)));
    assert_eq!(a.view.stale_writes_rejected, 1);
    assert_eq!(
        fleet_state(&etcd),
        before,
        "the stale decision never landed"
    );
    assert_eq!(a.rollout.phase_and_weight(), (Phase::Shadow, 0.0));

    // A follower that sees a leader does not campaign.
    a.take_part(&mut etcd, lease_a).await.unwrap();
    assert_eq!(etcd.get("/fleet/leader").unwrap().create_revision, new_term);
}

#[tokio::test(start_paused = true)]
async fn a_command_on_a_stale_view_rereads_the_state_and_keeps_what_it_missed() {
    let mut etcd = FakeEtcd::default();
    let (mut a, _, mut b, _) = fleet_led_by_a(&mut etcd).await;
    a.command(&mut etcd, Command::SetWeight(10.0))
        .await
        .ok()
        .unwrap();
    // b has not seen a's command: its first write is refused, it reads the
    // state again and applies its own command on top of a's.
    let status = b
        .command(&mut etcd, Command::SetWeight(20.0))
        .await
        .ok()
        .unwrap();
    assert_eq!(status["weight"], 20.0);
    let (doc, _) = fleet_state(&etcd);
    assert_eq!((doc.state.phase, doc.state.weight), (Phase::Paused, 20.0));
    assert_eq!(doc.written_by, "b");
    let manual: Vec<_> = doc.state.decisions.iter().filter(|d| d.manual).collect();
    assert_eq!(manual.len(), 2, "both commands are in the log: {manual:?}");
}
