//! Configuration: the TOML file turned into validated, typed settings.
//!
//! Parsing happens in two passes. `raw` deserializes the file as written
//! (unknown keys are errors); `build` checks every value and collects *all*
//! problems, each naming its key, its line and what was expected, so one run
//! of `understudy check` shows everything that is wrong. Nothing in this
//! module touches the network or the data path.

mod build;
mod build_backends;
mod build_fleet;
mod compare_settings;
mod locate;
mod raw;
mod rollout_settings;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};

use crate::split::StickyKey;
pub use compare_settings::{
    Compare, ComparePriority, DEFAULT_COMPARE_QUEUE, DEFAULT_KEEP_MISMATCHES,
    default_compare_threads,
};
pub use rollout_settings::{
    DEFAULT_INTERVAL, DEFAULT_LATENCY_SLACK_MS, DEFAULT_MAX_ERROR_RATE,
    DEFAULT_MAX_LATENCY_INCREASE, DEFAULT_MIN_MATCH_RATE, DEFAULT_MIN_REQUESTS, DEFAULT_STATE_FILE,
    DEFAULT_STEPS, MatchUnit, Rollout,
};

/// The data-plane listen address when none is configured: every interface,
/// the port most model gateways use.
pub const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:8080";
/// Admin stays on loopback by default: it can change traffic weights.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";
/// Upstream request timeout (time to the response head); model inference on
/// CPU can take seconds, so this follows Envoy's generous route default.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(30);
/// A healthy loopback or in-cluster connect takes microseconds; one second
/// catches dead hosts quickly without flapping on a busy node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Clients' requests in flight to one backend at once. For HTTP/1.1 each is
/// a connection, and each costs ~25 KiB of hyper buffers here; a model
/// server rarely runs more than a few hundred inferences at once, so
/// connections past that only queue inside it. Envoy's circuit breaker
/// default is 1024; nginx has no limit unless `max_conns` is set.
pub const DEFAULT_BACKEND_MAX_CONNECTIONS: usize = 256;
/// Mirrors in flight at once; bounds shadow memory (each holds at most one
/// request and one response body).
pub const DEFAULT_SHADOW_MAX_IN_FLIGHT: usize = 512;
/// Inference payloads are small; larger bodies (uploads) pass through but are
/// not held for mirroring.
pub const DEFAULT_SHADOW_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Bytes all mirrors in flight may hold together (request copies, serving
/// response copies, the other backend's answers). 64 MiB fits a small
/// sidecar's memory limit beside the proxy's own ~40-60 MiB under load, and
/// still holds about 64 pairs of 500 KB answers in flight: at 200 ms per
/// candidate answer that is 300 mirrored requests a second of ML-sized
/// traffic, more than two cores can compare.
pub const DEFAULT_SHADOW_MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
/// How much of an answer hyper takes into a client connection's write
/// buffer before it stops pulling the body (its limit for heads too).
pub fn write_buffer_bytes(max_header_bytes: usize) -> usize {
    max_header_bytes.max(8192)
}

/// The shadow is not allowed to hold resources longer than this.
pub const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(5);
/// Grace period for in-flight requests on SIGTERM (Kubernetes' default
/// termination grace period is 30 s; we leave it headroom to exit cleanly).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// nginx gives clients 60 s for a request head and keeps idle connections
/// 75 s; hyper's 30 s default sheds slowloris clients twice as fast and is
/// still far above any real client's head time.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's client_body_timeout: the longest pause allowed between two reads
/// of a request body.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Request bodies up to this size are read whole before they take one of
/// the backend's connection slots (nginx buffers whole bodies by default):
/// inference inputs are rarely larger, and it matches
/// `shadow.max_body_bytes`, the largest body the mirror copies anyway.
pub const DEFAULT_REQUEST_BUFFER_BYTES: usize = 1024 * 1024;
/// The buffered part of a body must arrive within this: a megabyte takes
/// under a second on any real network, and a trickle of a byte every few
/// seconds (which never trips the idle timeout) is cut off here.
pub const DEFAULT_REQUEST_BUFFER_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that takes none of its answer for this long is cut off (the
/// last resort against a slow reader of an answer too long to spill).
/// nginx's is 60 s; half still leaves a bad mobile link many retries.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx accepts request heads up to 4 × 8 KiB buffers; 64 KiB leaves room
/// for large tokens and tracing headers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// nginx's `proxy_buffers` (8 × 4–8 KiB): a client keeping up never waits,
/// and 1,000 slow readers hold 64 MiB, not the gigabyte of their answers.
pub const DEFAULT_RESPONSE_BUFFER_BYTES: usize = 64 * 1024;
/// nginx's `proxy_max_temp_file_size`.
pub const DEFAULT_RESPONSE_SPILL_BYTES: u64 = 1 << 30;
/// A TLS handshake should take one or two round trips; ten seconds is
/// generous for a slow client and short enough to shed half-open ones.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent client connections before new ones are answered 503 and
/// closed; nginx's 512 worker_connections per worker is too low for a
/// gateway, so we follow Envoy's practice of a high but finite limit.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Environment variable that may carry the admin token, so it needs not be
/// written into the config file.
pub const ADMIN_TOKEN_ENV: &str = "UNDERSTUDY_ADMIN_TOKEN";
/// Share of live requests recorded by `[record]`: enough for a validation
/// run within a day of traffic, too little to load the disk.
pub const DEFAULT_RECORD_PERCENT: f64 = 1.0;
/// `understudy run --record FILE` without a `[record] percent`: the user
/// asked for a recording now, so record everything.
pub const DEFAULT_RECORD_FLAG_PERCENT: f64 = 100.0;
/// The recording rotates beyond 1 GiB (two files at most on disk).
pub const DEFAULT_RECORD_MAX_BYTES: u64 = 1 << 30;
/// Headers recorded by default: only what a model server needs to parse the
/// body, never credentials.
pub const DEFAULT_RECORD_HEADERS: [&str; 1] = ["content-type"];

/// A fully validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub admin: Admin,
    pub stable: Backend,
    pub candidate: Option<Backend>,
    pub shadow: Shadow,
    pub compare: Compare,
    pub rollout: Option<Rollout>,
    pub split: Split,
    pub log: Log,
    /// `[record]`: sample live requests into a JSONL file for `understudy validate`.
    pub record: Option<Record>,
    /// `[fleet]`: run one rollout together with other replicas through etcd.
    pub fleet: Option<Fleet>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Add `x-understudy-backend` to every response.
    pub backend_header: bool,
    pub drain_timeout: Duration,
    pub max_connections: usize,
    /// Data-plane worker threads, each with its own runtime and listening
    /// socket (`SO_REUSEPORT`); default: one per CPU.
    pub workers: usize,
    /// Time a client has to send a complete request head; also how long an
    /// idle keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_bytes: usize,
    /// Largest request body accepted (413 beyond); `None` is unlimited.
    pub max_body_bytes: Option<u64>,
    /// A request body that sends nothing for this long gets 408.
    pub body_idle_timeout: Duration,
    /// Request bodies up to this size are read whole before a backend
    /// connection slot is taken; larger ones stream after this much.
    pub request_buffer_bytes: usize,
    /// The buffered part of a request body must arrive within this (408).
    pub request_buffer_timeout: Duration,
    /// A client connection whose writes stall this long is closed.
    pub send_timeout: Duration,
    /// Bytes of an answer read ahead of the client in memory (0: none).
    pub response_buffer_bytes: usize,
    /// Bytes of one answer that may be spilled to disk (0: never).
    pub response_spill_bytes: u64,
    /// Where spilled answers go (unlinked files).
    pub spill_dir: PathBuf,
    /// Serve HTTPS (ALPN h2 and http/1.1) instead of cleartext.
    pub tls: Option<ListenTls>,
}

/// The listener's certificate, and the CA that client certificates must
/// chain to for mutual TLS. Paths are relative to the working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// Bearer token required on every admin POST when set.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Backend {
    /// `stable` or `candidate`: used in errors and logs.
    pub name: &'static str,
    /// Scheme and authority of the backend; the request's path is appended.
    pub url: Uri,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Speak HTTP/2 with prior knowledge (h2c) to this backend.
    pub http2: bool,
    /// Idle keep-alive connections kept to this backend for serving,
    /// divided among the data-plane workers; the shadow pool keeps up to
    /// this many on each worker.
    pub pool_max_idle: usize,
    /// Clients' requests in flight to this backend at once (for HTTP/1.1,
    /// connections), shared among the data-plane workers; more wait.
    pub max_connections: usize,
    /// Private CA for an `https://` backend (default: Mozilla's roots).
    pub ca: Option<PathBuf>,
    /// Client certificate and key for upstream mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Backend {
    pub fn is_https(&self) -> bool {
        self.url.scheme_str() == Some("https")
    }
}

