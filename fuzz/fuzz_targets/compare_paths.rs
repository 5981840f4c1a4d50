//! The fast comparison path against the reference tree path: `Comparator::compare`
//! must return exactly what `Comparator::compare_reference` returns (outcome, element
//! counts, difference, reason) for every pair of bodies and every spec.
//!
//! Input: `SPEC SPEC STATUS stable 0xFF candidate`. The first two bytes choose the
//! spec (preset, mode, tolerances, min_cosine, pointer, ignore), the third the two
//! statuses; the rest is split at the first 0xFF (without one, the body is compared
//! with itself). Each input is checked as a vs b, b vs a and a vs a.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy::compare::{Comparator, CompareSpec, Mode, Observed, Preset};

const POINTERS: [&str; 8] = [
    "",
    "/model",
    "/data",
    "/predictions",
    "/outputs/0/data",
    "/data/0/embedding",
    "/a",
    "/0",
];

const IGNORES: [&str; 8] = [
    "/id",
    "/outputs/*/parameters",
    "/data/*/index",
    "/data",
    "/*",
    "/predictions/0",
    "/model",
    "/a/*/b",
];

const STATUSES: [(u16, u16); 4] = [(200, 200), (201, 201), (404, 404), (200, 404)];

fn spec(a: u8, b: u8) -> CompareSpec {
    let preset = [None, Some(Preset::KserveV2), Some(Preset::Openai), Some(Preset::TfServing)]
        [usize::from(a & 3)];
    let mode = [None, Some(Mode::Value), Some(Mode::Argmax), Some(Mode::Cosine)]
        [usize::from((a >> 2) & 3)];
    let (abs_tolerance, rel_tolerance) =
        [(1e-6, 1e-4), (0.0, 0.0), (0.5, 0.0), (0.0, 1e-2)][usize::from((a >> 4) & 3)];
    let min_cosine = [0.999, 1.0, 0.0, -1.0][usize::from(a >> 6)];
    let pointer = match preset {
        None if b & 8 != 0 => Some(POINTERS[usize::from(b & 7)].to_owned()),
        _ => None,
    };
    let ignore = match b >> 4 {
        0..=7 => Vec::new(),
        i => vec![IGNORES[usize::from(i - 8)].to_owned()],
    };
    CompareSpec {
        preset,
        pointer,
        ignore,
        mode,
        abs_tolerance,
        rel_tolerance,
        min_cosine,
        ..CompareSpec::default()
    }
}

fn response(status: u16, body: &[u8]) -> Observed<'_> {
    Observed::Response {
        status,
        body,
        truncated: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, st, rest @ ..] = data else {
        return;
    };
    let spec = spec(*s0, *s1);
    let cmp = Comparator::new(&spec).expect("fuzz spec is valid");
    let (a, b) = match rest.iter().position(|&x| x == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, rest),
    };
    let (sa, sb) = STATUSES[usize::from(st & 3)];
    for (x, y, sx, sy) in [(a, b, sa, sb), (b, a, sb, sa), (a, a, sa, sa)] {
        let (x_obs, y_obs) = (response(sx, x), response(sy, y));
        assert_eq!(
            cmp.compare(&x_obs, &y_obs),
            cmp.compare_reference(&x_obs, &y_obs),
            "spec {spec:?}, statuses {sx} {sy}"
        );
    }
});
