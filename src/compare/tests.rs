//! End-to-end tests of [`Comparator::compare`] on JSON bodies without presets:
//! structure, pointers, ignores, tolerances, per-row counts and reports. Also holds
//! the helpers the other test files share.
//!
//! Must never depend on files outside this module (fixtures are inlined).

use super::*;

pub(super) fn ok(body: &str) -> Observed<'_> {
    resp(200, body)
}

pub(super) fn resp(status: u16, body: &str) -> Observed<'_> {
    Observed::Response {
        status,
        body: body.as_bytes(),
        truncated: false,
    }
}

pub(super) fn run(spec: &CompareSpec, stable: Observed<'_>, candidate: Observed<'_>) -> Comparison {
    Comparator::new(spec)
        .expect("test spec is valid")
        .compare(&stable, &candidate)
}

pub(super) fn diff(c: &Comparison) -> (&str, &str, &str) {
    let d = c.difference.as_ref().expect("a difference is reported");
    (d.pointer.as_str(), d.stable.as_str(), d.candidate.as_str())
}

pub(super) fn counts(matched: u64, mismatched: u64) -> ElementCounts {
    ElementCounts {
        matched,
        mismatched,
    }
}

pub(super) fn default_run(stable: &str, candidate: &str) -> Comparison {
    run(&CompareSpec::default(), ok(stable), ok(candidate))
}

pub(super) fn with_pointer(p: &str) -> CompareSpec {
    CompareSpec {
        pointer: Some(p.to_owned()),
        ..Default::default()
    }
}

#[test]
fn comparator_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Comparator>();
}

#[test]
fn outcome_names_are_the_metric_labels() {
    let names: Vec<_> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
    assert_eq!(
        names,
        [
            "match",
            "mismatch",
            "stable_error",
            "shadow_error",
            "uncomparable"
        ]
    );
    assert_eq!(Outcome::ShadowError.to_string(), "shadow_error");
}

