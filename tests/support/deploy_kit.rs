//! A real Prometheus for the deploy kit's tests, and the little PromQL and
//! dashboard reading they need.
//!
//! * [`Prometheus`]: Debian's `prometheus` started on loopback with a scrape
//!   config and the kit's rule file; its HTTP API.
//! * [`selectors`]: the metric selectors inside a PromQL expression.
//! * [`dashboard_queries`], [`label_values`]: what a Grafana dashboard asks
//!   its Prometheus data source.
//!
//! Serves `tests/deploy_queries.rs` alone, which includes it with `#[path]`.
//! Only `127.0.0.1` is bound; nothing here uses the crate under test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::support::get_json;
use crate::support::harness::TempDir;

/// Where the kit lives in the repository.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// True when `program` runs. Outside CI a missing program skips the test
/// with a loud message (`cargo test` must pass on a newcomer's machine); in
/// CI (`CI` set, where `.ci/run` installs it) it is a failure.
pub fn tool_present(program: &str, install: &str) -> bool {
    match std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var_os("CI").is_some() {
                panic!("{program} is not on PATH; install it ({install}) to run this test");
            }
            eprintln!(
                "\n**********\nSKIPPED: {program} is not on PATH ({install}); \
                 the deploy kit's queries were NOT checked\n**********\n"
            );
            false
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// A `prometheus` server on `127.0.0.1`, killed on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port` of an admin port) as
    /// job `job` every second, with `rule_file` evaluated every second.
    pub async fn start(job: &str, target: &str, rule_file: &Path) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.path("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules}\n\
                 scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n",
                rules = rule_file.display()
            ),
        )
        .unwrap();
        // Prometheus cannot report a port it chose itself: take a free one
        // from the kernel and hand it over (a tiny race, retried below).
        for _ in 0..3 {
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path("prometheus.log")).unwrap();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .expect("spawn prometheus");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "prometheus exited ({status}): {}",
                        std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
                    );
                    break;
                }
                if get(&format!("{url}/-/ready")).await == Some(200) {
                    return Prometheus {
                        child,
                        url,
                        _dir: dir,
                    };
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "prometheus not ready within 20s: {}",
                    std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("prometheus did not start on a free port in 3 tries");
    }

    /// `GET /api/v1/query?query=EXPR`: the `data.result` array, or the
    /// error Prometheus gave (a parse error reads `bad_data: ...`).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(expr));
        let answer = get_json(&url).await;
        match answer["status"].as_str() {
            Some("success") => Ok(answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            _ => Err(format!("{}: {}", answer["errorType"], answer["error"])),
        }
    }

    /// `GET /api/v1/series?match[]=SELECTOR`.
    pub async fn series(&self, selector: &str) -> Result<Vec<Value>, String> {
        let url = format!("{}/api/v1/series?match[]={}", self.url, encode(selector));
        let answer = get_json(&url).await;
        match answer["status"].as_str() {
            Some("success") => Ok(answer["data"].as_array().cloned().unwrap_or_default()),
            _ => Err(format!("{}: {}", answer["errorType"], answer["error"])),
        }
    }

    /// `GET /api/v1/rules`: every loaded rule (name, query, health, ...).
    pub async fn rules(&self) -> Vec<Value> {
        let answer = get_json(&format!("{}/api/v1/rules", self.url)).await;
        answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// `GET /api/v1/alerts`: active alerts (pending or firing).
    pub async fn alerts(&self) -> Vec<Value> {
        let answer = get_json(&format!("{}/api/v1/alerts", self.url)).await;
        answer["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status code of a GET, or `None` when nothing answers.
async fn get(url: &str) -> Option<u16> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().ok()?).await.ok()?;
    Some(response.status().as_u16())
}

/// Percent-encodes a query parameter value (everything but unreserved).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The metric selectors in `expr` that name an understudy metric or `up`,
/// with their label matchers: for
/// `sum(rate(understudy_shadow_total{result="sent"}[5m])) / up` that is
/// `understudy_shadow_total{result="sent"}` and `up`. Quoted strings are
/// skipped, so a label value never reads as a metric.
pub fn selectors(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' || b == b'`' {
            i = skip_quoted(bytes, i);
            continue;
        }
        if !(b.is_ascii_alphabetic() || b == b'_') || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if name != "up" && !name.starts_with("understudy_") {
            continue;
        }
        let mut end = i;
        if bytes.get(i) == Some(&b'{') {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'}' {
                j = if matches!(bytes[j], b'"' | b'\'' | b'`') {
                    skip_quoted(bytes, j)
                } else {
                    j + 1
                };
            }
            end = (j + 1).min(bytes.len());
        }
        found.push(expr[start..end].to_owned());
        i = end;
    }
    found
}

