//! Turns the raw TOML structs into a validated [`Config`], collecting every
//! problem with its key instead of stopping at the first. Backends and TLS
//! are checked in `build_backends.rs`, single values in `values.rs`.

use std::path::PathBuf;

use http::{HeaderName, Uri};

use super::raw::{RawConfig, RawRollout};
use super::*;

pub(super) fn build(
    text: &str,
    origin: &str,
    token_env: Option<String>,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    let mut check = Checker {
        text,
        problems: Vec::new(),
    };
    let config = check.config(raw, token_env);
    match config {
        Some(config) if check.problems.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems: check.problems,
        }),
    }
}

pub(super) struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            line: locate::line_of(self.text, key),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig, token_env: Option<String>) -> Option<Config> {
        let listen = Listen {
            addr: self.socket_addr("listen.addr", raw.listen.addr, DEFAULT_LISTEN_ADDR),
            backend_header: raw.listen.backend_header.unwrap_or(true),
            drain_timeout: self.duration(
                "listen.drain_timeout",
                raw.listen.drain_timeout,
                DEFAULT_DRAIN_TIMEOUT,
            ),
            max_connections: self.count(
                "listen.max_connections",
                raw.listen.max_connections,
                DEFAULT_MAX_CONNECTIONS,
                1,
            ),
            workers: self.count(
                "listen.workers",
                raw.listen.workers,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                1,
            ),
            header_read_timeout: self.duration(
                "listen.header_read_timeout",
                raw.listen.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            ),
            max_header_bytes: self.count(
                "listen.max_header_bytes",
                raw.listen.max_header_bytes,
                DEFAULT_MAX_HEADER_BYTES,
                1024,
            ),
            max_body_bytes: raw
                .listen
                .max_body_bytes
                .map(|v| self.count("listen.max_body_bytes", Some(v), 0, 1) as u64),
            body_idle_timeout: self.duration(
                "listen.body_idle_timeout",
                raw.listen.body_idle_timeout,
                DEFAULT_BODY_IDLE_TIMEOUT,
            ),
            request_buffer_bytes: self.count(
                "listen.request_buffer_bytes",
                raw.listen.request_buffer_bytes,
                DEFAULT_REQUEST_BUFFER_BYTES,
                0,
            ),
            request_buffer_timeout: self.duration(
                "listen.request_buffer_timeout",
                raw.listen.request_buffer_timeout,
                DEFAULT_REQUEST_BUFFER_TIMEOUT,
            ),
            send_timeout: self.duration(
                "listen.send_timeout",
                raw.listen.send_timeout,
                DEFAULT_SEND_TIMEOUT,
            ),
            response_buffer_bytes: self.count(
                "listen.response_buffer_bytes",
                raw.listen.response_buffer_bytes,
                DEFAULT_RESPONSE_BUFFER_BYTES,
                0,
            ),
            response_spill_bytes: self.count(
                "listen.response_spill_bytes",
                raw.listen.response_spill_bytes,
                DEFAULT_RESPONSE_SPILL_BYTES as usize,
                0,
            ) as u64,
            spill_dir: self.spill_dir(raw.listen.spill_dir, raw.listen.response_spill_bytes),
            tls: raw.listen.tls.and_then(|t| self.listen_tls(t)),
        };
        let admin = self.admin(raw.admin, token_env);
        let stable = match raw.backends.stable {
            Some(b) => self.backend("stable", b),
            None => {
                self.problem(
                    "backends.stable",
                    "is required: the [backends.stable] table with url = \"http://HOST:PORT\"",
                );
                None
            }
        };
        let candidate = raw
            .backends
            .candidate
            .and_then(|b| self.backend("candidate", b));
        let shadow = self.shadow(raw.shadow, candidate.is_some());
        let compare = self.compare(raw.compare);
        let rollout = raw.rollout.map(|r| self.rollout(r));
        if let (Some(r), Some(c)) = (&rollout, &compare) {
            self.relative_gate(r, c);
        }
        if rollout.is_some() && candidate.is_none() {
            self.problem(
                "rollout",
                "a rollout needs a candidate: add [backends.candidate]",
            );
        }
        let sticky = raw.split.sticky.and_then(|s| match s.parse::<StickyKey>() {
            Ok(key) => Some(key),
            Err(e) => {
                self.problem("split.sticky", e.to_string());
                None
            }
        });
        let access = raw.log.access.map(|a| match a.as_str() {
            "stdout" | "-" => AccessLogTarget::Stdout,
            path => AccessLogTarget::File(PathBuf::from(path)),
        });
        let record = raw.record.map(|r| self.record(r));
        let fleet = raw
            .fleet
            .and_then(|f| self.fleet(f, listen.addr.port(), rollout.is_some()));
        Some(Config {
            listen,
            admin,
            stable: stable?,
            candidate,
            shadow,
            compare: compare?,
            rollout,
            split: Split { sticky },
            log: Log { access },
            record,
            fleet,
        })
    }

    /// `listen.spill_dir`, checked by creating a file in it (unless
    /// spilling is off), so a missing or read-only directory is a startup
    /// error, not a warning under the first slow client.
    fn spill_dir(&mut self, dir: Option<String>, spill_bytes: Option<i64>) -> PathBuf {
        let dir = dir.map_or_else(std::env::temp_dir, PathBuf::from);
        if spill_bytes != Some(0)
            && let Err(error) = tempfile::tempfile_in(&dir)
        {
            self.problem(
                "listen.spill_dir",
                format!(
                    "cannot create a file in {}: {error} (answers for slow clients are spilled there; \
                     point it at a writable directory, or set listen.response_spill_bytes = 0)",
                    dir.display()
                ),
            );
        }
        dir
    }

    fn record(&mut self, raw: super::raw::RawRecord) -> Record {
        let path = match raw.path {
            Some(p) if p.trim().is_empty() => {
                self.problem("record.path", "expected a file path, got an empty string");
                None
            }
            p => p.map(PathBuf::from),
        };
        let percent = raw.percent.filter(|p| {
            let ok = (0.0..=100.0).contains(p);
            if !ok {
                self.problem(
                    "record.percent",
                    format!("expected a percentage between 0 and 100, got {p}"),
                );
            }
            ok
        });
        let max_bytes = match raw.max_bytes {
            None => DEFAULT_RECORD_MAX_BYTES,
            // Below a few KiB every line would rotate the file.
            Some(v) if v >= 4096 => v as u64,
            Some(v) => {
                self.problem(
                    "record.max_bytes",
                    format!("expected a size in bytes >= 4096, got {v}"),
                );
                DEFAULT_RECORD_MAX_BYTES
            }
        };
        let headers = match raw.headers {
            None => default_record_headers(),
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, h)| match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(name) => Some(name),
                    Err(_) => {
                        self.problem(
                            &format!("record.headers[{i}]"),
                            format!("expected an HTTP header name, got {h:?}"),
                        );
                        None
                    }
                })
                .collect(),
        };
        Record {
            path,
            percent,
            max_bytes,
            headers,
        }
    }

    fn admin(&mut self, raw: super::raw::RawAdmin, token_env: Option<String>) -> Admin {
        let addr = self.socket_addr("admin.addr", raw.addr, DEFAULT_ADMIN_ADDR);
        let token = raw.token.or(token_env).filter(|t| !t.is_empty());
        if !addr.ip().is_loopback() && token.is_none() {
            self.problem(
                "admin.addr",
                format!(
                    "{addr} is not a loopback address: the admin API can move traffic, so \
                     binding it there needs admin.token (or {ADMIN_TOKEN_ENV})"
                ),
            );
        }
        Admin { addr, token }
    }

    fn shadow(&mut self, raw: super::raw::RawShadow, has_candidate: bool) -> Shadow {
        let default_percent = if has_candidate { 100.0 } else { 0.0 };
        let percent = raw.percent.unwrap_or(default_percent);
        let percent = if (0.0..=100.0).contains(&percent) {
            percent
        } else {
            self.problem(
                "shadow.percent",
                format!("expected a percentage between 0 and 100, got {percent}"),
            );
            default_percent
        };
        let routes = raw
            .routes
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match RoutePattern::parse(r) {
                Ok(p) => Some(p),
                Err(e) => {
                    self.problem(&format!("shadow.routes[{i}]"), e);
                    None
                }
            })
            .collect();
        let strip_headers = raw
            .strip_headers
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, h)| match HeaderName::from_bytes(h.as_bytes()) {
                Ok(name) => Some(name),
                Err(_) => {
                    self.problem(
                        &format!("shadow.strip_headers[{i}]"),
                        format!("expected an HTTP header name, got {h:?}"),
                    );
                    None
                }
            })
            .collect();
        Shadow {
            percent,
            max_in_flight: self.count(
                "shadow.max_in_flight",
                raw.max_in_flight,
                DEFAULT_SHADOW_MAX_IN_FLIGHT,
                1,
            ),
            max_body_bytes: self.count(
                "shadow.max_body_bytes",
                raw.max_body_bytes,
                DEFAULT_SHADOW_MAX_BODY_BYTES,
                0,
            ),
            max_buffered_bytes: self.count(
                "shadow.max_buffered_bytes",
                raw.max_buffered_bytes,
                DEFAULT_SHADOW_MAX_BUFFERED_BYTES,
                0,
            ),
            timeout: self.duration("shadow.timeout", raw.timeout, DEFAULT_SHADOW_TIMEOUT),
            routes,
            strip_headers,
        }
    }

    fn rollout(&mut self, raw: RawRollout) -> Rollout {
        let steps = raw.steps.unwrap_or_else(|| DEFAULT_STEPS.to_vec());
        let ascending = steps.windows(2).all(|w| w[0] < w[1]);
        let in_range = steps.iter().all(|s| *s > 0.0 && *s <= 100.0);
        if steps.is_empty() || !ascending || !in_range {
            self.problem(
                "rollout.steps",
                format!(
                    "expected ascending candidate percentages in (0, 100], like [5, 25, 50, 100], got {steps:?}"
                ),
            );
        }
        let (webhook, webhook_ca) = self.webhook(raw.webhook, raw.webhook_ca);
        Rollout {
            steps,
            interval: self.duration("rollout.interval", raw.interval, DEFAULT_INTERVAL),
            min_requests: self.count(
                "rollout.min_requests",
                raw.min_requests,
                DEFAULT_MIN_REQUESTS as usize,
                1,
            ) as u64,
            max_error_rate: self.rate(
                "rollout.max_error_rate",
                raw.max_error_rate,
                DEFAULT_MAX_ERROR_RATE,
            ),
            max_latency_increase: self.non_negative(
                "rollout.max_latency_increase",
                raw.max_latency_increase,
                DEFAULT_MAX_LATENCY_INCREASE,
            ),
            max_latency_increase_ms: self.non_negative(
                "rollout.max_latency_increase_ms",
                raw.max_latency_increase_ms,
                DEFAULT_LATENCY_SLACK_MS,
            ),
            min_match_rate: self.rate(
                "rollout.min_match_rate",
                raw.min_match_rate,
                DEFAULT_MIN_MATCH_RATE,
            ),
            max_match_rate_drop: raw
                .max_match_rate_drop
                .map(|v| self.rate("rollout.max_match_rate_drop", Some(v), 0.0)),
            match_unit: match raw.match_unit.as_deref() {
                None | Some("request") => MatchUnit::Request,
                Some("row") => MatchUnit::Row,
                Some(other) => {
                    self.problem(
                        "rollout.match_unit",
                        format!("expected \"request\" or \"row\", got {other:?}"),
                    );
                    MatchUnit::Request
                }
            },
            state_file: PathBuf::from(raw.state_file.unwrap_or_else(|| DEFAULT_STATE_FILE.into())),
            max_step_duration: raw
                .max_step_duration
                .map(|d| self.duration("rollout.max_step_duration", Some(d), DEFAULT_INTERVAL)),
            webhook,
            webhook_ca,
        }
    }

    /// `rollout.webhook` and its `webhook_ca`, whose file is read now so
    /// `understudy check` names a bad one.
    fn webhook(
        &mut self,
        url: Option<String>,
        ca: Option<String>,
    ) -> (Option<Uri>, Option<PathBuf>) {
        let given = url.is_some();
        let url = url.and_then(|text| {
            let uri = text.parse::<Uri>().ok().filter(|u| u.authority().is_some());
            let problem = match uri.as_ref().and_then(|u| u.scheme_str()) {
                Some("http" | "https") => None,
                Some(scheme) => Some(format!("unsupported scheme {scheme:?}: ")),
                None => Some(String::new()),
            };
            let Some(problem) = problem else {
                return uri;
            };
            self.problem(
                "rollout.webhook",
                format!("{problem}expected an http:// or https:// URL, got {text:?}"),
            );
            None
        });
        let ca = ca.map(PathBuf::from);
        if let Some(path) = &ca {
            match &url {
                Some(url) if url.scheme_str() == Some("https") => {
                    if let Err(e) = crate::tls::load_roots(path) {
                        self.problem("rollout.webhook_ca", e.to_string());
                    }
                }
                Some(_) => self.problem(
                    "rollout.webhook_ca",
                    "applies to an https:// webhook only; rollout.webhook is http://",
                ),
                None if !given => self.problem(
                    "rollout.webhook_ca",
                    "applies to rollout.webhook, which is not set",
                ),
                None => {}
            }
        }
        (url, ca)
    }
}
