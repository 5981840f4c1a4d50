//! Arbitrary pointer and ignore strings and documents through the compare module's
//! RFC 6901 handling (`pointer.rs` is private, so this goes through
//! `CompareSpec { pointer, ignore }`, `Comparator::new` and `compare`).
//!
//! Input: `POINTER \n IGNORE \n IGNORE ... 0xFF STABLE [0xFF CANDIDATE]`.
//! The first line is `compare.pointer` (`-` alone means none); each further line is one
//! `compare.ignore` entry. Without a candidate the stable body is compared with itself.
//!
//! Checked, besides "never panics":
//! * `Comparator::new` rejects exactly the pointers RFC 6901 rejects, plus `*` segments
//!   in `compare.pointer` and empty ignores;
//! * with no ignores, the compared part is missing from a document compared with itself
//!   (`pointer_missing`) exactly when serde_json's own `Value::pointer` finds nothing;
//! * a document is never a `mismatch` with itself, and the reported pointer of any
//!   mismatch is valid RFC 6901 text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy::compare::{Comparator, CompareSpec, Observed, Outcome, reason};

/// RFC 6901 syntax: empty, or '/' first and every '~' followed by '0' or '1'.
fn rfc6901(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    let b = p.as_bytes();
    b[0] == b'/'
        && b.iter()
            .enumerate()
            .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
}

fn has_wildcard(p: &str) -> bool {
    p.split('/').skip(1).any(|t| t == "*")
}

fn response(body: &[u8]) -> Observed<'_> {
    Observed::Response {
        status: 200,
        body,
        truncated: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(sep) = data.iter().position(|&x| x == 0xFF) else {
        return;
    };
    let Ok(head) = std::str::from_utf8(&data[..sep]) else {
        return;
    };
    let rest = &data[sep + 1..];
    let (stable, candidate) = match rest.iter().position(|&x| x == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, rest),
    };
    let mut lines = head.split('\n');
    let pointer = lines.next().filter(|p| *p != "-").map(str::to_owned);
    let ignore: Vec<String> = lines.map(str::to_owned).collect();
    let spec = CompareSpec {
        pointer: pointer.clone(),
        ignore: ignore.clone(),
        ..CompareSpec::default()
    };
    let pointer_ok = pointer
        .as_deref()
        .is_none_or(|p| rfc6901(p) && !has_wildcard(p));
    let ignores_ok = ignore.iter().all(|i| !i.is_empty() && rfc6901(i));
    let cmp = match Comparator::new(&spec) {
        Ok(cmp) => {
            assert!(
                pointer_ok && ignores_ok,
                "accepted {pointer:?} / {ignore:?}"
            );
            cmp
        }
        Err(e) => {
            assert!(
                !(pointer_ok && ignores_ok),
                "rejected {pointer:?} / {ignore:?}: {e}"
            );
            // The error names a key of the compare section.
            assert!(e.key().starts_with("compare."), "{e}");
            return;
        }
    };

    let same = cmp.compare(&response(stable), &response(stable));
    assert_ne!(same.outcome, Outcome::Mismatch, "self-mismatch: {same:?}");
    if ignore.is_empty()
        && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(stable)
    {
        let p = pointer.as_deref().unwrap_or("");
        let missing = same.reason == Some(reason::POINTER_MISSING);
        assert_eq!(
            missing,
            doc.pointer(p).is_none(),
            "pointer {p:?}: compare says {same:?}"
        );
    }

    let pair = cmp.compare(&response(stable), &response(candidate));
    if let Some(d) = &pair.difference {
        assert!(rfc6901(&d.pointer), "{pair:?}");
    }
});
