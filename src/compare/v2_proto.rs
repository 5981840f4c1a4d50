//! The KServe V2 (Open Inference Protocol) gRPC messages of an inference call,
//! as `prost` message structs: `ModelInferRequest` and `ModelInferResponse` of
//! package `inference`, with what they contain.
//!
//! They mirror `grpc_predict_v2.proto` as KServe publishes it (Apache-2.0;
//! `python/kserve/kserve/protocol/grpc/grpc_predict_v2.proto` in the
//! `kserve/kserve` repository, and Triton's `grpc_service.proto` for the same
//! messages): every field keeps the proto's name, number and type, so the
//! wire format is the proto's. They are written out here rather than generated,
//! so that building needs no `protoc`; a test round-trips each message and
//! checks the field numbers against hand-encoded bytes. The service's other
//! messages (liveness, metadata, repository) are not needed: their answers are
//! compared byte for byte.

use std::collections::HashMap;

/// `inference.ModelInferRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferRequest {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, repeated, tag = "5")]
    pub inputs: Vec<InferInputTensor>,
    #[prost(message, repeated, tag = "6")]
    pub outputs: Vec<InferRequestedOutputTensor>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub raw_input_contents: Vec<Vec<u8>>,
}

/// `inference.ModelInferRequest.InferInputTensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferInputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// `inference.ModelInferRequest.InferRequestedOutputTensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferRequestedOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(map = "string, message", tag = "2")]
    pub parameters: HashMap<String, InferParameter>,
}

/// `inference.ModelInferResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelInferResponse {
    #[prost(string, tag = "1")]
    pub model_name: String,
    #[prost(string, tag = "2")]
    pub model_version: String,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, repeated, tag = "5")]
    pub outputs: Vec<InferOutputTensor>,
    /// The i-th entry holds the i-th output's elements, little-endian, when the
    /// server sends raw contents (then no output carries `contents`).
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub raw_output_contents: Vec<Vec<u8>>,
}

/// `inference.ModelInferResponse.InferOutputTensor`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferOutputTensor {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub datatype: String,
    #[prost(int64, repeated, tag = "3")]
    pub shape: Vec<i64>,
    #[prost(map = "string, message", tag = "4")]
    pub parameters: HashMap<String, InferParameter>,
    #[prost(message, optional, tag = "5")]
    pub contents: Option<InferTensorContents>,
}

/// `inference.InferParameter`: a oneof of bool, int64 and string.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferParameter {
    #[prost(oneof = "ParameterChoice", tags = "1, 2, 3")]
    pub parameter_choice: Option<ParameterChoice>,
}

/// `inference.InferParameter.parameter_choice`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ParameterChoice {
    #[prost(bool, tag = "1")]
    BoolParam(bool),
    #[prost(int64, tag = "2")]
    Int64Param(i64),
    #[prost(string, tag = "3")]
    StringParam(String),
}

