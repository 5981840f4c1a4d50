//! ML-sized model answers for benchmarks, generated rather than checked in:
//! an OpenAI embeddings answer (32 vectors of 1,536 floats, about 512 KB)
//! and a KServe V2 answer with one FP32 output of shape [64, 1000] (about
//! 633 KB). The same seed always gives the same bytes.
//!
//! A candidate's answer is the stable one with every value nudged by a
//! relative 1e-6: what a retrained or re-quantised model answers, within the
//! default tolerances (and the same argmax labels and cosine 1.0), but never
//! byte-identical, so a benchmark measures a real comparison rather than
//! the identical-bytes shortcut.

use std::fmt::Write;

/// Which model answer to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// OpenAI `/v1/embeddings`: 32 items of 1,536 floats.
    Embeddings,
    /// KServe V2 `/v2/models/m/infer`: one FP32 output of shape [64, 1000].
    KserveV2,
}

impl Payload {
    /// The spelling used on command lines: "embeddings" or "kserve".
    pub fn parse(name: &str) -> Option<Payload> {
        match name {
            "embeddings" => Some(Payload::Embeddings),
            "kserve" => Some(Payload::KserveV2),
            _ => None,
        }
    }

    /// The answer's JSON; `candidate` nudges every value (see the module doc).
    pub fn body(self, candidate: bool) -> Vec<u8> {
        let mut rng = SplitMix(0x5eed_0f_a11_5eed);
        let nudge = if candidate { 1.0 + 1e-6 } else { 1.0 };
        let mut out = String::new();
        match self {
            Payload::Embeddings => {
                out.push_str(r#"{"object":"list","data":["#);
                for item in 0..32 {
                    if item > 0 {
                        out.push(',');
                    }
                    write!(
                        out,
                        r#"{{"object":"embedding","index":{item},"embedding":["#
                    )
                    .unwrap();
                    numbers(&mut out, &mut rng, 1536, nudge, |u| u * 0.2 - 0.1);
                    out.push_str("]}");
                }
                out.push_str(
                    r#"],"model":"text-embedding-3-small","usage":{"prompt_tokens":256,"total_tokens":256}}"#,
                );
            }
            Payload::KserveV2 => {
                out.push_str(
                    r#"{"model_name":"m","model_version":"1","id":"bench","outputs":[{"name":"probabilities","shape":[64,1000],"datatype":"FP32","data":["#,
                );
                numbers(&mut out, &mut rng, 64 * 1000, nudge, |u| u);
                out.push_str("]}]}");
            }
        }
        out.into_bytes()
    }
}

/// Writes `count` comma-separated values `shape(u) * nudge`, u uniform in [0, 1),
/// to seven decimals, about the precision a float32 model server prints.
fn numbers(out: &mut String, rng: &mut SplitMix, count: usize, nudge: f64, shape: fn(f64) -> f64) {
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        let value = shape(rng.unit()) * nudge;
        write!(out, "{value:.7}").unwrap();
    }
}

/// SplitMix64: a tiny seeded generator, so the payload needs no RNG crate
/// and is the same on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
