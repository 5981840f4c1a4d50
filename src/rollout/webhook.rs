//! Webhook notifications of phase changes: fire and forget, in order, with
//! retries, never on the data path and never blocking the controller.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;

/// Events waiting for delivery; beyond this the oldest news is stale anyway
/// and new events are dropped (and logged).
const QUEUE: usize = 64;
const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sender side: queue an event and return at once.
#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::Sender<Value>,
}

impl Webhook {
    /// Starts the delivery task for `url`.
    pub fn spawn(url: Uri) -> Self {
        let (queue, mut events) = mpsc::channel::<Value>(QUEUE);
        tokio::spawn(async move {
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            while let Some(event) = events.recv().await {
                deliver(&client, &url, &event).await;
            }
        });
        Self { queue }
    }

    pub fn send(&self, event: Value) {
        if self.queue.try_send(event).is_err() {
            tracing::warn!("webhook queue full; event dropped");
        }
    }
}

async fn deliver(client: &Client<HttpConnector, Full<Bytes>>, url: &Uri, event: &Value) {
    let body = Bytes::from(event.to_string());
    for attempt in 1..=ATTEMPTS {
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
        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
    }
    tracing::error!(%url, "webhook event given up after {ATTEMPTS} attempts");
}
