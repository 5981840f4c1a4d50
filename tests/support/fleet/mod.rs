//! Support for the fleet-mode tests (`tests/fleet.rs`): a 3-member etcd
//! cluster on loopback started from Rust ([`EtcdCluster`]), HTTP calls with
//! timeouts that never panic on a dead or stopped peer ([`try_get_json`] and
//! friends), a background load generator ([`Load`]) and, in
//! [`replicas`], three real understudy binaries sharing one rollout.
//!
//! Every cluster lives in its own temp directory on its own free ports, so
//! tests may run in parallel; all processes are killed on drop.
#![allow(dead_code)]

pub mod replicas;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::harness::TempDir;
use crate::support::{http_client, try_send};

/// How long a fresh (or restarted) cluster may take to become healthy.
pub const ETCD_HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-call bound for `etcdctl`.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(15);

/// `n` distinct free loopback ports: bound together (so they differ), then
/// released for the caller to use.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// The last `n` lines of a text file (empty when unreadable).
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| truncate(l, 400))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `s` cut to at most `max` characters (on a char boundary), marked when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// One key as `etcdctl get -w json` reports it.
#[derive(Clone, Debug)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

impl Kv {
    /// The value parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.value).unwrap_or(Value::Null)
    }
}

/// One etcd member: fixed name, ports and data directory; the process may be
/// running or not.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// `http://127.0.0.1:PORT` for clients.
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The member's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }
}

/// A 3-member etcd cluster on loopback, started like
/// etcd's documentation starts a local cluster, but from Rust, in its own temp
/// directory and on free ports. Killed on drop.
pub struct EtcdCluster {
    pub members: Vec<Member>,
    initial_cluster: String,
    token: String,
    // Dropped last: the processes are killed before their data goes.
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts 3 members and waits until the cluster is healthy. Retries with
    /// fresh ports when a member dies at start (a port taken in between).
    pub async fn start(name: &str) -> EtcdCluster {
        let mut failures = Vec::new();
        for attempt in 1..=3 {
            let mut cluster = Self::spawn_new(name, attempt);
            match cluster.wait_healthy(ETCD_HEALTHY_TIMEOUT).await {
                Ok(()) => return cluster,
                Err(error) => {
                    let report = format!("attempt {attempt}: {error}\n{}", cluster.log_tails(15));
                    eprintln!("etcd cluster did not start, retrying: {report}");
                    failures.push(report);
                    cluster.stop_all().await;
                }
            }
        }
        panic!(
            "etcd cluster did not become healthy in 3 attempts:\n{}",
            failures.join("\n")
        );
    }

    fn spawn_new(name: &str, attempt: u32) -> EtcdCluster {
        let dir = TempDir::new(&format!("etcd-{name}"));
        let ports = free_ports(6);
        let members: Vec<Member> = (0..3)
            .map(|i| {
                let name = format!("e{}", i + 1);
                Member {
                    data_dir: dir.path(&format!("{name}/data")),
                    log: dir.path(&format!("{name}.log")),
                    name,
                    client_port: ports[i],
                    peer_port: ports[3 + i],
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token: format!("understudy-{name}-{}-{attempt}", std::process::id()),
            dir,
        };
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster
    }

    /// Starts member `i`'s process: `new` on first start, `existing` when
    /// its data directory already holds a member (a rejoin).
    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        assert!(member.child.is_none(), "{} is already running", member.name);
        std::fs::create_dir_all(member.data_dir.parent().unwrap()).unwrap();
        let state = if member.data_dir.join("member").is_dir() {
            "existing"
        } else {
            "new"
        };
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(member.client_url())
            .arg("--advertise-client-urls")
            .arg(member.client_url())
            .arg("--listen-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg(state)
            .args(["--auto-compaction-mode", "periodic"])
            .args(["--auto-compaction-retention", "10m"])
            .args(["--logger", "zap", "--log-outputs"])
            .arg(&member.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn etcd (is etcd-server installed?)");
        self.members[i].child = Some(child);
    }

    /// Client URLs of every member, running or not (what replicas get).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Client URLs of the running members.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(Member::client_url)
            .collect()
    }

    /// The endpoints as a TOML array: `["http://…", …]`.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    /// Waits until every running member reports healthy (a quorum read
    /// through each), or fails with the reason after `timeout`. Also fails
    /// early when a member process exited by itself.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            for member in &mut self.members {
                if let Some(child) = &mut member.child
                    && let Ok(Some(exit)) = child.try_wait()
                {
                    member.child = None;
                    return Err(format!("etcd member {} exited: {exit}", member.name));
                }
            }
            let endpoints = self.live_endpoints();
            if endpoints.is_empty() {
                return Err("no etcd member is running".into());
            }
            match self.etcdctl_at(&endpoints, &["endpoint", "health"]).await {
                Ok(output) if output.status.success() => return Ok(()),
                Ok(output) => {
                    last = format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    )
                }
                Err(error) => last = error,
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not healthy within {timeout:?}; last `endpoint health`:\n{last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// [`Self::wait_healthy`] that panics (with the members' log tails).
    pub async fn expect_healthy(&mut self, timeout: Duration) {
        if let Err(error) = self.wait_healthy(timeout).await {
            panic!("{error}\n{}", self.log_tails(20));
        }
    }

    /// `kill -9` member `i` and reap it (its ports are free afterwards).
    pub async fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        let mut child = member
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", member.name));
        child.start_kill().expect("SIGKILL etcd");
        tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not die after SIGKILL", member.name))
            .unwrap();
    }

    /// Starts member `i` again with its old data directory and ports.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// SIGTERM member `i` and wait for it to exit (SIGKILL after 10 s).
    pub async fn stop(&mut self, i: usize) {
        let Some(mut child) = self.members[i].child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Stops every running member.
    pub async fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
    }

    /// Runs `etcdctl` (API v3) against the running members.
    pub async fn etcdctl(&self, args: &[&str]) -> Result<Output, String> {
        self.etcdctl_at(&self.live_endpoints(), args).await
    }

    pub async fn etcdctl_at(&self, endpoints: &[String], args: &[&str]) -> Result<Output, String> {
        let run = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(ETCDCTL_TIMEOUT, run).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => Err(format!(
                "etcdctl {args:?}: {error} (is etcd-client installed?)"
            )),
            Err(_) => Err(format!(
                "etcdctl {args:?} did not finish in {ETCDCTL_TIMEOUT:?}"
            )),
        }
    }

