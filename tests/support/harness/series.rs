//! Names of the proxy's Prometheus series that the tests read with
//! [`super::metric`], one function a metric with its labels as arguments,
//! so a test names a sample the way the proxy exports it.

/// `understudy_upstream_failures_total` of one backend, role and failure kind.
pub fn failures(backend: &str, role: &str, kind: &str) -> String {
    format!(
        r#"understudy_upstream_failures_total{{backend="{backend}",role="{role}",kind="{kind}"}}"#
    )
}

/// `understudy_requests_total` of one backend, role and status class.
pub fn requests(backend: &str, role: &str, class: &str) -> String {
    format!(
        r#"understudy_requests_total{{backend="{backend}",role="{role}",status_class="{class}"}}"#
    )
}

/// `understudy_shadow_total` of one mirror result.
pub fn shadow(result: &str) -> String {
    format!(r#"understudy_shadow_total{{result="{result}"}}"#)
}

/// `understudy_comparisons_total` of one comparison result.
pub fn comparisons(result: &str) -> String {
    format!(r#"understudy_comparisons_total{{result="{result}"}}"#)
}
