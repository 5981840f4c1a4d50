//! The toy iris "model": a deterministic three-leaf decision rule plus a
//! hash-based, reproducible way to disagree with it, and helpers to build
//! feature rows and request bodies.
//!
//! Everything here is pure (no I/O, no clocks, no global randomness) so the
//! demo and tests can predict exactly what a toy server will answer. It must
//! never depend on anything but the row's feature values: two servers with the
//! same `disagree_rate` must give identical answers for identical input bytes.

use rand::Rng;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Number of features per row (sepal length, sepal width, petal length, petal width).
pub const FEATURES: usize = 4;
/// Number of classes (setosa, versicolor, virginica).
pub const CLASSES: usize = 3;

/// Fixed seed so the disagreement pattern is stable across processes and
/// releases; changing it would silently change every demo's numbers.
const DISAGREE_SEED: u64 = 0x7573_7475_6479_0001;

/// Petal-length thresholds of the "decision tree": `< 2.5` setosa, `< 4.9`
/// versicolor, otherwise virginica (roughly what a depth-2 tree learns).
const SETOSA_MAX: f64 = 2.5;
const VERSICOLOR_MAX: f64 = 4.9;

/// The reference label for one row: the rule every toy model agrees on.
pub fn rule_label(row: &[f64; FEATURES]) -> i64 {
    let petal_length = row[2];
    if petal_length < SETOSA_MAX {
        0
    } else if petal_length < VERSICOLOR_MAX {
        1
    } else {
        2
    }
}

/// Stable 64-bit hash of a row's exact feature bits (little-endian f64s).
pub fn row_hash(row: &[f64; FEATURES]) -> u64 {
    let mut bytes = [0u8; FEATURES * 8];
    for (chunk, value) in bytes.chunks_exact_mut(8).zip(row) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    xxh3_64_with_seed(&bytes, DISAGREE_SEED)
}

/// Whether a model configured with `disagree_rate` deviates from the rule on
/// this row. Rows are ranked by hash, so the set of disagreeing rows at a
/// lower rate is a subset of the set at any higher rate.
pub fn disagrees(row: &[f64; FEATURES], disagree_rate: f64) -> bool {
    if disagree_rate <= 0.0 {
        return false;
    }
    // Top 53 bits give a uniform value in [0, 1) with full f64 precision.
    let unit = (row_hash(row) >> 11) as f64 / (1u64 << 53) as f64;
    unit < disagree_rate
}

/// The label a model with `disagree_rate` answers for this row.
pub fn predict(row: &[f64; FEATURES], disagree_rate: f64) -> i64 {
    let label = rule_label(row);
    if disagrees(row, disagree_rate) {
        // Pick one of the two other classes, also from the hash, so every
        // disagreeing model makes the *same* mistake on the same row.
        let shift = 1 + (row_hash(row) & 1) as i64;
        (label + shift) % CLASSES as i64
    } else {
        label
    }
}

/// Class probabilities for a row whose answered label is `label`. Rows sum to
/// 1 and `label` is always the strict argmax; confidence grows with the
/// distance of petal length from the decision thresholds.
pub fn proba(row: &[f64; FEATURES], label: i64) -> [f64; CLASSES] {
    let petal_length = row[2];
    let margin = match label {
        0 => SETOSA_MAX - petal_length,
        1 => (petal_length - SETOSA_MAX).min(VERSICOLOR_MAX - petal_length),
        _ => petal_length - VERSICOLOR_MAX,
    }
    .max(0.0);
    // In [0.55, 0.95): always more than the 0.45 left for the other two.
    let confidence = 0.55 + 0.4 * (1.0 - (-2.0 * margin).exp());
    let rest = 1.0 - confidence;
    let label = label.rem_euclid(CLASSES as i64) as usize;
    let mut probs = [0.0; CLASSES];
    probs[(label + 1) % CLASSES] = rest * 0.65;
    probs[(label + 2) % CLASSES] = rest * 0.35;
    probs[label] = 1.0 - probs[(label + 1) % CLASSES] - probs[(label + 2) % CLASSES];
    probs
}

