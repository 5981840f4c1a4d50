//! A fake LLM server that streams an OpenAI chat completion as server-sent
//! events on a schedule the test sets: the response head at once, a
//! role-only chunk with it (no output), the first token after
//! `first_token`, then one token every `gap`, then a `usage` chunk and
//! `[DONE]`. Every request gets the same stream, so two of them answer
//! byte for byte alike. HTTP/1.1 only; it binds `127.0.0.1:0`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::channel_body::ChannelBody;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When the fake's events go out, counted from the request's arrival.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub first_token: Duration,
    pub gap: Duration,
    /// Output tokens (events carrying content), one word each.
    pub tokens: usize,
}

pub struct SseUpstream {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn event(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

fn token(i: usize) -> Bytes {
    event(&format!(
        r#"{{"id":"c1","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"w{i} "}}}}]}}"#
    ))
}

/// The stream's frames with the offset from the request's arrival at which
/// each is sent.
pub fn frames(s: Schedule) -> Vec<(Duration, Bytes)> {
    let role = event(
        r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
    );
    let mut out = vec![(Duration::ZERO, role)];
    for i in 0..s.tokens {
        out.push((s.first_token + s.gap * i as u32, token(i)));
    }
    let last = out.last().map(|(at, _)| *at).unwrap_or_default();
    let usage = format!(
        r#"{{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{{"prompt_tokens":3,"completion_tokens":{},"total_tokens":{}}}}}"#,
        s.tokens,
        s.tokens + 3
    );
    let mut tail = event(&usage).to_vec();
    tail.extend_from_slice(&event("[DONE]"));
    out.push((last, Bytes::from(tail)));
    out
}

impl SseUpstream {
    pub async fn start(schedule: Schedule) -> SseUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let service = service_fn(move |request: hyper::Request<Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    let arrived = Instant::now();
                    let (tx, rx) = mpsc::channel(64);
                    tokio::spawn(async move {
                        for (at, bytes) in frames(schedule) {
                            tokio::time::sleep_until(arrived + at).await;
                            if tx.send(Frame::data(bytes)).await.is_err() {
                                return;
                            }
                        }
                    });
                    let body = ChannelBody(rx);
                    Response::builder()
                        .header("content-type", "text/event-stream; charset=utf-8")
                        .header("cache-control", "no-cache")
                        .body(body)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        SseUpstream { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
