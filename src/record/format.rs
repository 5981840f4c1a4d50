//! The recording format, shared by the recorder (writes it) and
//! `understudy validate` (reads it): one JSON object per line.
//!
//! Its one job is the mapping between a request as HTTP sees it and one
//! line of JSON, both ways. It never does I/O and never records a header
//! that is not on the allow-list (so `authorization` and `cookie` stay out
//! unless the user lists them).
//!
//! ```json
//! {"time":"2026-11-27T09:12:01.532Z","request_id":"7f3a-1c","method":"POST",
//!  "path":"/v2/models/iris/infer","headers":{"content-type":"application/json"},
//!  "body":{"inputs":[…]},"response":{"backend":"stable","status":200,"body":{"outputs":[…]}}}
//! ```
//!
//! A body that is UTF-8 JSON is stored inline as a JSON value in `body`
//! (replayed as its compact serialization: insignificant whitespace and key
//! order are not kept, the document is); any other body is standard base64
//! in `body_base64` and replayed byte for byte. An empty body has neither.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One recorded request: one line of the recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 time the request arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The `x-request-id` the proxy forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub method: String,
    /// The path, starting with `/`, without the query.
    pub path: String,
    /// The query string without `?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Allow-listed request headers, lowercase names; repeated headers are
    /// joined with ", ".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub body: Payload,
    /// What the serving backend answered, for reference; absent when it
    /// failed (the client got a 502/504).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedResponse>,
}

/// The serving backend's answer to a recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// `stable` or `candidate` (which one served the client).
    pub backend: String,
    pub status: u16,
    #[serde(flatten)]
    pub body: Payload,
    /// The body was over `shadow.max_body_bytes`, so it is not recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A body: inline JSON, or base64, or neither (empty).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Payload {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

/// `"body": null` is a JSON body of `null`, not a missing one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Payload {
    /// Inline when the bytes are JSON, base64 otherwise.
    pub fn encode(bytes: &[u8]) -> Payload {
        if bytes.is_empty() {
            return Payload::default();
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => Payload {
                body: Some(value),
                body_base64: None,
            },
            Err(_) => Payload {
                body: None,
                body_base64: Some(STANDARD.encode(bytes)),
            },
        }
    }

    /// The bytes to send.
    pub fn decode(&self) -> Result<Bytes, String> {
        match (&self.body, &self.body_base64) {
            (Some(_), Some(_)) => Err("has both body and body_base64".into()),
            (Some(value), None) => Ok(Bytes::from(value.to_string())),
            (None, Some(text)) => STANDARD
                .decode(text)
                .map(Bytes::from)
                .map_err(|e| format!("body_base64 is not valid base64: {e}")),
            (None, None) => Ok(Bytes::new()),
        }
    }
}

/// The allow-listed headers of a request, as recorded.
pub fn select_headers(headers: &HeaderMap, allow: &[HeaderName]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in allow {
        // Values that are not visible ASCII cannot be replayed faithfully
        // as JSON strings; leave them out rather than alter them.
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            out.insert(name.as_str().to_owned(), values.join(", "));
        }
    }
    out
}

/// Headers a replay must not copy: the client sets framing and Host for
/// the backend it talks to.
const NOT_REPLAYED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// A recorded request, checked and ready to send.
#[derive(Debug, Clone)]
pub struct Replayable {
    pub method: Method,
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Request id from the recording, if any.
    pub request_id: Option<String>,
}

impl Record {
    /// Parses one line; the error says what is wrong with it.
    pub fn parse_line(line: &[u8]) -> Result<Record, String> {
        serde_json::from_slice(line).map_err(|e| format!("not a recorded request: {e}"))
    }

