//! KServe V2 gRPC answers: framing, decoding of typed and raw contents, and the
//! REST preset's rows, modes and mismatch naming applied to them.

use prost::Message;
use serde_json::{Value, json};

use super::grpc::{MODEL_INFER, raw_elements};
use super::v2_proto::{InferOutputTensor, InferTensorContents, ModelInferResponse};
use super::*;

fn comparator(mode: Option<Mode>) -> Comparator {
    Comparator::new(&CompareSpec {
        preset: Some(Preset::KserveV2),
        mode,
        ..CompareSpec::default()
    })
    .expect("valid spec")
}

fn framed(message: &[u8]) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    body
}

fn answer(version: &str, outputs: Vec<InferOutputTensor>, raw: Vec<Vec<u8>>) -> Vec<u8> {
    let response = ModelInferResponse {
        model_name: "m".into(),
        model_version: version.into(),
        id: format!("request-for-{version}"),
        outputs,
        raw_output_contents: raw,
        ..ModelInferResponse::default()
    };
    framed(&response.encode_to_vec())
}

fn fp32(name: &str, shape: &[i64], values: &[f32]) -> InferOutputTensor {
    InferOutputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: shape.to_vec(),
        contents: Some(InferTensorContents {
            fp32_contents: values.to_vec(),
            ..InferTensorContents::default()
        }),
        ..InferOutputTensor::default()
    }
}

fn raw_only(name: &str, datatype: &str, shape: &[i64]) -> InferOutputTensor {
    InferOutputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..InferOutputTensor::default()
    }
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn ok(body: &[u8]) -> Observed<'_> {
    Observed::Response {
        status: 200,
        body,
        truncated: false,
    }
}

fn run(cmp: &Comparator, a: &[u8], b: &[u8]) -> Comparison {
    cmp.compare_call(MODEL_INFER, &ok(a), &ok(b))
}

fn counts(matched: u64, mismatched: u64) -> ElementCounts {
    ElementCounts {
        matched,
        mismatched,
    }
}

const SCORES: [f32; 6] = [0.1, 0.7, 0.2, 0.6, 0.3, 0.1];

#[test]
fn versions_and_ids_differ_but_outputs_match() {
    let a = answer("1", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    let b = answer("2", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    assert_ne!(a, b);
    let c = run(&comparator(None), &a, &b);
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(2, 0)));
}

#[test]
fn differing_row_is_named_by_output_row_and_values() {
    let mut other = SCORES;
    other[4] = 0.35;
    let a = answer("1", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    let b = answer("2", vec![fp32("p", &[2, 3], &other)], vec![]);
    let c = run(&comparator(None), &a, &b);
    assert_eq!((c.outcome, c.elements), (Outcome::Mismatch, counts(1, 1)));
    let d = c.difference.expect("difference");
    assert_eq!(d.pointer, "/outputs/0/data/4");
    assert_eq!((d.output.as_deref(), d.row), (Some("p"), Some(1)));
    // FP32 values widened exactly to f64.
    assert_eq!(d.stable, f64::from(0.3f32).to_string());
    assert_eq!(d.candidate, f64::from(0.35f32).to_string());
}

#[test]
fn argmax_mismatch_shows_labels_and_deciding_scores() {
    let other = [0.1, 0.7, 0.2, 0.2, 0.3, 0.5];
    let a = answer("1", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    let b = answer("2", vec![fp32("p", &[2, 3], &other)], vec![]);
    let c = run(&comparator(Some(Mode::Argmax)), &a, &b);
    assert_eq!(c.elements, counts(1, 1));
    let d = c.difference.expect("difference");
    assert_eq!(d.pointer, "/outputs/0/data/3");
    assert_eq!((d.output.as_deref(), d.row), (Some("p"), Some(1)));
    let score = |x: f32| f64::from(x).to_string();
    assert_eq!(d.stable, format!("label=0 score={}", score(0.6)));
    assert_eq!(d.candidate, format!("label=2 score={}", score(0.5)));
}

#[test]
fn cosine_mode_applies_to_rows() {
    let near: Vec<f32> = SCORES.iter().map(|x| x * 1.001).collect();
    let a = answer("1", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    let b = answer("2", vec![fp32("p", &[2, 3], &near)], vec![]);
    let c = run(&comparator(Some(Mode::Cosine)), &a, &b);
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(2, 0)));
}

#[test]
fn raw_contents_compare_equal_to_typed_contents() {
    let typed = answer("1", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    let raw = answer(
        "2",
        vec![raw_only("p", "FP32", &[2, 3])],
        vec![le_f32(&SCORES)],
    );
    let c = run(&comparator(None), &typed, &raw);
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(2, 0)));
}

