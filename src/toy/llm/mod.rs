//! A toy OpenAI-compatible LLM server: `POST /v1/chat/completions` and
//! `POST /v1/completions`, streamed (`stream: true`, a real event stream sent
//! token by token) or not, used by `understudy demo --llm` and by tests.
//!
//! Its answer is a function of the prompt, so a stable and a candidate toy
//! configured alike agree; the knobs make one differ: a share of answers that
//! deviate (what a sampling temperature does to a real model, drawn from the
//! prompt and a seed so runs repeat), the delay before the first token and
//! between tokens, and a share of streams that break off mid-way without
//! `data: [DONE]`. It must never bind anything the caller did not ask for and
//! never keep running after its shutdown token is cancelled.

pub mod answer;
mod body;

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use answer::{Ask, Endpoint};

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// How a toy LLM server behaves. [`Default`]: a deterministic, instant
/// server on `127.0.0.1:0`.
#[derive(Clone, Debug, PartialEq)]
pub struct ToyLlmConfig {
    /// Share of prompts (0.0–1.0) answered differently from the
    /// deterministic answer, like sampling at a temperature.
    pub deviate_rate: f64,
    /// Chooses which prompts deviate and how: toys with one seed and rate
    /// deviate alike.
    pub seed: u64,
    /// Share of requests (0.0–1.0), drawn afresh for each one, answered
    /// with words sampled for that request alone: like a model sampling at
    /// a temperature, the same prompt asked twice may get two answers. This
    /// is what the noise floor measures.
    pub temperature: f64,
    /// Delay before the first token (for a whole answer: before the answer).
    pub first_token_delay: Duration,
    /// Delay before each later token (a whole answer waits for them all).
    pub token_delay: Duration,
    /// Share of prompts (0.0–1.0) whose stream stops after half its tokens:
    /// no finish chunk, no `data: [DONE]`, the body ends there.
    pub break_rate: f64,
    /// Where to listen; port 0 picks a free port.
    pub bind: SocketAddr,
}

impl Default for ToyLlmConfig {
    fn default() -> Self {
        Self {
            deviate_rate: 0.0,
            seed: 0,
            temperature: 0.0,
            first_token_delay: Duration::ZERO,
            token_delay: Duration::ZERO,
            break_rate: 0.0,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

impl ToyLlmConfig {
    /// Set [`Self::deviate_rate`] and [`Self::seed`].
    pub fn with_deviation(mut self, rate: f64, seed: u64) -> Self {
        self.deviate_rate = rate;
        self.seed = seed;
        self
    }

    /// Set [`Self::temperature`].
    pub fn with_temperature(mut self, share: f64) -> Self {
        self.temperature = share;
        self
    }

    /// Set [`Self::first_token_delay`] and [`Self::token_delay`].
    pub fn with_delays(mut self, first_token: Duration, per_token: Duration) -> Self {
        self.first_token_delay = first_token;
        self.token_delay = per_token;
        self
    }

    /// Set [`Self::break_rate`].
    pub fn with_break_rate(mut self, rate: f64) -> Self {
        self.break_rate = rate;
        self
    }

    fn validate(&self) -> io::Result<()> {
        for (field, rate) in [
            ("deviate_rate", self.deviate_rate),
            ("temperature", self.temperature),
            ("break_rate", self.break_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                let msg = format!("toy LLM {field} must be within 0.0..=1.0, got {rate}");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
            }
        }
        Ok(())
    }
}

struct State {
    config: ToyLlmConfig,
    requests: AtomicU64,
    shutdown: CancellationToken,
}

/// Handle to a running toy LLM server; cancel the token passed to [`spawn`]
/// to stop it.
pub struct ToyLlm {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl ToyLlm {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Completion requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Waits until the server has exited (after the token is cancelled).
    pub async fn stopped(self) {
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "toy LLM server task failed");
        }
    }
}

/// Starts a toy LLM server; it runs until `shutdown` is cancelled.
pub async fn spawn(config: ToyLlmConfig, shutdown: CancellationToken) -> io::Result<ToyLlm> {
    config.validate()?;
    let listener = TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "toy LLM listening");
    let state = Arc::new(State {
        config,
        requests: AtomicU64::new(0),
        shutdown,
    });
    let task = tokio::spawn(accept_loop(listener, Arc::clone(&state)));
    Ok(ToyLlm { addr, state, task })
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let shutdown = state.shutdown.clone();
    let handle = move |req| handle(Arc::clone(&state), req);
    super::serve::accept_until(listener, shutdown, "toy LLM", handle).await;
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn error(status: StatusCode, message: &str) -> Answer {
    let body = json!({"error": {"message": message, "type": "invalid_request_error"}});
    respond(status, "application/json", body.to_string())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let endpoint = match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/chat/completions") => Endpoint::Chat,
        (&Method::POST, "/v1/completions") => Endpoint::Completions,
        (&Method::GET, "/health") => return Ok(respond(StatusCode::OK, "text/plain", "")),
        _ => return Ok(error(StatusCode::NOT_FOUND, "Not Found")),
    };
    let number = state.requests.fetch_add(1, Ordering::Relaxed);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let ask = match answer::parse(endpoint, &body) {
        Ok(ask) => ask,
        Err(message) => return Ok(error(StatusCode::BAD_REQUEST, &message)),
    };
    Ok(complete(&state, ask, number).await)
}

/// Answers the `number`th request since the toy started.
async fn complete(state: &State, ask: Ask, number: u64) -> Answer {
    let config = &state.config;
    // A sampled answer: drawn from the request's number as well as the
    // prompt, so it differs between two requests with one prompt.
    let sample_seed = config.seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let sampled = answer::draw(&ask.prompt, sample_seed, answer::SAMPLE) < config.temperature;
    let deviates = answer::draw(&ask.prompt, config.seed, answer::DEVIATE) < config.deviate_rate;
    let (tokens, finish) = if sampled {
        answer::tokens(&ask, true, sample_seed)
    } else {
        answer::tokens(&ask, deviates, config.seed)
    };
    let id = answer::id(&ask, config.seed);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if !ask.stream {
        let wait = config.first_token_delay
            + config.token_delay * u32::try_from(tokens.len().saturating_sub(1)).unwrap_or(0);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.shutdown.cancelled() => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
            }
        }
        let whole = answer::whole(&ask, &id, created, &tokens, finish);
        return respond(StatusCode::OK, "application/json", whole.to_string());
    }
    let mut events = answer::chunks(&ask, &id, created, &tokens, finish);
    if answer::draw(&ask.prompt, config.seed, answer::BREAK) < config.break_rate {
        // The role chunk and half the tokens, then the body simply ends.
        let keep = usize::from(ask.endpoint == Endpoint::Chat) + tokens.len() / 2;
        events.truncate(keep);
    }
    let (tx, rx) = mpsc::channel(4);
    let first_token = usize::from(ask.endpoint == Endpoint::Chat);
    let (first_delay, token_delay) = (config.first_token_delay, config.token_delay);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            let delay = match i.cmp(&first_token) {
                std::cmp::Ordering::Less => Duration::ZERO,
                std::cmp::Ordering::Equal => first_delay,
                std::cmp::Ordering::Greater => token_delay,
            };
            if !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
            if tx.send(Bytes::from(event)).await.is_err() {
                return; // the client went away
            }
        }
    });
    let mut response = Response::new(body::Channel::new(rx).boxed());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::sse::CONTENT_TYPE),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}
