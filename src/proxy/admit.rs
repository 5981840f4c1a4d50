//! The first steps of a request: the backend that serves it, then its
//! admission — a head the proxy will not forward or a body declared over
//! `listen.max_body_bytes` is answered here, before any backend or mirror
//! sees it; an admitted head is rewritten for the backends.

use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http::request::Parts;

use super::Proxy;
use super::exchange::Exchange;
use super::headers::{self, X_REQUEST_ID};
use crate::error::ProxyError;
use crate::record::Ticket;
use crate::split::{self, Backend};
use crate::trace_context::TraceContext;

impl Proxy {
    /// Gives the request its id and trace and chooses the backend that serves it: by
    /// the rollout's weight, or by its sticky key when one is configured.
    pub(super) fn choose_backend(&self, parts: &Parts) -> Exchange<'_> {
        let inner = &*self.inner;
        let settings = inner.settings.load();
        let (request_id, id_from_client) = inner
            .request_ids
            .for_request(parts.headers.get(&X_REQUEST_ID));
        let serving = match &self.pools.candidate {
            Some(_) => {
                let key = settings
                    .sticky
                    .as_ref()
                    .and_then(|k| k.extract(&parts.headers));
                split::choose(inner.routing.weight_bp(), key)
            }
            None => Backend::Stable,
        };
        let (pools, other) = match serving {
            Backend::Stable => (&self.pools.stable, self.pools.candidate.as_ref()),
            Backend::Candidate => (
                self.pools
                    .candidate
                    .as_ref()
                    .expect("candidate chosen only when configured"),
                Some(&self.pools.stable),
            ),
        };
        Exchange {
            settings,
            request_id,
            id_from_client,
            trace: TraceContext::for_request(&parts.headers),
            serving,
            pools,
            other,
            client_version: parts.version,
            access: None,
        }
    }

    /// Refuses a head the proxy will not forward, samples the request for
    /// the recording, rewrites the head for the backends and refuses a body
    /// declared too large (the error is the answer). `Ok` holds the
    /// recording's ticket, when drawn.
    pub(super) fn admit(
        &self,
        exchange: &Exchange<'_>,
        parts: &mut Parts,
        peer: &headers::ForwardedFor,
        scheme: &'static str,
    ) -> Result<Option<Ticket>, ProxyError> {
        let inner = &*self.inner;
        if let Some(error) = headers::refuse_request(parts) {
            inner.metrics().malformed.increment(1);
            return Err(error);
        }
        // Sampled before the headers are rewritten: the recording keeps the
        // client's own headers.
        let recording = inner
            .recorder
            .get()
            .and_then(|r| r.sample(parts, &exchange.request_id));
        let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
        headers::prepare_request(&mut parts.headers, peer, scheme, authority.as_deref());
        // After the hop-by-hop removal: `Connection: x-request-id` cannot
        // take the id or the trace away from the backends.
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
        let trace = &exchange.trace;
        trace.apply(&mut parts.headers, trace.serving_span);
        if let Some(limit) = exchange.settings.max_body_bytes
            && declared_length(&parts.headers).is_some_and(|len| len > limit)
        {
            inner.metrics().body_too_large.increment(1);
            return Err(ProxyError::BodyTooLarge { limit });
        }
        Ok(recording)
    }
}

/// The request's `Content-Length`, when it has a valid one.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
