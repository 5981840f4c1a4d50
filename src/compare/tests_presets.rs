//! End-to-end tests of the presets on the response shapes real servers send (MLServer's
//! KServe V2, TF Serving predict, OpenAI-compatible embeddings), inlined here.
//!
//! Must never read fixture files at run time: the repository moves.

use super::tests::{counts, diff, ok, resp, run};
use super::*;

const KSERVE_V1: &str = r#"{"model_name":"iris","model_version":"v1","id":"req-000002","parameters":{},"outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[2]}]}"#;
const KSERVE_V2: &str = r#"{"model_name":"iris","model_version":"v2","id":"req-000002","parameters":{},"outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[2]}]}"#;
const KSERVE_PROBA: &str = r#"{"model_name":"iris","model_version":"v1","id":"p1","parameters":{},"outputs":[{"name":"predict_proba","shape":[2,3],"datatype":"FP64","parameters":{"content_type":"np"},"data":[0.0005018223147509693,0.20358287997576405,0.7959152977094849,0.9847031668428455,0.015296771119383056,6.20377713724823e-8]}]}"#;
const TF: &str = r#"{"predictions": [[0.0431, 0.8712, 0.0857], [0.9521, 0.0412, 0.0067]]}"#;
const OPENAI: &str = r#"{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0123, -0.0456, 0.0789, 0.1011]}], "model": "embed-small-v2", "usage": {"prompt_tokens": 5, "total_tokens": 5}}"#;

/// The output and row a mismatch names.
fn named(c: &Comparison) -> (Option<&str>, Option<u64>) {
    let d = c.difference.as_ref().expect("a difference");
    (d.output.as_deref(), d.row)
}

fn preset(p: Preset) -> CompareSpec {
    CompareSpec {
        preset: Some(p),
        ..Default::default()
    }
}

fn with_mode(p: Preset, mode: Mode) -> CompareSpec {
    CompareSpec {
        mode: Some(mode),
        ..preset(p)
    }
}

fn proba(data: &str, id: &str, version: &str) -> String {
    format!(
        r#"{{"model_name":"iris","model_version":"{version}","id":"{id}","parameters":{{"x":1}},"outputs":[{{"name":"predict_proba","shape":[2,3],"datatype":"FP64","parameters":{{"content_type":"np"}},"data":[{data}]}}]}}"#
    )
}

#[test]
fn kserve_model_version_and_id_differences_do_not_matter() {
    let c = run(&preset(Preset::KserveV2), ok(KSERVE_V1), ok(KSERVE_V2));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(1, 0))
    );
    let other_id = KSERVE_V2.replace("req-000002", "0b6f4c1e-uuid");
    assert_eq!(
        run(&preset(Preset::KserveV2), ok(KSERVE_V1), ok(&other_id)).outcome,
        Outcome::Match
    );
}

#[test]
fn kserve_label_change_reports_flat_data_pointer() {
    let changed = KSERVE_V2.replace(r#""data":[2]"#, r#""data":[1]"#);
    let c = run(&preset(Preset::KserveV2), ok(KSERVE_V1), ok(&changed));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 1))
    );
    assert_eq!(diff(&c), ("/outputs/0/data/0", "2", "1"));
    // A one-element row is a label, so argmax mode compares it by value too.
    let c = run(
        &with_mode(Preset::KserveV2, Mode::Argmax),
        ok(KSERVE_V1),
        ok(&changed),
    );
    assert_eq!(diff(&c), ("/outputs/0/data/0", "2", "1"));
}

#[test]
fn kserve_probabilities_count_rows_from_shape() {
    let c = run(
        &preset(Preset::KserveV2),
        ok(KSERVE_PROBA),
        ok(&proba(
            "0.0005018223147509693,0.20358287997576405,0.7959152977094849,0.9847031668428455,0.015296771119383056,6.20377713724823e-8",
            "p2",
            "v2",
        )),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(2, 0))
    );
}

