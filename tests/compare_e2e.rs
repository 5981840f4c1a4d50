//! Comparison end to end: real proxies, fake model servers answering like
//! the real ones, and what users read from `/metrics`, `/status` and
//! `/mismatches`. Comparisons are asynchronous, so every check first waits
//! for the expected count to appear.

mod support;

use std::time::Duration;

use http::Method;
use support::harness;
use support::harness::series::comparisons;
use support::{FakeUpstream, Reply, http_client, send};

const WAIT: Duration = Duration::from_secs(10);

/// Real MLServer 1.7 answers (as in tests/fixtures/): two versions of the
/// iris model differ only in `model_version` (and would in `id`).
const KSERVE_REQUEST: &str = r#"{"id": "req-000002", "inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64", "data": [6.45, 3.0, 5.47, 1.8]}]}"#;
const KSERVE_V1: &str = r#"{"model_name":"iris","model_version":"v1","id":"req-000002","parameters":{},"outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[2]}]}"#;
const KSERVE_V2: &str = r#"{"model_name":"iris","model_version":"v2","id":"req-000002","parameters":{},"outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[2]}]}"#;
/// `predict_proba` for two rows: a flat `data` of 6 numbers, shape [2, 3].
const KSERVE_PROBA: &str = r#"{"model_name":"iris","model_version":"v1","id":"p1","parameters":{},"outputs":[{"name":"predict_proba","shape":[2,3],"datatype":"FP64","parameters":{"content_type":"np"},"data":[0.0005018223147509693,0.20358287997576405,0.7959152977094849,0.9847031668428455,0.015296771119383056,6.20377713724823e-8]}]}"#;
/// The same, from a candidate whose second row differs.
const KSERVE_PROBA_ROW2_DIFFERS: &str = r#"{"model_name":"iris","model_version":"v2","id":"p1","parameters":{},"outputs":[{"name":"predict_proba","shape":[2,3],"datatype":"FP64","parameters":{"content_type":"np"},"data":[0.0005018223147509693,0.20358287997576405,0.7959152977094849,0.2,0.7,0.1]}]}"#;

fn elements(result: &str) -> String {
    format!(r#"understudy_prediction_elements_total{{result="{result}"}}"#)
}

/// POSTs through the proxy; the client's answer is stable's, whatever it is.
async fn post(proxy: &harness::Proxy, path: &str, headers: &[(&str, &str)], body: &str) {
    let url = format!("{}{path}", proxy.url);
    let (_, headers, _) = send(&http_client(), Method::POST, &url, headers, body.to_owned()).await;
    assert_eq!(headers["x-understudy-backend"], "stable");
}

#[tokio::test]
async fn identical_predictions_match() {
    let body = r#"{"predictions":[[0.1,0.9],[0.7,0.3]]}"#;
    let stable = FakeUpstream::start(Reply::json(200, body)).await;
    let candidate = FakeUpstream::start(Reply::json(200, body)).await;
    let extra = "[compare]\npointer = \"/predictions\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    for _ in 0..5 {
        post(&proxy, "/v1/models/m:predict", &[], "{}").await;
    }
    let metrics = proxy.wait_metric(&comparisons("match"), 5.0, WAIT).await;
    assert_eq!(harness::metric(&metrics, &comparisons("match")), Some(5.0));
    assert_eq!(
        harness::metric(&metrics, &comparisons("mismatch")),
        Some(0.0)
    );
    // Two rows per response.
    assert_eq!(harness::metric(&metrics, &elements("match")), Some(10.0));
    assert_eq!(harness::metric(&metrics, &elements("mismatch")), Some(0.0));
    assert_eq!(
        proxy.mismatches().await["mismatches"],
        serde_json::json!([])
    );
    proxy.stop().await;
}

