//! End-to-end tests of the HTTP-level rules of [`Comparator::compare`]: error and
//! status precedence, truncated bodies, bodies that are not JSON, and `format = "bytes"`.
//!
//! Must never depend on files outside this module (inputs are inlined).

use super::tests::{counts, default_run, diff, ok, resp, run, with_pointer};
use super::*;

#[test]
fn stable_error_wins_when_both_failed() {
    let spec = CompareSpec::default();
    assert_eq!(
        run(&spec, Observed::Failed, Observed::Failed).outcome,
        Outcome::StableError
    );
    assert_eq!(
        run(&spec, resp(503, "x"), Observed::Failed).outcome,
        Outcome::StableError
    );
    assert_eq!(
        run(&spec, Observed::Failed, resp(200, "{}")).outcome,
        Outcome::StableError
    );
    assert_eq!(
        run(
            &spec,
            resp(500, "Internal Server Error"),
            resp(500, "Internal Server Error")
        )
        .outcome,
        Outcome::StableError
    );
}

#[test]
fn candidate_failure_or_5xx_is_shadow_error() {
    let spec = CompareSpec::default();
    let c = run(&spec, ok("{}"), Observed::Failed);
    assert_eq!(
        (c.outcome, c.elements.clone(), c.difference),
        (Outcome::ShadowError, counts(0, 0), None)
    );
    assert_eq!(
        run(&spec, resp(404, "{}"), resp(599, "{}")).outcome,
        Outcome::ShadowError
    );
    // 499 is not a server error: it is a status difference.
    assert_eq!(
        run(&spec, ok("{}"), resp(499, "{}")).outcome,
        Outcome::Mismatch
    );
}

#[test]
fn different_statuses_mismatch_at_root_with_both_statuses() {
    let c = run(
        &CompareSpec::default(),
        ok(r#"{"a":1}"#),
        resp(400, r#"{"a":1}"#),
    );
    assert_eq!(c.outcome, Outcome::Mismatch);
    assert_eq!(diff(&c), ("", "200", "400"));
    assert_eq!(c.elements.clone(), counts(0, 0));
    let c = run(&CompareSpec::default(), ok("{}"), resp(201, "{}"));
    assert_eq!(diff(&c), ("", "200", "201"));
}

#[test]
fn status_difference_beats_truncation_and_bad_json() {
    let cut = Observed::Response {
        status: 200,
        body: b"{",
        truncated: true,
    };
    assert_eq!(
        run(&CompareSpec::default(), cut, resp(404, "nope")).outcome,
        Outcome::Mismatch
    );
}

#[test]
fn identical_4xx_bodies_match() {
    let body = r#"{"error":"Model nope not found"}"#;
    let c = run(&CompareSpec::default(), resp(404, body), resp(404, body));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(1, 0))
    );
}

#[test]
fn identical_plain_text_4xx_bodies_match() {
    let c = run(
        &CompareSpec::default(),
        resp(404, "Not Found"),
        resp(404, "Not Found"),
    );
    assert_eq!(c.outcome, Outcome::Match);
}

