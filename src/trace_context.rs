//! W3C Trace Context (level 1): the client's `traceparent` read, and the
//! `traceparent` of each request the proxy sends on its behalf.
//!
//! The proxy is one hop of the client's trace: it keeps the trace id and
//! the sampled flag, and gives each backend request a span id of its own,
//! so the serving request and the mirror's are siblings under the client's
//! span. A missing or invalid `traceparent` starts a new trace; its
//! `tracestate` then belongs to no trace being continued and is dropped.

use http::{HeaderMap, HeaderName, HeaderValue};

pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `version-traceid-parentid-flags`: 2 + 1 + 32 + 1 + 16 + 1 + 2.
const LEN: usize = 55;
/// The one flag level 1 defines; the others are not passed on.
const SAMPLED: u8 = 0x01;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace a request belongs to, and the span the proxy opened for its
/// serving request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// Never zero.
    pub trace_id: u128,
    /// Only [`SAMPLED`], if set.
    pub flags: u8,
    /// The span of the serving request; never zero.
    pub serving_span: u64,
    /// The trace is the client's (its `traceparent` was valid).
    pub from_client: bool,
}

/// A valid `traceparent`'s fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceContext {
    /// The trace of a request with `headers`: the client's, or a new,
    /// sampled one.
    pub fn for_request(headers: &HeaderMap) -> Self {
        match traceparent(headers) {
            Some(parent) => Self {
                trace_id: parent.trace_id,
                flags: parent.flags & SAMPLED,
                serving_span: new_span(0),
                from_client: true,
            },
            None => Self {
                trace_id: new_trace_id(),
                flags: SAMPLED,
                serving_span: new_span(0),
                from_client: false,
            },
        }
    }

    /// A span id for the mirror's request, other than the serving one.
    pub fn shadow_span(&self) -> u64 {
        new_span(self.serving_span)
    }

    /// The `traceparent` of a request the proxy sends in span `span`.
    pub fn header(&self, span: u64) -> HeaderValue {
        let bytes = format(&TraceParent {
            trace_id: self.trace_id,
            parent_id: span,
            flags: self.flags,
        });
        HeaderValue::from_bytes(&bytes).expect("lowercase hex and dashes are a valid header value")
    }

    /// The trace id as 32 lowercase hex digits, as logs show it.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0; 32];
        write_hex(&mut out, self.trace_id);
        out
    }

    /// Sets the backend request's `traceparent` for `span`, and drops a
    /// `tracestate` that came with a trace the proxy did not continue.
    pub fn apply(&self, headers: &mut HeaderMap, span: u64) {
        headers.insert(TRACEPARENT.clone(), self.header(span));
        if !self.from_client {
            headers.remove(&TRACESTATE);
        }
    }
}

/// The trace id of the one valid `traceparent` in `headers`.
pub fn trace_id(headers: &HeaderMap) -> Option<u128> {
    traceparent(headers).map(|parent| parent.trace_id)
}

/// The one `traceparent` in `headers`, when valid; two are ambiguous.
fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => parse(value.as_bytes()),
        _ => None,
    }
}

/// A random trace id; zero is not a valid one.
fn new_trace_id() -> u128 {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return id;
        }
    }
}

/// A random span id, neither zero nor `other`.
fn new_span(other: u64) -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 && id != other {
            return id;
        }
    }
}

