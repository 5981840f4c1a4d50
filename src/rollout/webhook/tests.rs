//! The webhook task's lifecycle against real sockets on 127.0.0.1: it ends
//! on shutdown whether idle or stuck on a silent endpoint, and what was
//! queued before shutdown still gets its attempt.

use std::sync::{Arc, Mutex};

use http::Response;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

/// Far beyond the grace and every retry: a task still running then
/// ignored its shutdown token.
const ENDS_WITHIN: Duration = Duration::from_secs(60);

/// An endpoint that accepts connections and never answers; reports each
/// connection it accepted.
async fn silent_endpoint() -> (Uri, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (accepted, connections) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted.send(());
        }
    });
    (url.parse().unwrap(), connections)
}

/// An endpoint that answers 200 and keeps every event body it received.
async fn recording_endpoint() -> (Uri, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        sink.lock().unwrap().push(event);
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url.parse().unwrap(), received)
}

#[tokio::test(start_paused = true)]
async fn an_idle_task_ends_on_shutdown() {
    let (webhook, task) =
        Webhook::channel("http://127.0.0.1:9/hook".parse().unwrap(), None).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(task.run(shutdown.clone()));
    tokio::task::yield_now().await;
    shutdown.cancel();
    let ended = tokio::time::timeout(ENDS_WITHIN, running).await;
    assert!(ended.is_ok(), "the webhook task outlived its shutdown");
    // The controller may still announce while shutting down: that is
    // dropped, never an error.
    webhook.send(json!({"event": "late"}));
}

#[tokio::test(start_paused = true)]
async fn a_delivery_to_a_silent_endpoint_ends_within_the_grace() {
    let (url, mut connections) = silent_endpoint().await;
    let (webhook, task) = Webhook::channel(url, None).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(task.run(shutdown.clone()));
    webhook.send(json!({"event": "phase_change"}));
    connections.recv().await.expect("the webhook connects");
    let cancelled_at = tokio::time::Instant::now();
    shutdown.cancel();
    let ended = tokio::time::timeout(ENDS_WITHIN, running).await;
    assert!(ended.is_ok(), "the webhook task outlived its shutdown");
    assert!(
        cancelled_at.elapsed() <= SHUTDOWN_GRACE,
        "took {:?} after shutdown",
        cancelled_at.elapsed()
    );
    drop(webhook);
}

#[tokio::test]
async fn events_queued_before_shutdown_are_still_delivered_in_order() {
    let (url, received) = recording_endpoint().await;
    let (webhook, task) = Webhook::channel(url, None).unwrap();
    for step in 0..3 {
        webhook.send(json!({"event": "phase_change", "step": step}));
    }
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    tokio::time::timeout(ENDS_WITHIN, task.run(shutdown))
        .await
        .expect("the flush ends");
    let steps: Vec<Value> = received
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["step"].clone())
        .collect();
    assert_eq!(steps, [json!(0), json!(1), json!(2)]);
}