#[test]
fn kserve_value_mode_flags_probability_drift_at_element() {
    let drift = proba(
        "0.0005018223147509693,0.20358287997576405,0.7959152977094849,0.9,0.1,6.20377713724823e-8",
        "p1",
        "v1",
    );
    let c = run(&preset(Preset::KserveV2), ok(KSERVE_PROBA), ok(&drift));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(1, 1))
    );
    let (p, s, cand) = diff(&c);
    assert_eq!((p, cand), ("/outputs/0/data/3", "0.9"));
    // serde_json's default float parser may be one ulp off the text (no float_roundtrip
    // feature), so the rendering can differ in the last digit.
    assert!(s.starts_with("0.98470316684284"), "{s}");
}

#[test]
fn kserve_argmax_ignores_score_drift_but_catches_label_flip() {
    let spec = with_mode(Preset::KserveV2, Mode::Argmax);
    let drift = proba("0.1,0.2,0.7,0.9,0.1,0.0", "p1", "v1");
    let c = run(&spec, ok(KSERVE_PROBA), ok(&drift));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(2, 0))
    );
    let flip = proba("0.1,0.2,0.7,0.3,0.6,0.1", "p1", "v1");
    let c = run(&spec, ok(KSERVE_PROBA), ok(&flip));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(1, 1))
    );
    assert_eq!(
        diff(&c),
        (
            "/outputs/0/data/3",
            "label=0 score=0.9847031668428455",
            "label=1 score=0.6"
        )
    );
    assert_eq!(named(&c), (Some("predict_proba"), Some(1)));
}

#[test]
fn kserve_outputs_match_by_name_in_any_order() {
    let two = |first: &str, second: &str| format!(r#"{{"id":"x","outputs":[{first},{second}]}}"#);
    let a = r#"{"name":"predict","shape":[2],"datatype":"INT64","data":[2,0]}"#;
    let b = r#"{"name":"predict_proba","shape":[2,2],"datatype":"FP64","data":[0.1,0.9,0.8,0.2]}"#;
    let c = run(&preset(Preset::KserveV2), ok(&two(a, b)), ok(&two(b, a)));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(4, 0))
    );
}