/// Parses a `traceparent` value; `None` when it is invalid. Version `00`
/// is exactly 55 bytes; a later version is read by its first 55 bytes,
/// which must end the value or be followed by a `-` (its own fields).
pub fn parse(value: &[u8]) -> Option<TraceParent> {
    if value.len() < LEN {
        return None;
    }
    let version = hex_field(&value[0..2])? as u8;
    match version {
        0xff => return None,
        0x00 if value.len() != LEN => return None,
        _ if value.len() > LEN && value[LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_field(&value[3..35])?;
    let parent_id = hex_field(&value[36..52])? as u64;
    let flags = hex_field(&value[53..55])? as u8;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// The version-`00` form of `parent`.
pub fn format(parent: &TraceParent) -> [u8; LEN] {
    let mut out = [b'-'; LEN];
    out[0] = b'0';
    out[1] = b'0';
    write_hex(&mut out[3..35], parent.trace_id);
    write_hex(&mut out[36..52], u128::from(parent.parent_id));
    write_hex(&mut out[53..55], u128::from(parent.flags));
    out
}

/// Lowercase hex digits (up to 32) as a number; `None` for anything else,
/// uppercase included, as the specification asks.
fn hex_field(digits: &[u8]) -> Option<u128> {
    let mut n = 0u128;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(v);
    }
    Some(n)
}

/// `n`'s low `out.len()` hex digits, zero-padded.
fn write_hex(out: &mut [u8], n: u128) {
    let len = out.len();
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX[((n >> (4 * (len - 1 - i))) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
    fn the_specification_example_parses_and_formats_back() {
        let parent = parse(VALID.as_bytes()).unwrap();
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(parent.flags, 1);
        assert_eq!(&format(&parent)[..], VALID.as_bytes());
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            &format(&parse(unsampled.as_bytes()).unwrap())[..],
            unsampled.as_bytes()
        );
    }

    #[test]
    fn small_ids_format_zero_padded() {
        let parent = TraceParent {
            trace_id: 1,
            parent_id: 2,
            flags: 0,
        };
        let text = format(&parent);
        assert_eq!(
            &text[..],
            b"00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert_eq!(parse(&text), Some(parent));
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00",
            // All-zero trace id, all-zero parent id.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Lengths: short and long ids, a short flags field.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // Version 00 with anything after the flags.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
            // The forbidden version, and non-hex ones.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "xy-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Wrong separators and non-hex digits.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // A later version whose extra fields are not set off by a dash.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_level_1_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future";
        let parent = parse(later.as_bytes()).unwrap();
        assert_eq!(parent.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent.parent_id, 0x00f067aa0ba902b7);
        assert!(parse(&later.as_bytes()[..LEN]).is_some());
    }

    #[test]
    fn a_client_trace_is_continued_with_its_sampled_flag_only() {
        let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff";
        let trace = TraceContext::for_request(&headers(&[("traceparent", sampled)]));
        assert!(trace.from_client);
        assert_eq!(trace.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(trace.flags, SAMPLED);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02";
        let trace = TraceContext::for_request(&headers(&[("traceparent", unsampled)]));
        assert_eq!(trace.flags, 0);
        let header = trace.header(trace.serving_span);
        let sent = parse(header.as_bytes()).unwrap();
        assert_eq!(sent.trace_id, trace.trace_id);
        assert_eq!(sent.parent_id, trace.serving_span);
        assert_eq!(sent.flags, 0);
    }

    #[test]
    fn a_missing_invalid_or_repeated_traceparent_starts_a_sampled_trace() {
        let bad = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        for map in [
            headers(&[]),
            headers(&[("traceparent", bad)]),
            headers(&[("traceparent", VALID), ("traceparent", VALID)]),
        ] {
            let trace = TraceContext::for_request(&map);
            assert!(!trace.from_client);
            assert_ne!(trace.trace_id, 0);
            assert_ne!(trace.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
            assert_eq!(trace.flags, SAMPLED);
        }
        assert_eq!(
            trace_id(&headers(&[("traceparent", VALID)])),
            Some(0x4bf92f3577b34da6a3ce929d0e0e4736)
        );
        assert_eq!(trace_id(&headers(&[("traceparent", bad)])), None);
        let a = TraceContext::for_request(&HeaderMap::new());
        let b = TraceContext::for_request(&HeaderMap::new());
        assert_ne!(a.trace_id, b.trace_id);
    }

    #[test]
    fn each_backend_request_has_its_own_span() {
        let trace = TraceContext::for_request(&headers(&[("traceparent", VALID)]));
        let shadow = trace.shadow_span();
        assert_ne!(shadow, 0);
        assert_ne!(shadow, trace.serving_span);
        assert_ne!(trace.serving_span, 0x00f067aa0ba902b7);
    }

    #[test]
    fn tracestate_follows_only_a_continued_trace() {
        let mut continued = headers(&[("traceparent", VALID), ("tracestate", "v=1")]);
        let trace = TraceContext::for_request(&continued);
        trace.apply(&mut continued, trace.serving_span);
        assert_eq!(continued["tracestate"], "v=1");
        assert_ne!(continued["traceparent"], VALID);
        let mut restarted = headers(&[("traceparent", "bogus"), ("tracestate", "v=1")]);
        let trace = TraceContext::for_request(&restarted);
        trace.apply(&mut restarted, trace.serving_span);
        assert!(restarted.get("tracestate").is_none());
        assert!(parse(restarted["traceparent"].as_bytes()).is_some());
    }

    #[test]
    fn the_trace_id_shows_as_32_hex_digits() {
        let trace = TraceContext::for_request(&headers(&[("traceparent", VALID)]));
        assert_eq!(&trace.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
