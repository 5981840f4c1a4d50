//! Arbitrary `split.sticky` strings and request headers through the sticky split.
//!
//! Input: `KEY \n WEIGHT \n HEADER VALUE \n HEADER VALUE ...`: the first line is the
//! sticky key text, the second line's first 8 bytes (zero-padded) are an f64 percentage
//! for `weight_to_bp` and, read as a u32, a raw weight in basis points, and every
//! further line is one header value (arbitrary bytes, through
//! `HeaderValue::from_bytes`), added alternately under the key's header name and under
//! `Cookie`.
//!
//! Checked, besides "never panics":
//! * a parsed key round-trips through its config spelling (`Display`);
//! * `extract` returns a non-empty value that is (a part of) one of the request's
//!   header values;
//! * `bucket` < 10 000, `choose` is deterministic for a key and picks the candidate
//!   exactly when the bucket is below the weight (0 = never, >= 10 000 = always);
//! * `weight_to_bp` stays within 0..=10 000 for any f64.
#![no_main]

use http::header::{COOKIE, HeaderName};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use understudy::split::{BUCKETS, Backend, StickyKey, bucket, choose, weight_to_bp};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Some(Ok(text)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let weight_bytes = lines.next().unwrap_or_default();
    let mut w = [0u8; 8];
    for (dst, src) in w.iter_mut().zip(weight_bytes) {
        *dst = *src;
    }
    let percent = f64::from_le_bytes(w);
    let bp = weight_to_bp(percent);
    assert!(bp <= BUCKETS, "{percent} -> {bp}");
    let raw_bp = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) % (BUCKETS + 2);

    let Ok(key) = text.parse::<StickyKey>() else {
        return;
    };
    let again: StickyKey = key.to_string().parse().expect("round-trips");
    assert_eq!(again, key);

    let own_name = match &key {
        StickyKey::Header(name) => name.clone(),
        StickyKey::Cookie(_) => HeaderName::from_static("x-other"),
    };
    let mut headers = HeaderMap::new();
    for (i, raw) in lines.enumerate() {
        let Ok(value) = HeaderValue::from_bytes(raw) else {
            continue;
        };
        let name = if i % 2 == 0 { own_name.clone() } else { COOKIE };
        headers.append(name, value);
    }

    let found = key.extract(&headers);
    if let Some(v) = found {
        assert!(!v.is_empty());
        let source = match &key {
            StickyKey::Header(name) => headers.get_all(name),
            StickyKey::Cookie(_) => headers.get_all(COOKIE),
        };
        assert!(
            source.iter().any(|h| contains(h.as_bytes(), v)),
            "{key}: extracted {v:?} from nowhere"
        );
    }
    if let StickyKey::Header(name) = &key {
        let first = headers.get(name).map(HeaderValue::as_bytes);
        assert_eq!(found, first.filter(|v| !v.is_empty()));
    }

    let k = found.unwrap_or(text.as_bytes());
    let b = bucket(k);
    assert!(b < BUCKETS, "bucket {b}");
    for weight in [0, 1, bp, raw_bp, BUCKETS - 1, BUCKETS, BUCKETS + 1] {
        let got = choose(weight, Some(k));
        let want = if weight >= BUCKETS || b < weight {
            Backend::Candidate
        } else {
            Backend::Stable
        };
        assert_eq!(got, want, "weight {weight}, bucket {b}");
        assert_eq!(choose(weight, Some(k)), got);
    }
    let _ = choose(bp, found);
});