#[test]
fn kserve_output_missing_on_candidate_is_a_mismatch() {
    let none = r#"{"model_name":"iris","id":"req-000002","outputs":[]}"#;
    let c = run(&preset(Preset::KserveV2), ok(KSERVE_PROBA), ok(none));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 2))
    );
    let (p, s, cand) = diff(&c);
    assert_eq!((p, cand), ("/outputs/0", "(absent)"));
    assert!(s.starts_with(r#"{"data":[0.0005018223147509693,"#), "{s}");
    let renamed = KSERVE_V2.replace(r#""name":"predict""#, r#""name":"label""#);
    let c = run(&preset(Preset::KserveV2), ok(KSERVE_V1), ok(&renamed));
    assert_eq!(c.elements.clone(), counts(0, 2));
}

#[test]
fn kserve_shape_difference_is_a_mismatch_at_shape() {
    let reshaped = KSERVE_PROBA.replace(r#""shape":[2,3]"#, r#""shape":[3,2]"#);
    let c = run(&preset(Preset::KserveV2), ok(KSERVE_PROBA), ok(&reshaped));
    assert_eq!(diff(&c), ("/outputs/0/shape", "[2,3]", "[3,2]"));
}

#[test]
fn kserve_batch_of_100_rows_with_3_differing() {
    let body = |bad: &[usize]| {
        let data: Vec<String> = (0..100)
            .map(|i| {
                if bad.contains(&i) {
                    "0.1,0.2,0.7".to_owned()
                } else {
                    "0.8,0.15,0.05".to_owned()
                }
            })
            .collect();
        format!(
            r#"{{"id":"b","outputs":[{{"name":"predict_proba","shape":[100,3],"datatype":"FP64","data":[{}]}}]}}"#,
            data.join(",")
        )
    };
    let stable = body(&[]);
    let candidate = body(&[3, 50, 97]);
    for mode in [Mode::Value, Mode::Argmax] {
        let c = run(
            &with_mode(Preset::KserveV2, mode),
            ok(&stable),
            ok(&candidate),
        );
        assert_eq!(
            (c.outcome, c.elements.clone()),
            (Outcome::Mismatch, counts(97, 3)),
            "{mode:?}"
        );
    }
    let c = run(
        &with_mode(Preset::KserveV2, Mode::Argmax),
        ok(&stable),
        ok(&candidate),
    );
    assert_eq!(
        diff(&c),
        (
            "/outputs/0/data/9",
            "label=0 score=0.8",
            "label=2 score=0.7"
        )
    );
    let c = run(&preset(Preset::KserveV2), ok(&stable), ok(&candidate));
    assert_eq!(diff(&c), ("/outputs/0/data/9", "0.8", "0.1"));
    assert_eq!(named(&c).1, Some(3));
}

#[test]
fn kserve_error_bodies_compare_whole_documents() {
    let e = r#"{"error":"Model nope not found"}"#;
    assert_eq!(
        run(&preset(Preset::KserveV2), resp(404, e), resp(404, e)).outcome,
        Outcome::Match
    );
    assert_eq!(
        run(
            &preset(Preset::KserveV2),
            resp(500, "Internal Server Error"),
            ok(KSERVE_V1)
        )
        .outcome,
        Outcome::StableError
    );
    let c = run(
        &preset(Preset::KserveV2),
        ok(r#"{"error":"x"}"#),
        ok(r#"{"error":"y"}"#),
    );
    assert_eq!(c.reason, Some(reason::POINTER_MISSING));
}

#[test]
fn kserve_user_ignores_apply_inside_outputs() {
    let spec = CompareSpec {
        ignore: vec!["/outputs/*/data".into()],
        ..preset(Preset::KserveV2)
    };
    let changed = KSERVE_V2.replace(r#""data":[2]"#, r#""data":[1]"#);
    // Data removed on both sides: the tensors are no longer flat tensors and compare as values.
    let c = run(&spec, ok(KSERVE_V1), ok(&changed));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(1, 0))
    );
}

#[test]
fn tf_serving_compares_predictions_row_by_row() {
    let c = run(&preset(Preset::TfServing), ok(TF), ok(TF));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(2, 0))
    );
    let drift =
        r#"{"predictions": [[0.0431, 0.8712, 0.0857], [0.9521, 0.0412, 0.0167]], "extra": 1}"#;
    let c = run(&preset(Preset::TfServing), ok(TF), ok(drift));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(1, 1))
    );
    assert_eq!(diff(&c), ("/predictions/1/2", "0.0067", "0.0167"));
}

#[test]
fn tf_serving_argmax_reports_row_pointer_and_labels() {
    let spec = with_mode(Preset::TfServing, Mode::Argmax);
    let drift = r#"{"predictions": [[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]}"#;
    assert_eq!(run(&spec, ok(TF), ok(drift)).outcome, Outcome::Match);
    let flip = r#"{"predictions": [[0.5, 0.2, 0.3], [0.6, 0.3, 0.1]]}"#;
    let c = run(&spec, ok(TF), ok(flip));
    assert_eq!(
        (c.elements.clone(), diff(&c)),
        (
            counts(1, 1),
            (
                "/predictions/0",
                "label=1 score=0.8712",
                "label=0 score=0.5"
            )
        )
    );
    assert_eq!(named(&c), (None, Some(0)));
}

#[test]
fn tf_serving_missing_predictions_is_a_mismatch() {
    let c = run(
        &preset(Preset::TfServing),
        ok(TF),
        ok(r#"{"error":"bad input"}"#),
    );
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Mismatch, counts(0, 2))
    );
    assert_eq!(diff(&c).0, "/predictions");
}

