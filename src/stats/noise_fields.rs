//! Where two answers of the stable backend to the same request differ: the
//! JSON locations, over the whole documents (not only the compared part,
//! so `/id` or `/created` show up too), with array indices generalised to
//! `*` so that the rows of a batch add up to one location
//! (`/outputs/*/data`). Numbers within the comparison's tolerances are
//! equal here as they are to the comparator.
//!
//! Bounded: at most [`MAX_DEPTH`] levels are walked (deeper differences are
//! reported at that depth), at most [`MAX_PER_PAIR`] locations are returned
//! per pair, and no location is longer than [`MAX_LOCATION_CHARS`]. Only the
//! location strings leave this module, never the values.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::compare::CompareSpec;

/// Levels of nesting walked; a difference deeper down counts at this depth.
pub const MAX_DEPTH: usize = 8;
/// Locations reported per pair.
pub const MAX_PER_PAIR: usize = 32;
/// Longest location kept (longer ones are cut at a token boundary).
pub const MAX_LOCATION_CHARS: usize = 160;

/// What counts as a difference: the comparison's numeric tolerances, and
/// the locations `compare.ignore` already removes (never suggested again).
#[derive(Debug, Clone, Default)]
pub struct FieldDiff {
    /// `compare.ignore`, split into tokens; `*` matches any token.
    ignore: Vec<Vec<String>>,
    abs: f64,
    rel: f64,
}

impl FieldDiff {
    pub fn new(spec: &CompareSpec) -> Self {
        Self {
            ignore: spec.ignore.iter().map(|p| tokens(p)).collect(),
            abs: spec.abs_tolerance,
            rel: spec.rel_tolerance,
        }
    }

    /// The differing locations of two JSON bodies, sorted; `None` when
    /// either body is not JSON.
    pub fn differing(&self, a: &[u8], b: &[u8]) -> Option<Vec<Box<str>>> {
        let a: Value = serde_json::from_slice(a).ok()?;
        let b: Value = serde_json::from_slice(b).ok()?;
        let mut found = BTreeSet::new();
        let mut path = Vec::new();
        self.walk(&a, &b, &mut path, &mut found);
        Some(found.into_iter().collect())
    }

    fn walk(&self, a: &Value, b: &Value, path: &mut Vec<String>, found: &mut BTreeSet<Box<str>>) {
        if found.len() >= MAX_PER_PAIR || self.ignored(path) {
            return;
        }
        if path.len() >= MAX_DEPTH {
            if !self.equal(a, b) {
                found.insert(location(path));
            }
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (key, va) in x {
                    path.push(escape(key));
                    match y.get(key) {
                        Some(vb) => self.walk(va, vb, path, found),
                        None => self.note(path, found),
                    }
                    path.pop();
                }
                for key in y.keys().filter(|k| !x.contains_key(*k)) {
                    path.push(escape(key));
                    self.note(path, found);
                    path.pop();
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                if x.len() != y.len() {
                    self.note(path, found);
                }
                path.push("*".to_owned());
                for (va, vb) in x.iter().zip(y) {
                    self.walk(va, vb, path, found);
                }
                path.pop();
            }
            _ if self.equal(a, b) => {}
            _ => self.note(path, found),
        }
    }

    fn note(&self, path: &[String], found: &mut BTreeSet<Box<str>>) {
        if found.len() < MAX_PER_PAIR && !self.ignored(path) {
            found.insert(location(path));
        }
    }

    /// Whether `compare.ignore` removes this location (or an ancestor).
    fn ignored(&self, path: &[String]) -> bool {
        self.ignore.iter().any(|pattern| {
            pattern.len() <= path.len() && pattern.iter().zip(path).all(|(p, t)| p == "*" || p == t)
        })
    }

    fn equal(&self, a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= self.abs + self.rel * x.abs().max(y.abs()),
                _ => x == y,
            },
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| self.equal(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(v, w)| self.equal(v, w))
            }
            _ => a == b,
        }
    }
}

/// RFC 6901 escaping of one key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .map(|t| escape(&t))
        .collect()
}

/// The pointer text of `path`, cut at a token boundary when too long.
fn location(path: &[String]) -> Box<str> {
    let mut text = String::new();
    for token in path {
        if text.len() + 1 + token.len() > MAX_LOCATION_CHARS {
            break;
        }
        text.push('/');
        text.push_str(token);
    }
    text.into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(spec: &CompareSpec, a: &str, b: &str) -> Vec<String> {
        FieldDiff::new(spec)
            .differing(a.as_bytes(), b.as_bytes())
            .expect("both JSON")
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn array_rows_aggregate_under_a_star_and_top_level_ids_show() {
        let a = r#"{"id":"x1","created":1,"outputs":[{"name":"p","data":[1,2]},{"name":"q","data":[3]}]}"#;
        let b = r#"{"id":"x2","created":1,"outputs":[{"name":"p","data":[1,5]},{"name":"q","data":[4]}]}"#;
        assert_eq!(
            diff(&CompareSpec::default(), a, b),
            ["/id", "/outputs/*/data/*"]
        );
    }

    #[test]
    fn tolerance_missing_keys_lengths_and_ignores() {
        let spec = CompareSpec {
            ignore: vec!["/meta".into(), "/rows/*/ts".into()],
            ..CompareSpec::default()
        };
        let a = r#"{"score":0.5,"meta":{"t":1},"rows":[{"ts":1,"v":1}],"only_a":1,"a/b":1}"#;
        let b =
            r#"{"score":0.5000001,"meta":{"t":2},"rows":[{"ts":2,"v":1},{"ts":3,"v":2}],"a/b":2}"#;
        assert_eq!(diff(&spec, a, b), ["/a~1b", "/only_a", "/rows"]);
    }

    #[test]
    fn depth_and_count_are_capped_and_non_json_is_none() {
        let deep_a = format!("{}1{}", "[".repeat(12), "]".repeat(12));
        let deep_b = format!("{}2{}", "[".repeat(12), "]".repeat(12));
        assert_eq!(
            diff(&CompareSpec::default(), &deep_a, &deep_b),
            ["/*/*/*/*/*/*/*/*"]
        );
        let wide = |v: u32| {
            let fields: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{v}")).collect();
            format!("{{{}}}", fields.join(","))
        };
        assert_eq!(
            diff(&CompareSpec::default(), &wide(1), &wide(2)).len(),
            MAX_PER_PAIR
        );
        assert!(FieldDiff::default().differing(b"not json", b"{}").is_none());
    }
}
