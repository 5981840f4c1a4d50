//! The weighted stable/candidate choice for each request, with sticky keys:
//! a key (header or cookie) hashes to one of 10 000 buckets, and the
//! candidate gets the buckets below its weight, so a user stays on one
//! backend and raising the weight only moves users from stable to candidate.
//! Without a key each request draws a random bucket. Lock-free and
//! allocation-free on the request path; it never panics and never decides
//! the weight itself.

use http::HeaderMap;
use http::header::{COOKIE, HeaderName};
use rand::Rng;
use std::fmt;
use std::str::FromStr;
use xxhash_rust::xxh3::xxh3_64;

/// Buckets per 100%: one bucket is one basis point (0.01%).
pub const BUCKETS: u32 = 10_000;

/// Which backend serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The current model version.
    Stable,
    /// The model version being rolled out.
    Candidate,
}

impl Backend {
    /// Its position in per-backend arrays, the order of
    /// [`crate::labels::BACKENDS`].
    pub fn index(self) -> usize {
        match self {
            Backend::Stable => 0,
            Backend::Candidate => 1,
        }
    }

    /// "stable" or "candidate" (for metrics labels and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Stable => "stable",
            Backend::Candidate => "candidate",
        }
    }

    /// The other backend (the one that shadows this request).
    pub fn other(self) -> Backend {
        match self {
            Backend::Stable => Backend::Candidate,
            Backend::Candidate => Backend::Stable,
        }
    }
}

/// Where a request's sticky key comes from (`split.sticky` in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickyKey {
    /// The first value of this header, e.g. `header:x-user-id`.
    Header(HeaderName),
    /// This cookie's value, e.g. `cookie:session`.
    Cookie(String),
}

/// Why a `split.sticky` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StickyKeyError {
    /// Neither `header:` nor `cookie:`.
    #[error("invalid sticky key {0:?}: expected \"header:NAME\" or \"cookie:NAME\"")]
    Format(String),
    /// Not a valid HTTP header name.
    #[error("invalid sticky key {0:?}: not a valid HTTP header name")]
    InvalidHeader(String),
    /// `cookie:` with nothing after it.
    #[error("invalid sticky key {0:?}: empty cookie name")]
    EmptyCookie(String),
    /// A cookie name with separators, spaces or control characters.
    #[error(
        "invalid sticky key {0:?}: cookie names cannot contain spaces, controls or ()<>@,;:\\\"/[]?={{}}"
    )]
    InvalidCookie(String),
}

impl FromStr for StickyKey {
    type Err = StickyKeyError;

    /// Parses `header:NAME` or `cookie:NAME` (the prefix is case-insensitive,
    /// surrounding whitespace ignored; header names are lowercased).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = s.trim();
        let (kind, name) = raw
            .split_once(':')
            .ok_or_else(|| StickyKeyError::Format(s.to_owned()))?;
        let name = name.trim();
        if kind.trim().eq_ignore_ascii_case("header") {
            HeaderName::from_bytes(name.as_bytes())
                .map(StickyKey::Header)
                .map_err(|_| StickyKeyError::InvalidHeader(s.to_owned()))
        } else if kind.trim().eq_ignore_ascii_case("cookie") {
            if name.is_empty() {
                Err(StickyKeyError::EmptyCookie(s.to_owned()))
            } else if !name.bytes().all(is_cookie_name_byte) {
                Err(StickyKeyError::InvalidCookie(s.to_owned()))
            } else {
                Ok(StickyKey::Cookie(name.to_owned()))
            }
        } else {
            Err(StickyKeyError::Format(s.to_owned()))
        }
    }
}

impl fmt::Display for StickyKey {
    /// The config form, so `to_string().parse()` round-trips.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StickyKey::Header(h) => write!(f, "header:{h}"),
            StickyKey::Cookie(c) => write!(f, "cookie:{c}"),
        }
    }
}

/// RFC 6265 cookie-name: an RFC 7230 token.
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

impl StickyKey {
    /// The key's bytes in this request, borrowed from the headers. `None`
    /// when absent or empty (an empty key would pin every such user to one
    /// bucket). A header key uses the header's first value; a cookie key
    /// searches every `Cookie` header (`a=1; session=xyz` → `xyz`), taking
    /// the first non-empty match and stripping optional double quotes.
    pub fn extract<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        match self {
            StickyKey::Header(name) => {
                let v = headers.get(name)?.as_bytes();
                (!v.is_empty()).then_some(v)
            }
            StickyKey::Cookie(name) => headers
                .get_all(COOKIE)
                .iter()
                .find_map(|v| find_cookie(v.as_bytes(), name.as_bytes())),
        }
    }
}