    /// One line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Checks method, path, headers and body and builds the request parts.
    pub fn replayable(&self) -> Result<Replayable, String> {
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", self.method))?;
        if !self.path.starts_with('/') {
            return Err(format!("path must start with '/', got {:?}", self.path));
        }
        let target = match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        };
        let path_and_query = PathAndQuery::try_from(target.as_str())
            .map_err(|e| format!("invalid path or query {target:?}: {e}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            if NOT_REPLAYED.contains(&name.as_str()) {
                continue;
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value of header {name}"))?;
            headers.insert(name, value);
        }
        Ok(Replayable {
            method,
            path_and_query,
            headers,
            body: self.body.decode()?,
            request_id: self.request_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &[u8]) -> Record {
        Record {
            time: Some("2026-01-01T00:00:00.000Z".into()),
            request_id: Some("r-1".into()),
            method: "POST".into(),
            path: "/v2/models/iris/infer".into(),
            query: Some("debug=1".into()),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: Payload::encode(body),
            response: Some(RecordedResponse {
                backend: "stable".into(),
                status: 200,
                body: Payload::encode(br#"{"outputs":[1]}"#),
                truncated: false,
            }),
        }
    }

    #[test]
    fn json_body_is_inline_and_round_trips_as_the_same_document() {
        let original = br#"{"inputs": [{"name": "x", "data": [5.1, 3.5, 1.4, 0.2]}], "id": "a"}"#;
        let line = record(original).to_line();
        assert!(!line.contains('\n'));
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["body"]["inputs"][0]["data"][0], 5.1, "{line}");
        assert!(parsed.get("body_base64").is_none(), "{line}");
        let back = Record::parse_line(line.as_bytes()).unwrap();
        assert_eq!(back, record(original));
        let replay = back.replayable().unwrap();
        let sent: Value = serde_json::from_slice(&replay.body).unwrap();
        assert_eq!(sent, serde_json::from_slice::<Value>(original).unwrap());
        assert_eq!(
            replay.path_and_query.as_str(),
            "/v2/models/iris/infer?debug=1"
        );
        assert_eq!(replay.method, Method::POST);
        assert_eq!(replay.headers["content-type"], "application/json");
        assert_eq!(replay.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn binary_body_is_base64_and_round_trips_byte_for_byte() {
        let original: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, b'{']).collect();
        let line = record(&original).to_line();
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert!(parsed.get("body").is_none(), "{line}");
        assert!(parsed["body_base64"].is_string(), "{line}");
        let replay = Record::parse_line(line.as_bytes())
            .unwrap()
            .replayable()
            .unwrap();
        assert_eq!(&replay.body[..], &original[..]);
        // Text that is not JSON is not JSON either.
        assert!(Payload::encode(b"hello").body_base64.is_some());
    }

    #[test]
    fn json_null_and_empty_bodies_are_told_apart() {
        let null = record(b"null");
        let back = Record::parse_line(null.to_line().as_bytes()).unwrap();
        assert_eq!(back.body.body, Some(Value::Null));
        assert_eq!(&back.replayable().unwrap().body[..], b"null");
        let mut empty = record(b"");
        empty.response = None;
        let line = empty.to_line();
        assert!(!line.contains("\"body"), "{line}");
        let back = Record::parse_line(line.as_bytes()).unwrap();
        assert!(back.replayable().unwrap().body.is_empty());
    }

    #[test]
    fn only_allow_listed_headers_are_recorded() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
        headers.insert("cookie", HeaderValue::from_static("session=1"));
        headers.append("x-tenant", HeaderValue::from_static("a"));
        headers.append("x-tenant", HeaderValue::from_static("b"));
        let default = [HeaderName::from_static("content-type")];
        let selected = select_headers(&headers, &default);
        assert_eq!(
            selected,
            BTreeMap::from([("content-type".into(), "application/json".into())])
        );
        let listed = [
            HeaderName::from_static("authorization"),
            HeaderName::from_static("x-tenant"),
        ];
        let selected = select_headers(&headers, &listed);
        assert_eq!(selected["authorization"], "Bearer secret");
        assert_eq!(selected["x-tenant"], "a, b");
        assert!(!selected.contains_key("cookie"));
    }

    #[test]
    fn framing_headers_are_not_replayed() {
        let mut r = record(b"{}");
        r.headers.insert("content-length".into(), "999".into());
        r.headers.insert("host".into(), "old:1".into());
        let replay = r.replayable().unwrap();
        assert!(replay.headers.get("content-length").is_none());
        assert!(replay.headers.get("host").is_none());
    }

    #[test]
    fn broken_records_say_what_is_wrong() {
        let bad = |line: &str| {
            Record::parse_line(line.as_bytes()).and_then(|r| r.replayable().map(|_| ()))
        };
        assert!(
            bad("{not json")
                .unwrap_err()
                .contains("not a recorded request")
        );
        assert!(bad(r#"{"path":"/x"}"#).unwrap_err().contains("method"));
        let e = bad(r#"{"method":"POST","path":"x"}"#).unwrap_err();
        assert!(e.contains("path must start"), "{e}");
        let e = bad(r#"{"method":"PO ST","path":"/x"}"#).unwrap_err();
        assert!(e.contains("invalid method"), "{e}");
        let e = bad(r#"{"method":"POST","path":"/x","body_base64":"***"}"#).unwrap_err();
        assert!(e.contains("base64"), "{e}");
        let e = bad(r#"{"method":"POST","path":"/x","body":1,"body_base64":"AA=="}"#).unwrap_err();
        assert!(e.contains("both"), "{e}");
        // Unknown fields are ignored, so newer recordings stay readable.
        assert!(bad(r#"{"method":"GET","path":"/x","future":1}"#).is_ok());
    }
}
