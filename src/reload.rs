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
                .and_then(|config| apply(&mut live, config)),
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
fn apply(live: &mut Live, config: Config) -> Result<ReloadReport, ReloadError> {
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
    let report = changes(&live.config, &config);
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

/// Sorts the keys that differ between `old` and `new` into applied and
/// restart-only. Values are compared by their `Debug` form, which shows
/// every field.
fn changes(old: &Config, new: &Config) -> ReloadReport {
    let mut report = ReloadReport::default();
    let mut check = |key: &str, hot: bool, changed: bool| {
        if changed {
            let list = if hot {
                &mut report.applied
            } else {
                &mut report.needs_restart
            };
            list.push(key.to_owned());
        }
    };
    let (o, n) = (&old.listen, &new.listen);
    check("listen.addr", false, o.addr != n.addr);
    check("listen.workers", false, o.workers != n.workers);
    check(
        "listen.max_connections",
        false,
        o.max_connections != n.max_connections,
    );
    check(
        "listen.drain_timeout",
        false,
        o.drain_timeout != n.drain_timeout,
    );
    check(
        "listen.header_read_timeout",
        false,
        o.header_read_timeout != n.header_read_timeout,
    );
    check(
        "listen.max_header_bytes",
        false,
        o.max_header_bytes != n.max_header_bytes,
    );
    check(
        "listen.send_timeout",
        false,
        o.send_timeout != n.send_timeout,
    );
    check(
        "listen.backend_header",
        true,
        o.backend_header != n.backend_header,
    );
    check(
        "listen.max_body_bytes",
        true,
        o.max_body_bytes != n.max_body_bytes,
    );
    check(
        "listen.body_idle_timeout",
        true,
        o.body_idle_timeout != n.body_idle_timeout,
    );
    check(
        "listen.request_buffer_bytes",
        true,
        o.request_buffer_bytes != n.request_buffer_bytes,
    );
    check(
        "listen.request_buffer_timeout",
        true,
        o.request_buffer_timeout != n.request_buffer_timeout,
    );
    if let (Some(o), Some(n)) = (&o.tls, &n.tls) {
        // The files are read again whether or not their paths changed.
        check("listen.tls", true, true);
        check(
            "listen.tls.handshake_timeout",
            false,
            o.handshake_timeout != n.handshake_timeout,
        );
    }
    check("admin.addr", false, old.admin.addr != new.admin.addr);
    check("admin.token", false, old.admin.token != new.admin.token);
    backend_changes(&mut check, "stable", Some(&old.stable), Some(&new.stable));
    backend_changes(
        &mut check,
        "candidate",
        old.candidate.as_ref(),
        new.candidate.as_ref(),
    );
    check("shadow", true, differs(&old.shadow, &new.shadow));
    let (o, n) = (&old.compare, &new.compare);
    check("compare", true, differs(&o.spec, &n.spec));
    check(
        "compare.keep_mismatches",
        true,
        o.keep_mismatches != n.keep_mismatches,
    );
    check("compare.threads", false, o.threads != n.threads);
    check("compare.queue", false, o.queue != n.queue);
    check("compare.priority", false, o.priority != n.priority);
    check("split", true, differs(&old.split, &new.split));
    if let (Some(o), Some(n)) = (&old.rollout, &new.rollout) {
        // The state file and the webhook are opened at start; the rest
        // reaches the judge.
        let judged = |r: &crate::config::Rollout| crate::config::Rollout {
            state_file: PathBuf::new(),
            webhook: None,
            ..r.clone()
        };
        check("rollout", true, differs(&judged(o), &judged(n)));
        check("rollout.state_file", false, o.state_file != n.state_file);
        check("rollout.webhook", false, o.webhook != n.webhook);
    }
    check("log", false, differs(&old.log, &new.log));
    check("record", false, old.record != new.record);
    report
}

/// A backend's keys. Its TLS files (`ca`, `cert`, `key`) are read again on
/// every reload, from the paths the file names now; the rest is fixed at
/// start, when its connection pools are built.
fn backend_changes(
    check: &mut impl FnMut(&str, bool, bool),
    name: &str,
    old: Option<&Backend>,
    new: Option<&Backend>,
) {
    let (o, n) = match (old, new) {
        (Some(o), Some(n)) => (o, n),
        (None, None) => return,
        _ => return check(&format!("backends.{name}"), false, true),
    };
    let mut key = |field: &str, changed: bool| {
        check(&format!("backends.{name}.{field}"), false, changed);
    };
    key("url", o.url != n.url);
    key("timeout", o.timeout != n.timeout);
    key("connect_timeout", o.connect_timeout != n.connect_timeout);
    key("http2", o.http2 != n.http2);
    key("pool_max_idle", o.pool_max_idle != n.pool_max_idle);
    key("max_connections", o.max_connections != n.max_connections);
    let files = n.ca.is_some() || n.client_cert.is_some();
    let tls_changed = files || o.ca != n.ca || o.client_cert != n.client_cert;
    check(&format!("backends.{name}.tls"), true, tls_changed);
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
        assert_eq!(changes(&config(""), &config("")), ReloadReport::default());
    }

    #[test]
    fn hot_keys_are_applied_and_fixed_ones_need_a_restart() {
        let old = config("[shadow]\npercent = 100\n\n[compare]\nthreads = 1\n");
        let new = config("[shadow]\npercent = 5\n\n[compare]\nthreads = 2\n");
        let report = changes(&old, &new);
        assert_eq!(report.applied, ["shadow"]);
        assert_eq!(report.needs_restart, ["compare.threads"]);
    }

    #[test]
    fn the_rollouts_state_file_and_webhook_need_a_restart() {
        let rollout = |extra: &str| {
            config(&format!(
                "[rollout]\nsteps = [50, 100]\nstate_file = \"/tmp/a.json\"\n{extra}"
            ))
        };
        let old = rollout("");
        let report = changes(&old, &rollout("min_requests = 7\n"));
        assert_eq!(report.applied, ["rollout"]);
        assert!(report.needs_restart.is_empty());
        let moved = config("[rollout]\nsteps = [50, 100]\nstate_file = \"/tmp/b.json\"\n");
        let report = changes(&old, &moved);
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
