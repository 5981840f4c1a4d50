//! Header rewriting at the proxy boundary (RFC 9110 §7.6.1).
//!
//! Hop-by-hop headers describe one connection and must not travel to the
//! next hop, in either direction; `x-forwarded-*` tell the backend who the
//! client was; the `x-understudy-*` headers are the proxy's own, so a
//! client or backend cannot forge them. Heads the proxy cannot forward
//! faithfully are refused here ([`refuse_request`], [`unforwardable`]).
//! Nothing here allocates unless a header must be added, and a head
//! without hop-by-hop headers (nearly every one) is only scanned.

use std::net::IpAddr;

use http::header::{
    CONNECTION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, Response, StatusCode, Version};

use crate::error::ProxyError;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_UNDERSTUDY_BACKEND: HeaderName = HeaderName::from_static("x-understudy-backend");
pub static X_UNDERSTUDY_SHADOW: HeaderName = HeaderName::from_static("x-understudy-shadow");

/// Headers only the proxy may set: removed from what clients send to the
/// backends and from what backends send back.
static RESERVED: [&HeaderName; 2] = [&X_UNDERSTUDY_BACKEND, &X_UNDERSTUDY_SHADOW];

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` is one of the fixed hop-by-hop headers (or `TE`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHORIZATION
        || name == PROXY_AUTHENTICATE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers: the fixed list, plus every header the
/// `Connection` header names. `TE: trailers` survives, because gRPC needs
/// the backend to know the client accepts trailers.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names present instead of a hashed removal per
    // hop-by-hop name: a header `Connection` names is only removed when
    // `Connection` itself is present.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if name != TE {
            headers.remove(&name);
        }
    }
    for name in [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &PROXY_AUTHENTICATE,
        &PROXY_AUTHORIZATION,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    headers.remove(TE);
    if te_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// A client connection's IP, formatted once for `x-forwarded-for` rather
/// than on every request of the connection.
#[derive(Debug, Clone)]
pub struct ForwardedFor(HeaderValue);

impl ForwardedFor {
    pub fn new(peer: IpAddr) -> Self {
        Self(
            HeaderValue::from_str(&peer.to_string())
                .expect("an IP address is a valid header value"),
        )
    }

    fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// Prepares a client's request headers for a backend: hop-by-hop and
/// reserved headers removed, `x-forwarded-for` extended with the peer,
/// `-proto` set to the scheme the client used, `-host` set to the Host the
/// client asked for, and the Host itself dropped so the client sets the
/// backend's own authority. The caller sets `x-request-id` afterwards, so
/// no `Connection` header can remove it.
pub fn prepare_request(
    headers: &mut HeaderMap,
    peer: &ForwardedFor,
    proto: &'static str,
    authority: Option<&str>,
) {
    remove_hop_by_hop(headers);
    remove_reserved(headers);
    let host = headers
        .remove(HOST)
        .or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) => HeaderValue::from_str(&format!("{previous}, {}", peer.as_str())).ok(),
        None => Some(peer.0.clone()),
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
}

/// Prepares a backend's response headers for the client.
pub fn prepare_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
    remove_reserved(headers);
}

fn remove_reserved(headers: &mut HeaderMap) {
    for name in RESERVED {
        headers.remove(name);
    }
}

/// Why a client's request head must not be forwarded, checked before any
/// header is rewritten. hyper's parser already refuses what HTTP/1.1 makes
/// unparsable (bad request lines, conflicting `Content-Length`, a final
/// transfer coding other than chunked); what it passes on and is refused
/// here:
/// * `CONNECT` (405): a tunnel, not a request to forward;
/// * HTTP/1.1 without exactly one `Host` (400, RFC 9112 §3.2);
/// * a transfer coding besides `chunked`, e.g. `gzip, chunked` (501, RFC
///   9112 §6.1): the proxy would forward still-encoded bytes without their
///   coding; `chunked` twice is malformed (400).
pub fn refuse_request(parts: &http::request::Parts) -> Option<ProxyError> {
    if parts.method == Method::CONNECT {
        return Some(ProxyError::Connect);
    }
    if parts.version != Version::HTTP_11 {
        // HTTP/2 has no Host or transfer codings of its own (hyper and h2
        // check its pseudo-headers); HTTP/1.0 needs no Host.
        return None;
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    if hosts.next().is_none() || hosts.next().is_some() {
        return Some(ProxyError::Malformed(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let mut chunked = 0;
    for value in parts.headers.get_all(TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Some(ProxyError::TransferCoding);
        };
        for coding in value.split(',').map(str::trim) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Some(ProxyError::TransferCoding);
            }
            chunked += 1;
        }
    }
    (chunked > 1).then_some(ProxyError::Malformed("chunked applied more than once"))
}

/// Why a backend's answer cannot be passed on as it is: a `101` nobody
/// asked for (the proxy forwards no `Upgrade`, so there is no protocol to
/// switch to), or both `Content-Length` and `Transfer-Encoding` (hyper
/// reads the body as chunked, but the length would be forwarded with it,
/// framing the client's copy wrongly: a truncated or overlong 200).
pub fn unforwardable<B>(response: &Response<B>) -> Option<&'static str> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Some("backend switched protocols (101) without being asked to");
    }
    let headers = response.headers();
    (headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH))
        .then_some("backend answered with both Content-Length and Transfer-Encoding")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("content-type", "application/json"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "left: {h:?}");
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut h = headers(&[("te", "gzip, trailers")]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h["te"], "trailers");
        let mut h = headers(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h);
        assert!(h.get("te").is_none());
    }

    #[test]
    fn forwarded_headers_extend_the_chain() {
        let mut h = headers(&[("host", "api.example"), ("x-forwarded-for", "10.0.0.1")]);
        let peer = ForwardedFor::new("192.0.2.7".parse().unwrap());
        prepare_request(&mut h, &peer, "http", None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example");
        assert!(h.get("host").is_none());
    }

    #[test]
    fn the_peer_starts_the_chain_and_a_clean_head_is_left_alone() {
        let mut h = headers(&[("content-type", "application/json"), ("te", "trailers")]);
        let peer = ForwardedFor::new("2001:db8::1".parse().unwrap());
        prepare_request(&mut h, &peer, "https", Some("api.example:8080"));
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example:8080");
        assert_eq!(h["te"], "trailers");
        let mut clean = headers(&[("content-type", "application/json"), ("x-custom", "1")]);
        let before = clean.clone();
        remove_hop_by_hop(&mut clean);
        assert_eq!(clean, before);
    }
}
