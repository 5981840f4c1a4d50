//! [`Fleet`]: a 3-member etcd cluster, a stable and a candidate fake model
//! server, and three real `understudy` binaries (`r1`, `r2`, `r3`) running
//! one rollout under a unique prefix. Each replica has its own config and
//! state file in the fleet's temp directory.
//!
//! Observation never panics on a dead or stopped replica: every call has a
//! timeout, and each `wait_*` helper prints every replica's `/status`, the
//! tail of its log and the fleet's etcd keys before failing. If a test
//! panics elsewhere, `Drop` prints the last statuses seen and the log tails.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::Method;
use serde_json::Value;
use tokio::time::Instant;

use super::{EtcdCluster, truncate, try_get_json, try_get_text, try_request};
use crate::support::harness::{self, Binary, TempDir};
use crate::support::{FakeUpstream, Reply};

/// Timeout of one `/status`, `/metrics` or admin call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fresh fleet may take to elect a leader and see everyone.
pub const READY_TIMEOUT: Duration = Duration::from_secs(45);
/// Poll period of every wait.
pub const POLL: Duration = Duration::from_millis(150);

/// What a replica's process is doing, as far as the test made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    Running,
    /// SIGSTOPped: connections are accepted but never answered.
    Stopped,
    /// Killed or exited.
    Dead,
}

pub struct Replica {
    pub id: String,
    pub binary: Binary,
    pub pid: u32,
    pub config: PathBuf,
    pub life: Life,
}

/// How a fleet is configured; every replica gets the same settings.
pub struct FleetSpec<'a> {
    /// Test name, for directories and the etcd prefix.
    pub name: &'a str,
    /// Reply of the stable model server.
    pub stable: Reply,
    /// Reply of the candidate model server.
    pub candidate: Reply,
    /// Keys of `[rollout]` (the state file is added per replica).
    pub rollout: &'a str,
    /// Extra top-level TOML sections (e.g. `[shadow]`).
    pub extra: &'a str,
    /// `[fleet] lease_ttl`, in seconds.
    pub lease_ttl_secs: u64,
}

/// A rollout that never judges by itself within a test (huge volume gate).
pub const MANUAL_ROLLOUT: &str = "steps = [50, 100]\ninterval = \"1s\"\nmin_requests = 100000\n";

impl<'a> FleetSpec<'a> {
    /// A fleet with identical 200 replies on both backends, a manual
    /// rollout and a 2 s lease.
    pub fn manual(name: &'a str) -> Self {
        FleetSpec {
            name,
            stable: Reply::json(200, PREDICTION),
            candidate: Reply::json(200, PREDICTION),
            rollout: MANUAL_ROLLOUT,
            extra: "",
            lease_ttl_secs: 2,
        }
    }
}

/// What both fake model servers answer by default.
pub const PREDICTION: &str = r#"{"predictions":[1]}"#;

pub struct Fleet {
    pub replicas: Vec<Replica>,
    pub etcd: EtcdCluster,
    pub prefix: String,
    pub ttl: Duration,
    pub stable: FakeUpstream,
    pub candidate: FakeUpstream,
    /// Last `/status` seen per replica (for the report on a panic).
    last: Mutex<Vec<Option<Value>>>,
    /// Set once a full report was printed, so `Drop` does not repeat it.
    reported: AtomicBool,
    // Dropped last.
    pub dir: TempDir,
}

impl Fleet {
    /// Starts etcd, the model servers and the three replicas, then waits
    /// until they agree on a leader and see each other.
    pub async fn start(spec: FleetSpec<'_>) -> Fleet {
        let etcd = EtcdCluster::start(spec.name).await;
        let stable = FakeUpstream::start(spec.stable).await;
        let candidate = FakeUpstream::start(spec.candidate).await;
        let dir = TempDir::new(&format!("fleet-{}", spec.name));
        let prefix = format!(
            "/understudy/test-{}-{}-{:08x}",
            spec.name,
            std::process::id(),
            rand::random::<u32>()
        );
        let configs: Vec<(String, PathBuf)> = (1..=3)
            .map(|i| {
                let id = format!("r{i}");
                let extra = format!(
                    "{}\n[rollout]\n{}state_file = \"{}\"\n\n[fleet]\nendpoints = {}\n\
                     prefix = \"{prefix}\"\nreplica_id = \"{id}\"\nlease_ttl = \"{}s\"\n",
                    spec.extra,
                    spec.rollout,
                    dir.path(&format!("{id}-state.json")).display(),
                    etcd.endpoints_toml(),
                    spec.lease_ttl_secs,
                );
                let text = harness::config_text(&stable.url(), Some(&candidate.url()), &extra);
                let path = dir.path(&format!("{id}.toml"));
                std::fs::write(&path, text).unwrap();
                (id, path)
            })
            .collect();
        let (b1, b2, b3) = tokio::join!(
            Binary::start(&configs[0].1, &[]),
            Binary::start(&configs[1].1, &[]),
            Binary::start(&configs[2].1, &[]),
        );
        let replicas = [b1, b2, b3]
            .into_iter()
            .zip(configs)
            .map(|(binary, (id, config))| Replica {
                pid: binary.child.id().expect("replica running"),
                id,
                binary,
                config,
                life: Life::Running,
            })
            .collect();
        let fleet = Fleet {
            replicas,
            etcd,
            prefix,
            ttl: Duration::from_secs(spec.lease_ttl_secs),
            stable,
            candidate,
            last: Mutex::new(vec![None; 3]),
            reported: AtomicBool::new(false),
            dir,
        };
        fleet.wait_ready(&[0, 1, 2], READY_TIMEOUT).await;
        fleet
    }

