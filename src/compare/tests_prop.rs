//! Property test: [`Comparator::compare`] (fast path) and
//! [`Comparator::compare_reference`] (whole-tree path) return the same [`Comparison`]
//! on every generated pair: random JSON trees and KServe V2 / OpenAI / TF Serving
//! answers, candidates nudged within and beyond tolerance, respelled numbers
//! (`1` / `1.0` / `1e0`), big integers, duplicate and escaped keys, deep nesting, and
//! byte mutations and truncations (invalid JSON), under every preset and mode, with
//! and without pointers and ignores, 2xx and non-2xx.
//!
//! Must stay deterministic (fixed seeds) and must never assert anything about speed.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::tests_gen::Gen;
use super::*;

/// Cases per seed; each runs a few specs, each both ways and against itself.
const CASES: usize = 1500;

fn response(status: u16, body: &[u8]) -> Observed<'_> {
    Observed::Response {
        status,
        body,
        truncated: false,
    }
}

/// Asserts that both paths agree on `a` vs `b`, `b` vs `a` and `a` vs itself.
pub(super) fn check(
    cmp: &Comparator,
    spec: &CompareSpec,
    statuses: (u16, u16),
    a: &[u8],
    b: &[u8],
) {
    for (x, y, sx, sy) in [
        (a, b, statuses.0, statuses.1),
        (b, a, statuses.1, statuses.0),
        (a, a, statuses.0, statuses.0),
    ] {
        let (x_obs, y_obs) = (response(sx, x), response(sy, y));
        let fast = cmp.compare(&x_obs, &y_obs);
        let reference = cmp.compare_reference(&x_obs, &y_obs);
        assert_eq!(
            fast,
            reference,
            "fast and reference paths disagree\nspec: {spec:?}\nstatuses: {sx} {sy}\nstable: {}\ncandidate: {}",
            String::from_utf8_lossy(x),
            String::from_utf8_lossy(y),
        );
    }
}

/// What a seed's cases covered.
#[derive(Debug, Default)]
struct Coverage {
    matched: usize,
    /// Matches the fast path decided alone.
    decided: usize,
    /// Mismatches that named an output tensor, a row, and argmax labels.
    named_output: usize,
    named_row: usize,
    labels: usize,
}

/// Runs `CASES` generated cases and counts what they covered.
fn run_seed(seed: u64) -> Coverage {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut seen = Coverage::default();
    let decided_before = super::fast::DECIDED.with(std::cell::Cell::get);
    for _ in 0..CASES {
        let (doc, fitting) = g.document();
        let (rate, scale) = g.pick(&[
            (0.0, 0.0),
            (1.0, 1e-6),
            (1.0, 1e-6),
            (0.0, 0.0),
            (0.3, 1e-7),
            (0.2, 1e-4),
            (0.1, 0.3),
            (0.5, -1e-6),
        ]);
        let other = g.perturb(&doc, rate, scale);
        let mut a = Vec::new();
        g.write(&doc, &mut a);
        let mut b = Vec::new();
        g.write(&other, &mut b);
        if g.chance(0.15) {
            b = g.mutate(b);
        }
        if g.chance(0.05) {
            a = g.mutate(a);
        }
        let statuses = g.pick(&[
            (200, 200),
            (200, 200),
            (200, 200),
            (200, 200),
            (201, 201),
            (404, 404),
            (200, 404),
        ]);
        for _ in 0..4 {
            let spec = g.spec(fitting);
            let cmp = Comparator::new(&spec).expect("generated spec is valid");
            check(&cmp, &spec, statuses, &a, &b);
            let c = cmp.compare(&response(statuses.0, &a), &response(statuses.1, &b));
            seen.matched += usize::from(c.outcome == Outcome::Match);
            if let Some(d) = &c.difference {
                seen.named_output += usize::from(d.output.is_some());
                seen.named_row += usize::from(d.row.is_some());
                seen.labels += usize::from(d.stable.starts_with("label="));
            }
        }
    }
    seen.decided = super::fast::DECIDED.with(std::cell::Cell::get) - decided_before;
    seen
}

/// Many generated pairs must match, and the fast path must decide many of them
/// alone, or the property would only exercise the error and fallback paths; and
/// enough mismatches must name outputs, rows and labels for the paths' agreement
/// on those to mean something.
fn assert_coverage(seen: Coverage) {
    eprintln!("{seen:?}");
    assert!(seen.matched > CASES, "{seen:?}");
    assert!(seen.decided > CASES, "{seen:?}");
    assert!(seen.named_output > 20, "{seen:?}");
    assert!(seen.named_row > 20, "{seen:?}");
    // Generated perturbations rarely move a row's maximum: a few per seed.
    assert!(seen.labels > 0, "{seen:?}");
}