#[test]
fn outputs_pair_by_name_whatever_their_order() {
    let label = |values: &[i64]| InferOutputTensor {
        name: "label".into(),
        datatype: "INT64".into(),
        shape: vec![values.len() as i64],
        contents: Some(InferTensorContents {
            int64_contents: values.to_vec(),
            ..InferTensorContents::default()
        }),
        ..InferOutputTensor::default()
    };
    let a = answer(
        "1",
        vec![fp32("p", &[2, 3], &SCORES), label(&[1, 0])],
        vec![],
    );
    let b = answer(
        "2",
        vec![label(&[1, 0]), fp32("p", &[2, 3], &SCORES)],
        vec![],
    );
    let c = run(&comparator(None), &a, &b);
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(4, 0)));
    let b = answer(
        "2",
        vec![label(&[1, 2]), fp32("p", &[2, 3], &SCORES)],
        vec![],
    );
    let d = run(&comparator(None), &a, &b).difference.expect("differs");
    assert_eq!(
        (d.pointer.as_str(), d.stable.as_str()),
        ("/outputs/1/data/1", "0")
    );
    assert_eq!((d.output.as_deref(), d.row), (Some("label"), Some(1)));
}

#[test]
fn missing_output_mismatches_its_rows_by_name() {
    let a = answer(
        "1",
        vec![fp32("p", &[2, 3], &SCORES), fp32("q", &[1, 1], &[1.0])],
        vec![],
    );
    let b = answer("2", vec![fp32("p", &[2, 3], &SCORES)], vec![]);
    let c = run(&comparator(None), &a, &b);
    assert_eq!((c.outcome, c.elements), (Outcome::Mismatch, counts(2, 1)));
    let d = c.difference.expect("difference");
    assert_eq!(
        (d.pointer.as_str(), d.candidate.as_str()),
        ("/outputs/1", "(absent)")
    );
    assert_eq!((d.output.as_deref(), d.row), (Some("q"), None));
}

#[test]
fn fp16_and_bf16_widen_exactly() {
    let f16_bits: [u16; 6] = [0x3c00, 0xc000, 0x3555, 0x0001, 0x7bff, 0x7c00];
    let bytes: Vec<u8> = f16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let expected = json!([
        1.0,
        -2.0,
        0.333251953125,
        5.960464477539063e-8,
        65504.0,
        "inf"
    ]);
    assert_eq!(
        raw_elements("FP16", &bytes).map(Value::Array),
        Some(expected)
    );
    let bf16_bits: [u16; 4] = [0x3f80, 0x4049, 0xc2f7, 0x7fc0];
    let bytes: Vec<u8> = bf16_bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let expected = json!([1.0, 3.140625, -123.5, "NaN"]);
    assert_eq!(
        raw_elements("BF16", &bytes).map(Value::Array),
        Some(expected)
    );
}

