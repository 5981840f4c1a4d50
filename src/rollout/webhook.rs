//! Webhook notifications of phase changes: fire and forget, in order, with
//! retries, never on the data path and never blocking the controller.
//!
//! [`Webhook`] is the sender the controller keeps; [`WebhookTask`] is the
//! one task that delivers, spawned by the server with the shutdown token.
//! On shutdown it gives the event in delivery and those already queued one
//! more attempt each within [`SHUTDOWN_GRACE`], then stops: a webhook that
//! does not answer never holds up the process.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events waiting for delivery; beyond this the oldest news is stale anyway
/// and new events are dropped (and logged).
const QUEUE: usize = 64;
const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last events: as long as the rollout
/// controller waits for its state file, short against a drain timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Sender side: queue an event and return at once.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Value>,
}

/// Delivers queued events to one URL, in order.
pub struct WebhookTask {
    url: Uri,
    events: mpsc::Receiver<Value>,
}

impl Webhook {
    /// The sender for `url` and the task that delivers what it queues.
    pub fn channel(url: Uri) -> (Self, WebhookTask) {
        let (queue, events) = mpsc::channel(QUEUE);
        (Self { queue }, WebhookTask { url, events })
    }

    pub fn send(&self, event: Value) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("webhook queue full; event dropped")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("webhook task stopped (shutting down); event dropped")
            }
        }
    }
}

impl WebhookTask {
    /// Delivers events until `shutdown` fires (then flushes within
    /// [`SHUTDOWN_GRACE`]) or every sender is gone.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::debug!(url = %self.url, "webhook task started");
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let mut interrupted = None;
        loop {
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => event,
                    None => break,
                },
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    interrupted = Some(event);
                    break;
                }
                _ = deliver(&client, &self.url, &event, ATTEMPTS) => {}
            }
        }
        if shutdown.is_cancelled() {
            self.flush(&client, interrupted).await;
        }
        tracing::debug!(url = %self.url, "webhook task stopped");
    }

    /// One attempt for the interrupted event and each queued one, all
    /// within [`SHUTDOWN_GRACE`].
    async fn flush(&mut self, client: &HttpClient, interrupted: Option<Value>) {
        let url = &self.url;
        let events = &mut self.events;
        let flush = async {
            if let Some(event) = interrupted {
                deliver(client, url, &event, 1).await;
            }
            while let Ok(event) = events.try_recv() {
                deliver(client, url, &event, 1).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, flush).await.is_err() {
            tracing::warn!(%url, "shutting down: webhook events left undelivered");
        }
    }
}

async fn deliver(client: &HttpClient, url: &Uri, event: &Value, attempts: u32) {
    let body = Bytes::from(event.to_string());
    for attempt in 1..=attempts {
        let request = Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let Ok(request) = request else { return };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return,
            Ok(Ok(response)) => {
                tracing::warn!(%url, status = %response.status(), attempt, "webhook refused the event")
            }
            Ok(Err(error)) => tracing::warn!(%url, %error, attempt, "webhook delivery failed"),
            Err(_) => tracing::warn!(%url, attempt, "webhook timed out"),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
    tracing::error!(%url, "webhook event given up after {attempts} attempts");
}

#[cfg(test)]
mod tests;