#[test]
fn openai_ignores_id_created_model_and_usage() {
    let other = r#"{"id":"emb-1","created":1700000000,"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.0123,-0.0456,0.0789,0.1011]}],"model":"embed-small-v3","usage":{"prompt_tokens":6,"total_tokens":6}}"#;
    let c = run(&preset(Preset::Openai), ok(OPENAI), ok(other));
    assert_eq!(
        (c.outcome, c.elements.clone()),
        (Outcome::Match, counts(1, 0))
    );
}

#[test]
fn openai_cosine_accepts_drift_and_reports_similarity() {
    let near = OPENAI.replace("0.0789", "0.0790");
    let c = run(&preset(Preset::Openai), ok(OPENAI), ok(&near));
    assert_eq!(c.outcome, Outcome::Match);
    let far = OPENAI.replace(
        "[0.0123, -0.0456, 0.0789, 0.1011]",
        "[0.1011, 0.0789, -0.0456, 0.0123]",
    );
    let c = run(&preset(Preset::Openai), ok(OPENAI), ok(&far));
    let (p, s, cand) = diff(&c);
    assert_eq!((p, cand), ("/data/0/embedding", "min_cosine=0.999"));
    let sim: f64 = s
        .strip_prefix("cosine=")
        .and_then(|x| x.parse().ok())
        .expect("similarity");
    assert!(sim < 0.999, "{s}");
}

#[test]
fn openai_zero_and_shorter_embeddings_mismatch() {
    let zero = OPENAI.replace("[0.0123, -0.0456, 0.0789, 0.1011]", "[0, 0, 0, 0]");
    let c = run(&preset(Preset::Openai), ok(OPENAI), ok(&zero));
    assert_eq!(
        diff(&c),
        ("/data/0/embedding", "non-zero vector", "zero vector")
    );
    assert_eq!(
        run(&preset(Preset::Openai), ok(&zero), ok(&zero)).outcome,
        Outcome::Match
    );
    let short = OPENAI.replace(
        "[0.0123, -0.0456, 0.0789, 0.1011]",
        "[0.0123, -0.0456, 0.0789]",
    );
    let c = run(&preset(Preset::Openai), ok(OPENAI), ok(&short));
    assert_eq!(diff(&c), ("/data/0/embedding", "len=4", "len=3"));
}

#[test]
fn openai_value_mode_override_uses_tolerances() {
    let near = OPENAI.replace("0.0789", "0.0790");
    let c = run(
        &with_mode(Preset::Openai, Mode::Value),
        ok(OPENAI),
        ok(&near),
    );
    assert_eq!(diff(&c), ("/data/0/embedding/2", "0.0789", "0.079"));
}

#[test]
fn openai_counts_each_embedding_and_missing_items() {
    let two = r#"{"data":[{"index":0,"embedding":[1,0]},{"index":1,"embedding":[0,1]}]}"#;
    let swapped = r#"{"data":[{"index":0,"embedding":[1,0]},{"index":1,"embedding":[1,0]}]}"#;
    let c = run(&preset(Preset::Openai), ok(two), ok(swapped));
    assert_eq!(
        (c.elements.clone(), diff(&c).0),
        (counts(1, 1), "/data/1/embedding")
    );
    let one = r#"{"data":[{"index":0,"embedding":[1,0]}]}"#;
    let c = run(&preset(Preset::Openai), ok(two), ok(one));
    assert_eq!((c.elements.clone(), diff(&c).0), (counts(1, 1), "/data"));
}

#[test]
fn preset_ignores_apply_to_equal_error_bodies() {
    let (a, b) = (r#"{"error":"bad","id":"a"}"#, r#"{"error":"bad","id":"b"}"#);
    assert_eq!(
        run(&preset(Preset::KserveV2), resp(400, a), resp(400, b)).outcome,
        Outcome::Match
    );
    assert_eq!(
        run(&preset(Preset::Openai), resp(400, a), resp(400, b)).outcome,
        Outcome::Match
    );
    let c = run(&preset(Preset::TfServing), resp(400, a), resp(400, b));
    assert_eq!(diff(&c), ("/id", "\"a\"", "\"b\""));
}