#[test]
fn enums_deserialize_from_kebab_case() {
    let p: Vec<Preset> =
        serde_json::from_str(r#"["kserve-v2","tf-serving","openai"]"#).expect("parses");
    assert_eq!(p, [Preset::KserveV2, Preset::TfServing, Preset::Openai]);
    let m: Vec<Mode> = serde_json::from_str(r#"["value","argmax","cosine"]"#).expect("parses");
    assert_eq!(m, [Mode::Value, Mode::Argmax, Mode::Cosine]);
    let f: Format = serde_json::from_str(r#""bytes""#).expect("parses");
    assert_eq!((f, Format::default()), (Format::Bytes, Format::Json));
}

#[test]
fn nested_objects_with_other_key_order_and_spacing_match() {
    let c = default_run(
        r#"{"a":{"b":[1,{"c":true}],"d":null},"e":"x"}"#,
        r#"{ "e" : "x", "a" : { "d":null, "b":[1.0, {"c":true}] } }"#,
    );
    assert_eq!(
        (c.outcome, c.elements.clone(), c.difference),
        (Outcome::Match, counts(1, 0), None)
    );
}

#[test]
fn first_difference_pointer_is_escaped_and_points_into_stable() {
    let c = default_run(r#"{"a/b":{"m~n":[1,2,3]}}"#, r#"{"a/b":{"m~n":[1,2,4]}}"#);
    assert_eq!(diff(&c), ("/a~1b/m~0n/2", "3", "4"));
}

#[test]
fn key_on_one_side_only_mismatches_at_that_key() {
    let c = default_run(r#"{"a":1,"b":{"x":1}}"#, r#"{"a":1,"b":{"x":1,"y":[2]}}"#);
    assert_eq!(diff(&c), ("/b/y", "(absent)", "[2]"));
}

#[test]
fn arrays_of_different_length_mismatch_at_the_array() {
    let c = run(
        &with_pointer("/p"),
        ok(r#"{"p":[[1],[2],[3]]}"#),
        ok(r#"{"p":[[1],[9]]}"#),
    );
    assert_eq!(diff(&c), ("/p", "[[1],[2],[3]]", "[[1],[9]]"));
    assert_eq!(c.elements.clone(), counts(1, 2));
}

#[test]
fn empty_arrays_match_with_zero_elements() {
    let c = run(
        &with_pointer("/predictions"),
        ok(r#"{"predictions":[]}"#),
        ok(r#"{"predictions":[]}"#),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(0, 0))
    );
    let c = run(
        &with_pointer("/predictions"),
        ok(r#"{"predictions":[]}"#),
        ok(r#"{"predictions":[1]}"#),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 1))
    );
    assert_eq!(diff(&c), ("/predictions", "[]", "[1]"));
}

#[test]
fn non_array_target_is_one_element() {
    let c = run(
        &with_pointer("/score"),
        ok(r#"{"score":0.5}"#),
        ok(r#"{"score":0.75}"#),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 1))
    );
    assert_eq!(diff(&c), ("/score", "0.5", "0.75"));
}

#[test]
fn batch_of_100_rows_with_3_differing_counts_each_row() {
    let rows = |bad: &[usize]| {
        let r: Vec<String> = (0..100)
            .map(|i| {
                if bad.contains(&i) {
                    format!("[{i},0.9]")
                } else {
                    format!("[{i},0.1]")
                }
            })
            .collect();
        format!(r#"{{"predictions":[{}]}}"#, r.join(","))
    };
    let (s, c) = (rows(&[]), rows(&[7, 42, 99]));
    let r = run(&with_pointer("/predictions"), ok(&s), ok(&c));
    assert_eq!(
        (r.outcome, r.elements.clone()),
        (Outcome::Mismatch, counts(97, 3))
    );
    assert_eq!(diff(&r), ("/predictions/7/1", "0.1", "0.9"));
}

#[test]
fn pointer_missing_on_both_sides_is_uncomparable() {
    let c = run(
        &with_pointer("/predictions"),
        ok(r#"{"a":1}"#),
        ok(r#"{"b":2}"#),
    );
    assert_eq!(
        (c.outcome, c.reason, c.elements.clone()),
        (
            Outcome::Uncomparable,
            Some(reason::POINTER_MISSING),
            counts(0, 0)
        )
    );
}

#[test]
fn pointer_missing_on_one_side_is_a_mismatch_there() {
    let c = run(
        &with_pointer("/predictions"),
        ok(r#"{"predictions":[1,2]}"#),
        ok(r#"{"error":"x"}"#),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 2))
    );
    assert_eq!(diff(&c), ("/predictions", "[1,2]", "(absent)"));
    let c = run(
        &with_pointer("/predictions"),
        ok(r#"{}"#),
        ok(r#"{"predictions":{"a":1}}"#),
    );
    assert_eq!(
        (c.elements.clone(), diff(&c)),
        (counts(0, 1), ("/predictions", "(absent)", r#"{"a":1}"#))
    );
}

#[test]
fn pointer_with_escapes_selects_the_right_member() {
    let c = run(
        &with_pointer("/a~1b/~0x"),
        ok(r#"{"a/b":{"~x":[1,2]},"z":1}"#),
        ok(r#"{"a/b":{"~x":[1,3]},"z":2}"#),
    );
    assert_eq!(diff(&c), ("/a~1b/~0x/1", "2", "3"));
    assert_eq!(c.elements.clone(), counts(1, 1));
}

#[test]
fn ignored_fields_do_not_cause_mismatch() {
    let spec = CompareSpec {
        ignore: vec!["/id".into(), "/model_version".into()],
        ..Default::default()
    };
    let c = run(
        &spec,
        ok(r#"{"id":"a","model_version":"v1","y":[1]}"#),
        ok(r#"{"id":"b","model_version":"v2","y":[1]}"#),
    );
    assert_eq!(c.outcome, Outcome::Match);
    let c = run(
        &CompareSpec::default(),
        ok(r#"{"id":"a","y":[1]}"#),
        ok(r#"{"id":"b","y":[1]}"#),
    );
    assert_eq!(diff(&c), ("/id", "\"a\"", "\"b\""));
}

#[test]
fn wildcard_ignore_covers_every_element() {
    let spec = CompareSpec {
        ignore: vec!["/outputs/*/parameters".into()],
        ..Default::default()
    };
    let s = r#"{"outputs":[{"d":1,"parameters":{"t":1}},{"d":2,"parameters":{"t":2}}]}"#;
    let c = r#"{"outputs":[{"d":1,"parameters":{"t":9}},{"d":2}]}"#;
    assert_eq!(run(&spec, ok(s), ok(c)).outcome, Outcome::Match);
    let c2 = r#"{"outputs":[{"d":1,"parameters":{"t":9}},{"d":3}]}"#;
    assert_eq!(diff(&run(&spec, ok(s), ok(c2))), ("/outputs/1/d", "2", "3"));
}

#[test]
fn escaped_ignore_segments_remove_only_that_key() {
    let spec = CompareSpec {
        ignore: vec!["/a~1b".into(), "/c~0d".into()],
        ..Default::default()
    };
    let c = run(
        &spec,
        ok(r#"{"a/b":1,"c~d":1,"a":{"b":1}}"#),
        ok(r#"{"a/b":2,"c~d":2,"a":{"b":2}}"#),
    );
    assert_eq!(diff(&c), ("/a/b", "1", "2"));
}

#[test]
fn ignoring_the_target_makes_it_missing() {
    let spec = CompareSpec {
        ignore: vec!["/p".into()],
        ..with_pointer("/p")
    };
    assert_eq!(
        run(&spec, ok(r#"{"p":1}"#), ok(r#"{"p":2}"#)).reason,
        Some(reason::POINTER_MISSING)
    );
    // The same holds for byte-identical bodies, which take a shortcut.
    let same = run(&spec, ok(r#"{"p":1}"#), ok(r#"{"p":1}"#));
    assert_eq!(same.reason, Some(reason::POINTER_MISSING));
}

#[test]
fn tolerances_apply_end_to_end_with_inclusive_boundary() {
    let spec = CompareSpec {
        abs_tolerance: 0.125,
        rel_tolerance: 0.0,
        ..Default::default()
    };
    assert_eq!(
        run(&spec, ok("[1.0]"), ok("[1.125]")).outcome,
        Outcome::Match
    );
    assert_eq!(
        run(&spec, ok("[1.0]"), ok("[1.1250001]")).outcome,
        Outcome::Mismatch
    );
    let spec = CompareSpec {
        abs_tolerance: 0.0,
        rel_tolerance: 0.25,
        ..Default::default()
    };
    assert_eq!(run(&spec, ok("[3]"), ok("[4]")).outcome, Outcome::Match);
    assert_eq!(
        run(&spec, ok("[3]"), ok("[4.0000001]")).outcome,
        Outcome::Mismatch
    );
}

#[test]
fn zero_tolerance_keeps_integers_exact_and_int_float_numeric() {
    let spec = CompareSpec {
        abs_tolerance: 0.0,
        rel_tolerance: 0.0,
        ..Default::default()
    };
    assert_eq!(
        run(&spec, ok("[1, 2.5]"), ok("[1.0, 2.5]")).outcome,
        Outcome::Match
    );
    let c = run(
        &spec,
        ok("[18446744073709551615]"),
        ok("[18446744073709551614]"),
    );
    assert_eq!(
        diff(&c),
        ("/0", "18446744073709551615", "18446744073709551614")
    );
    // With the default tolerances, huge integers 1 apart are within rel_tolerance.
    assert_eq!(
        default_run("[18446744073709551615]", "[18446744073709551614]").outcome,
        Outcome::Match
    );
}

#[test]
fn long_differing_values_are_truncated_in_the_report() {
    let long: Vec<String> = (0..500).map(|i| i.to_string()).collect();
    let s = format!(r#"{{"v":[{}]}}"#, long.join(","));
    let c = run(&CompareSpec::default(), ok(&s), ok(r#"{"v":"short"}"#));
    let (p, st, ca) = diff(&c);
    assert_eq!((p, ca), ("/v", "\"short\""));
    assert_eq!(st.chars().count(), MAX_CHARS);
    assert!(st.starts_with("[0,1,2,") && st.ends_with('…'), "{st}");
}

#[test]
fn identical_bodies_still_count_rows() {
    let body = r#"{"predictions":[[1,2],[3,4],[5,6]]}"#;
    let c = run(&with_pointer("/predictions"), ok(body), ok(body));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(3, 0))
    );
}