/// `selector`, then one copy per value of each regex matcher that is a
/// plain list of values (`result=~"a|b"` gives `result="a"` and
/// `result="b"`), so a misspelled value among correct ones still shows as a
/// selector without data. Regexes with other syntax stay as they are.
pub fn with_each_listed_value(selector: &str) -> Vec<String> {
    let mut out = vec![selector.to_owned()];
    let mut rest = selector;
    let mut offset = 0;
    while let Some(at) = rest.find("=~\"") {
        let open = offset + at + 3;
        let Some(len) = selector[open..].find('"') else {
            break;
        };
        let pattern = &selector[open..open + len];
        let plain =
            |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let values: Vec<&str> = pattern.split('|').collect();
        if values.len() > 1 && values.iter().all(|v| plain(v)) {
            for value in values {
                out.push(format!(
                    "{}=\"{value}\"{}",
                    &selector[..open - 3],
                    &selector[open + len + 1..]
                ));
            }
        }
        offset = open + len + 1;
        rest = &selector[offset..];
    }
    out
}

/// Index just past the quoted string that starts at `open`.
fn skip_quoted(bytes: &[u8], open: usize) -> usize {
    let quote = bytes[open];
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// One query a dashboard panel makes.
pub struct PanelQuery {
    /// `panel title / refId`
    pub name: String,
    pub expr: String,
}

/// Every panel query in a Grafana dashboard (rows' nested panels too).
pub fn dashboard_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &Value, out: &mut Vec<PanelQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    name: format!("{} / {}", panel["title"], target["refId"]),
                    expr: target["expr"].as_str().unwrap_or_default().to_owned(),
                });
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `label_values(SELECTOR, LABEL)` (a Grafana variable query) as
/// `(SELECTOR, LABEL)`.
pub fn label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_owned(), label.trim().to_owned()))
}

#[test]
fn selectors_skip_functions_labels_and_strings() {
    let expr = r#"sum by (le, backend) (rate(understudy_request_duration_seconds_bucket{role="serve", x="a}understudy_no"}[5m])) / on() up{job="understudy"} > bool 0 or understudy_rollbacks_total"#;
    assert_eq!(
        selectors(expr),
        [
            r#"understudy_request_duration_seconds_bucket{role="serve", x="a}understudy_no"}"#,
            r#"up{job="understudy"}"#,
            "understudy_rollbacks_total",
        ]
    );
}

#[test]
fn listed_regex_values_are_checked_one_by_one() {
    assert_eq!(
        with_each_listed_value(r#"m{a=~"x|y", b=~"z.*", c="w"}"#),
        [
            r#"m{a=~"x|y", b=~"z.*", c="w"}"#,
            r#"m{a="x", b=~"z.*", c="w"}"#,
            r#"m{a="y", b=~"z.*", c="w"}"#,
        ]
    );
}

#[test]
fn label_values_reads_selector_and_label() {
    assert_eq!(
        label_values(r#"label_values(understudy_requests_total{job="$job"}, instance)"#),
        Some((
            r#"understudy_requests_total{job="$job"}"#.to_owned(),
            "instance".to_owned()
        ))
    );
}
