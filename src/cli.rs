//! Command-line interface: argument definitions and the commands that do
//! not need a running proxy in this process (`check`, `status`, `rollout`).
//!
//! `main.rs` parses, dispatches and owns the process (runtime, signals,
//! exit codes); everything here is library code.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::config::{ADMIN_TOKEN_ENV, Config};
use crate::telemetry::LogFormat;
use crate::units::{ms_or_dash, pct_or_dash};

/// Default admin URL for `status` and `rollout`, matching the default
/// `admin.addr`.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:9901";

#[derive(Debug, Parser)]
#[command(
    name = "understudy",
    version,
    about = "Shadow-traffic reverse proxy for safe ML model rollouts"
)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(
            short,
            long,
            env = "UNDERSTUDY_CONFIG",
            default_value = "config/understudy.toml"
        )]
        config: PathBuf,
        /// Discard the persisted rollout state and start a fresh rollout.
        #[arg(long)]
        reset_state: bool,
        /// Record live requests to this JSONL file (100% unless [record]
        /// percent says otherwise), for `understudy validate`.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// Validate a config file: every problem with its key and line.
    Check {
        #[arg(
            short,
            long,
            env = "UNDERSTUDY_CONFIG",
            default_value = "config/understudy.toml"
        )]
        config: PathBuf,
    },
    /// Show phase, weight, per-backend stats and the last decision.
    Status {
        #[arg(long, default_value = DEFAULT_ADMIN_URL)]
        admin: String,
        /// Print the raw JSON of GET /status.
        #[arg(long)]
        json: bool,
    },
    /// Control the rollout: pause, resume, promote, rollback, set-weight N.
    Rollout {
        #[command(subcommand)]
        action: RolloutAction,
        #[arg(long, global = true, default_value = DEFAULT_ADMIN_URL)]
        admin: String,
        /// Bearer token for the admin API (default: $UNDERSTUDY_ADMIN_TOKEN).
        #[arg(long, global = true)]
        token: Option<String>,
    },
    /// Replay recorded requests to stable and candidate and judge them with
    /// the shadow gate: exit 0 pass, 1 fail, 2 usage/config errors.
    Validate(crate::validate::ValidateArgs),
    /// Start toy model servers, the proxy and load, and walk a rollout live.
    Demo {
        /// Upper bound on how long the demo runs.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Toy LLM servers streaming chat answers instead of the iris
        /// classifier, compared with the `openai` preset; no rollout.
        #[arg(long)]
        llm: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutAction {
    Pause,
    Resume,
    Promote,
    Rollback,
    /// Set the candidate's weight in percent (pauses automation).
    SetWeight {
        percent: f64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] crate::server::StartError),
    #[error("admin API at {url}: {message}")]
    Admin { url: String, message: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `understudy check`: prints the problems, exit 0 only when valid.
pub fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok (stable {}, candidate {}, rollout {})",
                path.display(),
                config.stable.url,
                config
                    .candidate
                    .as_ref()
                    .map(|c| c.url.to_string())
                    .unwrap_or_else(|| "none".into()),
                if config.rollout.is_some() {
                    "configured"
                } else {
                    "off"
                }
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `understudy status`.
pub async fn status(admin: &str, raw_json: bool) -> Result<ExitCode, CliError> {
    let value = admin_call(admin, Method::GET, "/status", None, None).await?;
    if raw_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", render_status(&value));
    }
    Ok(ExitCode::SUCCESS)
}

/// `understudy rollout ACTION`.
pub async fn rollout(
    admin: &str,
    action: &RolloutAction,
    token: Option<String>,
) -> Result<ExitCode, CliError> {
    let token = token.or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok());
    let (path, body) = match action {
        RolloutAction::Pause => ("/rollout/pause", None),
        RolloutAction::Resume => ("/rollout/resume", None),
        RolloutAction::Promote => ("/rollout/promote", None),
        RolloutAction::Rollback => ("/rollout/rollback", None),
        RolloutAction::SetWeight { percent } => (
            "/rollout/weight",
            Some(serde_json::json!({ "percent": percent }).to_string()),
        ),
    };
    let value = admin_call(admin, Method::POST, path, body, token.as_deref()).await?;
    println!(
        "phase {} weight {}%",
        value["phase"].as_str().unwrap_or("?"),
        value["weight"]
    );
    Ok(ExitCode::SUCCESS)
}