    /// `etcdctl` that must succeed; returns stdout.
    pub async fn etcdctl_ok(&self, args: &[&str]) -> String {
        let output = self
            .etcdctl(args)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tails(10)));
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl_ok(&["put", key, value]).await;
        assert!(out.contains("OK"), "put {key}: {out}");
    }

    /// Every key under `prefix` (empty when none); panics when etcd fails.
    pub async fn get_prefix(&self, prefix: &str) -> Vec<Kv> {
        let out = self
            .etcdctl_ok(&["get", "--prefix", prefix, "-w", "json"])
            .await;
        parse_kvs(&out).unwrap_or_else(|e| panic!("etcdctl get {prefix}: {e}: {out}"))
    }

    /// One key, if present.
    pub async fn get(&self, key: &str) -> Option<Kv> {
        let out = self.etcdctl_ok(&["get", key, "-w", "json"]).await;
        parse_kvs(&out)
            .unwrap_or_else(|e| panic!("etcdctl get {key}: {e}: {out}"))
            .into_iter()
            .find(|kv| kv.key == key)
    }

    /// Index of the member that is etcd's raft leader, if the running
    /// members agree on one.
    pub async fn raft_leader(&self) -> Option<usize> {
        let output = self
            .etcdctl(&["endpoint", "status", "-w", "json"])
            .await
            .ok()?;
        let statuses: Value = serde_json::from_slice(&output.stdout).ok()?;
        statuses.as_array()?.iter().find_map(|entry| {
            let status = &entry["Status"];
            let me = status["header"]["member_id"].as_u64()?;
            if status["leader"].as_u64()? != me {
                return None;
            }
            let endpoint = entry["Endpoint"].as_str()?;
            self.members
                .iter()
                .position(|m| endpoint.ends_with(&format!(":{}", m.client_port)))
        })
    }

    /// The last `n` lines of every member's log, for failure reports.
    pub fn log_tails(&self, n: usize) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "--- etcd {} (client {}, running {}) log tail:\n{}",
                    m.name,
                    m.client_port,
                    m.is_running(),
                    file_tail(&m.log, n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Keys under `prefix`, read synchronously (usable from `Drop`).
    pub fn dump_prefix_blocking(&self, prefix: &str) -> String {
        let endpoints = self.live_endpoints();
        if endpoints.is_empty() {
            return "(no etcd member running)".into();
        }
        let output = std::process::Command::new("timeout")
            .arg("10")
            .arg("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--dial-timeout=2s", "--command-timeout=3s"])
            .args(["get", "--prefix", prefix, "-w", "json"])
            .stdin(Stdio::null())
            .output();
        match output {
            Ok(out) if out.status.success() => {
                match parse_kvs(&String::from_utf8_lossy(&out.stdout)) {
                    Ok(kvs) => format_kvs(&kvs),
                    Err(e) => format!("(unparsable etcdctl output: {e})"),
                }
            }
            Ok(out) => format!("(etcdctl failed: {})", String::from_utf8_lossy(&out.stderr)),
            Err(e) => format!("(etcdctl did not run: {e})"),
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                let _ = child.start_kill();
            }
        }
        // Reap briefly so the temp directory is not removed under a live
        // process; the runtime's orphan reaper takes care of stragglers.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Parses `etcdctl get -w json` output (base64 keys and values).