/// `inference.InferTensorContents`: one repeated field per element type; the
/// tensor's `datatype` says which one holds its elements. FP16 and BF16 have
/// none (they travel only as raw contents).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InferTensorContents {
    #[prost(bool, repeated, tag = "1")]
    pub bool_contents: Vec<bool>,
    /// INT8, INT16, INT32.
    #[prost(int32, repeated, tag = "2")]
    pub int_contents: Vec<i32>,
    #[prost(int64, repeated, tag = "3")]
    pub int64_contents: Vec<i64>,
    /// UINT8, UINT16, UINT32.
    #[prost(uint32, repeated, tag = "4")]
    pub uint_contents: Vec<u32>,
    #[prost(uint64, repeated, tag = "5")]
    pub uint64_contents: Vec<u64>,
    #[prost(float, repeated, tag = "6")]
    pub fp32_contents: Vec<f32>,
    #[prost(double, repeated, tag = "7")]
    pub fp64_contents: Vec<f64>,
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub bytes_contents: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn messages_round_trip() {
        let contents = InferTensorContents {
            bool_contents: vec![true, false],
            int_contents: vec![-3, 7],
            int64_contents: vec![i64::MIN, i64::MAX],
            uint_contents: vec![u32::MAX],
            uint64_contents: vec![u64::MAX],
            fp32_contents: vec![0.5, -1.25],
            fp64_contents: vec![1e300],
            bytes_contents: vec![b"cat".to_vec(), vec![0xff]],
        };
        let parameters = HashMap::from([
            (
                "a".to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::BoolParam(true)),
                },
            ),
            (
                "b".to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(-9)),
                },
            ),
            (
                "c".to_owned(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::StringParam("s".into())),
                },
            ),
        ]);
        let response = ModelInferResponse {
            model_name: "m".into(),
            model_version: "2".into(),
            id: "r".into(),
            parameters: parameters.clone(),
            outputs: vec![InferOutputTensor {
                name: "p".into(),
                datatype: "FP32".into(),
                shape: vec![2, -1],
                parameters: parameters.clone(),
                contents: Some(contents.clone()),
            }],
            raw_output_contents: vec![vec![1, 2, 3]],
        };
        let bytes = response.encode_to_vec();
        assert_eq!(ModelInferResponse::decode(bytes.as_slice()), Ok(response));
        let request = ModelInferRequest {
            model_name: "m".into(),
            model_version: "1".into(),
            id: "q".into(),
            parameters: parameters.clone(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "INT64".into(),
                shape: vec![1],
                parameters: parameters.clone(),
                contents: Some(contents),
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: "p".into(),
                parameters,
            }],
            raw_input_contents: vec![vec![9]],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(ModelInferRequest::decode(bytes.as_slice()), Ok(request));
    }

    /// Field numbers and wire types, against bytes spelled out from the proto:
    /// a derive with a wrong tag or type would still round-trip with itself.
    #[test]
    fn field_numbers_match_the_proto() {
        // ModelInferResponse: model_version (2) = "7", outputs (5) = { name (1)
        // = "p", datatype (2) = "FP32", shape (3) = [2] packed, contents (5) =
        // { fp32_contents (6) = [1.0] packed } }, raw_output_contents (6) = [0x01].
        let bytes = [
            0x12, 0x01, b'7', //
            0x2a, 0x14, //
            0x0a, 0x01, b'p', //
            0x12, 0x04, b'F', b'P', b'3', b'2', //
            0x1a, 0x01, 0x02, //
            0x2a, 0x06, 0x32, 0x04, 0x00, 0x00, 0x80, 0x3f, //
            0x32, 0x01, 0x01,
        ];
        let decoded = ModelInferResponse::decode(&bytes[..]).expect("decodes");
        assert_eq!(decoded.model_version, "7");
        let output = &decoded.outputs[0];
        assert_eq!(
            (output.name.as_str(), output.datatype.as_str()),
            ("p", "FP32")
        );
        assert_eq!(output.shape, [2]);
        let contents = output.contents.as_ref().expect("contents");
        assert_eq!(contents.fp32_contents, [1.0]);
        assert_eq!(decoded.raw_output_contents, [vec![1]]);
        // InferTensorContents, one element per field in order 1..=8.
        let contents = [
            0x0a, 0x01, 0x01, // bool_contents
            0x12, 0x01, 0x7f, // int_contents = 127
            0x1a, 0x01, 0x05, // int64_contents = 5
            0x22, 0x01, 0x06, // uint_contents = 6
            0x2a, 0x01, 0x07, // uint64_contents = 7
            0x32, 0x04, 0x00, 0x00, 0x00, 0x40, // fp32_contents = 2.0
            0x3a, 0x08, 0, 0, 0, 0, 0, 0, 0x08, 0x40, // fp64_contents = 3.0
            0x42, 0x01, b'z', // bytes_contents
        ];
        let c = InferTensorContents::decode(&contents[..]).expect("decodes");
        assert_eq!(c.bool_contents, [true]);
        assert_eq!(c.int_contents, [127]);
        assert_eq!(c.int64_contents, [5]);
        assert_eq!(c.uint_contents, [6]);
        assert_eq!(c.uint64_contents, [7]);
        assert_eq!(c.fp32_contents, [2.0]);
        assert_eq!(c.fp64_contents, [3.0]);
        assert_eq!(c.bytes_contents, [b"z".to_vec()]);
    }
}