    pub fn ids(&self) -> Vec<&str> {
        self.replicas.iter().map(|r| r.id.as_str()).collect()
    }

    /// Indices of replicas whose process runs (not stopped, not dead).
    pub fn running(&self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|&i| self.replicas[i].life == Life::Running)
            .collect()
    }

    pub fn urls(&self, which: &[usize]) -> Vec<String> {
        which
            .iter()
            .map(|&i| self.replicas[i].binary.url.clone())
            .collect()
    }

    /// `GET /status` of replica `i`.
    pub async fn status(&self, i: usize) -> Result<Value, String> {
        let url = format!("{}/status", self.replicas[i].binary.admin);
        let result = try_get_json(&url, CALL_TIMEOUT).await;
        if let Ok(value) = &result {
            self.last.lock().unwrap()[i] = Some(value.clone());
        }
        result
    }

    /// `GET /metrics` of replica `i`.
    pub async fn metrics(&self, i: usize) -> Result<String, String> {
        let url = format!("{}/metrics", self.replicas[i].binary.admin);
        try_get_text(&url, CALL_TIMEOUT).await
    }

    /// One sample of replica `i`'s `/metrics` (see [`harness::metric`]).
    pub async fn metric(&self, i: usize, series: &str) -> Option<f64> {
        let text = self.metrics(i).await.ok()?;
        harness::metric(&text, series)
    }

    /// `POST /rollout/COMMAND` on replica `i` (loopback admin: no token).
    pub async fn post(&self, i: usize, command: &str, body: &str) -> (u16, Value) {
        let url = format!("{}/rollout/{command}", self.replicas[i].binary.admin);
        match try_request(Method::POST, &url, body, Duration::from_secs(30)).await {
            Ok((status, body)) => (status, serde_json::from_slice(&body).unwrap_or(Value::Null)),
            Err(error) => self.fail(&format!("POST {url} {body}: {error}")).await,
        }
    }

    /// [`Self::post`] that must answer 200.
    pub async fn post_ok(&self, i: usize, command: &str, body: &str) -> Value {
        let (status, value) = self.post(i, command, body).await;
        if status != 200 {
            self.fail(&format!(
                "POST /rollout/{command} {body} on {} answered {status}: {value:#}",
                self.replicas[i].id
            ))
            .await;
        }
        value
    }

    /// Polls the `/status` of replicas `which` until every one satisfies
    /// `done`; returns those statuses and the time it took. Fails with a
    /// full report after `timeout`.
    pub async fn wait_all(
        &self,
        what: &str,
        which: &[usize],
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, Duration) {
        self.wait_statuses(what, which, timeout, |statuses| statuses.iter().all(&done))
            .await
    }

    /// Polls the `/status` of replicas `which` until `done` holds for all of
    /// them together (in the order of `which`).
    pub async fn wait_statuses(
        &self,
        what: &str,
        which: &[usize],
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> (Vec<Value>, Duration) {
        match self.try_wait_statuses(what, which, timeout, done).await {
            Ok(reached) => reached,
            Err(message) => self.fail(&message).await,
        }
    }

    /// [`Self::wait_statuses`] that returns the failure instead of failing.
    pub async fn try_wait_statuses(
        &self,
        what: &str,
        which: &[usize],
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<(Vec<Value>, Duration), String> {
        let start = Instant::now();
        let mut last_error = String::new();
        loop {
            let mut statuses = Vec::new();
            for &i in which {
                match self.status(i).await {
                    Ok(status) => statuses.push(status),
                    Err(error) => {
                        last_error = error;
                        break;
                    }
                }
            }
            if statuses.len() == which.len() && done(&statuses) {
                return Ok((statuses, start.elapsed()));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{what}: not reached within {timeout:?} on {:?} (last call error: {last_error:?})",
                    which
                        .iter()
                        .map(|&i| &self.replicas[i].id)
                        .collect::<Vec<_>>()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until replicas `which` are connected to etcd, see one and the
    /// same leader among them (exactly one says `is_leader`), and list each
    /// other as live replicas. Returns the leader's index.
    pub async fn wait_ready(&self, which: &[usize], timeout: Duration) -> usize {
        match self.try_wait_ready(which, timeout).await {
            Ok(leader) => leader,
            Err(message) => self.fail(&message).await,
        }
    }

    /// [`Self::wait_ready`] that returns the failure instead of failing.
    pub async fn try_wait_ready(
        &self,
        which: &[usize],
        timeout: Duration,
    ) -> Result<usize, String> {
        let ids: Vec<String> = which.iter().map(|&i| self.replicas[i].id.clone()).collect();
        let (statuses, took) = self
            .try_wait_statuses("fleet ready", which, timeout, |statuses| {
                agreed_leader(statuses).is_some_and(|leader| ids.contains(&leader))
                    && statuses
                        .iter()
                        .all(|s| s["fleet"]["connected"] == true && live_ids(s).len() >= ids.len())
            })
            .await?;
        let leader = agreed_leader(&statuses).unwrap();
        println!("fleet ready after {took:?}: leader {leader}");
        Ok(self.index_of(&leader))
    }

    /// Waits until replicas `which` agree on a leader that satisfies
    /// `accept` (given its id); returns its index and the time it took.
    pub async fn wait_leader(
        &self,
        which: &[usize],
        timeout: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> (usize, Duration) {
        let (statuses, took) = self
            .wait_statuses("agreed leader", which, timeout, |statuses| {
                agreed_leader(statuses).is_some_and(|l| accept(&l))
            })
            .await;
        (self.index_of(&agreed_leader(&statuses).unwrap()), took)
    }

    /// Polls `/metrics` of replicas `which` until `series` equals `value`
    /// on all of them.
    pub async fn wait_metric(&self, series: &str, value: f64, which: &[usize], timeout: Duration) {
        let start = Instant::now();
        loop {
            let mut all = true;
            let mut seen = Vec::new();
            for &i in which {
                let got = self.metric(i, series).await;
                seen.push((self.replicas[i].id.clone(), got));
                all &= got == Some(value);
            }
            if all {
                return;
            }
            if start.elapsed() > timeout {
                self.fail(&format!(
                    "{series} != {value} within {timeout:?}; last values {seen:?}"
                ))
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.replicas
            .iter()
            .position(|r| r.id == id)
            .unwrap_or_else(|| panic!("no replica {id:?}"))
    }

    /// Sends a signal to replica `i` and records what it did.
    pub fn signal(&mut self, i: usize, name: &str) {
        self.replicas[i].binary.signal(name);
        match name {
            "STOP" => self.replicas[i].life = Life::Stopped,
            "CONT" => self.replicas[i].life = Life::Running,
            _ => {}
        }
    }

    /// `kill -9` replica `i` and reap it.
    pub async fn kill(&mut self, i: usize) {
        self.replicas[i].binary.signal("KILL");
        self.replicas[i].binary.wait(Duration::from_secs(15)).await;
        self.replicas[i].life = Life::Dead;
    }

    /// SIGTERM replica `i`; returns its exit status.
    pub async fn terminate(&mut self, i: usize) -> std::process::ExitStatus {
        self.replicas[i].binary.signal("TERM");
        let status = self.replicas[i].binary.wait(Duration::from_secs(30)).await;
        self.replicas[i].life = Life::Dead;
        status
    }

    /// The fleet's keys in etcd.
    pub async fn etcd_keys(&self) -> Vec<super::Kv> {
        self.etcd.get_prefix(&self.prefix).await
    }

    /// `PREFIX/state` parsed, with its mod revision.
    pub async fn etcd_state(&self) -> Option<(Value, i64)> {
        let kv = self.etcd.get(&format!("{}/state", self.prefix)).await?;
        Some((kv.json(), kv.mod_revision))
    }

    /// Everything useful to read a failure: each replica's status (fresh
    /// where it answers, else the last one seen), the tail of its log, and
    /// the fleet's etcd keys.
    pub async fn report(&self) -> String {
        let mut out = String::new();
        for i in 0..self.replicas.len() {
            let r = &self.replicas[i];
            let status = if r.life == Life::Running {
                match self.status(i).await {
                    Ok(v) => format!("{}", fleet_view(&v)),
                    Err(e) => format!("(no answer: {e}); last seen: {}", self.last_status(i)),
                }
            } else {
                format!("({:?}); last seen: {}", r.life, self.last_status(i))
            };
            out.push_str(&format!(
                "\n===== replica {} (pid {}, {:?}) /status:\n{status}\n----- log tail:\n{}\n",
                r.id,
                r.pid,
                r.life,
                log_tail(&r.binary, 30)
            ));
        }
        let keys = match tokio::time::timeout(
            Duration::from_secs(20),
            self.etcd
                .etcdctl(&["get", "--prefix", &self.prefix, "-w", "json"]),
        )
        .await
        {
            Ok(Ok(out)) if out.status.success() => {
                match super::parse_kvs(&String::from_utf8_lossy(&out.stdout)) {
                    Ok(kvs) => super::format_kvs(&kvs),
                    Err(e) => format!("(unparsable: {e})"),
                }
            }
            Ok(Ok(out)) => format!("(etcdctl failed: {})", String::from_utf8_lossy(&out.stderr)),
            Ok(Err(e)) => e,
            Err(_) => "(etcdctl timed out)".into(),
        };
        out.push_str(&format!(
            "\n===== etcd keys under {}:\n{keys}\n",
            self.prefix
        ));
        out.push_str(&format!("\n===== etcd:\n{}\n", self.etcd.log_tails(5)));
        out
    }

    /// Prints [`Self::report`] and panics with `message`.
    pub async fn fail(&self, message: &str) -> ! {
        let report = self.report().await;
        self.reported.store(true, Ordering::Relaxed);
        eprintln!("FLEET TEST FAILURE: {message}\n{report}");
        panic!("{message}");
    }

    /// Asserts `condition`, failing with a full report.
    pub async fn check(&self, condition: bool, message: impl FnOnce() -> String) {
        if !condition {
            self.fail(&message()).await;
        }
    }

    fn last_status(&self, i: usize) -> String {
        match &self.last.lock().unwrap()[i] {
            Some(v) => format!("{}", fleet_view(v)),
            None => "(none)".into(),
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !std::thread::panicking() || self.reported.load(Ordering::Relaxed) {
            return;
        }
        let mut out = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            out.push_str(&format!(
                "\n===== replica {} ({:?}) last /status seen:\n{}\n----- log tail:\n{}\n",
                r.id,
                r.life,
                self.last_status(i),
                log_tail(&r.binary, 30)
            ));
        }
        out.push_str(&format!(
            "\n===== etcd keys under {}:\n{}\n",
            self.prefix,
            self.etcd.dump_prefix_blocking(&self.prefix)
        ));
        eprintln!("FLEET TEST PANICKED; report:\n{out}");
    }
}

/// The last `n` log lines of a replica.
pub fn log_tail(binary: &Binary, n: usize) -> String {
    let logs = binary.logs.lock().unwrap();
    logs[logs.len().saturating_sub(n)..]
        .iter()
        .map(|l| truncate(l, 500))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The parts of `/status` a fleet test reads (the full one is long).
pub fn fleet_view(status: &Value) -> Value {
    let decisions = status["decisions"].as_array().map(|d| {
        d.iter()
            .rev()
            .take(4)
            .map(|d| {
                serde_json::json!({
                    "phase": d["phase"], "action": d["action"], "verdict": d["verdict"],
                    "reasons": d["reasons"],
                })
            })
            .collect::<Vec<_>>()
    });
    serde_json::json!({
        "phase": status["phase"],
        "weight": status["weight"],
        "step": status["step"],
        "step_started_ms": status["step_started_ms"],
        "paused_from": status["paused_from"],
        "requests": status["requests"],
        "last_decisions": decisions,
        "fleet": status["fleet"],
    })
}

/// The leader every status names, if they all name the same one and
/// exactly one of them says it is that leader.
pub fn agreed_leader(statuses: &[Value]) -> Option<String> {
    let leader = statuses.first()?["fleet"]["leader"].as_str()?.to_owned();
    let same = statuses
        .iter()
        .all(|s| s["fleet"]["leader"].as_str() == Some(leader.as_str()));
    let claiming: Vec<&Value> = statuses
        .iter()
        .filter(|s| s["fleet"]["is_leader"] == true)
        .collect();
    let one_claims = claiming.len() == 1 && claiming[0]["fleet"]["replica_id"] == leader.as_str();
    // The leader itself may be outside `statuses` (e.g. only followers
    // asked): then nobody may claim.
    let leader_asked = statuses
        .iter()
        .any(|s| s["fleet"]["replica_id"] == leader.as_str());
    let claims_ok = if leader_asked {
        one_claims
    } else {
        claiming.is_empty()
    };
    (same && claims_ok).then_some(leader)
}

/// Ids in `fleet.replicas` of a status.
pub fn live_ids(status: &Value) -> Vec<String> {
    status["fleet"]["replicas"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `(phase, weight)` of a status or a state.
pub fn phase_weight(value: &Value) -> (String, f64) {
    (
        value["phase"].as_str().unwrap_or("?").to_owned(),
        value["weight"].as_f64().unwrap_or(f64::NAN),
    )
}
