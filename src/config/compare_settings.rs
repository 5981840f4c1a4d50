//! `[compare]` as validated: what is compared and how (the comparator's
//! [`CompareSpec`]), how many mismatches are kept, and the comparison
//! threads' size and priority.

use super::build::Checker;
use super::raw::RawCompare;
use crate::compare::{Comparator, CompareSpec};

/// How many recent mismatches `/mismatches` keeps.
pub const DEFAULT_KEEP_MISMATCHES: usize = 100;

/// Large pairs that may wait for a comparison thread. A pair of 500 KB
/// answers takes about a millisecond to compare, so 64 waiting pairs are a
/// few tens of milliseconds of backlog on two threads: enough to ride out a
/// burst, short enough that evidence stays fresh. Their bytes count against
/// `shadow.max_buffered_bytes` while they wait.
pub const DEFAULT_COMPARE_QUEUE: usize = 64;

/// One comparison thread per core: they only take CPU time serving leaves
/// idle (see `mirror::compare_pool`), so more threads than cores could
/// never run at once, and fewer would leave idle cores unused.
pub fn default_compare_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[derive(Debug, Clone)]
pub struct Compare {
    pub spec: CompareSpec,
    pub keep_mismatches: usize,
    /// Comparison threads for large pairs (fixed at start).
    pub threads: usize,
    /// Large pairs that may wait for a comparison thread (fixed at start).
    pub queue: usize,
    /// How the comparison threads are scheduled (fixed at start).
    pub priority: ComparePriority,
    /// Share of mirrored requests served by stable that are also sent to
    /// stable a second time, 0..=100 (0 = off): the noise floor.
    pub noise_percent: f64,
}

/// `compare.priority`: how the comparison threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComparePriority {
    /// Linux `SCHED_IDLE`: only CPU time that nothing else wants. Serving
    /// never waits for a comparison; under full load, pairs are shed.
    #[default]
    Idle,
    /// Normal priority: comparisons share the CPU with serving. For hosts
    /// where evidence matters more than client latency (a staging proxy).
    Normal,
}

impl Checker<'_> {
    pub(super) fn compare(&mut self, raw: RawCompare) -> Option<Compare> {
        let defaults = CompareSpec::default();
        let format = self.keyword("compare.format", raw.format);
        let preset = self.keyword("compare.preset", raw.preset);
        let mode = self.keyword("compare.mode", raw.mode);
        let text = self.keyword("compare.text", raw.text);
        let spec = CompareSpec {
            format: format.unwrap_or(defaults.format),
            preset,
            pointer: raw.pointer,
            ignore: raw.ignore.unwrap_or_default(),
            abs_tolerance: raw.abs_tolerance.unwrap_or(defaults.abs_tolerance),
            rel_tolerance: raw.rel_tolerance.unwrap_or(defaults.rel_tolerance),
            mode,
            min_cosine: raw.min_cosine.unwrap_or(defaults.min_cosine),
            text,
            min_similarity: raw.min_similarity.unwrap_or(defaults.min_similarity),
        };
        let keep_mismatches = self.count(
            "compare.keep_mismatches",
            raw.keep_mismatches,
            DEFAULT_KEEP_MISMATCHES,
            0,
        );
        let threads = self.count("compare.threads", raw.threads, default_compare_threads(), 1);
        let queue = self.count("compare.queue", raw.queue, DEFAULT_COMPARE_QUEUE, 1);
        let priority = self
            .keyword("compare.priority", raw.priority)
            .unwrap_or_default();
        let noise_percent = self.noise_percent(raw.noise_percent);
        if let Err(e) = Comparator::new(&spec) {
            // The message names the key itself; report it under that key.
            let key = e.key().split('[').next().unwrap_or("compare").to_owned();
            let message = e.to_string();
            let message = message
                .strip_prefix(e.key())
                .unwrap_or(&message)
                .trim_start();
            self.problem(&key, message);
            return None;
        }
        Some(Compare {
            spec,
            keep_mismatches,
            threads,
            queue,
            priority,
            noise_percent,
        })
    }

    /// `compare.noise_percent`: a percentage, off by default (it adds load
    /// on the stable backend).
    fn noise_percent(&mut self, value: Option<f64>) -> f64 {
        let Some(percent) = value else { return 0.0 };
        if (0.0..=100.0).contains(&percent) {
            percent
        } else {
            self.problem(
                "compare.noise_percent",
                format!("expected a percentage between 0 and 100, got {percent}"),
            );
            0.0
        }
    }
}

impl Checker<'_> {
    /// `rollout.max_match_rate_drop` judges against stable's agreement
    /// with itself, which only `compare.noise_percent` measures, and counts
    /// whole responses.
    pub(super) fn relative_gate(&mut self, rollout: &super::Rollout, compare: &Compare) {
        if rollout.max_match_rate_drop.is_none() {
            return;
        }
        if compare.noise_percent <= 0.0 {
            self.problem(
                "rollout.max_match_rate_drop",
                "needs compare.noise_percent above 0: the floor it is judged against is \
                 stable's agreement with itself, learned from requests sent to stable twice",
            );
        }
        if rollout.match_unit == super::MatchUnit::Row {
            self.problem(
                "rollout.max_match_rate_drop",
                "counts whole responses; it cannot be used with match_unit = \"row\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::compare::TextMode;
    use crate::config::{ConfigError, build};

    const OPENAI: &str =
        "[backends.stable]\nurl = \"http://127.0.0.1:8001\"\n\n[compare]\npreset = \"openai\"\n";

    fn problem(text: &str) -> (String, String) {
        match build::build(text, "t", None) {
            Err(ConfigError::Invalid { problems, .. }) => {
                (problems[0].key.clone(), problems[0].message.clone())
            }
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn text_and_min_similarity_are_read_and_checked_under_their_keys() {
        let text = format!("{OPENAI}text = \"similarity\"\nmin_similarity = 0.8\n");
        let config = build::build(&text, "t", None).expect("valid");
        assert_eq!(config.compare.spec.text, Some(TextMode::Similarity));
        assert_eq!(config.compare.spec.min_similarity, 0.8);
        let (key, message) = problem(&format!("{OPENAI}text = \"fuzzy\"\n"));
        assert_eq!(key, "compare.text");
        assert!(
            message.contains("fuzzy") && message.contains("normalized"),
            "{message}"
        );
        let (key, _) = problem(&format!("{OPENAI}min_similarity = 1.5\n"));
        assert_eq!(key, "compare.min_similarity");
        let kserve = OPENAI.replace("openai", "kserve-v2");
        let (key, message) = problem(&format!("{kserve}text = \"json\"\n"));
        assert_eq!(key, "compare.text");
        assert!(message.contains("openai"), "{message}");
    }
}