/// A human summary of `GET /status`.
pub fn render_status(v: &Value) -> String {
    let mut out = String::new();
    let pct = |v: &Value| pct_or_dash(v.as_f64());
    let ms = |v: &Value| ms_or_dash(v.as_f64());
    out.push_str(&format!(
        "phase {}  weight {}%  step {}\n",
        v["phase"].as_str().unwrap_or("?"),
        v["weight"],
        // No step outside canary (`null` in the JSON).
        if v["step"].is_null() {
            "-".to_owned()
        } else {
            v["step"].to_string()
        }
    ));
    let window = &v["cumulative"];
    out.push_str(&format!(
        "comparisons {}  match rate {}\n",
        window["comparisons"]["compared"],
        pct(&window["comparisons"]["match_rate"])
    ));
    for backend in ["stable", "candidate"] {
        let b = &window[backend]["total"];
        out.push_str(&format!(
            "{backend:<10} requests {:>8}  errors {:>6}  p50 {:>9}  p90 {:>9}  p99 {:>9}\n",
            b["requests"],
            b["errors"],
            ms(&b["p50_ms"]),
            ms(&b["p90_ms"]),
            ms(&b["p99_ms"])
        ));
    }
    let fleet = &v["fleet"];
    if fleet.is_object() {
        let window = &fleet["window"];
        out.push_str(&format!(
            "fleet: replica {}  leader {}{}  {} replicas  etcd {}  fleet-wide window {}\n",
            fleet["replica_id"].as_str().unwrap_or("?"),
            fleet["leader"].as_str().unwrap_or("none"),
            if fleet["is_leader"] == true {
                " (this one)"
            } else {
                ""
            },
            fleet["replicas"].as_array().map_or(0, Vec::len),
            if fleet["connected"] == true {
                "connected"
            } else {
                "UNREACHABLE (last weight kept)"
            },
            match window["fleet_wide"].as_bool() {
                Some(true) => format!("yes ({} requests)", window["candidate_requests"]),
                Some(false) => "no (replicas catching up)".into(),
                None => "-".into(),
            },
        ));
    }
    if let Some(last) = v["decisions"].as_array().and_then(|d| d.last()) {
        out.push_str(&format!(
            "last decision: {} — {}\n",
            last["verdict"].as_str().unwrap_or("?"),
            last["action"].as_str().unwrap_or("")
        ));
        if let Some(reasons) = last["reasons"].as_array() {
            for reason in reasons {
                out.push_str(&format!("  - {}\n", reason.as_str().unwrap_or("")));
            }
        }
    }
    if let Some(checks) = v["current"]["checks"].as_array() {
        out.push_str(&format!(
            "now: {}\n",
            v["current"]["verdict"].as_str().unwrap_or("?")
        ));
        for c in checks {
            out.push_str(&format!(
                "  {:<9} {:<5} {}\n",
                c["criterion"].as_str().unwrap_or("?"),
                c["verdict"].as_str().unwrap_or("?"),
                c["reason"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// One JSON request to the admin API.
pub async fn admin_call(
    admin: &str,
    method: Method,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> Result<Value, CliError> {
    let url = format!("{}{}", admin.trim_end_matches('/'), path);
    let fail = |message: String| CliError::Admin {
        url: url.clone(),
        message,
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| fail(format!("invalid request: {e}")))?;
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
            .await
            .map_err(|_| fail("no answer within 10s".into()))?
            .map_err(|e| {
                fail(format!(
                    "cannot connect ({e}); is understudy running with this admin address?"
                ))
            })?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status != StatusCode::OK {
        let message = value["error"].as_str().unwrap_or("request failed");
        return Err(fail(format!("{status}: {message}")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::render_status;
    use serde_json::json;

    #[test]
    fn the_summary_names_the_fleet_leader_and_whether_etcd_is_reachable() {
        let status = json!({
            "phase": "canary", "weight": 25.0, "step": 1,
            "fleet": {
                "replica_id": "r1", "leader": "r2", "is_leader": false, "connected": false,
                "replicas": [{"id": "r1"}, {"id": "r2"}, {"id": "r3"}],
                "window": {"fleet_wide": true, "candidate_requests": 60}
            }
        });
        let text = render_status(&status);
        assert!(
            text.contains("fleet: replica r1  leader r2  3 replicas"),
            "{text}"
        );
        assert!(text.contains("UNREACHABLE"), "{text}");
        assert!(text.contains("yes (60 requests)"), "{text}");
        assert!(!render_status(&json!({"phase": "shadow"})).contains("fleet"));
    }

    #[test]
    fn the_summary_prints_every_current_check_while_it_holds() {
        let status = json!({
            "phase": "shadow", "weight": 0.0,
            "current": {"verdict": "hold", "checks": [
                {"criterion": "interval", "verdict": "pass", "reason": "interval: 61s in step >= 60s"},
                {"criterion": "latency", "verdict": "hold", "reason": "latency: need 500 latency samples"}
            ]}
        });
        let text = render_status(&status);
        assert!(
            text.starts_with("phase shadow  weight 0.0%  step -\n"),
            "{text}"
        );
        assert!(text.contains("now: hold"), "{text}");
        assert!(
            text.contains("  interval  pass  interval: 61s in step >= 60s"),
            "{text}"
        );
        assert!(
            text.contains("  latency   hold  latency: need 500"),
            "{text}"
        );
    }
}
