//! Generators for the property test in `tests_prop`: JSON documents kept as text
//! pieces (so that number spellings, whitespace, duplicate and escaped keys are
//! chosen), shaped like KServe V2, OpenAI and TF Serving answers or random, their
//! perturbed candidates, byte-level damage, and comparison specs.
//!
//! Must stay deterministic: every choice comes from the seeded generator.

use rand::Rng;
use rand::rngs::StdRng;

use super::{CompareSpec, Mode, Preset};

/// A document kept as text pieces, so that spellings, duplicates and escapes are ours.
#[derive(Debug, Clone)]
pub(super) enum J {
    Lit(&'static str),
    Num(String),
    /// A JSON string literal, quotes included.
    Str(String),
    Arr(Vec<J>),
    /// Members with key literals (quotes included), in order, duplicates allowed.
    Obj(Vec<(String, J)>),
}

fn key(k: &str) -> String {
    format!("\"{k}\"")
}

fn obj(members: Vec<(&str, J)>) -> J {
    J::Obj(members.into_iter().map(|(k, v)| (key(k), v)).collect())
}

const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "1",
    "1.0",
    "1e0",
    "10E-1",
    "0.5e+1",
    "100",
    "1e2",
    "9007199254740992",
    "9007199254740993",
    "999999999999999",
    "1000000000000000",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1e400",
    "-1e400",
    "1e-400",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1.7976931348623159e308",
    "0e999999999999",
    "4.9e-324",
    "2.2250738585072014e-308",
    "1e22",
    "1e23",
    "0.1e310",
    "0.000001e311",
    "123456789012345678901234567890e-20",
    "0.30000000000000004",
];

const STRINGS: &[&str] = &[
    "\"\"",
    "\"a\"",
    "\"text-embedding-3-small\"",
    "\"caf\u{e9}\"",
    "\"\\u00e9\"",
    "\"\\ud83d\\ude00\"",
    "\"\u{1f600}\"",
    "\"tab\\tand\\\"quote\\\\\"",
    "\"AAAAPw==\"",
    "\"\\/\"",
    "\"probabilities\"",
    "\"\\u0070robabilities\"",
];

const KEYS: &[&str] = &[
    "a",
    "b",
    "data",
    "outputs",
    "predictions",
    "model",
    "id",
    "name",
    "shape",
    "embedding",
    "usage",
    "parameters",
    "\\u0064ata",
    "a/b",
    "m~n",
    "*",
    "0",
];

pub(super) struct Gen {
    pub(super) rng: StdRng,
}