#[test]
fn fast_path_agrees_with_reference_seed_1() {
    assert_coverage(run_seed(1));
}

#[test]
fn fast_path_agrees_with_reference_seed_2() {
    assert_coverage(run_seed(0x5eed));
}

// The benchmark payloads, shared with benches/micro.rs.
#[allow(dead_code, clippy::unusual_byte_groupings)]
#[path = "../../benches/support/payloads.rs"]
mod payloads;

/// The ML-sized benchmark pairs agree, and the fast path decides them alone (a
/// fallback there would still be correct, but would lose the speed it exists for).
#[test]
fn benchmark_payloads_are_decided_by_the_fast_path() {
    use payloads::Payload;
    let spec = |preset, mode, pointer: Option<&str>| CompareSpec {
        preset,
        mode,
        pointer: pointer.map(str::to_owned),
        ..CompareSpec::default()
    };
    let cases = [
        (Payload::Embeddings, spec(Some(Preset::Openai), None, None)),
        (Payload::Embeddings, spec(None, None, Some("/model"))),
        (
            Payload::Embeddings,
            spec(None, Some(Mode::Cosine), Some("/data/3/embedding")),
        ),
        (
            Payload::KserveV2,
            spec(Some(Preset::KserveV2), Some(Mode::Argmax), None),
        ),
        (Payload::KserveV2, spec(Some(Preset::KserveV2), None, None)),
    ];
    for (payload, spec) in cases {
        let (a, b) = (payload.body(false), payload.body(true));
        let cmp = Comparator::new(&spec).expect("valid spec");
        let before = super::fast::DECIDED.with(std::cell::Cell::get);
        check(&cmp, &spec, (200, 200), &a, &b);
        let decided = super::fast::DECIDED.with(std::cell::Cell::get) - before;
        assert_eq!(decided, 3, "{payload:?} {spec:?}");
        let c = cmp.compare(&response(200, &a), &response(200, &b));
        assert_eq!(c.outcome, Outcome::Match, "{payload:?} {spec:?}");
    }
}

/// Integer literals beyond 2^53 that round to the same f64 are still different
/// integers (compared exactly in i128); the fast path must not call them equal.
#[test]
fn big_integers_equal_as_f64_but_not_as_integers() {
    let exact = |preset, mode, pointer: Option<&str>| CompareSpec {
        preset,
        mode,
        pointer: pointer.map(str::to_owned),
        abs_tolerance: 0.0,
        rel_tolerance: 0.0,
        ..CompareSpec::default()
    };
    let pairs = [
        ("9007199254740993", "9007199254740992"),
        ("18446744073709551615", "18446744073709551614"),
        ("-9223372036854775808", "-9223372036854775807"),
    ];
    for (x, y) in pairs {
        let docs = [
            (
                exact(None, None, Some("/v")),
                format!(r#"{{"v":[1,{x}]}}"#),
                format!(r#"{{"v":[1,{y}]}}"#),
            ),
            (
                exact(Some(Preset::TfServing), None, None),
                format!(r#"{{"predictions":[[{x},2]]}}"#),
                format!(r#"{{"predictions":[[{y},2]]}}"#),
            ),
            (
                exact(Some(Preset::KserveV2), None, None),
                format!(r#"{{"outputs":[{{"name":"a","shape":[2],"data":[{x},1]}}]}}"#),
                format!(r#"{{"outputs":[{{"name":"a","shape":[2],"data":[{y},1]}}]}}"#),
            ),
            (
                exact(Some(Preset::Openai), Some(Mode::Value), None),
                format!(r#"{{"data":[{{"embedding":[{x},1]}}]}}"#),
                format!(r#"{{"data":[{{"embedding":[{y},1]}}]}}"#),
            ),
        ];
        for (spec, a, b) in docs {
            let cmp = Comparator::new(&spec).expect("valid spec");
            check(&cmp, &spec, (200, 200), a.as_bytes(), b.as_bytes());
            let c = cmp.compare(&response(200, a.as_bytes()), &response(200, b.as_bytes()));
            assert_eq!(c.outcome, Outcome::Mismatch, "{a} vs {b}");
        }
    }
}