fn find_cookie<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        if pair[..eq].trim_ascii() != name {
            return None;
        }
        let mut value = pair[eq + 1..].trim_ascii();
        if let [b'"', inner @ .., b'"'] = value {
            value = inner;
        }
        (!value.is_empty()).then_some(value)
    })
}

/// The candidate's share in basis points (0..=10_000), so weights like 0.5%
/// work. Out-of-range percentages clamp; NaN is 0 (nothing to the candidate).
pub fn weight_to_bp(percent: f64) -> u32 {
    if percent.is_nan() {
        return 0;
    }
    // Clamped to 0..=10_000 first, so the cast cannot truncate.
    (percent.clamp(0.0, 100.0) * 100.0).round() as u32
}

/// Sticky bucket for a key: xxh3-64 of the key (stable across processes,
/// replicas and releases — it is part of the user-visible contract) mod
/// 10 000.
pub fn bucket(key: &[u8]) -> u32 {
    (xxh3_64(key) % u64::from(BUCKETS)) as u32
}

/// Lock-free choice: candidate iff the bucket is below `weight_bp`. With no
/// key, a random bucket from the thread-local generator.
pub fn choose(weight_bp: u32, key: Option<&[u8]>) -> Backend {
    choose_with(weight_bp, key, &mut rand::rng())
}

