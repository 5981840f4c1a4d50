//! Micro-benchmarks of the per-request work: comparing a KServe V2
//! response (one row and a 100-row batch) and the split decision.
//! Run: `cargo bench --bench micro`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use understudy::compare::{Comparator, CompareSpec, Observed, Preset};
use understudy::split;

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

fn split_decision(c: &mut Criterion) {
    c.bench_function("split_random_draw", |b| {
        b.iter(|| split::choose(black_box(500), None))
    });
    c.bench_function("split_sticky_key", |b| {
        b.iter(|| split::choose(black_box(500), Some(black_box(b"user-12345".as_slice()))))
    });
}

criterion_group!(benches, compare, split_decision);
criterion_main!(benches);
