//! Config reload: SIGHUP and `POST /reload` both call [`Reloader::reload`].
//!
//! A reload reads the config file again, validates it exactly as
//! `understudy check` does, and either applies it whole or not at all: a
//! rejected file leaves the running config in force. Settings the running
//! parts can take over (shadow, compare rules, split, rollout thresholds,
//! request-body limits, the listener's certificates, the backends' TLS
//! files) apply to the next request or connection; keys fixed at start are
//! reported as needing a restart and keep their running values.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde::Serialize;

use crate::config::{Backend, Config, ConfigError};
use crate::listener::ListenerTls;
use crate::proxy::{Proxy, Settings};
use crate::rollout::RolloutHandle;
use crate::stats::StatsHandle;
use crate::telemetry::Metrics;
use crate::tls;

/// Where a reload reads its config from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// `understudy run --record FILE`: applies to every load, so a reload
    /// keeps recording.
    pub record: Option<PathBuf>,
}

impl ConfigSource {
    /// Reads and validates the file, as `understudy check` does.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(&self.path)?;
        if let Some(file) = &self.record {
            config.record_to(file.clone());
        }
        Ok(config)
    }
}

/// What a successful reload did, by config key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Keys now in effect for new requests.
    pub applied: Vec<String>,
    /// Keys that changed in the file but keep their running value until
    /// the process restarts.
    pub needs_restart: Vec<String>,
}

/// Why a reload left the running config in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started from a config in memory (tests, `understudy demo`).
    #[error("this process was not started from a config file; there is nothing to reload")]
    NoFile,
    /// The file cannot be read, parsed or validated; the text is the one
    /// `understudy check` prints.
    #[error(transparent)]
    File(#[from] ConfigError),
    /// The file is valid, but the change can only happen on a restart.
    #[error("{0}")]
    Refused(String),
}

