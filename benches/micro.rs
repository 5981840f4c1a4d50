//! Micro-benchmarks of the per-request work: comparing a KServe V2
//! response (one row and a 100-row batch), the split decision, recording a
//! latency sample, the mirror hand-off (taking and returning a slot;
//! spawning a mirror and running it to its end), the header work on a
//! request and response head (refusal checks, rewriting), and comparing
//! ML-sized answers (OpenAI embeddings 32 x 1536, KServe V2 [64, 1000])
//! beside parsing the same two bodies into `serde_json::Value`, in bytes per
//! second.
//! Run: `cargo bench --bench micro` (`-- compare_ml` for the ML-sized group only).

// Shared with other benchmarks, which use parts this one does not.
#[allow(dead_code, clippy::unusual_byte_groupings)]
#[path = "support/payloads.rs"]
mod payloads;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use payloads::Payload;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use understudy::budget::ByteBudget;
use understudy::compare::{Comparator, CompareSpec, Mode, Observed, Outcome, Preset};
use understudy::config::{self, ComparePriority};
use understudy::mirror::compare_pool::ComparePool;
use understudy::mirror::{Mirror, MirrorJob, Pending};
use understudy::split::{self, Backend};
use understudy::stats::{Event, Role};
use understudy::telemetry::Metrics;
use understudy::upstream::Upstream;

fn kserve_response(rows: usize, version: &str) -> Vec<u8> {
    let data: Vec<String> = (0..rows * 3)
        .map(|i| format!("{}", (i % 7) as f64 / 7.0))
        .collect();
    format!(
        r#"{{"model_name":"iris","model_version":"{version}","id":"req-1","parameters":{{}},"outputs":[{{"name":"predict_proba","shape":[{rows},3],"datatype":"FP64","parameters":{{"content_type":"np"}},"data":[{}]}}]}}"#,
        data.join(",")
    )
    .into_bytes()
}

fn compare(c: &mut Criterion) {
    let comparator = Comparator::new(&CompareSpec {
        preset: Some(Preset::KserveV2),
        ..CompareSpec::default()
    })
    .expect("valid spec");
    for rows in [1, 100] {
        let stable = kserve_response(rows, "v1");
        let candidate = kserve_response(rows, "v2");
        c.bench_function(&format!("compare_kserve_v2_{rows}_rows"), |b| {
            b.iter(|| {
                comparator.compare(
                    black_box(&Observed::Response {
                        status: 200,
                        body: &stable,
                        truncated: false,
                    }),
                    black_box(&Observed::Response {
                        status: 200,
                        body: &candidate,
                        truncated: false,
                    }),
                )
            })
        });
    }
}

/// ML-sized answers: the comparison (and the reference tree path) of a stable body
/// with its nudged candidate, with itself (byte-identical), and with only `/model`
/// compared, beside `serde_json::from_slice::<Value>` of the same two bodies. Every
/// case has `Throughput::Bytes` of both bodies, so the MB/s compare directly.
fn compare_ml(c: &mut Criterion) {
    let spec = |preset, mode, pointer: Option<&str>| {
        Comparator::new(&CompareSpec {
            preset,
            mode,
            pointer: pointer.map(str::to_owned),
            ..CompareSpec::default()
        })
        .expect("valid spec")
    };
    let cases = [
        (
            "embeddings",
            Payload::Embeddings,
            spec(Some(Preset::Openai), None, None),
        ),
        (
            "kserve",
            Payload::KserveV2,
            spec(Some(Preset::KserveV2), Some(Mode::Argmax), None),
        ),
    ];
    let mut group = c.benchmark_group("compare_ml");
    group.sample_size(20);
    for (name, payload, comparator) in cases {
        let stable = payload.body(false);
        let candidate = payload.body(true);
        let model = spec(None, None, Some("/model"));
        let pairs = [
            ("nudged", &stable, &candidate, &comparator),
            ("identical", &stable, &stable, &comparator),
            ("model_pointer", &stable, &candidate, &model),
        ];
        for (pair, s, cand, cmp) in pairs {
            if pair == "model_pointer" && payload != Payload::Embeddings {
                continue;
            }
            let observe = |body| Observed::Response {
                status: 200,
                body,
                truncated: false,
            };
            let (so, co) = (observe(s.as_slice()), observe(cand.as_slice()));
            let verdict = cmp.compare(&so, &co);
            assert_eq!(verdict, cmp.compare_reference(&so, &co), "{name}/{pair}");
            assert_eq!(verdict.outcome, Outcome::Match, "{name}/{pair}");
            group.throughput(Throughput::Bytes((s.len() + cand.len()) as u64));
            group.bench_function(format!("{name}/{pair}/compare"), |b| {
                b.iter(|| cmp.compare(black_box(&so), black_box(&co)))
            });
            group.bench_function(format!("{name}/{pair}/reference"), |b| {
                b.iter(|| cmp.compare_reference(black_box(&so), black_box(&co)))
            });
        }
        group.throughput(Throughput::Bytes((stable.len() + candidate.len()) as u64));
        group.bench_function(format!("{name}/value_parse"), |b| {
            b.iter(|| {
                let s: serde_json::Value =
                    serde_json::from_slice(black_box(&stable)).expect("valid JSON");
                let c: serde_json::Value =
                    serde_json::from_slice(black_box(&candidate)).expect("valid JSON");
                (s, c)
            })
        });
    }
    group.finish();
}

fn split_decision(c: &mut Criterion) {
    c.bench_function("split_random_draw", |b| {
        b.iter(|| split::choose(black_box(500), None))
    });
    c.bench_function("split_sticky_key", |b| {
        b.iter(|| split::choose(black_box(500), Some(black_box(b"user-12345".as_slice()))))
    });
}

