//! Forwarding: the upload buffered up to `listen.request_buffer_bytes`
//! (see [`prebuffer`](super::prebuffer)), then the request sent to the
//! serving backend and its head checked for anything the proxy cannot pass
//! on faithfully.

use std::time::Duration;

use http::request::Parts;
use http::{Request, Response};
use tokio::time::Instant;

use super::Proxy;
use super::exchange::Exchange;
use super::headers;
use super::pools::{ClientBody, UploadBody};
use super::prebuffer::prebuffer;
use super::response::ServedBody;
use crate::error::ProxyError;
use crate::upstream::{BodyProgress, UpstreamError};

impl Proxy {
    /// Reads the first part of the upload before the request takes a
    /// connection slot. A body that fails here failed before any backend
    /// saw it: the client's fault, and nothing to count against a backend
    /// (the error is the answer, already logged).
    pub(super) async fn buffer_upload(
        &self,
        exchange: &Exchange<'_>,
        body: ClientBody,
        started: Option<Instant>,
    ) -> Result<UploadBody, ProxyError> {
        let settings = &exchange.settings;
        let buffering = prebuffer(
            body,
            settings.request_buffer_bytes,
            settings.request_buffer_timeout,
            started.unwrap_or_else(Instant::now),
        );
        match buffering.await {
            Ok(body) => Ok(Box::new(body)),
            Err(error) => {
                let error = self.client_fault(&error);
                exchange.log(error.status().as_u16(), Duration::ZERO);
                Err(error)
            }
        }
    }

    /// Sends the request to the serving backend. `Ok` holds its response
    /// and when the backend's latency started: at the end of the upload
    /// (see `send_streaming`). `Err` holds the failure and its latency,
    /// timed from the call.
    pub(super) async fn forward(
        &self,
        exchange: &Exchange<'_>,
        mut parts: Parts,
        body: UploadBody,
        progress: BodyProgress,
    ) -> Result<(Response<ServedBody>, Instant), (UpstreamError, Duration)> {
        let serve = &exchange.pools.serve;
        parts.uri = serve.uri_for(parts.uri.path_and_query());
        parts.version = serve.version();
        let request = Request::from_parts(parts, body);
        let called = Instant::now();
        let sent = serve
            .send_streaming(request, serve.timeout(), progress)
            .await;
        let checked =
            sent.and_then(
                |(response, started)| match headers::unforwardable(&response) {
                    Some(problem) => Err(UpstreamError::Protocol {
                        backend: exchange.serving.as_str(),
                        source: problem.into(),
                    }),
                    None => Ok((response, started)),
                },
            );
        checked.map_err(|error| (error, called.elapsed()))
    }
}
