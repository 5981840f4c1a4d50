//! Request ids: the client's own when it sent a usable one, otherwise a
//! fresh one.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

/// A random per-process prefix and a counter: unique across restarts and
/// replicas without a random draw per request.
pub(super) struct RequestIds {
    /// The prefix as 16 hex digits and a dash, formatted once.
    prefix: [u8; 17],
    counter: AtomicU64,
}

/// An id's bytes: `{prefix:016x}-{counter:x}`, at most 33 of them.
struct Id {
    bytes: [u8; 33],
    len: usize,
}

impl AsRef<[u8]> for Id {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The longest client request id kept. Ids are for correlating logs: a
/// UUID is 36 bytes, a W3C trace parent 55; anything far longer is a way
/// to bloat every log line, access log and mirror about the request.
pub(super) const MAX_CLIENT_ID_BYTES: usize = 200;
/// How much of a replaced id the log keeps: enough to find it, bounded so
/// the replacement cannot flood the log either.
const LOGGED_ID_BYTES: usize = 1024;

impl RequestIds {
    pub fn new() -> Self {
        Self::with_prefix(rand::random())
    }

    fn with_prefix(prefix: u64) -> Self {
        let mut bytes = [b'-'; 17];
        for (i, byte) in bytes[..16].iter_mut().enumerate() {
            *byte = HEX[((prefix >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self {
            prefix: bytes,
            counter: AtomicU64::new(0),
        }
    }

    /// The id of a request whose `x-request-id` is `client`, and whether it
    /// is the client's own. An empty or over-long one is replaced by a
    /// fresh id (the original is logged, cut at [`LOGGED_ID_BYTES`]).
    pub fn for_request(&self, client: Option<&HeaderValue>) -> (HeaderValue, bool) {
        match client {
            Some(id) if !id.is_empty() && id.len() <= MAX_CLIENT_ID_BYTES => (id.clone(), true),
            Some(id) if !id.is_empty() => {
                let fresh = self.next();
                let shown = &id.as_bytes()[..id.len().min(LOGGED_ID_BYTES)];
                tracing::warn!(
                    request_id = ?fresh,
                    client_id_bytes = id.len(),
                    client_id = %String::from_utf8_lossy(shown),
                    "client request id longer than {MAX_CLIENT_ID_BYTES} bytes; replaced"
                );
                (fresh, false)
            }
            _ => (self.next(), false),
        }
    }

    /// The next id. Formatted by hand into one buffer that the header value
    /// then owns (one allocation, and clones of it share it): this runs for
    /// every request that comes without an id.
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = Id {
            bytes: [0; 33],
            len: 17,
        };
        id.bytes[..17].copy_from_slice(&self.prefix);
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            id.bytes[17 + i] = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        id.len += digits;
        HeaderValue::from_maybe_shared(Bytes::from_owner(id))
            .expect("hex digits and a dash are a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_share_the_process_prefix() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let prefix = |v: &HeaderValue| v.to_str().unwrap().split('-').next().unwrap().to_owned();
        assert_eq!(prefix(&a), prefix(&b));
    }

    #[test]
    fn client_ids_are_kept_up_to_the_limit_and_replaced_beyond_it() {
        let ids = RequestIds::with_prefix(7);
        let fits = HeaderValue::from_str(&"a".repeat(MAX_CLIENT_ID_BYTES)).unwrap();
        assert_eq!(ids.for_request(Some(&fits)), (fits.clone(), true));
        let long = HeaderValue::from_str(&"a".repeat(MAX_CLIENT_ID_BYTES + 1)).unwrap();
        let (replaced, own) = ids.for_request(Some(&long));
        assert!(!own && replaced.to_str().unwrap().starts_with("0000000000000007-"));
        let (empty, own) = ids.for_request(Some(&HeaderValue::from_static("")));
        assert!(!own && !empty.is_empty());
        assert!(!ids.for_request(None).1);
    }

    #[test]
    fn ids_read_as_the_prefix_and_counter_in_hex() {
        let ids = RequestIds::with_prefix(0x0123_4567_89ab_cdef);
        for n in [0u64, 1, 15, 16, 255, 0xdead_beef, u64::MAX] {
            ids.counter.store(n, Ordering::Relaxed);
            assert_eq!(
                ids.next(),
                format!("{:016x}-{n:x}", 0x0123_4567_89ab_cdef_u64)
            );
        }
    }
}