impl ReloadError {
    /// 400 for a file that is not valid TOML, 422 for one that is but
    /// cannot be applied (unreadable, invalid values, restart-only
    /// structure), 409 when there is no file.
    pub fn status(&self) -> StatusCode {
        match self {
            ReloadError::NoFile => StatusCode::CONFLICT,
            ReloadError::File(ConfigError::Syntax { .. }) => StatusCode::BAD_REQUEST,
            ReloadError::File(_) | ReloadError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// The running parts a reload changes, behind one lock so that two reloads
/// (a SIGHUP and a `POST /reload`) never interleave.
pub struct Reloader {
    source: Option<ConfigSource>,
    /// The config at start: what restart-only keys keep running with.
    started: Config,
    metrics: Arc<Metrics>,
    live: Mutex<Live>,
}

/// The parts of a running proxy that take reloaded settings.
pub struct Live {
    pub config: Config,
    pub proxy: Proxy,
    pub stats: StatsHandle,
    pub rollout: Option<RolloutHandle>,
    pub tls: Option<ListenerTls>,
}

impl Reloader {
    pub fn new(source: Option<ConfigSource>, metrics: Arc<Metrics>, live: Live) -> Self {
        Self {
            source,
            started: live.config.clone(),
            metrics,
            live: Mutex::new(live),
        }
    }

    /// Reads the config file again and applies it; counts the outcome in
    /// `understudy_config_reloads_total` and logs it.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        // Held from reading the file to applying it: of two reloads, the
        // one that read the file last is the one left in force.
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match &self.source {
            Some(source) => source
                .load()
                .map_err(ReloadError::from)
                .and_then(|config| apply(&mut live, &self.started, config)),
            None => Err(ReloadError::NoFile),
        };
        drop(live);
        self.metrics.reloads[usize::from(outcome.is_err())].increment(1);
        let path = self.source.as_ref().map(|s| s.path.display().to_string());
        match &outcome {
            Ok(report) => tracing::info!(
                path, applied = ?report.applied, needs_restart = ?report.needs_restart,
                "config reloaded"
            ),
            Err(reason) => tracing::error!(
                path, %reason, "config reload rejected; keeping the running config"
            ),
        }
        outcome
    }
}

/// Applies `config` whole, or nothing of it.
fn apply(live: &mut Live, started: &Config, config: Config) -> Result<ReloadReport, ReloadError> {
    let refused = |m: &str| Err(ReloadError::Refused(m.to_owned()));
    if config.rollout.is_some() != live.config.rollout.is_some() {
        return refused("adding or removing [rollout] needs a restart");
    }
    if config.fleet != live.config.fleet {
        return refused("[fleet] changes need a restart");
    }
    let settings =
        Settings::from_config(&config).map_err(|e| ReloadError::Refused(e.to_string()))?;
    // Certificates are re-read on every reload (renewed files, same
    // paths); turning TLS on or off needs a restart.
    let listener_tls = match (&live.tls, &config.listen.tls) {
        (Some(_), Some(t)) => Some(
            tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())
                .map_err(|e| ReloadError::Refused(e.to_string()))?,
        ),
        (None, None) => None,
        _ => return refused("turning listen.tls on or off needs a restart"),
    };
    let backend_tls = live
        .proxy
        .load_backend_tls(&config)
        .map_err(|e| ReloadError::Refused(e.to_string()))?;
    let report = changes(&live.config, started, &config);
    if !report.needs_restart.is_empty() {
        tracing::warn!(keys = ?report.needs_restart, "these keys change only on restart; keeping their running values");
    }
    if let (Some(listener), Some(fresh)) = (&live.tls, listener_tls) {
        listener.config.store(fresh);
    }
    live.proxy.store_backend_tls(backend_tls);
    if let (Some(rollout), Some(settings)) = (&live.rollout, &config.rollout) {
        rollout.update_settings(settings);
    }
    live.stats
        .set_keep_mismatches(config.compare.keep_mismatches);
    live.proxy.update_settings(settings);
    live.config = config;
    Ok(report)
}

/// The keys of `new` that differ: applied ones against `old`, the config
/// in force; restart-only ones against `started`, whose values they keep
/// until a restart (so they are reported on every reload until then).
/// Values are compared by their `Debug` form, which shows every field.
fn changes(old: &Config, started: &Config, new: &Config) -> ReloadReport {
    let mut keys = Keys::default();
    let (o, s, n) = (&old.listen, &started.listen, &new.listen);
    keys.fixed("listen.addr", s.addr != n.addr);
    keys.fixed("listen.workers", s.workers != n.workers);
    keys.fixed(
        "listen.max_connections",
        s.max_connections != n.max_connections,
    );
    keys.fixed("listen.drain_timeout", s.drain_timeout != n.drain_timeout);
    keys.fixed(
        "listen.header_read_timeout",
        s.header_read_timeout != n.header_read_timeout,
    );
    keys.fixed(
        "listen.max_header_bytes",
        s.max_header_bytes != n.max_header_bytes,
    );
    keys.fixed("listen.send_timeout", s.send_timeout != n.send_timeout);
    keys.hot(
        "listen.backend_header",
        o.backend_header != n.backend_header,
    );
    keys.hot(
        "listen.max_body_bytes",
        o.max_body_bytes != n.max_body_bytes,
    );
    keys.hot(
        "listen.body_idle_timeout",
        o.body_idle_timeout != n.body_idle_timeout,
    );
    keys.hot(
        "listen.request_buffer_bytes",
        o.request_buffer_bytes != n.request_buffer_bytes,
    );
    keys.hot(
        "listen.request_buffer_timeout",
        o.request_buffer_timeout != n.request_buffer_timeout,
    );
    keys.hot(
        "listen.response_buffer_bytes",
        o.response_buffer_bytes != n.response_buffer_bytes,
    );
    keys.hot(
        "listen.response_spill_bytes",
        o.response_spill_bytes != n.response_spill_bytes,
    );
    keys.hot("listen.spill_dir", o.spill_dir != n.spill_dir);
    if let (Some(s), Some(n)) = (&s.tls, &n.tls) {
        // The files are read again whether or not their paths changed.
        keys.hot("listen.tls", true);
        keys.fixed(
            "listen.tls.handshake_timeout",
            s.handshake_timeout != n.handshake_timeout,
        );
    }
    keys.fixed("admin.addr", started.admin.addr != new.admin.addr);
    keys.fixed("admin.token", started.admin.token != new.admin.token);
    keys.backend("stable", Some(&started.stable), Some(&new.stable));
    keys.backend(
        "candidate",
        started.candidate.as_ref(),
        new.candidate.as_ref(),
    );
    keys.hot("shadow", differs(&old.shadow, &new.shadow));
    let (o, s, n) = (&old.compare, &started.compare, &new.compare);
    keys.hot("compare", differs(&o.spec, &n.spec));
    keys.hot("compare.noise_percent", o.noise_percent != n.noise_percent);
    keys.hot(
        "compare.keep_mismatches",
        o.keep_mismatches != n.keep_mismatches,
    );
    keys.fixed("compare.threads", s.threads != n.threads);
    keys.fixed("compare.queue", s.queue != n.queue);
    keys.fixed("compare.priority", s.priority != n.priority);
    keys.hot("split", differs(&old.split, &new.split));
    if let (Some(o), Some(s), Some(n)) = (&old.rollout, &started.rollout, &new.rollout) {
        // The state file and the webhook are opened at start; the rest
        // reaches the judge.
        let judged = |r: &crate::config::Rollout| crate::config::Rollout {
            state_file: PathBuf::new(),
            webhook: None,
            webhook_ca: None,
            ..r.clone()
        };
        keys.hot("rollout", differs(&judged(o), &judged(n)));
        keys.fixed("rollout.state_file", s.state_file != n.state_file);
        keys.fixed("rollout.webhook", s.webhook != n.webhook);
        keys.fixed("rollout.webhook_ca", s.webhook_ca != n.webhook_ca);
    }
    keys.fixed("log", differs(&started.log, &new.log));
    keys.fixed("record", started.record != new.record);
    keys.0
}

/// Changed keys, sorted as they are found.
#[derive(Default)]
struct Keys(ReloadReport);

impl Keys {
    fn hot(&mut self, key: &str, changed: bool) {
        if changed {
            self.0.applied.push(key.to_owned());
        }
    }