#[test]
fn differing_4xx_bodies_compare_whole_documents() {
    let spec = with_pointer("/predictions");
    let c = run(
        &spec,
        resp(422, r#"{"detail":[{"loc":["body"]}]}"#),
        resp(422, r#"{"detail":[{"loc":["query"]}]}"#),
    );
    assert_eq!(c.outcome, Outcome::Mismatch);
    assert_eq!(diff(&c), ("/detail/0/loc/0", "\"body\"", "\"query\""));
    // Key order and ignores still apply; the success pointer does not.
    let spec = CompareSpec {
        ignore: vec!["/id".into()],
        ..with_pointer("/predictions")
    };
    let c = run(
        &spec,
        resp(400, r#"{"id":1,"e":"x","f":2}"#),
        resp(400, r#"{"f":2,"e":"x","id":2}"#),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(1, 0))
    );
    let c = run(&spec, resp(400, "bad"), resp(400, "worse"));
    assert_eq!(
        (c.outcome, c.reason),
        (Outcome::Uncomparable, Some(reason::STABLE_NOT_JSON))
    );
}

#[test]
fn truncated_body_on_either_side_is_uncomparable() {
    let cut = Observed::Response {
        status: 200,
        body: b"{\"a\":",
        truncated: true,
    };
    for (s, c) in [(cut, ok("{}")), (ok("{}"), cut), (cut, cut)] {
        let r = run(&CompareSpec::default(), s, c);
        assert_eq!(
            (r.outcome, r.reason, r.elements.clone()),
            (
                Outcome::Uncomparable,
                Some(reason::BODY_TRUNCATED),
                counts(0, 0)
            )
        );
    }
    // Errors still take precedence over truncation.
    let cut_5xx = Observed::Response {
        status: 502,
        body: b"",
        truncated: true,
    };
    assert_eq!(
        run(&CompareSpec::default(), cut_5xx, cut).outcome,
        Outcome::StableError
    );
}

#[test]
fn non_json_on_either_side_is_uncomparable_with_side() {
    let c = default_run("<html>oops</html>", "{}");
    assert_eq!(
        (c.outcome, c.reason),
        (Outcome::Uncomparable, Some(reason::STABLE_NOT_JSON))
    );
    let c = default_run("{}", "{\"a\":1} trailing");
    assert_eq!(
        (c.outcome, c.reason),
        (Outcome::Uncomparable, Some(reason::SHADOW_NOT_JSON))
    );
    let c = default_run("nope", "nope either");
    assert_eq!(c.reason, Some(reason::STABLE_NOT_JSON));
    let c = default_run("", "");
    assert_eq!(c.reason, Some(reason::STABLE_NOT_JSON));
    let bad_utf8 = Observed::Response {
        status: 200,
        body: b"\"\xff\"",
        truncated: false,
    };
    assert_eq!(
        run(&CompareSpec::default(), ok("\"x\""), bad_utf8).reason,
        Some(reason::SHADOW_NOT_JSON)
    );
}

#[test]
fn nan_and_infinity_literals_are_uncomparable() {
    for bad in ["[NaN]", "[Infinity]", "[-Infinity]", "{\"x\": nan}", "NaN"] {
        let c = default_run("[1]", bad);
        assert_eq!(
            (c.outcome, c.reason),
            (Outcome::Uncomparable, Some(reason::SHADOW_NOT_JSON)),
            "{bad}"
        );
        // Identical on both sides is still not JSON.
        assert_eq!(
            default_run(bad, bad).reason,
            Some(reason::STABLE_NOT_JSON),
            "{bad}"
        );
    }
}

#[test]
fn huge_exponents_are_rejected_by_serde_json_and_uncomparable() {
    // serde_json (without arbitrary_precision) refuses numbers beyond f64 range rather
    // than turning them into infinity; tiny ones underflow to 0.0.
    let err = serde_json::from_str::<Value>("1e400").expect_err("out of range");
    assert!(err.to_string().starts_with("number out of range"), "{err}");
    assert_eq!(
        default_run("[1e400]", "[1e400]").reason,
        Some(reason::STABLE_NOT_JSON)
    );
    assert_eq!(
        default_run("[1]", "[-1e400]").reason,
        Some(reason::SHADOW_NOT_JSON)
    );
    assert_eq!(
        serde_json::from_str::<Value>("1e-400").ok(),
        Some(serde_json::json!(0.0))
    );
    assert_eq!(default_run("[1e-400]", "[0]").outcome, Outcome::Match);
    assert_eq!(
        default_run("[1e308]", "[1.0000000001e308]").outcome,
        Outcome::Match
    );
}

#[test]
fn bytes_format_is_exact_and_one_element() {
    let spec = CompareSpec {
        format: Format::Bytes,
        ..Default::default()
    };
    let c = run(&spec, ok(r#"{"a":1}"#), ok(r#"{"a":1}"#));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(1, 0))
    );
    let c = run(&spec, ok(r#"{"a":1}"#), ok(r#"{ "a":1}"#));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 1))
    );
    assert_eq!(diff(&c), ("", r#""{\"a\":1}""#, r#""{ \"a\":1}""#));
    // Not JSON is fine for bytes.
    assert_eq!(run(&spec, ok("NaN"), ok("NaN")).outcome, Outcome::Match);
    let cut = Observed::Response {
        status: 200,
        body: b"x",
        truncated: true,
    };
    assert_eq!(
        run(&spec, cut, ok("x")).reason,
        Some(reason::BODY_TRUNCATED)
    );
}

#[test]
fn bytes_report_starts_near_the_first_differing_byte() {
    let spec = CompareSpec {
        format: Format::Bytes,
        ..Default::default()
    };
    let s = format!("{}A", "x".repeat(1000));
    let c = format!("{}B", "x".repeat(1000));
    let r = run(&spec, ok(&s), ok(&c));
    let (_, st, ca) = diff(&r);
    assert_eq!(st, format!("…\"{}A\"", "x".repeat(16)));
    assert_eq!(ca, format!("…\"{}B\"", "x".repeat(16)));
}

#[test]
fn deeply_nested_body_is_uncomparable_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let c = default_run("[]", &deep);
    assert_eq!(
        (c.outcome, c.reason),
        (Outcome::Uncomparable, Some(reason::SHADOW_NOT_JSON))
    );
}