pub fn parse_kvs(out: &str) -> Result<Vec<Kv>, String> {
    let value: Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
    let decode = |v: &Value| -> Result<String, String> {
        let text = v.as_str().unwrap_or("");
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| e.to_string())
    };
    let Some(kvs) = value["kvs"].as_array() else {
        return Ok(Vec::new());
    };
    kvs.iter()
        .map(|kv| {
            Ok(Kv {
                key: decode(&kv["key"])?,
                value: decode(&kv["value"])?,
                create_revision: kv["create_revision"].as_i64().unwrap_or(0),
                mod_revision: kv["mod_revision"].as_i64().unwrap_or(0),
                lease: kv["lease"].as_i64().unwrap_or(0),
            })
        })
        .collect()
}

/// Keys and (shortened) values, one per line.
pub fn format_kvs(kvs: &[Kv]) -> String {
    if kvs.is_empty() {
        return "(no keys)".into();
    }
    kvs.iter()
        .map(|kv| {
            format!(
                "{} (create {}, mod {}, lease {:x}) = {}",
                kv.key,
                kv.create_revision,
                kv.mod_revision,
                kv.lease,
                truncate(&kv.value, 600)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One HTTP call bounded by `timeout`; transport errors, timeouts and
/// non-JSON bodies come back as `Err` (a SIGSTOPped replica accepts the
/// connection but never answers).
pub async fn try_request(
    method: Method,
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let client = http_client();
    let call = try_send(&client, method, url, &[], body.to_owned());
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok((status, _, body))) => Ok((status.as_u16(), body)),
        Ok(Err(error)) => Err(format!("{url}: {error}")),
        Err(_) => Err(format!("{url}: no answer within {timeout:?}")),
    }
}

pub async fn try_get_json(url: &str, timeout: Duration) -> Result<Value, String> {
    let (status, body) = try_request(Method::GET, url, "", timeout).await?;
    serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{url} answered {status} with non-JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })
}

pub async fn try_get_text(url: &str, timeout: Duration) -> Result<String, String> {
    let (_, body) = try_request(Method::GET, url, "", timeout).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// What a [`Load`] saw.
#[derive(Default, Debug)]
pub struct Tally {
    pub ok: AtomicU64,
    pub not_ok: AtomicU64,
    pub failed: AtomicU64,
    pub candidate: AtomicU64,
    /// The first few failures, for the report.
    pub errors: Mutex<Vec<String>>,
}

impl Tally {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn note(&self, error: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(error);
        }
    }

    /// Panics unless every request got a 200.
    pub fn assert_all_ok(&self, what: &str) {
        let (ok, not_ok, failed) = (
            Tally::get(&self.ok),
            Tally::get(&self.not_ok),
            Tally::get(&self.failed),
        );
        assert!(
            not_ok == 0 && failed == 0 && ok > 0,
            "{what}: {ok} ok, {not_ok} non-200, {failed} transport errors; first errors: {:#?}",
            self.errors.lock().unwrap()
        );
    }
}

/// The path the tests send traffic to.
pub const INFER: &str = "/v2/models/m/infer";

/// A closed loop of requests against several proxies in the background,
/// `workers` concurrent loops per URL, each sleeping `pause` between
/// requests.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub tally: Arc<Tally>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(proxy_urls: &[String], workers: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut handles = Vec::new();
        for base in proxy_urls {
            for _ in 0..workers {
                let (stop, tally) = (stop.clone(), tally.clone());
                let url = format!("{base}{INFER}");
                handles.push(tokio::spawn(async move {
                    let client = http_client();
                    while !stop.load(Ordering::Relaxed) {
                        let call = try_send(&client, Method::POST, &url, &[], "{}");
                        match tokio::time::timeout(Duration::from_secs(10), call).await {
                            Ok(Ok((status, headers, body))) => {
                                if status == 200 {
                                    tally.ok.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    tally.not_ok.fetch_add(1, Ordering::Relaxed);
                                    tally.note(format!("{url}: {status} {body:?}"));
                                }
                                if headers
                                    .get("x-understudy-backend")
                                    .is_some_and(|v| v == "candidate")
                                {
                                    tally.candidate.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(Err(error)) => {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                                tally.note(format!("{url}: {error}"));
                            }
                            Err(_) => {
                                tally.failed.fetch_add(1, Ordering::Relaxed);
                                tally.note(format!("{url}: no answer within 10s"));
                            }
                        }
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            tally,
            workers: handles,
        }
    }

    /// Requests answered so far (any status).
    pub fn answered(&self) -> u64 {
        Tally::get(&self.tally.ok) + Tally::get(&self.tally.not_ok)
    }

    /// Stops the loops and waits for the requests in flight.
    pub async fn stop(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            let _ = worker.await;
        }
        self.tally
    }
}