    fn fixed(&mut self, key: &str, changed: bool) {
        if changed {
            self.0.needs_restart.push(key.to_owned());
        }
    }

    /// A backend's keys, against its config at start. Its TLS files
    /// (`ca`, `cert`, `key`) are read again on every reload, from the paths
    /// the file names now; the rest is fixed at start, when its connection
    /// pools are built.
    fn backend(&mut self, name: &str, started: Option<&Backend>, new: Option<&Backend>) {
        let (s, n) = match (started, new) {
            (Some(s), Some(n)) => (s, n),
            (None, None) => return,
            _ => return self.fixed(&format!("backends.{name}"), true),
        };
        let mut key = |field: &str, changed: bool| {
            self.fixed(&format!("backends.{name}.{field}"), changed);
        };
        key("url", s.url != n.url);
        key("timeout", s.timeout != n.timeout);
        key("connect_timeout", s.connect_timeout != n.connect_timeout);
        key("http2", s.http2 != n.http2);
        key("pool_max_idle", s.pool_max_idle != n.pool_max_idle);
        key("max_connections", s.max_connections != n.max_connections);
        let files = n.ca.is_some() || n.client_cert.is_some();
        let tls_changed = files || s.ca != n.ca || s.client_cert != n.client_cert;
        self.hot(&format!("backends.{name}.tls"), tls_changed);
    }
}

fn differs<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[listen]\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n\
             [backends.stable]\nurl = \"http://127.0.0.1:1\"\n\n\
             [backends.candidate]\nurl = \"http://127.0.0.1:2\"\n\n{extra}"
        );
        Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_unchanged_file_reports_nothing() {
        assert_eq!(
            changes(&config(""), &config(""), &config("")),
            ReloadReport::default()
        );
    }

    #[test]
    fn hot_keys_are_applied_and_fixed_ones_need_a_restart() {
        let old = config("[shadow]\npercent = 100\n\n[compare]\nthreads = 1\n");
        let new = config("[shadow]\npercent = 5\n\n[compare]\nthreads = 2\n");
        let report = changes(&old, &old, &new);
        assert_eq!(report.applied, ["shadow"]);
        assert_eq!(report.needs_restart, ["compare.threads"]);
        // Reloading the same file again: nothing new applies, and the
        // restart is still owed.
        let again = changes(&new, &old, &new);
        assert!(again.applied.is_empty(), "{again:?}");
        assert_eq!(again.needs_restart, ["compare.threads"]);
    }

    #[test]
    fn the_rollouts_state_file_and_webhook_need_a_restart() {
        let rollout = |extra: &str| {
            config(&format!(
                "[rollout]\nsteps = [50, 100]\nstate_file = \"/tmp/a.json\"\n{extra}"
            ))
        };
        let old = rollout("");
        let report = changes(&old, &old, &rollout("min_requests = 7\n"));
        assert_eq!(report.applied, ["rollout"]);
        assert!(report.needs_restart.is_empty());
        let moved = config("[rollout]\nsteps = [50, 100]\nstate_file = \"/tmp/b.json\"\n");
        let report = changes(&old, &old, &moved);
        assert!(report.applied.is_empty(), "{report:?}");
        assert_eq!(report.needs_restart, ["rollout.state_file"]);
    }

    #[test]
    fn statuses_tell_a_broken_file_from_an_unappliable_one() {
        let syntax = ConfigError::Syntax {
            origin: "f".into(),
            message: "m".into(),
        };
        assert_eq!(ReloadError::from(syntax).status(), StatusCode::BAD_REQUEST);
        let refused = ReloadError::Refused("r".into());
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ReloadError::NoFile.status(), StatusCode::CONFLICT);
    }
}