#[test]
fn raw_integers_bools_and_bytes_decode_little_endian() {
    let el = |dt: &str, bytes: &[u8]| raw_elements(dt, bytes).map(Value::Array);
    assert_eq!(el("INT8", &[0xff, 0x01]), Some(json!([-1, 1])));
    assert_eq!(el("UINT16", &[0x01, 0x02]), Some(json!([0x0201])));
    assert_eq!(el("INT32", &(-5i32).to_le_bytes()), Some(json!([-5])));
    assert_eq!(
        el("UINT64", &u64::MAX.to_le_bytes()),
        Some(json!([u64::MAX]))
    );
    assert_eq!(
        el("INT64", &i64::MIN.to_le_bytes()),
        Some(json!([i64::MIN]))
    );
    assert_eq!(el("BOOL", &[0, 1, 2]), Some(json!([false, true, true])));
    assert_eq!(el("FP64", &0.1f64.to_le_bytes()), Some(json!([0.1])));
    let bytes = [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0, 1, 0, 0, 0, 0xff];
    assert_eq!(
        el("BYTES", &bytes),
        Some(json!(["hi", "", {"base64": "/w=="}]))
    );
    // Byte counts that are no whole number of elements, unknown types.
    assert_eq!(el("FP32", &[0, 0, 0]), None);
    assert_eq!(el("BYTES", &[5, 0, 0, 0, b'x']), None);
    assert_eq!(el("BYTES", &[1, 0]), None);
    assert_eq!(el("COMPLEX", &[]), None);
}

#[test]
fn raw_contents_that_do_not_fit_are_compared_whole() {
    let a = answer("1", vec![raw_only("p", "FP32", &[1])], vec![vec![1, 2, 3]]);
    let same = answer("2", vec![raw_only("p", "FP32", &[1])], vec![vec![1, 2, 3]]);
    let c = run(&comparator(None), &a, &same);
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(1, 0)));
    let other = answer("2", vec![raw_only("p", "FP32", &[1])], vec![vec![1, 2, 4]]);
    let d = run(&comparator(None), &a, &other)
        .difference
        .expect("differs");
    assert_eq!(
        (d.pointer.as_str(), d.output.as_deref()),
        ("/outputs/0/raw", Some("p"))
    );
}

#[test]
fn elements_in_another_typed_field_are_compared_whole() {
    let misplaced = |x: f64| InferOutputTensor {
        contents: Some(InferTensorContents {
            fp64_contents: vec![x],
            ..InferTensorContents::default()
        }),
        ..fp32("p", &[1], &[])
    };
    let a = answer("1", vec![misplaced(1.0)], vec![]);
    let b = answer("2", vec![misplaced(2.0)], vec![]);
    let d = run(&comparator(None), &a, &b).difference.expect("differs");
    assert_eq!(d.pointer, "/outputs/0/contents/fp64_contents/0");
}

#[test]
fn non_finite_floats_equal_only_themselves() {
    let a = answer(
        "1",
        vec![fp32("p", &[3], &[f32::NAN, f32::INFINITY, 1.0])],
        vec![],
    );
    let b = answer(
        "2",
        vec![fp32("p", &[3], &[f32::NAN, f32::INFINITY, 1.0])],
        vec![],
    );
    assert_eq!(run(&comparator(None), &a, &b).outcome, Outcome::Match);
    let b = answer(
        "2",
        vec![fp32("p", &[3], &[f32::NAN, f32::NEG_INFINITY, 1.0])],
        vec![],
    );
    let d = run(&comparator(None), &a, &b).difference.expect("differs");
    assert_eq!(
        (d.stable.as_str(), d.candidate.as_str()),
        ("\"inf\"", "\"-inf\"")
    );
}

