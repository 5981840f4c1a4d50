//! KServe V2 gRPC answers (`/inference.GRPCInferenceService/ModelInfer`): unframes
//! the one message of a unary answer, decodes its `ModelInferResponse`, and writes
//! its outputs as KServe's REST protocol would (`{"outputs": [{"name", "datatype",
//! "shape", "data"}]}`), so that the REST preset's rows and modes apply unchanged.
//!
//! Must never trust a length prefix, a shape or a raw byte count to index
//! anything: every slice is checked, and a tensor whose bytes do not fit its
//! datatype is kept whole (compared by value) rather than cut.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use serde_json::{Map, Number, Value, json};

use super::preset::Layout;
use super::v2_proto::{InferOutputTensor, InferTensorContents, ModelInferResponse};
use super::{Comparator, Comparison, Observed, Outcome, compare_bytes, reason};

/// The path of KServe V2's unary inference call.
pub(crate) const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// The prefix of every KServe V2 gRPC method's path.
pub(crate) const SERVICE: &str = "/inference.GRPCInferenceService/";

impl Comparator {
    /// Compares one mirrored pair of answers to a request for `path`. The same as
    /// [`Comparator::compare`], except under the `kserve-v2` preset for the KServe V2
    /// gRPC service (paths under `/inference.GRPCInferenceService/`): a 2xx answer to
    /// `ModelInfer` is decoded from protobuf and compared as the REST answer with the
    /// same outputs would be; answers to the service's other methods (liveness,
    /// readiness, metadata) are compared byte for byte.
    pub fn compare_call(
        &self,
        path: &str,
        stable: &Observed<'_>,
        candidate: &Observed<'_>,
    ) -> Comparison {
        if self.layout != Layout::KserveV2 || !path.starts_with(SERVICE) {
            return self.compare(stable, candidate);
        }
        let (s_body, c_body, success) = match self.bodies(stable, candidate) {
            Ok(bodies) => bodies,
            Err(decided) => return decided,
        };
        if path != MODEL_INFER || !success {
            return compare_bytes(s_body, c_body);
        }
        let unreadable = |e: Unreadable, not_grpc: &'static str| {
            let why = match e {
                Unreadable::Compressed => reason::GRPC_COMPRESSED,
                Unreadable::Malformed => not_grpc,
            };
            Comparison::bare(Outcome::Uncomparable, Some(why))
        };
        let mut s_doc = match document(s_body) {
            Ok(doc) => doc,
            Err(e) => return unreadable(e, reason::STABLE_NOT_GRPC),
        };
        for ignore in &self.ignores {
            ignore.remove_from(&mut s_doc);
        }
        if s_body == c_body {
            return self.compare_docs(&s_doc, &s_doc, true);
        }
        let mut c_doc = match document(c_body) {
            Ok(doc) => doc,
            Err(e) => return unreadable(e, reason::SHADOW_NOT_GRPC),
        };
        for ignore in &self.ignores {
            ignore.remove_from(&mut c_doc);
        }
        self.compare_docs(&s_doc, &c_doc, true)
    }
}

/// Why an answer could not be read as one `ModelInferResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// The message is compressed (`grpc-encoding`), which is not decoded.
    Compressed,
    /// Not exactly one complete message, or not a `ModelInferResponse`.
    Malformed,
}

/// The one message of a unary gRPC answer: a 5-byte prefix (compressed flag,
/// big-endian length) and exactly that many bytes, nothing after.
pub(crate) fn unary_message(body: &[u8]) -> Result<&[u8], Unreadable> {
    let (&[flag, a, b, c, d], rest) = body.split_first_chunk::<5>().ok_or(Unreadable::Malformed)?;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    match flag {
        0 if rest.len() == len => Ok(rest),
        // Checked before the length: a compressed answer is named as such even if
        // it is also streamed.
        1 => Err(Unreadable::Compressed),
        _ => Err(Unreadable::Malformed),
    }
}

/// Decodes a unary `ModelInfer` answer into the REST document of its outputs.
pub(crate) fn document(body: &[u8]) -> Result<Value, Unreadable> {
    let message = unary_message(body)?;
    let response = ModelInferResponse::decode(message).map_err(|_| Unreadable::Malformed)?;
    let raw = &response.raw_output_contents;
    let outputs = response
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| output(o, raw.get(i).map(Vec::as_slice)))
        .collect();
    Ok(json!({ "outputs": Value::Array(outputs) }))
}

/// One output tensor as a REST output. Its elements come from its raw contents
/// when the answer has them, else from the typed field its `datatype` names.
/// When they cannot be read that way (a raw byte count that is no whole number
/// of elements, an unknown datatype, elements in other typed fields), the
/// output carries what it holds under `raw` or `contents` instead of `data`, so
/// it is compared whole, by value.
fn output(o: &InferOutputTensor, raw: Option<&[u8]>) -> Value {
    let mut fields = Map::new();
    fields.insert("name".into(), Value::String(o.name.clone()));
    fields.insert("datatype".into(), Value::String(o.datatype.clone()));
    let shape = o.shape.iter().map(|&d| Value::from(d)).collect();
    fields.insert("shape".into(), Value::Array(shape));
    let empty = InferTensorContents::default();
    let typed = o.contents.as_ref().unwrap_or(&empty);
    let (key, value) = match raw {
        Some(bytes) => match raw_elements(&o.datatype, bytes) {
            Some(data) => ("data", Value::Array(data)),
            None => ("raw", Value::String(STANDARD.encode(bytes))),
        },
        None => match typed_elements(&o.datatype, typed) {
            Some(data) => ("data", Value::Array(data)),
            None => ("contents", all_contents(typed)),
        },
    };
    fields.insert(key.into(), value);
    Value::Object(fields)
}

