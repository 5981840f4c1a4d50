//! The access log: one JSON line per request with the fields SPEC §4 names.

mod support;

use std::time::Duration;

use http::Method;
use support::harness;
use support::{FakeUpstream, Reply, http_client, send};

#[tokio::test]
async fn writes_one_json_line_per_request_without_bodies() {
    let stable = FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await;
    let candidate = FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await;
    let dir = harness::TempDir::new("access-log");
    let log_path = dir.path("access.jsonl");
    let extra = format!("[log]\naccess = \"{}\"\n", log_path.display());
    let proxy = harness::start(&stable.url(), Some(&candidate.url()), &extra).await;
    let client = http_client();
    for i in 0..3 {
        let (status, _, _) = send(
            &client,
            Method::POST,
            &format!("{}/v1/models/m:predict", proxy.url),
            &[
                ("x-request-id", &format!("req-{i}")),
                ("authorization", "Bearer secret"),
            ],
            r#"{"instances":[[1,2]],"secret":"do-not-log"}"#,
        )
        .await;
        assert_eq!(status, 200);
    }
    let refused = support::refused_addr().await;
    proxy.stop().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[1]["request_id"], "req-1");
    assert_eq!(lines[1]["method"], "POST");
    assert_eq!(lines[1]["path"], "/v1/models/m:predict");
    assert_eq!(lines[1]["backend"], "stable");
    assert_eq!(lines[1]["status"], 200);
    assert_eq!(lines[1]["shadow"], "mirrored");
    assert!(lines[1]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        !text.contains("do-not-log") && !text.contains("secret"),
        "{text}"
    );

    // A failed serving request is logged with the status the client got.
    let dir = harness::TempDir::new("access-log-502");
    let log_path = dir.path("access.jsonl");
    let extra = format!("[log]\naccess = \"{}\"\n", log_path.display());
    let proxy = harness::start(&format!("http://{refused}"), None, &extra).await;
    let (status, _, _) = send(&client, Method::GET, &format!("{}/x", proxy.url), &[], "").await;
    assert_eq!(status, 502);
    tokio::time::sleep(Duration::from_millis(50)).await;
    proxy.stop().await;
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&log_path).unwrap().trim()).unwrap();
    assert_eq!(line["status"], 502);
    assert_eq!(line["shadow"], "off");
}
