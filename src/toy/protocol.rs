//! The slice of the KServe V2 / Open Inference Protocol the toy servers speak:
//! parse an infer request into feature rows, render an infer response, and
//! render the error bodies MLServer-style servers send.
//!
//! Pure functions only: no sockets, no clocks. This module must never decide
//! *what* a model predicts (that is `iris`), only how it is spelled on the wire.

use serde::Deserialize;
use serde_json::{Value, json};

use super::iris::{self, FEATURES};

/// Which output tensor the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `predict`: INT64 labels, shape `[N, 1]`.
    Predict,
    /// `predict_proba`: FP64 class probabilities, shape `[N, 3]`.
    PredictProba,
}

/// A validated infer request.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed back when present.
    pub id: Option<String>,
    /// Feature rows from the first input tensor.
    pub rows: Vec<[f64; FEATURES]>,
    /// Requested outputs, in request order; `[Predict]` when none were named.
    pub outputs: Vec<OutputKind>,
}

/// Why a request body was rejected; maps to a status code and body.
#[derive(Clone, Debug, PartialEq)]
pub enum ProtocolError {
    /// Undecodable or ill-shaped body: 422 with FastAPI-style `detail`.
    Invalid {
        loc: Vec<Value>,
        msg: String,
        kind: &'static str,
    },
    /// An output name the model does not produce: 400 with `error`.
    UnknownOutput(String),
}

impl ProtocolError {
    fn invalid(loc: Vec<Value>, msg: impl Into<String>, kind: &'static str) -> Self {
        Self::Invalid {
            loc,
            msg: msg.into(),
            kind,
        }
    }

    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid { .. } => 422,
            Self::UnknownOutput(_) => 400,
        }
    }

    /// JSON body for this error.
    pub fn body(&self) -> String {
        match self {
            Self::Invalid { loc, msg, kind } => {
                json!({"detail": [{"loc": loc, "msg": msg, "type": kind}]}).to_string()
            }
            Self::UnknownOutput(name) => json!({
                "error": format!("Output '{name}' not supported; expected 'predict' or 'predict_proba'")
            })
            .to_string(),
        }
    }
}

#[derive(Deserialize)]
struct WireRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<WireInput>,
    #[serde(default)]
    outputs: Option<Vec<WireOutput>>,
}

