//! The composition root: builds every part from a config, spawns the
//! background tasks in one place, and shuts them down in order.
//!
//! Order matters on shutdown: stop accepting and drain client requests
//! first (their mirrors and stats still flow), then persist rollout state,
//! then stop the admin listener and the stats task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::admin::{AdminListener, AdminState, FleetHandle};
use crate::config::Config;
use crate::listener::{self, DataListener, Limits, ListenerTls};
use crate::proxy::{Proxy, Settings};
use crate::reload::{ConfigSource, Live, ReloadError, ReloadReport, Reloader};
use crate::rollout::{self, RolloutHandle};
use crate::routing::Routing;
use crate::stats::{self, StatsHandle};
use crate::telemetry::Metrics;
use crate::tls;
use arc_swap::ArcSwap;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    #[error("invalid compare settings: {0}")]
    Compare(#[from] crate::compare::SpecError),
    #[error(transparent)]
    Rollout(#[from] rollout::RolloutStartError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Options that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Discard a persisted rollout state instead of resuming it.
    pub reset_state: bool,
    /// The file that SIGHUP and `POST /reload` read again; without one a
    /// reload is refused.
    pub source: Option<ConfigSource>,
}

/// A running proxy.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    proxy: Proxy,
    stats: StatsHandle,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    rollout: Option<RolloutHandle>,
    reloader: Arc<Reloader>,
    listener_shutdown: CancellationToken,
    background_shutdown: CancellationToken,
    listener_task: JoinHandle<()>,
    background_tasks: Vec<JoinHandle<()>>,
    /// Keeps a second process off `listen.addr` while this one runs.
    _port_claim: listener::PortClaim,
}

/// Starts the proxy: binds both listeners and spawns every task.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    // First: a second process on our address must fail before it touches
    // the state file or any other shared resource.
    let port_claim = listener::claim(config.listen.addr)?;
    let metrics = Arc::new(Metrics::new());
    let settings = Settings::from_config(&config)?;
    let (stats, stats_task) = stats::channel(metrics.clone(), config.compare.keep_mismatches);
    let routing = Arc::new(Routing::new(0, true));
    let background_shutdown = CancellationToken::new();
    let mut background_tasks = vec![tokio::spawn(stats_task.run(background_shutdown.clone()))];

    let mut fleet = None;
    let rollout = match &config.rollout {
        Some(_) => {
            let (handle, mut task) = rollout::start(
                &config,
                options.reset_state,
                routing.clone(),
                stats.clone(),
                metrics.clone(),
            )?;
            if let Some(webhook) = task.take_webhook() {
                background_tasks.push(tokio::spawn(webhook.run(background_shutdown.clone())));
            }
            // In fleet mode the leader judges the fleet's merged window; the
            // local controller would judge a fraction of it.
            let fleet_task = spawn_fleet(&config, &handle, &stats, &metrics, &background_shutdown);
            background_tasks.push(match fleet_task {
                Some((fleet_handle, fleet_task)) => {
                    fleet = Some(fleet_handle);
                    fleet_task
                }
                None => tokio::spawn(task.run(background_shutdown.clone())),
            });
            Some(handle)
        }
        None => {
            metrics.set_phase(crate::labels::Phase::Shadow);
            None
        }
    };

    let access_log = match &config.log.access {
        Some(target) => {
            let (log, task) = AccessLog::open(target, metrics.access_log_dropped.clone())?;
            background_tasks.push(tokio::spawn(task.run(background_shutdown.clone())));
            Some(log)
        }
        None => None,
    };
    let proxy = Proxy::new(&config, settings, routing, stats.clone(), access_log)?;
    if let Some(record) = &config.record {
        let (recorder, task) = crate::record::Recorder::start(record, &metrics)?;
        background_tasks.push(tokio::spawn(task.run(background_shutdown.clone())));
        proxy.set_recorder(recorder);
    }
    let data = listener::bind_shared(config.listen.addr, config.listen.workers)?;
    let admin = listener::bind(config.admin.addr).await?;
    let data_addr = data[0].local_addr()?;
    let port_claim = port_claim.bound(data_addr)?;
    let admin_addr = admin.local_addr()?;
    let ready = Arc::new(AtomicBool::new(false));
    let tls = match &config.listen.tls {
        Some(t) => Some(ListenerTls {
            config: Arc::new(ArcSwap::new(tls::server_config(
                &t.cert,
                &t.key,
                t.client_ca.as_deref(),
            )?)),
            handshake_timeout: t.handshake_timeout,
        }),
        None => None,
    };
    let reloader = Arc::new(Reloader::new(
        options.source,
        metrics.clone(),
        Live {
            config: config.clone(),
            proxy: proxy.clone(),
            stats: stats.clone(),
            rollout: rollout.clone(),
            tls: tls.clone(),
        },
    ));

    let admin_state = Arc::new(AdminState {
        metrics: metrics.clone(),
        stats: stats.clone(),
        proxy: proxy.clone(),
        ready: ready.clone(),
        token: config.admin.token.clone(),
        rollout: rollout.clone(),
        reloader: reloader.clone(),
        fleet,
        stable_url: config.stable.url.to_string(),
        candidate_url: config.candidate.as_ref().map(|c| c.url.to_string()),
    });
    background_tasks.push(tokio::spawn(
        AdminListener {
            listener: admin,
            state: admin_state,
        }
        .run(background_shutdown.clone()),
    ));

    let listener_shutdown = CancellationToken::new();
    let limit = Arc::new(Semaphore::new(config.listen.max_connections));
    let mut workers_done = Vec::new();
    for (index, socket) in data.into_iter().enumerate() {
        let listener = DataListener {
            listener: socket,
            proxy: proxy.for_worker()?,
            drain_timeout: config.listen.drain_timeout,
            metrics: metrics.clone(),
            tls: tls.clone(),
            limits: Limits {
                header_read_timeout: config.listen.header_read_timeout,
                max_header_bytes: config.listen.max_header_bytes,
                send_timeout: config.listen.send_timeout,
            },
            limit: limit.clone(),
        };
        workers_done.push(spawn_worker(index, listener, listener_shutdown.clone())?);
    }
    let listener_task = tokio::spawn(async move {
        for done in workers_done {
            let _ = done.await;
        }
    });
    ready.store(true, Ordering::Relaxed);
    tracing::info!(%data_addr, %admin_addr, stable = %config.stable.url,
        candidate = ?config.candidate.as_ref().map(|c| c.url.to_string()), "understudy is running");

    Ok(Running {
        data_addr,
        admin_addr,
        proxy,
        stats,
        metrics,
        ready,
        rollout,
        reloader,
        listener_shutdown,
        background_shutdown,
        listener_task,
        background_tasks,
        _port_claim: port_claim,
    })
}

