//! Webhook notifications of phase changes: fire and forget, in order, with
//! retries, never on the data path and never blocking the controller.
//!
//! [`Webhook`] is the sender the controller keeps; [`WebhookTask`] is the
//! one task that delivers, spawned by the server with the shutdown token.
//! On shutdown it gives the event in delivery and those already queued one
//! more attempt each within [`SHUTDOWN_GRACE`], then stops: a webhook that
//! does not answer never holds up the process.
//!
//! An `https://` webhook is verified as a backend is, by the backends' TLS
//! code ([`ClientTls`]): against `rollout.webhook_ca` when set, else
//! Mozilla's roots, with the same words for a refused certificate.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::tls::TlsError;
use crate::upstream::{ClientTls, Trust};

/// Events waiting for delivery; beyond this the oldest news is stale anyway
/// and new events are dropped (and logged).
const QUEUE: usize = 64;
const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last events: as long as the rollout
/// controller waits for its state file, short against a drain timeout.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sender side: queue an event and return at once.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Value>,
}

/// Delivers queued events to one URL, in order.
pub struct WebhookTask {
    target: Target,
    events: mpsc::Receiver<Value>,
}

/// The URL and the client that posts to it.
struct Target {
    url: Uri,
    client: HttpClient,
    /// The client's TLS files, which say what a refused certificate means.
    tls: ClientTls,
}

impl Webhook {
    /// The sender for `url` and the task that delivers what it queues. An
    /// `https://` URL's certificate is verified against `ca` (a PEM file)
    /// when given, else against Mozilla's roots.
    pub fn channel(url: Uri, ca: Option<&Path>) -> Result<(Self, WebhookTask), TlsError> {
        let tls = ClientTls::verifying(Trust {
            peer: "webhook",
            ca_key: "rollout.webhook_ca".into(),
            url_key: "rollout.webhook".into(),
            ca: ca.map(Path::to_owned),
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let (queue, events) = mpsc::channel(QUEUE);
        let target = Target { url, client, tls };
        Ok((Self { queue }, WebhookTask { target, events }))
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
        let target = &self.target;
        tracing::debug!(url = %target.url, "webhook task started");
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
                _ = target.deliver(&event, ATTEMPTS) => {}
            }
        }
        if shutdown.is_cancelled() {
            Self::flush(target, &mut self.events, interrupted).await;
        }
        tracing::debug!(url = %target.url, "webhook task stopped");
    }

    /// One attempt for the interrupted event and each queued one, all
    /// within [`SHUTDOWN_GRACE`].
    async fn flush(
        target: &Target,
        events: &mut mpsc::Receiver<Value>,
        interrupted: Option<Value>,
    ) {
        let flush = async {
            if let Some(event) = interrupted {
                target.deliver(&event, 1).await;
            }
            while let Ok(event) = events.try_recv() {
                target.deliver(&event, 1).await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, flush).await.is_err() {
            let url = &target.url;
            tracing::warn!(%url, "shutting down: webhook events left undelivered");
        }
    }
}

impl Target {
    async fn deliver(&self, event: &Value, attempts: u32) {
        let url = &self.url;
        let body = Bytes::from(event.to_string());
        for attempt in 1..=attempts {
            let request = Request::post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()));
            let Ok(request) = request else { return };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => return,
                Ok(Ok(response)) => {
                    tracing::warn!(%url, status = %response.status(), attempt, "webhook refused the event")
                }
                Ok(Err(error)) => {
                    // The cause (refused, a certificate problem) sits deep
                    // in the chain, below hyper's "client error (Connect)".
                    let error = crate::error::chain(&*self.tls.explain(error.into()));
                    tracing::warn!(%url, %error, attempt, "webhook delivery failed")
                }
                Err(_) => tracing::warn!(%url, attempt, "webhook timed out"),
            }
            if attempt < attempts {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
        }
        tracing::error!(%url, "webhook event given up after {attempts} attempts");
    }
}

#[cfg(test)]
mod tests;