#[tokio::test]
async fn differing_predictions_are_a_recorded_mismatch_without_the_body() {
    let stable_body = r#"{"predictions":[1,2,3],"patient":"alice-ssn-123-45"}"#;
    let candidate_body = r#"{"predictions":[1,2,4],"patient":"alice-ssn-123-45"}"#;
    let stable = FakeUpstream::start(Reply::json(200, stable_body)).await;
    let candidate = FakeUpstream::start(Reply::json(200, candidate_body)).await;
    let extra = "[compare]\npointer = \"/predictions\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;
    let request_body = r#"{"instances":[[1],[2],[3]],"ssn":"123-45"}"#;
    let id = [("x-request-id", "req-mismatch-1")];
    post(&proxy, "/v1/models/m:predict", &id, request_body).await;

    let metrics = proxy.wait_metric(&comparisons("mismatch"), 1.0, WAIT).await;
    assert_eq!(harness::metric(&metrics, &comparisons("match")), Some(0.0));
    assert_eq!(harness::metric(&metrics, &elements("match")), Some(2.0));
    assert_eq!(harness::metric(&metrics, &elements("mismatch")), Some(1.0));

    let mismatches = proxy.mismatches().await;
    let list = mismatches["mismatches"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "{mismatches:#}");
    let record = &list[0];
    assert_eq!(record["request_id"], "req-mismatch-1", "{record:#}");
    assert_eq!(record["path"], "/v1/models/m:predict", "{record:#}");
    assert_eq!(record["pointer"], "/predictions/2", "{record:#}");
    assert_eq!(record["stable"], "3", "{record:#}");
    assert_eq!(record["candidate"], "4", "{record:#}");
    let text = mismatches.to_string();
    for secret in ["alice-ssn", "123-45", "instances"] {
        assert!(!text.contains(secret), "a body leaked ({secret}): {text}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn errors_and_non_json_answers_are_their_own_outcomes() {
    let json = r#"{"predictions":[1]}"#;
    let stable = FakeUpstream::builder()
        .respond(Reply::json(200, json))
        .route("/stable-crash", Reply::status(500))
        .start()
        .await;
    let candidate = FakeUpstream::builder()
        .respond(Reply::json(200, json))
        .route("/crash", Reply::status(500))
        .route("/text", Reply::text(200, "prediction: 1"))
        .start()
        .await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
    for path in ["/crash", "/text", "/stable-crash", "/ok"] {
        post(&proxy, path, &[], "{}").await;
    }
    for result in ["match", "shadow_error", "uncomparable", "stable_error"] {
        proxy.wait_metric(&comparisons(result), 1.0, WAIT).await;
    }
    let metrics = proxy.metrics().await;
    for (result, n) in [
        ("match", 1.0),
        ("mismatch", 0.0),
        ("shadow_error", 1.0),
        ("uncomparable", 1.0),
        ("stable_error", 1.0),
    ] {
        let series = comparisons(result);
        assert_eq!(harness::metric(&metrics, &series), Some(n), "{series}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn kserve_v2_preset_matches_versions_and_counts_rows_from_the_shape() {
    let stable = FakeUpstream::builder()
        .route("/v2/models/iris/infer", Reply::json(200, KSERVE_V1))
        .route("/v2/models/iris-noid/infer", Reply::json(200, KSERVE_V1))
        .route(
            "/v2/models/iris-proba/infer",
            Reply::json(200, KSERVE_PROBA),
        )
        .start()
        .await;
    // Without an `id` in the request each server makes up its own UUID.
    let other_id = KSERVE_V2.replace("req-000002", "5b0f9bd4-8e4a-4d69-9b0e-3f1f2a7c8d11");
    let candidate = FakeUpstream::builder()
        .route("/v2/models/iris/infer", Reply::json(200, KSERVE_V2))
        .route("/v2/models/iris-noid/infer", Reply::json(200, other_id))
        .route(
            "/v2/models/iris-proba/infer",
            Reply::json(200, KSERVE_PROBA_ROW2_DIFFERS),
        )
        .start()
        .await;
    let extra = "[compare]\npreset = \"kserve-v2\"\n";
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), extra).await;

    post(&proxy, "/v2/models/iris/infer", &[], KSERVE_REQUEST).await;
    post(&proxy, "/v2/models/iris-noid/infer", &[], KSERVE_REQUEST).await;
    let metrics = proxy.wait_metric(&comparisons("match"), 2.0, WAIT).await;
    assert_eq!(
        harness::metric(&metrics, &comparisons("mismatch")),
        Some(0.0)
    );
    assert_eq!(harness::metric(&metrics, &elements("match")), Some(2.0));

    // Two rows, the second differs: one element of each kind.
    post(&proxy, "/v2/models/iris-proba/infer", &[], KSERVE_REQUEST).await;
    let metrics = proxy.wait_metric(&comparisons("mismatch"), 1.0, WAIT).await;
    assert_eq!(harness::metric(&metrics, &elements("match")), Some(3.0));
    assert_eq!(harness::metric(&metrics, &elements("mismatch")), Some(1.0));
    let mismatches = proxy.mismatches().await;
    let record = &mismatches["mismatches"][0];
    assert_eq!(record["path"], "/v2/models/iris-proba/infer", "{record:#}");
    // The first differing value of the flat tensor: row 2, column 1.
    assert_eq!(record["pointer"], "/outputs/0/data/3", "{record:#}");
    assert_eq!(record["stable"], "0.9847031668428455", "{record:#}");
    assert_eq!(record["candidate"], "0.2", "{record:#}");
    proxy.stop().await;
}

#[tokio::test]
async fn status_and_metrics_report_counts_latency_and_match_rate() {
    let body = r#"{"predictions":[1,0]}"#;
    let stable = FakeUpstream::start(Reply::json(200, body)).await;
    let candidate_delay = Duration::from_millis(40);
    let candidate = FakeUpstream::start(Reply::json(200, body).delay(candidate_delay)).await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
    for _ in 0..10 {
        post(&proxy, "/v1/models/m:predict", &[], "{}").await;
    }
    let status = proxy
        .wait_status(WAIT, |s| s["cumulative"]["comparisons"]["compared"] == 10)
        .await;
    assert_eq!(status["phase"], "shadow", "{status:#}");
    assert_eq!(status["weight"].as_f64(), Some(0.0), "{status:#}");
    assert_eq!(status["match_rate"].as_f64(), Some(1.0), "{status:#}");
    let cumulative = &status["cumulative"];
    assert_eq!(cumulative["comparisons"]["outcomes"]["match"], 10);
    assert_eq!(cumulative["comparisons"]["match_rate"].as_f64(), Some(1.0));
    let serve = &cumulative["stable"]["serve"];
    let shadow = &cumulative["candidate"]["shadow"];
    assert_eq!(serve["requests"], 10, "{serve:#}");
    assert_eq!(serve["errors"], 0, "{serve:#}");
    assert_eq!(shadow["requests"], 10, "{shadow:#}");
    for (who, stats) in [("stable", serve), ("candidate", shadow)] {
        for p in ["p50_ms", "p90_ms", "p99_ms"] {
            let v = stats[p].as_f64().unwrap_or(-1.0);
            assert!(v > 0.0, "{who} {p}: {stats:#}");
        }
    }
    // The candidate's answers all took at least its delay.
    let p50 = shadow["p50_ms"].as_f64().unwrap();
    assert!(p50 >= 39.0, "candidate p50 {p50} ms < 40 ms delay");

    let metrics = proxy.metrics().await;
    let bucket = |backend: &str, role: &str, le: &str| {
        let series = format!(
            r#"understudy_request_duration_seconds_bucket{{backend="{backend}",role="{role}",le="{le}"}}"#
        );
        harness::metric(&metrics, &series)
    };
    assert_eq!(bucket("candidate", "shadow", "+Inf"), Some(10.0));
    assert_eq!(bucket("candidate", "shadow", "0.025"), Some(0.0));
    assert_eq!(bucket("stable", "serve", "+Inf"), Some(10.0));
    let count = r#"understudy_request_duration_seconds_count{backend="stable",role="serve"}"#;
    assert_eq!(harness::metric(&metrics, count), Some(10.0));
    let phase = r#"understudy_rollout_phase{phase="shadow"}"#;
    assert_eq!(harness::metric(&metrics, phase), Some(1.0));
    // The gauge follows the stats task's one-second tick.
    proxy.wait_metric("understudy_match_ratio", 1.0, WAIT).await;
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let stable = FakeUpstream::builder()
        .respond(Reply::json(200, r#"{"predictions":[1]}"#))
        .route("/missing", Reply::json(404, "{}"))
        .start()
        .await;
    let candidate = FakeUpstream::builder()
        .respond(Reply::json(200, r#"{"predictions":[2]}"#))
        .route("/crash", Reply::status(500))
        .start()
        .await;
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), "").await;
    for path in ["/a", "/missing", "/crash", "/b"] {
        post(&proxy, path, &[], "{}").await;
    }
    proxy.wait_metric(&comparisons("mismatch"), 2.0, WAIT).await;
    let text = proxy.metrics().await;

    if let Some(Err(problems)) = support::promtool::check_metrics(&text).await {
        panic!("{problems}\n--- scraped:\n{text}");
    }
    proxy.stop().await;
}
