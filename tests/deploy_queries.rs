//! The deploy kit's Grafana dashboard and Prometheus alert rules, checked
//! against a real Prometheus (Debian's `prometheus`) that scrapes a real
//! `understudy` binary on loopback, with a candidate and traffic so every
//! mirror and comparison series moves.
//!
//! * Every dashboard query parses and returns data, after the substitutions
//!   Grafana makes (`$job`, `$instance`, `$__rate_interval`, `$__range`);
//!   every template variable finds its series.
//! * Every alert rule loads and evaluates without error in Prometheus.
//!   Alert expressions are "bad condition" queries, empty while the proxy is
//!   healthy: each must parse, and each metric selector inside it must
//!   return data (so a misspelled metric or label value fails). One alert,
//!   the rollback, is then made to fire for real.
//! * `promtool check rules` and `promtool test rules` pass (the unit cases
//!   in `deploy/prometheus/alerts_test.yaml` cover each alert).
//!
//! Skipped with a loud message when `prometheus` is absent outside CI; in CI
//! (`CI` set) it must be installed.

#[path = "support/deploy_kit.rs"]
mod deploy_support;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use deploy_support::{
    Prometheus, dashboard_queries, deploy_dir, label_values, selectors, with_each_listed_value,
};
use http::Method;
use serde_json::Value;
use support::harness::{self, Binary, TempDir};
use support::{FakeUpstream, Reply, http_client, send};
use tokio_util::sync::CancellationToken;

const JOB: &str = "understudy";
const PREDICTION: &str = r#"{"predictions":[[0.1,0.9],[0.8,0.2]]}"#;
/// What the test substitutes for Grafana's `$__rate_interval`: a few
/// scrapes at 1s.
const RATE_INTERVAL: &str = "10s";
/// Time for Prometheus to have scraped enough for every query.
const DATA_TIMEOUT: Duration = Duration::from_secs(20);

/// Metrics the dashboard must show (match rate, per-backend
/// requests, errors, latency, weight, phase, decisions, mirrors, drops).
const DASHBOARD_MUST_USE: [&str; 9] = [
    "understudy_comparisons_total",
    "understudy_match_ratio",
    "understudy_requests_total",
    "understudy_request_duration_seconds_bucket",
    "understudy_canary_weight_ratio",
    "understudy_rollout_phase",
    "understudy_rollout_decisions_total",
    "understudy_shadow_total",
    "understudy_comparisons_dropped_total",
];

/// Metrics the alert rules must watch.
const ALERTS_MUST_USE: [&str; 6] = [
    "understudy_comparisons_total",
    "understudy_rollbacks_total",
    "understudy_shadow_total",
    "understudy_stats_events_dropped_total",
    "understudy_access_log_dropped_total",
    "up",
];

#[tokio::test]
async fn dashboard_and_alert_queries_return_data_from_a_real_prometheus() {
    let dashboard = read_dashboard();
    check_dashboard_shape(&dashboard);
    if !deploy_support::tool_present("prometheus", "Debian/Ubuntu: apt-get install prometheus") {
        return;
    }

    let stable = FakeUpstream::start(Reply::json(200, PREDICTION)).await;
    let candidate = FakeUpstream::start(Reply::json(200, PREDICTION)).await;
    let dir = TempDir::new("deploy-queries");
    let config = dir.path("understudy.toml");
    let rollout = format!(
        "[rollout]\nsteps = [50, 100]\ninterval = \"1h\"\nmin_requests = 100000\nstate_file = \"{}\"\n",
        dir.path("state.json").display()
    );
    std::fs::write(
        &config,
        harness::config_text(&stable.url(), Some(&candidate.url()), &rollout),
    )
    .unwrap();
    let proxy = Binary::start(&config, &[]).await;
    // Half the clients on the candidate, so both backends serve and mirror.
    let (code, body) = support::post_json(
        &format!("{}/rollout/weight", proxy.admin),
        r#"{"percent": 50}"#,
        None,
    )
    .await;
    assert_eq!(code, 200, "{body:#}");

    let stop_load = CancellationToken::new();
    let load = tokio::spawn(drive_load(proxy.url.clone(), stop_load.clone()));

    let target = proxy.admin.trim_start_matches("http://").to_owned();
    let rule_file = deploy_dir().join("prometheus/alerts.yaml");
    let prometheus = Prometheus::start(JOB, &target, &rule_file).await;

    let dashboard_exprs: Vec<(String, String)> = dashboard_queries(&dashboard)
        .into_iter()
        .map(|q| (q.name, grafana_substitute(&q.expr, &target)))
        .collect();
    let rules = loaded_rules(&prometheus, &rule_file).await;
    check_coverage(&dashboard_exprs, &rules);

    // Rates need a few scrapes with traffic in between: retry the whole
    // check until it passes or the deadline lists what still fails.
    let deadline = tokio::time::Instant::now() + DATA_TIMEOUT;
    loop {
        let mut failures = Vec::new();
        check_variables(&prometheus, &dashboard, &target, &mut failures).await;
        for (name, expr) in &dashboard_exprs {
            check_expr(
                &prometheus,
                &format!("dashboard {name}"),
                expr,
                true,
                &mut failures,
            )
            .await;
        }
        for (name, expr) in &rules {
            check_expr(
                &prometheus,
                &format!("alert {name}"),
                expr,
                false,
                &mut failures,
            )
            .await;
        }
        check_rule_health(&prometheus, &mut failures).await;
        if failures.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deploy queries against Prometheus:\n{}",
            failures.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A real rollback makes the real alert fire.
    let (code, body) =
        support::post_json(&format!("{}/rollout/rollback", proxy.admin), "{}", None).await;
    assert_eq!(code, 200, "{body:#}");
    wait_for_alert(&prometheus, "UnderstudyRollback", &target).await;

    stop_load.cancel();
    let sent = load.await.unwrap();
    assert!(sent > 0, "no request went through the proxy");
    run_promtool().await;
}

fn read_dashboard() -> Value {
    let path = deploy_dir().join("grafana/understudy.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not JSON: {e}"))
}