/// [`choose`] with a caller-supplied generator (seeded tests).
pub fn choose_with<R: Rng>(weight_bp: u32, key: Option<&[u8]>, rng: &mut R) -> Backend {
    // 0% and 100% need no draw at all.
    if weight_bp == 0 {
        return Backend::Stable;
    }
    if weight_bp >= BUCKETS {
        return Backend::Candidate;
    }
    let b = match key {
        Some(k) => bucket(k),
        None => rng.random_range(0..BUCKETS),
    };
    if b < weight_bp {
        Backend::Candidate
    } else {
        Backend::Stable
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_backend_index_is_its_place_among_the_backend_labels() {
        for backend in [Backend::Stable, Backend::Candidate] {
            assert_eq!(crate::labels::BACKENDS[backend.index()], backend.as_str());
        }
    }

    use super::*;
    use http::HeaderValue;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn share_of_candidate(weight_bp: u32, draws: u32, key: impl Fn(u32) -> Option<String>) -> f64 {
        let mut rng = SmallRng::seed_from_u64(u64::from(weight_bp));
        let hits = (0..draws)
            .filter(|i| {
                let k = key(*i);
                choose_with(weight_bp, k.as_deref().map(str::as_bytes), &mut rng)
                    == Backend::Candidate
            })
            .count();
        hits as f64 / f64::from(draws)
    }

    #[test]
    fn random_draws_match_the_weight() {
        for percent in [0.0, 0.5, 5.0, 25.0, 50.0, 100.0] {
            let p = percent / 100.0;
            let share = share_of_candidate(weight_to_bp(percent), 200_000, |_| None);
            // 5 standard deviations of a binomial share, plus a hair for 0/100.
            let tolerance = 5.0 * (p * (1.0 - p) / 200_000.0).sqrt() + 1e-9;
            assert!((share - p).abs() <= tolerance, "{percent}%: got {share}");
        }
    }

    #[test]
    fn distinct_keys_spread_like_the_weight() {
        for percent in [5.0, 25.0, 50.0] {
            let p = percent / 100.0;
            let share = share_of_candidate(weight_to_bp(percent), 100_000, |i| {
                Some(format!("user-{i}"))
            });
            let tolerance = 5.0 * (p * (1.0 - p) / 100_000.0).sqrt();
            assert!((share - p).abs() <= tolerance, "{percent}%: got {share}");
        }
    }

    #[test]
    fn the_same_key_always_gets_the_same_backend() {
        let mut rng = SmallRng::seed_from_u64(7);
        for i in 0..1000 {
            let key = format!("user-{i}");
            let first = choose_with(2_500, Some(key.as_bytes()), &mut rng);
            assert!((0..5).all(|_| choose(2_500, Some(key.as_bytes())) == first));
        }
    }

    #[test]
    fn raising_the_weight_only_moves_users_to_the_candidate() {
        let mut rng = SmallRng::seed_from_u64(1);
        let weights = [0, 1, 50, 500, 2_500, 5_000, 9_999, 10_000];
        for i in 0..5000 {
            let key = format!("session-{i}");
            let on: Vec<Backend> = weights
                .iter()
                .map(|w| choose_with(*w, Some(key.as_bytes()), &mut rng))
                .collect();
            let first = on
                .iter()
                .position(|b| *b == Backend::Candidate)
                .unwrap_or(on.len());
            assert!(
                on[first..].iter().all(|b| *b == Backend::Candidate),
                "{key}: {on:?}"
            );
        }
    }

    #[test]
    fn buckets_are_pinned_across_processes_and_releases() {
        // Changing the hash would reshuffle every sticky user mid-rollout.
        assert_eq!(bucket(b"user-42"), PINNED_BUCKET);
        assert!((0..1000).all(|i| bucket(format!("k{i}").as_bytes()) < BUCKETS));
    }

    const PINNED_BUCKET: u32 = 2621;

    #[test]
    fn weights_convert_to_basis_points_safely() {
        assert_eq!(weight_to_bp(0.5), 50);
        assert_eq!(weight_to_bp(25.0), 2_500);
        assert_eq!(weight_to_bp(100.0), 10_000);
        assert_eq!(weight_to_bp(150.0), 10_000);
        assert_eq!(weight_to_bp(-3.0), 0);
        assert_eq!(weight_to_bp(f64::NAN), 0);
        assert_eq!(weight_to_bp(f64::INFINITY), 10_000);
        assert_eq!(weight_to_bp(12.345), 1_235);
    }

    #[test]
    fn backends_name_themselves_and_their_shadow() {
        assert_eq!(
            (Backend::Stable.as_str(), Backend::Candidate.as_str()),
            ("stable", "candidate")
        );
        assert_eq!(Backend::Stable.other(), Backend::Candidate);
        assert_eq!(Backend::Candidate.other(), Backend::Stable);
    }

    #[test]
    fn sticky_keys_parse_from_config() {
        let h: StickyKey = "header:X-User-Id".parse().expect("valid");
        assert_eq!(h, StickyKey::Header(HeaderName::from_static("x-user-id")));
        assert_eq!(h.to_string(), "header:x-user-id");
        assert_eq!(
            " Cookie:session ".parse(),
            Ok(StickyKey::Cookie("session".into()))
        );
        assert_eq!(
            "cookie:session".parse::<StickyKey>().map(|k| k.to_string()),
            Ok("cookie:session".into())
        );
    }

    #[test]
    fn bad_sticky_keys_say_what_is_expected() {
        let err = |s: &str| s.parse::<StickyKey>().expect_err(s).to_string();
        assert_eq!(
            err("x-user-id"),
            r#"invalid sticky key "x-user-id": expected "header:NAME" or "cookie:NAME""#
        );
        assert!(err("query:user").contains(r#"expected "header:NAME" or "cookie:NAME""#));
        assert!(err("header:bad name").contains("not a valid HTTP header name"));
        assert!(err("header:").contains("not a valid HTTP header name"));
        assert!(err("cookie:").ends_with("empty cookie name"));
        assert!(err("cookie:a;b").contains("cookie names cannot contain"));
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("valid name");
            h.append(name, HeaderValue::from_bytes(value).expect("valid value"));
        }
        h
    }

    #[test]
    fn header_keys_use_the_first_non_empty_value() {
        let key: StickyKey = "header:x-user-id".parse().expect("valid");
        let h = headers(&[("x-user-id", b"u-1"), ("x-user-id", b"u-2")]);
        assert_eq!(key.extract(&h), Some(&b"u-1"[..]));
        assert_eq!(key.extract(&headers(&[("x-user-id", b"")])), None);
        assert_eq!(key.extract(&headers(&[("x-other", b"u-1")])), None);
    }

    #[test]
    fn cookie_keys_are_found_in_any_cookie_header() {
        let key: StickyKey = "cookie:session".parse().expect("valid");
        let get = |pairs: &[(&str, &[u8])]| key.extract(&headers(pairs)).map(<[u8]>::to_vec);
        assert_eq!(
            get(&[("cookie", b"a=1; session=xyz")]),
            Some(b"xyz".to_vec())
        );
        assert_eq!(
            get(&[("cookie", b"a=1"), ("cookie", b"session=abc")]),
            Some(b"abc".to_vec())
        );
        assert_eq!(
            get(&[("cookie", b"xsession=1; session=2")]),
            Some(b"2".to_vec())
        );
        assert_eq!(
            get(&[("cookie", b"  session = spaced ;b=2")]),
            Some(b"spaced".to_vec())
        );
        assert_eq!(
            get(&[("cookie", b"session=\"quoted\"")]),
            Some(b"quoted".to_vec())
        );
        assert_eq!(get(&[("cookie", b"session=a=b")]), Some(b"a=b".to_vec()));
        assert_eq!(
            get(&[("cookie", b"session=; session=later")]),
            Some(b"later".to_vec())
        );
        assert_eq!(get(&[("cookie", b"Session=case; novalue; ;")]), None);
        assert_eq!(
            get(&[("cookie", b"session=\xff\xfe")]),
            Some(vec![0xff, 0xfe])
        );
        assert_eq!(get(&[]), None);
    }
}