impl Gen {
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub(super) fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())].clone()
    }

    /// A spelling of `v`: shortest, scientific, or an integer literal when integral.
    fn spell(&mut self, v: f64) -> String {
        match self.rng.random_range(0..5) {
            0 => format!("{v:e}"),
            1 => format!("{v:E}"),
            2 => format!("{v:.7}"),
            _ => format!("{v}"),
        }
    }

    fn number(&mut self) -> String {
        match self.rng.random_range(0..60) {
            0 => self.pick(EDGE_NUMBERS).to_owned(),
            1..=5 => self.rng.random_range(-1000..1000).to_string(),
            6..=10 => self.rng.random_range(0..4).to_string(),
            _ => {
                let v = self.rng.random_range(-1.0..1.0);
                self.spell(v)
            }
        }
    }

    fn numbers(&mut self, n: usize) -> Vec<J> {
        (0..n).map(|_| J::Num(self.number())).collect()
    }

    fn scalar(&mut self) -> J {
        match self.rng.random_range(0..6) {
            0 => J::Lit(self.pick(&["null", "true", "false"])),
            1 | 2 => J::Str(self.pick(STRINGS).to_owned()),
            _ => J::Num(self.number()),
        }
    }

    fn tree(&mut self, depth: u32) -> J {
        if depth == 0 || self.chance(0.3) {
            return self.scalar();
        }
        let n = self.rng.random_range(0..5);
        match self.rng.random_range(0..3) {
            0 => J::Arr(self.numbers(n)),
            1 => J::Arr((0..n).map(|_| self.tree(depth - 1)).collect()),
            _ => J::Obj(
                (0..n)
                    .map(|_| (key(self.pick(KEYS)), self.tree(depth - 1)))
                    .collect(),
            ),
        }
    }

    fn kserve(&mut self) -> J {
        let outputs = (0..self.rng.random_range(0..4))
            .map(|_| {
                let rank = self.rng.random_range(0..4);
                let dims: Vec<usize> = (0..rank).map(|_| self.rng.random_range(0..4)).collect();
                let mut len: usize = dims.iter().product();
                if self.chance(0.1) {
                    len += 1; // malformed: data does not fit the shape
                }
                let mut shape: Vec<J> = dims.iter().map(|d| J::Num(d.to_string())).collect();
                if self.chance(0.05) && !shape.is_empty() {
                    shape[0] = J::Num(self.pick(&["2.0", "-1", "1e0", "-0"]).to_owned());
                }
                let data = match self.rng.random_range(0..12) {
                    0 => J::Arr((0..len).map(|_| self.scalar()).collect()),
                    1 => self.tree(2),
                    _ => J::Arr(self.numbers(len)),
                };
                let name = match self.rng.random_range(0..8) {
                    0 => J::Num("5".into()),
                    1 => J::Str("\"\\u0070robabilities\"".into()),
                    _ => J::Str(
                        self.pick(&["\"probabilities\"", "\"logits\"", "\"b\""])
                            .into(),
                    ),
                };
                let mut m = vec![
                    ("name", name),
                    ("shape", J::Arr(shape)),
                    ("datatype", J::Str("\"FP32\"".into())),
                    ("data", data),
                ];
                if self.chance(0.2) {
                    m.push(("parameters", self.tree(1)));
                }
                if self.chance(0.1) {
                    m.remove(self.rng.random_range(0..m.len()));
                }
                obj(m)
            })
            .collect();
        obj(vec![
            ("model_name", J::Str("\"m\"".into())),
            ("id", J::Str(self.pick(STRINGS).to_owned())),
            ("outputs", J::Arr(outputs)),
        ])
    }

    fn openai(&mut self) -> J {
        let dim = self.rng.random_range(0..6);
        let items = (0..self.rng.random_range(0..4))
            .map(|i| {
                let embedding = match self.rng.random_range(0..10) {
                    0 => J::Str("\"AAAAPw==\"".into()),
                    1 => self.tree(2),
                    _ => J::Arr(self.numbers(dim)),
                };
                let mut m = vec![
                    ("object", J::Str("\"embedding\"".into())),
                    ("index", J::Num(i.to_string())),
                    ("embedding", embedding),
                ];
                if self.chance(0.1) {
                    m.pop();
                }
                obj(m)
            })
            .collect();
        obj(vec![
            ("object", J::Str("\"list\"".into())),
            ("data", J::Arr(items)),
            ("model", J::Str(self.pick(STRINGS).to_owned())),
            ("usage", self.tree(1)),
        ])
    }

    fn tf_serving(&mut self) -> J {
        let width = self.rng.random_range(1..5);
        let rows = (0..self.rng.random_range(0..5))
            .map(|_| match self.rng.random_range(0..6) {
                0 => J::Num(self.number()),
                1 => self.tree(2),
                _ => J::Arr(self.numbers(width)),
            })
            .collect();
        obj(vec![("predictions", J::Arr(rows))])
    }

    fn deep(&mut self) -> J {
        let mut j = J::Arr(self.numbers(2));
        for _ in 0..self.rng.random_range(120..130) {
            j = J::Arr(vec![j]);
        }
        obj(vec![("data", j), ("predictions", J::Arr(vec![]))])
    }

    /// A document and the preset made for it.
    pub(super) fn document(&mut self) -> (J, Option<Preset>) {
        match self.rng.random_range(0..20) {
            0..=4 => (self.kserve(), Some(Preset::KserveV2)),
            5..=9 => (self.openai(), Some(Preset::Openai)),
            10..=13 => (self.tf_serving(), Some(Preset::TfServing)),
            14 => (self.deep(), None),
            _ => (self.tree(4), None),
        }
    }

    /// A candidate made from `j`: numbers nudged (within or beyond tolerance) or
    /// respelled, members duplicated or dropped, elements added or removed.
    pub(super) fn perturb(&mut self, j: &J, rate: f64, scale: f64) -> J {
        match j {
            J::Num(text) if self.chance(rate) => match text.parse::<f64>() {
                Ok(v) if v.is_finite() && self.chance(0.9) => {
                    let nudged = v * (1.0 + scale) + if self.chance(0.2) { scale } else { 0.0 };
                    J::Num(self.spell(nudged))
                }
                _ => self.scalar(),
            },
            J::Arr(xs) => {
                let mut ys: Vec<J> = xs.iter().map(|x| self.perturb(x, rate, scale)).collect();
                if self.chance(rate * 0.1) {
                    if ys.is_empty() || self.chance(0.5) {
                        ys.push(self.scalar());
                    } else {
                        ys.pop();
                    }
                }
                J::Arr(ys)
            }
            J::Obj(ms) => {
                let mut ys: Vec<(String, J)> = ms
                    .iter()
                    .map(|(k, v)| (k.clone(), self.perturb(v, rate, scale)))
                    .collect();
                if !ys.is_empty() && self.chance(rate * 0.1) {
                    let i = self.rng.random_range(0..ys.len());
                    if self.chance(0.5) {
                        // A duplicate before the real member: the last one wins.
                        let decoy = (ys[i].0.clone(), self.tree(1));
                        ys.insert(i, decoy);
                    } else {
                        ys.remove(i);
                    }
                }
                J::Obj(ys)
            }
            other => other.clone(),
        }
    }

    fn ws(&mut self, out: &mut Vec<u8>) {
        if self.chance(0.05) {
            out.extend_from_slice(self.pick(&[&b" "[..], b"\n", b"\t", b"\r\n  "]));
        }
    }

    pub(super) fn write(&mut self, j: &J, out: &mut Vec<u8>) {
        self.ws(out);
        match j {
            J::Lit(s) => out.extend_from_slice(s.as_bytes()),
            J::Num(s) | J::Str(s) => out.extend_from_slice(s.as_bytes()),
            J::Arr(xs) => {
                out.push(b'[');
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write(x, out);
                }
                out.push(b']');
            }
            J::Obj(ms) => {
                out.push(b'{');
                for (i, (k, v)) in ms.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.ws(out);
                    out.extend_from_slice(k.as_bytes());
                    out.push(b':');
                    self.write(v, out);
                }
                out.push(b'}');
            }
        }
        self.ws(out);
    }

    /// Byte-level damage: flips, inserts of troublesome bytes, deletions, cuts.
    pub(super) fn mutate(&mut self, mut body: Vec<u8>) -> Vec<u8> {
        const BAD: &[&[u8]] = &[
            b"\xff", b"\xc3", b"\x01", b",", b"]", b"}", b"\\", b"\\ud800", b"\\udc00", b"\\x",
            b"x", b"\"", b"-", b"01", b"1e", b".", b" ", b"[", b"{",
        ];
        for _ in 0..self.rng.random_range(1..3) {
            let at = self.rng.random_range(0..=body.len());
            match self.rng.random_range(0..4) {
                0 => body.truncate(at),
                1 if at < body.len() => {
                    body.remove(at);
                }
                _ => {
                    let bad = self.pick(BAD);
                    body.splice(at..at, bad.iter().copied());
                }
            }
        }
        body
    }

    pub(super) fn spec(&mut self, fitting: Option<Preset>) -> CompareSpec {
        const POINTERS: &[&str] = &[
            "",
            "/model",
            "/data",
            "/predictions",
            "/outputs",
            "/outputs/0/data",
            "/data/0/embedding",
            "/a",
            "/0",
            "/a~1b",
            "/data/01",
            "/usage",
        ];
        const IGNORES: &[&str] = &[
            "/id",
            "/outputs/*/parameters",
            "/data/*/index",
            "/data",
            "/outputs/0",
            "/*",
            "/data/*/embedding",
            "/predictions/0",
            "/model",
            "/outputs/*/data/1",
            "/a/*/b",
        ];
        let preset = match self.rng.random_range(0..8) {
            0..=3 => fitting,
            4 => None,
            5 => Some(Preset::KserveV2),
            6 => Some(Preset::Openai),
            _ => Some(Preset::TfServing),
        };
        let pointer = match preset {
            None if self.chance(0.7) => Some(self.pick(POINTERS).to_owned()),
            _ => None,
        };
        let ignore = (0..self.rng.random_range(0..3) / 2)
            .map(|_| self.pick(IGNORES).to_owned())
            .collect();
        let (abs_tolerance, rel_tolerance) = self.pick(&[
            (1e-6, 1e-4),
            (1e-6, 1e-4),
            (0.0, 0.0),
            (0.5, 0.0),
            (0.0, 1e-2),
        ]);
        CompareSpec {
            preset,
            pointer,
            ignore,
            mode: self.pick(&[
                None,
                Some(Mode::Value),
                Some(Mode::Argmax),
                Some(Mode::Cosine),
            ]),
            abs_tolerance,
            rel_tolerance,
            min_cosine: self.pick(&[0.999, 0.999, 1.0, 0.0, -1.0]),
            ..CompareSpec::default()
        }
    }
}
