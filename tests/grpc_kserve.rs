//! KServe V2 gRPC through the proxy against real KServe model servers: each
//! backend is `tests/support/kserve_model.py`, a Python `kserve.ModelServer`
//! started as its own process on free loopback ports, answering
//! `/inference.GRPCInferenceService/ModelInfer` with its own `model_version`.
//! The client sends prost-encoded `ModelInferRequest`s over h2c; the proxy
//! compares the answers under `preset = "kserve-v2"`.
//!
//! Needs a Python with the `kserve` package: `UNDERSTUDY_KSERVE_PYTHON`, else
//! `python3` if it can `import kserve`. Without one the tests say so loudly
//! and pass, except under CI (`CI` set), where they fail.

mod support;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde_json::Value;
use support::{h2c_client, harness};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use understudy::compare::v2_proto::{InferInputTensor, InferTensorContents, ModelInferRequest};

const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
const WAIT: Duration = Duration::from_secs(20);
/// A model server imports numpy, FastAPI and grpcio before it listens.
const STARTUP: Duration = Duration::from_secs(90);
const BATCH: i64 = 4;

/// The Python to run the model servers with, or `None` (after a message no
/// one can miss) when there is none outside CI. Under CI a missing `kserve`
/// fails the test, so the suite cannot pass by not running.
fn kserve_python(test: &str) -> Option<PathBuf> {
    let chosen = std::env::var_os("UNDERSTUDY_KSERVE_PYTHON").map(PathBuf::from);
    let python = chosen.clone().unwrap_or_else(|| PathBuf::from("python3"));
    let imports = std::process::Command::new(&python)
        .args(["-c", "import kserve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if imports {
        return Some(python);
    }
    let what = match chosen {
        Some(p) => format!(
            "UNDERSTUDY_KSERVE_PYTHON={} cannot import kserve",
            p.display()
        ),
        None => "python3 cannot import kserve and UNDERSTUDY_KSERVE_PYTHON is not set".into(),
    };
    if std::env::var_os("CI").is_some() {
        panic!("{what}, and CI is set: .ci/run installs kserve==0.21.0 into a venv");
    }
    eprintln!(
        "\n********************************************************************\n\
         SKIPPED {test}: {what}.\n\
         (python3 -m venv DIR && DIR/bin/pip install kserve==0.21.0, then\n\
         UNDERSTUDY_KSERVE_PYTHON=DIR/bin/python.) Under CI this test fails instead.\n\
         ********************************************************************\n"
    );
    None
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// One model server process; killed when dropped.
struct ModelServer {
    grpc_port: u16,
    _child: Child,
}

impl ModelServer {
    /// Starts `kserve_model.py` with `version` and `variant` and waits until
    /// its gRPC port accepts connections.
    async fn start(python: &Path, version: &str, variant: &str) -> ModelServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kserve_model.py");
        let (grpc_port, http_port) = (free_port(), free_port());
        let mut child = Command::new(python)
            .arg(&script)
            .args([
                &grpc_port.to_string(),
                &http_port.to_string(),
                version,
                variant,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} {}: {e}", python.display(), script.display()));
        // Drained all along, so a chatty server never blocks on a full pipe;
        // kept to explain a server that never gets ready.
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let ready = tokio::time::timeout(STARTUP, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "ready" {
                    return true;
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            panic!(
                "model server {version}/{variant} not ready within {STARTUP:?}:\n{}",
                log.lock().unwrap()
            );
        }
        ModelServer {
            grpc_port,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }
}

async fn start_proxy(stable: &ModelServer, candidate: &ModelServer, mode: &str) -> harness::Proxy {
    let text = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n\
         [admin]\naddr = \"127.0.0.1:0\"\n\n\
         [backends.stable]\nurl = \"{}\"\ntimeout = \"10s\"\nhttp2 = true\n\n\
         [backends.candidate]\nurl = \"{}\"\ntimeout = \"10s\"\nhttp2 = true\n\n\
         [compare]\npreset = \"kserve-v2\"\nmode = \"{mode}\"\n",
        stable.url(),
        candidate.url()
    );
    harness::start_text(&text).await
}

/// One `ModelInfer` call through the proxy, with a batch of `BATCH` rows;
/// returns the `grpc-status` of its trailers and the answer's bytes.
async fn infer(proxy: &harness::Proxy, id: &str) -> (Option<String>, Bytes) {
    let request = ModelInferRequest {
        model_name: "classifier".into(),
        id: id.into(),
        inputs: vec![InferInputTensor {
            name: "features".into(),
            datatype: "FP32".into(),
            shape: vec![BATCH, 2],
            contents: Some(InferTensorContents {
                fp32_contents: vec![0.5; 2 * BATCH as usize],
                ..InferTensorContents::default()
            }),
            ..InferInputTensor::default()
        }],
        ..ModelInferRequest::default()
    };
    let message = request.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    let call = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{MODEL_INFER}", proxy.url))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame.freeze()))
        .unwrap();
    let response = h2c_client().request(call).await.expect("ModelInfer call");
    let collected = response.into_body().collect().await.expect("answer body");
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, collected.to_bytes())
}

/// Waits until `n` pairs were compared, then returns the outcome counts.
async fn outcomes(proxy: &harness::Proxy, n: u64) -> Value {
    let status = proxy
        .wait_status(WAIT, |s| {
            s["cumulative"]["comparisons"]["outcomes"]
                .as_object()
                .is_some_and(|o| o.values().filter_map(Value::as_u64).sum::<u64>() >= n)
        })
        .await;
    status["cumulative"]["comparisons"]["outcomes"].clone()
}

/// Typed and raw answers of two versions match; a candidate whose row 2
/// favours another class mismatches there, named by output and row, in
/// value and in argmax mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_grpc_answers_compare_by_output_and_row() {
    let Some(python) = kserve_python("kserve_grpc_answers_compare_by_output_and_row") else {
        return;
    };
    let (stable, same, differ) = tokio::join!(
        ModelServer::start(&python, "1", "typed"),
        ModelServer::start(&python, "2", "raw"),
        ModelServer::start(&python, "2", "differ"),
    );

    // Same outputs, other model_version, raw rather than typed contents.
    let proxy = start_proxy(&stable, &same, "value").await;
    for i in 0..3 {
        let (status, body) = infer(&proxy, &format!("same-{i}")).await;
        assert_eq!(status.as_deref(), Some("0"), "served answer {body:?}");
        assert!(body.len() > 5, "served answer carries a message");
    }
    let counted = outcomes(&proxy, 3).await;
    assert_eq!(counted["match"], 3, "{counted}");
    // Two outputs of BATCH rows each, per pair.
    assert_eq!(elements(&proxy).await, (3.0 * 2.0 * BATCH as f64, 0.0));
    proxy.stop().await;

    let proxy = start_proxy(&stable, &differ, "value").await;
    let (status, _) = infer(&proxy, "differ").await;
    assert_eq!(status.as_deref(), Some("0"));
    let counted = outcomes(&proxy, 1).await;
    assert_eq!(counted["mismatch"], 1, "{counted}");
    let mismatches = proxy.mismatches().await;
    let m = &mismatches["mismatches"][0];
    assert_eq!(m["path"], MODEL_INFER, "{mismatches}");
    assert_eq!(m["output"], "probabilities", "{mismatches}");
    assert_eq!(m["row"], 2, "{mismatches}");
    assert_eq!(m["pointer"], "/outputs/0/data/6", "{mismatches}");
    assert_eq!(m["stable"], f32_text(0.1), "{mismatches}");
    assert_eq!(m["candidate"], f32_text(0.7), "{mismatches}");
    proxy.stop().await;

    let proxy = start_proxy(&stable, &differ, "argmax").await;
    infer(&proxy, "differ-argmax").await;
    outcomes(&proxy, 1).await;
    let mismatches = proxy.mismatches().await;
    let m = &mismatches["mismatches"][0];
    assert_eq!(
        (&m["output"], &m["row"]),
        (&"probabilities".into(), &2.into())
    );
    assert_eq!(
        m["stable"],
        format!("label=2 score={}", f32_text(0.8)),
        "{m}"
    );
    assert_eq!(
        m["candidate"],
        format!("label=0 score={}", f32_text(0.7)),
        "{m}"
    );
    // probabilities: 3 of 4 rows agree; label: rows of one value, 3 of 4.
    assert_eq!(elements(&proxy).await, (6.0, 2.0));
    proxy.stop().await;
}

/// Rows counted as matching and as mismatching, from `/metrics`.
async fn elements(proxy: &harness::Proxy) -> (f64, f64) {
    let metrics = proxy.metrics().await;
    let count = |result: &str| {
        let series = format!(r#"understudy_prediction_elements_total{{result="{result}"}}"#);
        harness::metric(&metrics, &series).unwrap_or_else(|| panic!("{series} in {metrics}"))
    };
    (count("match"), count("mismatch"))
}

/// How a float32 score reads once widened to f64.
fn f32_text(x: f32) -> String {
    f64::from(x).to_string()
}