#[derive(Debug, Clone)]
pub struct Shadow {
    /// Share of eligible requests mirrored, 0..=100.
    pub percent: f64,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    /// Bytes all mirrors in flight may hold together.
    pub max_buffered_bytes: usize,
    pub timeout: Duration,
    /// Only paths matching one of these are mirrored; empty means all.
    pub routes: Vec<RoutePattern>,
    /// Headers never sent to the shadow backend.
    pub strip_headers: Vec<HeaderName>,
}

#[derive(Debug, Clone, Default)]
pub struct Split {
    pub sticky: Option<StickyKey>,
}

#[derive(Debug, Clone, Default)]
pub struct Log {
    pub access: Option<AccessLogTarget>,
}

/// `[record]` as configured (or set by `understudy run --record FILE`).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The JSONL file appended to; `None` until `--record FILE` names it.
    pub path: Option<PathBuf>,
    /// Share of requests recorded, 0..=100; `None` when not written in the
    /// file (the default then depends on how recording was asked for).
    pub percent: Option<f64>,
    /// Size at which the file rotates to `PATH.1`.
    pub max_bytes: u64,
    /// Request headers recorded (lowercase names); all others never are.
    pub headers: Vec<HeaderName>,
}

impl Record {
    /// The share recorded, in percent.
    pub fn effective_percent(&self) -> f64 {
        self.percent.unwrap_or(DEFAULT_RECORD_PERCENT)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

/// A path pattern for `shadow.routes`: `*` matches any run of characters
/// within one path segment (never a `/`), so `/v2/models/*/infer` matches
/// every model's infer route and nothing deeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    segments: Vec<String>,
}

impl RoutePattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if !pattern.starts_with('/') {
            return Err(format!(
                "expected a path starting with '/', got {pattern:?}"
            ));
        }
        Ok(Self {
            segments: pattern.split('/').map(str::to_owned).collect(),
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        for pattern in &self.segments {
            match parts.next() {
                Some(part) if segment_matches(pattern, part) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// Glob match of one segment where `*` stands for any run of characters.
fn segment_matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = pieces.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Validates config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let token_env = std::env::var(ADMIN_TOKEN_ENV).ok();
        build::build(text, origin, token_env)
    }

    /// `understudy run --record FILE`: records to `path`, every request
    /// unless `[record] percent` says otherwise.
    pub fn record_to(&mut self, path: PathBuf) {
        let record = self.record.get_or_insert_with(|| Record {
            path: None,
            percent: None,
            max_bytes: DEFAULT_RECORD_MAX_BYTES,
            headers: default_record_headers(),
        });
        record.path = Some(path);
        record.percent = Some(record.percent.unwrap_or(DEFAULT_RECORD_FLAG_PERCENT));
    }

    /// What identifies a rollout: persisted state of another pair of backends
    /// must never be applied to this one.
    pub fn identity(&self) -> String {
        let candidate = self
            .candidate
            .as_ref()
            .map(|c| c.url.to_string())
            .unwrap_or_else(|| "none".into());
        format!("stable={} candidate={}", self.stable.url, candidate)
    }
}

/// `[fleet]`: many replicas, one rollout, coordinated through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// etcd client URLs, all `http://` or all `https://`.
    pub endpoints: Vec<String>,
    /// Key prefix of this rollout, without a trailing slash.
    pub prefix: String,
    /// This replica's name in the fleet.
    pub replica_id: String,
    /// Lease of this replica's report and (when leading) the leader key.
    pub lease_ttl: Duration,
    /// TLS to etcd (with `https://` endpoints).
    pub tls: Option<FleetTls>,
}

/// TLS to etcd: the CA the members' certificates chain to, an optional
/// client certificate, and the name to verify when it differs from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    pub ca: PathBuf,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub domain: Option<String>,
}

/// The lease of a replica when `[fleet] lease_ttl` is not set: a dead
/// leader is replaced within about this long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// [`DEFAULT_RECORD_HEADERS`] as header names.
pub fn default_record_headers() -> Vec<HeaderName> {
    DEFAULT_RECORD_HEADERS
        .iter()
        .map(|h| HeaderName::from_static(h))
        .collect()
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `rollout.max_error_rate`.
    pub key: String,
    /// 1-based line of the key in the file, when it is in the file.
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{}", ProblemList { origin, problems })]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "{} has {count} problem{}:",
            self.origin,
            if count == 1 { "" } else { "s" }
        )?;
        for problem in self.problems {
            match problem.line {
                Some(line) => write!(f, "\n  line {line}: {}: {}", problem.key, problem.message)?,
                None => write!(f, "\n  {}: {}", problem.key, problem.message)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fleet;
#[cfg(test)]
mod tests_noise;
