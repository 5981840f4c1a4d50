//! Toy model servers: a tiny iris classifier speaking KServe V2 (Open
//! Inference Protocol) over HTTP/1.1 and h2c, used as the stable and candidate
//! upstreams by `understudy demo` and by tests, and a toy OpenAI-compatible
//! LLM server ([`llm`]) that streams its answers token by token.
//!
//! Its one job is to behave like a real model server with tunable flaws
//! (disagreement, latency, errors) while staying fully predictable. It must
//! never bind anything the caller did not ask for (default `127.0.0.1:0`) and
//! never keep running after its shutdown token is cancelled.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//! # use understudy::toy::{self, ToyModelConfig};
//! let shutdown = CancellationToken::new();
//! let stable = toy::spawn(ToyModelConfig::default(), shutdown.clone()).await?;
//! let candidate = toy::spawn(
//!     ToyModelConfig::new("iris", "v2")
//!         .with_disagree_rate(0.05)
//!         .with_latency(Duration::from_millis(20), Duration::from_millis(10)),
//!     shutdown.clone(),
//! )
//! .await?;
//! println!("stable at {}, candidate at {}", stable.url(), candidate.url());
//! shutdown.cancel();
//! stable.stopped().await;
//! candidate.stopped().await;
//! # Ok(())
//! # }
//! ```

pub mod iris;
pub mod llm;
pub mod protocol;
mod serve;
mod server;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use iris::{infer_body, predict, random_rows, rule_label};

/// How a toy model server behaves. Start from [`Default`] (a perfect,
/// instant `iris`/`v1` on `127.0.0.1:0`) and adjust fields or use the
/// `with_*` setters.
#[derive(Clone, Debug, PartialEq)]
pub struct ToyModelConfig {
    /// Model name served under `/v2/models/{name}/infer`; others get 404.
    pub name: String,
    /// Reported as `model_version`.
    pub version: String,
    /// Share of input rows (0.0–1.0) answered differently from the rule.
    /// Deterministic per row: see [`iris::disagrees`].
    pub disagree_rate: f64,
    /// Fixed delay added to every infer request.
    pub latency: Duration,
    /// Extra uniform random delay in `[0, jitter]` on top of `latency`.
    pub jitter: Duration,
    /// Share of infer requests (0.0–1.0) answered `500 Internal Server Error`.
    pub error_rate: f64,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
}

impl Default for ToyModelConfig {
    fn default() -> Self {
        Self {
            name: "iris".to_owned(),
            version: "v1".to_owned(),
            disagree_rate: 0.0,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_rate: 0.0,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

impl ToyModelConfig {
    /// A default config with the given model name and version.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            ..Self::default()
        }
    }

    /// Set [`Self::disagree_rate`].
    pub fn with_disagree_rate(mut self, rate: f64) -> Self {
        self.disagree_rate = rate;
        self
    }

    /// Set [`Self::latency`] and [`Self::jitter`].
    pub fn with_latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.jitter = jitter;
        self
    }

    /// Set [`Self::error_rate`].
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Set [`Self::bind`].
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    fn validate(&self) -> io::Result<()> {
        for (field, rate) in [
            ("disagree_rate", self.disagree_rate),
            ("error_rate", self.error_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                let msg = format!("toy model {field} must be within 0.0..=1.0, got {rate}");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
            }
        }
        if self.name.is_empty() || self.name.contains('/') {
            let msg = format!(
                "toy model name {:?} must be a non-empty path segment",
                self.name
            );
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        Ok(())
    }
}

/// Handle to a running toy model server. Dropping it does not stop the
/// server; cancel the token passed to [`spawn`] for that.
#[derive(Debug)]
pub struct ToyModel {
    addr: SocketAddr,
    state: Arc<server::State>,
    task: JoinHandle<()>,
}

impl ToyModel {
    /// The bound address (with the real port when `bind` used port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration this server runs with.
    pub fn config(&self) -> &ToyModelConfig {
        &self.state.config
    }

    /// Infer requests received so far (every outcome, including 404/422/500).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Wait until the server has fully exited: listener closed and every
    /// connection task finished. Only returns after the token is cancelled.
    pub async fn stopped(self) {
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "toy model server task failed");
        }
    }
}

/// Start a toy model server; it runs until `shutdown` is cancelled. Must be
/// called inside a Tokio runtime. Fails on invalid config or bind errors.
pub async fn spawn(config: ToyModelConfig, shutdown: CancellationToken) -> io::Result<ToyModel> {
    config.validate()?;
    let listener = TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, model = %config.name, version = %config.version, "toy model listening");
    let state = Arc::new(server::State {
        config,
        requests: AtomicU64::new(0),
        shutdown,
    });
    let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&state)));
    Ok(ToyModel { addr, state, task })
}