/// Per-class feature ranges (min, max) loosely following Fisher's data, each
/// inside the global ranges: SL 4.3–7.9, SW 2.0–4.4, PL 1.0–6.9, PW 0.1–2.5.
const CLASS_RANGES: [[(f64, f64); FEATURES]; CLASSES] = [
    [(4.3, 5.8), (2.3, 4.4), (1.0, 1.9), (0.1, 0.6)],
    [(4.9, 7.0), (2.0, 3.4), (3.0, 5.1), (1.0, 1.8)],
    [(4.9, 7.9), (2.2, 3.8), (4.5, 6.9), (1.4, 2.5)],
];

/// Plausible iris rows: a class is drawn uniformly, then each feature
/// uniformly within that class's range, rounded to one decimal like the real
/// dataset (so rows survive a JSON round trip bit-for-bit).
pub fn random_rows<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<[f64; FEATURES]> {
    (0..n)
        .map(|_| {
            let ranges = &CLASS_RANGES[rng.random_range(0..CLASSES)];
            let mut row = [0.0; FEATURES];
            for (value, &(lo, hi)) in row.iter_mut().zip(ranges) {
                *value = (rng.random_range(lo..=hi) * 10.0).round() / 10.0;
            }
            row
        })
        .collect()
}

/// A KServe V2 infer request body for `rows` (FP64, shape `[N, 4]`).
pub fn infer_body(rows: &[[f64; FEATURES]], id: &str) -> String {
    let data: Vec<f64> = rows.iter().flatten().copied().collect();
    serde_json::json!({
        "id": id,
        "inputs": [{
            "name": "predict",
            "shape": [rows.len(), FEATURES],
            "datatype": "FP64",
            "data": data,
        }],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn rule_follows_petal_length_thresholds() {
        assert_eq!(rule_label(&[5.1, 3.5, 1.4, 0.2]), 0);
        assert_eq!(rule_label(&[6.4, 3.2, 4.5, 1.5]), 1);
        assert_eq!(rule_label(&[6.3, 3.3, 6.0, 2.5]), 2);
        assert_eq!(
            rule_label(&[0.0, 0.0, 2.5, 0.0]),
            1,
            "threshold is exclusive"
        );
        assert_eq!(rule_label(&[0.0, 0.0, 4.9, 0.0]), 2);
    }

    #[test]
    fn disagreement_rate_is_close_to_configured_and_deterministic() {
        let rows = random_rows(&mut SmallRng::seed_from_u64(7), 10_000);
        for rate in [0.0, 0.05, 0.2, 0.5, 1.0] {
            let flipped = rows
                .iter()
                .filter(|row| predict(row, rate) != rule_label(row))
                .count() as f64
                / rows.len() as f64;
            assert!(
                (flipped - rate).abs() < 0.02,
                "rate {rate}: observed {flipped}"
            );
        }
        // Same rate, same rows → same answers; lower rate flips a subset.
        for row in &rows {
            assert_eq!(predict(row, 0.2), predict(row, 0.2));
            if disagrees(row, 0.05) {
                assert!(disagrees(row, 0.2));
            }
        }
    }

    #[test]
    fn proba_rows_sum_to_one_with_label_as_argmax() {
        let rows = random_rows(&mut SmallRng::seed_from_u64(11), 2_000);
        for row in &rows {
            for label in 0..CLASSES as i64 {
                let p = proba(row, label);
                assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
                let best = (0..CLASSES).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
                assert_eq!(best as i64, label, "{row:?} {p:?}");
            }
        }
    }

    #[test]
    fn random_rows_stay_in_iris_ranges_and_cover_all_classes() {
        let rows = random_rows(&mut SmallRng::seed_from_u64(3), 3_000);
        let mut per_class = [0usize; CLASSES];
        for row in &rows {
            assert!((4.3..=7.9).contains(&row[0]) && (2.0..=4.4).contains(&row[1]));
            assert!((1.0..=6.9).contains(&row[2]) && (0.1..=2.5).contains(&row[3]));
            per_class[rule_label(row) as usize] += 1;
        }
        assert!(per_class.iter().all(|&n| n > 500), "{per_class:?}");
    }

    #[test]
    fn infer_body_is_v2_shaped() {
        let body: serde_json::Value =
            serde_json::from_str(&infer_body(&[[1.0, 2.0, 3.0, 4.0]], "r1")).unwrap();
        assert_eq!(body["id"], "r1");
        assert_eq!(body["inputs"][0]["shape"], serde_json::json!([1, 4]));
        assert_eq!(
            body["inputs"][0]["data"],
            serde_json::json!([1.0, 2.0, 3.0, 4.0])
        );
    }
}
