//! Forwarding: what a client of the proxy sees, over real sockets.

mod harness;
mod support;

use http::Method;
use support::{FakeUpstream, Reply, http_client, send};

#[tokio::test]
async fn forwards_to_stable_and_marks_the_backend() {
    let stable = FakeUpstream::start(Reply::json(200, r#"{"predictions":[1]}"#)).await;
    let proxy = harness::start(&stable.url(), None, "").await;
    let (status, headers, body) = send(
        &http_client(),
        Method::POST,
        &format!("{}/v1/models/m:predict?x=1", proxy.url),
        &[("content-type", "application/json")],
        r#"{"instances":[[1,2]]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"predictions":[1]}"#);
    assert_eq!(headers["x-understudy-backend"], "stable");
    let received = stable.received().await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path_and_query, "/v1/models/m:predict?x=1");
    assert_eq!(received[0].body, r#"{"instances":[[1,2]]}"#);
    proxy.stop().await;
}
