//! Arbitrary pairs of bodies through `Comparator::compare` under a few specs.
//!
//! Input: `stable 0xFF candidate` (0xFF never occurs in UTF-8, so JSON seeds stay
//! readable); without 0xFF the input is compared with itself.
//!
//! Checked, besides "never panics" (all from the `compare` module docs):
//! * a body compared with itself is never a `mismatch` (any status);
//! * with both statuses 200, `match`/`mismatch` is symmetric: a vs b and b vs a are
//!   both `match`, or both `mismatch`;
//! * the shape of a `Comparison`: a difference exactly for `mismatch`, a reason exactly
//!   for `uncomparable`, zero elements for error/uncomparable, no mismatched rows in a
//!   `match`, and at least one in a same-status `mismatch`;
//! * reported values are at most `MAX_CHARS` characters and the reported pointer is
//!   valid RFC 6901 text.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use understudy::compare::{
    Comparator, CompareSpec, Comparison, Format, MAX_CHARS, Mode, Observed, Outcome, Preset,
};

fn comparators() -> &'static [(&'static str, Comparator)] {
    static ALL: OnceLock<Vec<(&'static str, Comparator)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let d = CompareSpec::default;
        let specs = [
            ("default", d()),
            (
                "kserve-v2",
                CompareSpec {
                    preset: Some(Preset::KserveV2),
                    ..d()
                },
            ),
            (
                "tf-serving",
                CompareSpec {
                    preset: Some(Preset::TfServing),
                    ..d()
                },
            ),
            (
                "openai",
                CompareSpec {
                    preset: Some(Preset::Openai),
                    ..d()
                },
            ),
            (
                "argmax",
                CompareSpec {
                    mode: Some(Mode::Argmax),
                    ..d()
                },
            ),
            (
                "cosine",
                CompareSpec {
                    mode: Some(Mode::Cosine),
                    ..d()
                },
            ),
            (
                "pointer",
                CompareSpec {
                    pointer: Some("/predictions".into()),
                    ..d()
                },
            ),
            (
                "ignore",
                CompareSpec {
                    ignore: vec!["/a/*/b".into()],
                    ..d()
                },
            ),
            (
                "kserve-v2-argmax",
                CompareSpec {
                    preset: Some(Preset::KserveV2),
                    mode: Some(Mode::Argmax),
                    ..d()
                },
            ),
            (
                "exact",
                CompareSpec {
                    abs_tolerance: 0.0,
                    rel_tolerance: 0.0,
                    ..d()
                },
            ),
            (
                "bytes",
                CompareSpec {
                    format: Format::Bytes,
                    ..d()
                },
            ),
        ];
        specs
            .into_iter()
            .map(|(name, spec)| (name, Comparator::new(&spec).expect("fuzz spec is valid")))
            .collect()
    })
}

fn response(status: u16, body: &[u8]) -> Observed<'_> {
    Observed::Response {
        status,
        body,
        truncated: false,
    }
}

fn valid_pointer(p: &str) -> bool {
    if p.is_empty() {
        return true;
    }
    if !p.starts_with('/') {
        return false;
    }
    let b = p.as_bytes();
    b.iter()
        .enumerate()
        .all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
}

/// The documented shape of a `Comparison`.
fn check_shape(name: &str, c: &Comparison, same_status: bool) {
    let zero = c.elements.matched == 0 && c.elements.mismatched == 0;
    match c.outcome {
        Outcome::Match => {
            assert!(
                c.difference.is_none() && c.reason.is_none(),
                "{name}: {c:?}"
            );
            assert_eq!(c.elements.mismatched, 0, "{name}: {c:?}");
        }
        Outcome::Mismatch => {
            let d = c.difference.as_ref().expect("a mismatch has a difference");
            assert!(c.reason.is_none(), "{name}: {c:?}");
            assert!(d.stable.chars().count() <= MAX_CHARS, "{name}: {c:?}");
            assert!(d.candidate.chars().count() <= MAX_CHARS, "{name}: {c:?}");
            assert!(valid_pointer(&d.pointer), "{name}: {c:?}");
            if same_status {
                assert!(c.elements.mismatched >= 1, "{name}: {c:?}");
            } else {
                assert!(zero, "{name}: {c:?}");
            }
        }
        Outcome::Uncomparable => {
            assert!(
                c.reason.is_some() && c.difference.is_none(),
                "{name}: {c:?}"
            );
            assert!(zero, "{name}: {c:?}");
        }
        Outcome::StableError | Outcome::ShadowError => {
            assert!(
                c.reason.is_none() && c.difference.is_none(),
                "{name}: {c:?}"
            );
            assert!(zero, "{name}: {c:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&x| x == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    for (name, cmp) in comparators() {
        for status in [200, 404] {
            for body in [a, b] {
                let c = cmp.compare(&response(status, body), &response(status, body));
                check_shape(name, &c, true);
                assert_ne!(
                    c.outcome,
                    Outcome::Mismatch,
                    "{name}: a body differs from itself (status {status}): {c:?}"
                );
            }
        }
        let ab = cmp.compare(&response(200, a), &response(200, b));
        let ba = cmp.compare(&response(200, b), &response(200, a));
        check_shape(name, &ab, true);
        check_shape(name, &ba, true);
        let decided = |o: Outcome| matches!(o, Outcome::Match | Outcome::Mismatch);
        if decided(ab.outcome) || decided(ba.outcome) {
            assert_eq!(
                ab.outcome, ba.outcome,
                "{name}: not symmetric\n a vs b: {ab:?}\n b vs a: {ba:?}"
            );
        }
        // Non-2xx with equal statuses, a status mismatch, errors and truncation.
        check_shape(
            name,
            &cmp.compare(&response(422, a), &response(422, b)),
            true,
        );
        check_shape(
            name,
            &cmp.compare(&response(200, a), &response(400, b)),
            false,
        );
        assert_eq!(
            cmp.compare(&Observed::Failed, &response(200, b)).outcome,
            Outcome::StableError
        );
        assert_eq!(
            cmp.compare(&response(200, a), &response(503, b)).outcome,
            Outcome::ShadowError
        );
        let cut = Observed::Response {
            status: 200,
            body: a,
            truncated: true,
        };
        assert_eq!(
            cmp.compare(&cut, &response(200, b)).outcome,
            Outcome::Uncomparable
        );
    }
});
