//! A model server that does not agree with itself: fake backends whose
//! answers carry a label drawn at random per request (seeded) and an id
//! that is new in every answer, for the noise-floor tests.
//!
//! Stable answers label "a" with probability [`STABLE_A`], so two of its
//! answers to the same request agree with probability
//! 0.89² + 0.11² ≈ 80.4%. A candidate answering "a" with probability `q`
//! agrees with stable with probability 0.11 + 0.78 q: 78.1% at
//! [`CLOSE_A`], 60.1% at [`FAR_A`].

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{FakeUpstream, Reply};

pub const STABLE_A: f64 = 0.89;
/// A candidate agreeing with stable about 78% of the time.
pub const CLOSE_A: f64 = 0.86;
/// A candidate agreeing with stable about 60% of the time.
pub const FAR_A: f64 = 0.63;

/// Queues `n` answers on `upstream`, each `{"id": …, "label": "a"|"b"}`
/// with label "a" at probability `p_a`, drawn from `seed`.
pub fn enqueue(upstream: &FakeUpstream, n: usize, p_a: f64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 0..n {
        let label = if rng.random::<f64>() < p_a { "a" } else { "b" };
        let id: u64 = rng.random();
        let body = format!(r#"{{"id":"{id:016x}-{i}","label":"{label}","model":"m"}}"#);
        upstream.enqueue(Reply::json(200, body));
    }
}