#[derive(Deserialize)]
struct WireInput {
    shape: Vec<u64>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct WireOutput {
    name: String,
}

/// Parse and validate a V2 infer request body.
pub fn parse_infer(body: &[u8]) -> Result<InferRequest, ProtocolError> {
    let wire: WireRequest = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::invalid(vec![json!("body")], e.to_string(), "json_invalid"))?;
    let loc = |field: &str| vec![json!("body"), json!("inputs"), json!(0), json!(field)];
    // Like MLServer's sklearn runtime, only the first input tensor is used.
    let input = wire.inputs.first().ok_or_else(|| {
        ProtocolError::invalid(
            vec![json!("body"), json!("inputs")],
            "no inputs",
            "value_error",
        )
    })?;
    let numeric = [
        "FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
    ];
    if !numeric.contains(&input.datatype.as_str()) {
        let msg = format!("datatype {} is not numeric", input.datatype);
        return Err(ProtocolError::invalid(loc("datatype"), msg, "value_error"));
    }
    let n = match input.shape.as_slice() {
        [n, f] if *f == FEATURES as u64 => *n as usize,
        [f] if *f == FEATURES as u64 => 1,
        other => {
            let msg = format!("shape {other:?} is not [N, {FEATURES}]");
            return Err(ProtocolError::invalid(loc("shape"), msg, "value_error"));
        }
    };
    let mut flat = Vec::with_capacity(n.saturating_mul(FEATURES).min(1 << 20));
    flatten_numbers(&input.data, &mut flat)
        .map_err(|msg| ProtocolError::invalid(loc("data"), msg, "value_error"))?;
    if flat.len() != n * FEATURES {
        let msg = format!(
            "data has {} values, shape needs {}",
            flat.len(),
            n * FEATURES
        );
        return Err(ProtocolError::invalid(loc("data"), msg, "value_error"));
    }
    let rows = flat
        .chunks_exact(FEATURES)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let outputs = match wire.outputs {
        None => vec![OutputKind::Predict],
        Some(list) if list.is_empty() => vec![OutputKind::Predict],
        Some(list) => list
            .into_iter()
            .map(|o| match o.name.as_str() {
                "predict" => Ok(OutputKind::Predict),
                "predict_proba" => Ok(OutputKind::PredictProba),
                _ => Err(ProtocolError::UnknownOutput(o.name)),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(InferRequest {
        id: wire.id,
        rows,
        outputs,
    })
}

/// V2 allows `data` flat or nested by shape; accept both.
fn flatten_numbers(value: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        Value::Number(n) => out.push(n.as_f64().ok_or("number out of range")?),
        Value::Array(items) => {
            for item in items {
                flatten_numbers(item, out)?;
            }
        }
        other => return Err(format!("expected numbers, found {other}")),
    }
    Ok(())
}

/// Render the response a model named `name`/`version` with `disagree_rate`
/// gives to `request`; `id` is the request id to report.
pub fn infer_response(
    name: &str,
    version: &str,
    id: &str,
    request: &InferRequest,
    disagree_rate: f64,
) -> String {
    let n = request.rows.len();
    let labels: Vec<i64> = request
        .rows
        .iter()
        .map(|r| iris::predict(r, disagree_rate))
        .collect();
    let outputs: Vec<Value> = request
        .outputs
        .iter()
        .map(|kind| match kind {
            OutputKind::Predict => json!({
                "name": "predict", "shape": [n, 1], "datatype": "INT64",
                "parameters": {"content_type": "np"}, "data": labels,
            }),
            OutputKind::PredictProba => {
                let data: Vec<f64> = request
                    .rows
                    .iter()
                    .zip(&labels)
                    .flat_map(|(row, &label)| iris::proba(row, label))
                    .collect();
                json!({
                    "name": "predict_proba", "shape": [n, iris::CLASSES], "datatype": "FP64",
                    "parameters": {"content_type": "np"}, "data": data,
                })
            }
        })
        .collect();
    json!({
        "model_name": name, "model_version": version, "id": id,
        "parameters": {}, "outputs": outputs,
    })
    .to_string()
}

/// A random UUID-v4-shaped id for requests that did not carry one.
pub fn new_request_id() -> String {
    let v: u128 = rand::random::<u128>() & !(0xf << 76) | (0x4 << 76);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flat_and_nested_data_and_outputs() {
        let flat = br#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP64","data":[1,2,3,4,5,6,7,8]}]}"#;
        let req = parse_infer(flat).unwrap();
        assert_eq!(req.rows, vec![[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]);
        assert_eq!(req.outputs, vec![OutputKind::Predict]);
        let nested = br#"{"id":"a","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[1,2,3,4]]}],
            "outputs":[{"name":"predict_proba"},{"name":"predict"}]}"#;
        let req = parse_infer(nested).unwrap();
        assert_eq!(req.id.as_deref(), Some("a"));
        assert_eq!(
            req.outputs,
            vec![OutputKind::PredictProba, OutputKind::Predict]
        );
    }

    #[test]
    fn rejects_bad_bodies_with_the_right_status() {
        assert_eq!(parse_infer(b"{not json").unwrap_err().status(), 422);
        let short = br#"{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP64","data":[1,2,3]}]}"#;
        let err = parse_infer(short).unwrap_err();
        assert_eq!(err.status(), 422);
        assert!(err.body().contains("\"detail\""));
        let odd = br#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}],
            "outputs":[{"name":"transform"}]}"#;
        assert_eq!(parse_infer(odd).unwrap_err().status(), 400);
    }

    #[test]
    fn response_has_v2_shape() {
        let req = parse_infer(iris::infer_body(&[[5.0, 3.0, 1.5, 0.2]], "r").as_bytes()).unwrap();
        let body: Value =
            serde_json::from_str(&infer_response("iris", "v1", "r", &req, 0.0)).unwrap();
        assert_eq!(body["outputs"][0]["data"], json!([0]));
        assert_eq!(body["outputs"][0]["shape"], json!([1, 1]));
        assert_eq!(new_request_id().len(), 36);
    }
}