/// A float as JSON: a number, or for NaN and the infinities (which JSON has
/// no number for) the words `NaN`, `inf`, `-inf`, each equal only to itself.
fn float(x: f64) -> Value {
    match Number::from_f64(x) {
        Some(n) => Value::Number(n),
        None if x.is_nan() => Value::String("NaN".into()),
        None if x > 0.0 => Value::String("inf".into()),
        None => Value::String("-inf".into()),
    }
}

/// A BYTES element: its text when it is UTF-8, else `{"base64": ...}`.
fn bytes_element(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": STANDARD.encode(b) }),
    }
}

/// The typed field `datatype` names, when no other field holds elements.
fn typed_elements(datatype: &str, c: &InferTensorContents) -> Option<Vec<Value>> {
    let lens = [
        c.bool_contents.len(),
        c.int_contents.len(),
        c.int64_contents.len(),
        c.uint_contents.len(),
        c.uint64_contents.len(),
        c.fp32_contents.len(),
        c.fp64_contents.len(),
        c.bytes_contents.len(),
    ];
    let field = match datatype {
        "BOOL" => 0,
        "INT8" | "INT16" | "INT32" => 1,
        "INT64" => 2,
        "UINT8" | "UINT16" | "UINT32" => 3,
        "UINT64" => 4,
        "FP32" => 5,
        "FP64" => 6,
        "BYTES" => 7,
        _ => return lens.iter().all(|&n| n == 0).then(Vec::new),
    };
    let others_empty = lens.iter().enumerate().all(|(i, &n)| i == field || n == 0);
    if !others_empty {
        return None;
    }
    Some(match field {
        0 => c.bool_contents.iter().map(|&x| Value::Bool(x)).collect(),
        1 => c.int_contents.iter().map(|&x| Value::from(x)).collect(),
        2 => c.int64_contents.iter().map(|&x| Value::from(x)).collect(),
        3 => c.uint_contents.iter().map(|&x| Value::from(x)).collect(),
        4 => c.uint64_contents.iter().map(|&x| Value::from(x)).collect(),
        5 => c
            .fp32_contents
            .iter()
            .map(|&x| float(f64::from(x)))
            .collect(),
        6 => c.fp64_contents.iter().map(|&x| float(x)).collect(),
        _ => c.bytes_contents.iter().map(|b| bytes_element(b)).collect(),
    })
}

/// Every non-empty typed field, by its proto name.
fn all_contents(c: &InferTensorContents) -> Value {
    let fields: [(&str, Vec<Value>); 8] = [
        (
            "bool_contents",
            c.bool_contents.iter().map(|&x| Value::Bool(x)).collect(),
        ),
        (
            "int_contents",
            c.int_contents.iter().map(|&x| Value::from(x)).collect(),
        ),
        (
            "int64_contents",
            c.int64_contents.iter().map(|&x| Value::from(x)).collect(),
        ),
        (
            "uint_contents",
            c.uint_contents.iter().map(|&x| Value::from(x)).collect(),
        ),
        (
            "uint64_contents",
            c.uint64_contents.iter().map(|&x| Value::from(x)).collect(),
        ),
        (
            "fp32_contents",
            c.fp32_contents
                .iter()
                .map(|&x| float(f64::from(x)))
                .collect(),
        ),
        (
            "fp64_contents",
            c.fp64_contents.iter().map(|&x| float(x)).collect(),
        ),
        (
            "bytes_contents",
            c.bytes_contents.iter().map(|b| bytes_element(b)).collect(),
        ),
    ];
    let kept = fields
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), Value::Array(v)));
    Value::Object(kept.collect())
}

/// Little-endian elements of `datatype` in `bytes`; `None` for an unknown
/// datatype or a byte count that is no whole number of elements.
pub(crate) fn raw_elements(datatype: &str, bytes: &[u8]) -> Option<Vec<Value>> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> Value) -> Option<Vec<Value>> {
        let chunks = bytes.chunks_exact(N);
        if !chunks.remainder().is_empty() {
            return None;
        }
        chunks
            .map(|c| c.try_into().ok().map(&f))
            .collect::<Option<Vec<_>>>()
    }
    match datatype {
        "BOOL" => each(bytes, |[b]: [u8; 1]| Value::Bool(b != 0)),
        "UINT8" => each(bytes, |[b]: [u8; 1]| Value::from(b)),
        "INT8" => each(bytes, |b| Value::from(i8::from_le_bytes(b))),
        "UINT16" => each(bytes, |b| Value::from(u16::from_le_bytes(b))),
        "INT16" => each(bytes, |b| Value::from(i16::from_le_bytes(b))),
        "UINT32" => each(bytes, |b| Value::from(u32::from_le_bytes(b))),
        "INT32" => each(bytes, |b| Value::from(i32::from_le_bytes(b))),
        "UINT64" => each(bytes, |b| Value::from(u64::from_le_bytes(b))),
        "INT64" => each(bytes, |b| Value::from(i64::from_le_bytes(b))),
        "FP16" => each(bytes, |b| float(half::f16::from_le_bytes(b).to_f64())),
        "BF16" => each(bytes, |b| float(half::bf16::from_le_bytes(b).to_f64())),
        "FP32" => each(bytes, |b| float(f64::from(f32::from_le_bytes(b)))),
        "FP64" => each(bytes, |b| float(f64::from_le_bytes(b))),
        "BYTES" => raw_bytes(bytes),
        _ => None,
    }
}

/// BYTES raw contents: each element a 4-byte little-endian length, then that
/// many bytes.
fn raw_bytes(mut bytes: &[u8]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let element = rest.get(..len)?;
        out.push(bytes_element(element));
        bytes = rest.get(len..)?;
    }
    bytes.is_empty().then_some(out)
}