/// The data path's side of stats: one `try_send` of a response event while
/// the stats task drains the queue on its own runtime thread, as in the proxy.
fn stats_record(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = Arc::new(Metrics::new());
    let (stats, task) = understudy::stats::channel(metrics, 10);
    let stop = CancellationToken::new();
    runtime.spawn(task.run(stop.clone()));
    c.bench_function("stats_record_response", |b| {
        b.iter(|| {
            stats.record(Event::Response {
                backend: Backend::Stable,
                role: Role::Serve,
                status: 200,
                latency: Duration::from_micros(black_box(1234)),
            })
        })
    });
    stop.cancel();
}

/// A current-thread runtime and a pool of 512 mirror slots on it, as one
/// data-plane worker has (the stats task is kept but not run).
fn mirror_pool() -> (
    tokio::runtime::Runtime,
    Mirror,
    understudy::stats::StatsTask,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (stats, task) = understudy::stats::channel(Arc::new(Metrics::new()), 10);
    let budget = ByteBudget::new(64 << 20);
    let pool = ComparePool::start(1, 64, ComparePriority::Normal);
    let mirror = runtime.block_on(async { Mirror::new(512, budget, pool, stats) });
    (runtime, mirror, task)
}

/// Taking a mirror slot and giving it back (the bound on shadow work).
fn mirror_handoff(c: &mut Criterion) {
    let (_runtime, mirror, _stats_task) = mirror_pool();
    c.bench_function("mirror_reserve_slot", |b| {
        b.iter(|| black_box(mirror.try_reserve()))
    });
}

/// The data path's whole hand-off of one mirror: take a slot, build the job,
/// spawn the mirror task, and let it run to its end. The request body never
/// arrives here (its sender is dropped), so the mirror ends at its first
/// step without any shadow I/O: what is measured is what every mirror costs
/// before it reaches the network.
fn mirror_spawn(c: &mut Criterion) {
    let (runtime, mirror, _stats_task) = mirror_pool();
    let target = Arc::new(
        Upstream::new(&config::Backend {
            name: "candidate",
            url: "http://127.0.0.1:9".parse().expect("url"),
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            http2: false,
            pool_max_idle: 8,
            max_connections: 256,
            ca: None,
            client_cert: None,
        })
        .expect("upstream"),
    );
    let comparator = Arc::new(Comparator::new(&CompareSpec::default()).expect("valid spec"));
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().expect("value"));
    c.bench_function("mirror_handoff_spawn", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let permit = mirror.try_reserve().expect("a free slot");
                    let (body_tx, request_body) = oneshot::channel();
                    let (served_tx, served) = oneshot::channel();
                    drop((body_tx, served_tx));
                    let job = MirrorJob {
                        request_id: http::HeaderValue::from_static("bench-1"),
                        method: http::Method::POST,
                        path_and_query: Some(http::uri::PathAndQuery::from_static(
                            "/v1/models/m:predict",
                        )),
                        headers: headers.clone(),
                        serving: Backend::Stable,
                        target: target.clone(),
                        comparator: comparator.clone(),
                        max_body_bytes: 1 << 20,
                        timeout: Duration::from_secs(5),
                        served_timeout: Duration::from_secs(35),
                        reservation: mirror.budget().reservation(),
                        noise: None,
                    };
                    mirror.spawn(
                        job,
                        Pending {
                            request_body,
                            served,
                        },
                        permit,
                    );
                    // Lets the mirror task run (and end) before the next one.
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
        })
    });
    assert_eq!(mirror.in_flight(512), 0, "every mirror ended");
}

/// A typical inference request head from an HTTP/1.1 client.
fn request_head() -> http::request::Parts {
    let (parts, ()) = http::Request::post("/v2/models/m/infer")
        .header("host", "api.example")
        .header("content-type", "application/json")
        .header("content-length", "512")
        .header("user-agent", "python-requests/2.32")
        .header("accept", "*/*")
        .header("x-request-id", "7f3a1c52-9b2e-4d0a-8c1f-3e5d6a7b8c9d")
        .body(())
        .unwrap()
        .into_parts();
    parts
}

fn head_work(c: &mut Criterion) {
    use criterion::BatchSize;
    use understudy::proxy::headers;
    let head = request_head();
    let peer = headers::ForwardedFor::new("10.1.2.3".parse().unwrap());
    c.bench_function("head_refuse_request", |b| {
        b.iter(|| black_box(headers::refuse_request(black_box(&head))))
    });
    c.bench_function("head_prepare_request", |b| {
        b.iter_batched(
            || head.headers.clone(),
            |mut h| {
                headers::prepare_request(&mut h, &peer, "http", None);
                h.insert(
                    headers::X_REQUEST_ID.clone(),
                    http::HeaderValue::from_static("7f3a"),
                );
                h
            },
            BatchSize::SmallInput,
        )
    });
    let (response, ()) = http::Response::builder()
        .header("content-type", "application/json")
        .header("content-length", "4096")
        .header("date", "Thu, 27 Nov 2026 09:12:01 GMT")
        .body(())
        .unwrap()
        .into_parts();
    c.bench_function("head_prepare_response", |b| {
        b.iter_batched(
            || http::Response::from_parts(response.clone(), ()),
            |mut r| {
                black_box(headers::unforwardable(&r));
                headers::prepare_response(r.headers_mut());
                r
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    compare,
    compare_ml,
    split_decision,
    stats_record,
    mirror_handoff,
    mirror_spawn,
    head_work
);
criterion_main!(benches);