/// Fleet mode: starts the fleet's task, which decides the rollout's state
/// from then on; admin commands go through the returned handle.
#[cfg(feature = "fleet")]
fn spawn_fleet(
    config: &Config,
    rollout: &RolloutHandle,
    stats: &StatsHandle,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Option<(FleetHandle, JoinHandle<()>)> {
    let fleet = config.fleet.as_ref()?;
    let (handle, task) = crate::fleet::start(fleet, rollout, stats.clone(), metrics);
    Some((handle, tokio::spawn(task.run(shutdown.clone()))))
}

/// Without the feature a `[fleet]` config is rejected by validation.
#[cfg(not(feature = "fleet"))]
fn spawn_fleet(
    _: &Config,
    _: &RolloutHandle,
    _: &StatsHandle,
    _: &Metrics,
    _: &CancellationToken,
) -> Option<(FleetHandle, JoinHandle<()>)> {
    None
}

/// Runs one data-plane worker: its own thread and single-threaded runtime,
/// so a request's connection, handler and upstream connection all live on
/// one core, with no work stealing or cross-thread wake-ups on the hot path
/// (measured: a third less CPU per proxied request than one shared
/// multi-threaded runtime on 2 cores). Resolves when it has drained.
fn spawn_worker(
    index: usize,
    listener: DataListener,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("understudy-data-{index}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, worker = index, "cannot start a data-plane worker");
                    return;
                }
            };
            runtime.block_on(async {
                let heartbeat = tokio::spawn(timer_heartbeat());
                listener.run(shutdown).await;
                heartbeat.abort();
            });
            // Mirrors still running on this worker are abandoned here: they
            // are never a client's business.
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(finished)
}

/// Keeps a timer due within a second on every worker. tokio's timer driver
/// wakes itself (an eventfd write, then an extra epoll round) whenever a new
/// timer is due before the earliest one it knew of when it last parked. The
/// mirrors' timeouts (`shadow.timeout`, 5 s) are shorter than the serving
/// path's, so without this nearer timer the first mirror after every park
/// paid that wake-up: about one `write` syscall per mirrored request
/// (measured with `strace -c`).
async fn timer_heartbeat() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
    }
}

impl Running {
    pub fn stats(&self) -> &StatsHandle {
        &self.stats
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn rollout(&self) -> Option<&RolloutHandle> {
        self.rollout.as_ref()
    }

    /// Reads the config file again and applies it, as SIGHUP and
    /// `POST /reload` do (see [`crate::reload`]).
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        self.reloader.reload()
    }

    /// Stops accepting, drains in-flight requests (bounded by
    /// `listen.drain_timeout`), persists the rollout state, then stops the
    /// background tasks.
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::Relaxed);
        self.listener_shutdown.cancel();
        let _ = self.listener_task.await;
        self.background_shutdown.cancel();
        for task in self.background_tasks {
            let _ = task.await;
        }
        tracing::info!("understudy stopped");
    }
}