#[test]
fn unreadable_answers_are_uncomparable_with_a_reason() {
    let good = answer("1", vec![fp32("p", &[1], &[1.0])], vec![]);
    let mut compressed = good.clone();
    compressed[0] = 1;
    let mut two = good.clone();
    two.extend_from_slice(&good);
    let cut = &good[..good.len() - 1];
    let cmp = comparator(None);
    let why = |a: &[u8], b: &[u8]| {
        let c = run(&cmp, a, b);
        assert_eq!(c.outcome, Outcome::Uncomparable);
        c.reason
    };
    assert_eq!(why(&compressed, &good), Some(reason::GRPC_COMPRESSED));
    assert_eq!(why(&good, &compressed), Some(reason::GRPC_COMPRESSED));
    assert_eq!(why(&two, &good), Some(reason::STABLE_NOT_GRPC));
    assert_eq!(why(&good, cut), Some(reason::SHADOW_NOT_GRPC));
    assert_eq!(
        why(b"{\"outputs\":[]}", &good),
        Some(reason::STABLE_NOT_GRPC)
    );
    // Field 5 with a varint wire type is no ModelInferResponse.
    assert_eq!(
        why(&good, &framed(&[0x28, 0x01])),
        Some(reason::SHADOW_NOT_GRPC)
    );
    assert_eq!(why(&[], &good), Some(reason::STABLE_NOT_GRPC));
}

#[test]
fn other_methods_compare_bytes_and_other_presets_are_unchanged() {
    let a = framed(&[0x08, 0x01]);
    let b = framed(&[0x08, 0x00]);
    let cmp = comparator(None);
    let live = "/inference.GRPCInferenceService/ServerLive";
    assert_eq!(
        cmp.compare_call(live, &ok(&a), &ok(&a)).outcome,
        Outcome::Match
    );
    assert_eq!(
        cmp.compare_call(live, &ok(&a), &ok(&b)).outcome,
        Outcome::Mismatch
    );
    // Without the preset a ModelInfer answer is what it always was: not JSON.
    let plain = Comparator::new(&CompareSpec::default()).expect("valid");
    let good = answer("1", vec![fp32("p", &[1], &[1.0])], vec![]);
    let c = plain.compare_call(MODEL_INFER, &ok(&good), &ok(&good));
    assert_eq!(c.reason, Some(reason::STABLE_NOT_JSON));
    // REST answers under the preset are unaffected by the gRPC reading.
    let rest = br#"{"outputs":[{"name":"p","shape":[1],"datatype":"FP32","data":[1]}]}"#;
    let c = cmp.compare_call("/v2/models/m/infer", &ok(rest), &ok(rest));
    assert_eq!((c.outcome, c.elements), (Outcome::Match, counts(1, 0)));
}

#[test]
fn failed_and_errored_answers_follow_the_usual_rules() {
    let good = answer("1", vec![fp32("p", &[1], &[1.0])], vec![]);
    let cmp = comparator(None);
    let c = cmp.compare_call(MODEL_INFER, &Observed::Failed, &ok(&good));
    assert_eq!(c.outcome, Outcome::StableError);
    let c = cmp.compare_call(MODEL_INFER, &ok(&good), &Observed::Failed);
    assert_eq!(c.outcome, Outcome::ShadowError);
}

#[test]
fn mutated_answers_never_panic() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let label = InferOutputTensor {
        name: "label".into(),
        datatype: "BYTES".into(),
        shape: vec![2],
        ..InferOutputTensor::default()
    };
    let good = answer(
        "1",
        vec![raw_only("p", "FP16", &[2, 2]), label],
        vec![
            vec![0, 0x3c, 0, 0xc0, 0x55, 0x35, 1, 0],
            b"\x01\0\0\0a\x02\0\0\0bc".to_vec(),
        ],
    );
    let cmp = comparator(Some(Mode::Argmax));
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..5000 {
        let mut bad = good.clone();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..bad.len());
            match rng.random_range(0..3) {
                0 => bad[i] = rng.random(),
                1 => bad.truncate(i),
                _ => bad.insert(i, rng.random()),
            }
            if bad.is_empty() {
                break;
            }
        }
        let c = run(&cmp, &good, &bad);
        assert_ne!(c.outcome, Outcome::StableError);
        run(&cmp, &bad, &bad);
    }
}