/// What an import needs: the data source as an input, used by every panel
/// and query; unique panel ids; unique refIds per panel.
fn check_dashboard_shape(dashboard: &Value) {
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS input: {inputs:?}"
    );
    let mut ids = BTreeSet::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(
                refs.insert(target["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
        }
    }
}

/// Grafana's substitutions, as for one selected instance.
fn grafana_substitute(expr: &str, instance: &str) -> String {
    let out = expr
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", "1m")
        .replace("$job", JOB)
        .replace("$instance", instance);
    assert!(!out.contains('$'), "unsubstituted variable in {expr}");
    out
}

/// The rules Prometheus loaded from the kit's file, as (name, query); all of
/// them (the file's `- alert:` lines are counted).
async fn loaded_rules(prometheus: &Prometheus, file: &std::path::Path) -> Vec<(String, String)> {
    let in_file = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let rules = prometheus.rules().await;
    assert_eq!(rules.len(), in_file, "rules loaded: {rules:#?}");
    rules
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["query"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn check_coverage(dashboard: &[(String, String)], rules: &[(String, String)]) {
    let names = |exprs: &[(String, String)]| -> BTreeSet<String> {
        exprs
            .iter()
            .flat_map(|(_, e)| selectors(e))
            .map(|s| s.split('{').next().unwrap().to_owned())
            .collect()
    };
    let used = names(dashboard);
    for metric in DASHBOARD_MUST_USE {
        assert!(
            used.contains(metric),
            "the dashboard does not show {metric}"
        );
    }
    assert!(
        dashboard
            .iter()
            .any(|(_, e)| e.contains("histogram_quantile(")),
        "no latency quantile in the dashboard"
    );
    let watched = names(rules);
    for metric in ALERTS_MUST_USE {
        assert!(watched.contains(metric), "no alert watches {metric}");
    }
}

/// `expr` parses; each selector in it returns data, and so does each value
/// listed in a regex matcher; with `whole`, so does the expression itself.
async fn check_expr(
    prometheus: &Prometheus,
    name: &str,
    expr: &str,
    whole: bool,
    failures: &mut Vec<String>,
) {
    match prometheus.query(expr).await {
        Err(e) => failures.push(format!("{name}: does not parse: {e}\n    {expr}")),
        Ok(result) if whole && result.is_empty() => {
            failures.push(format!("{name}: no data\n    {expr}"))
        }
        Ok(_) => {}
    }
    let selectors = selectors(expr);
    if selectors.is_empty() {
        failures.push(format!("{name}: names no understudy metric\n    {expr}"));
    }
    for selector in selectors.iter().flat_map(|s| with_each_listed_value(s)) {
        match prometheus.query(&selector).await {
            Ok(result) if !result.is_empty() => {}
            Ok(_) => failures.push(format!("{name}: selector {selector} has no data")),
            Err(e) => failures.push(format!("{name}: selector {selector}: {e}")),
        }
    }
}

/// Each template variable's `label_values(SELECTOR, LABEL)` finds series
/// carrying LABEL.
async fn check_variables(
    prometheus: &Prometheus,
    dashboard: &Value,
    instance: &str,
    failures: &mut Vec<String>,
) {
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        let name = &variable["name"];
        let Some((selector, label)) = label_values(query) else {
            failures.push(format!("variable {name}: not label_values(...): {query}"));
            continue;
        };
        let selector = grafana_substitute(&selector, instance);
        match prometheus.series(&selector).await {
            Ok(series) if series.iter().any(|s| s[&label].is_string()) => {}
            Ok(_) => failures.push(format!(
                "variable {name}: no series {selector} with {label}"
            )),
            Err(e) => failures.push(format!("variable {name}: {selector}: {e}")),
        }
    }
}

/// Every rule has been evaluated, without error.
async fn check_rule_health(prometheus: &Prometheus, failures: &mut Vec<String>) {
    for rule in prometheus.rules().await {
        if rule["health"] != "ok" {
            failures.push(format!(
                "rule {} health {} {}",
                rule["name"], rule["health"], rule["lastError"]
            ));
        }
    }
}

async fn wait_for_alert(prometheus: &Prometheus, alert: &str, instance: &str) {
    let deadline = tokio::time::Instant::now() + DATA_TIMEOUT;
    loop {
        let alerts = prometheus.alerts().await;
        if alerts.iter().any(|a| {
            a["labels"]["alertname"] == alert
                && a["labels"]["instance"] == instance
                && a["state"] == "firing"
        }) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{alert} did not fire within {DATA_TIMEOUT:?}; active alerts: {alerts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Requests through the proxy until `stop`, a few dozen a second; returns
/// how many were sent.
async fn drive_load(url: String, stop: CancellationToken) -> usize {
    let client = http_client();
    let mut sent = 0;
    while !stop.is_cancelled() {
        let (code, _, body) = send(
            &client,
            Method::POST,
            &format!("{url}/v2/models/m/infer"),
            &[],
            "{}",
        )
        .await;
        assert_eq!(code, 200, "{body:?}");
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent
}

async fn run_promtool() {
    let dir = deploy_dir().join("prometheus");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts_test.yaml"],
    ] {
        let output = tokio::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .await
            .expect("promtool (from the prometheus package) is on PATH");
        assert!(
            output.status.success(),
            "promtool {}: {}\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
