//! The noise floor's counts: stable compared with itself (a sample of
//! requests sent to the stable backend a second time, `compare.noise_percent`),
//! kept apart from the stable-vs-candidate comparisons, and how often each
//! JSON location differed between the two stable answers.
//!
//! Pure data like the rest of `window`, bounded: at most [`MAX_LOCATIONS`]
//! distinct locations are counted per window; pairs differing elsewhere once
//! that many are known count in [`FieldCounts::other`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::StatsTask;
use crate::labels::Outcome;

/// Distinct locations counted per window.
pub const MAX_LOCATIONS: usize = 64;
/// A location that differs in at least this share of the stable-vs-stable
/// pairs whose fields were diffed is suggested for `compare.ignore`: a field
/// that differs most of the time between two answers of the same model to
/// the same request is an id, a timestamp or sampling, not a prediction.
pub const SUGGEST_SHARE: f64 = 0.5;

/// Stable-vs-stable pairs in one window.
#[derive(Debug, Clone, Default)]
pub struct NoiseStats {
    /// Outcomes by [`Outcome::index`], as for the stable-vs-candidate pairs.
    pub comparisons: [u64; Outcome::COUNT],
    /// Sampled requests whose second stable request was not sent (no
    /// mirror permit left, or half the byte budget in use).
    pub dropped: u64,
    pub fields: FieldCounts,
}

/// How often each location differed, over the pairs diffed.
#[derive(Debug, Clone, Default)]
pub struct FieldCounts {
    /// Pairs of two JSON answers that were diffed.
    pub diffed: u64,
    /// Pairs that differed at each location.
    pub counts: BTreeMap<Box<str>, u64>,
    /// Differences at locations beyond the first [`MAX_LOCATIONS`].
    pub other: u64,
}

/// One noisy location, for reports.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NoisyField {
    pub pointer: String,
    /// Stable-vs-stable pairs that differed here.
    pub pairs: u64,
    /// `pairs` over the pairs diffed.
    pub share: f64,
}

impl NoiseStats {
    /// Pairs compared (match + mismatch): the self-agreement's sample.
    pub fn compared(&self) -> u64 {
        self.matched() + self.comparisons[Outcome::Mismatch.index()]
    }

    pub fn matched(&self) -> u64 {
        self.comparisons[Outcome::Match.index()]
    }

    /// Share of compared stable-vs-stable pairs that matched.
    pub fn agreement(&self) -> Option<f64> {
        let n = self.compared();
        (n > 0).then(|| self.matched() as f64 / n as f64)
    }

    pub fn merge(&mut self, other: &NoiseStats) {
        for (a, b) in self.comparisons.iter_mut().zip(other.comparisons) {
            *a += b;
        }
        self.dropped += other.dropped;
        self.fields.diffed += other.fields.diffed;
        self.fields.other += other.fields.other;
        for (location, n) in &other.fields.counts {
            self.fields.add(location, *n);
        }
    }
}

impl FieldCounts {
    /// Counts one diffed pair and the locations where it differed.
    pub fn record(&mut self, locations: &[Box<str>]) {
        self.diffed += 1;
        for location in locations {
            self.add(location, 1);
        }
    }

    fn add(&mut self, location: &str, n: u64) {
        if let Some(count) = self.counts.get_mut(location) {
            *count += n;
        } else if self.counts.len() < MAX_LOCATIONS {
            self.counts.insert(location.into(), n);
        } else {
            self.other += n;
        }
    }

    /// The `limit` locations that differed most often, most often first.
    pub fn top(&self, limit: usize) -> Vec<NoisyField> {
        let mut all: Vec<NoisyField> = self
            .counts
            .iter()
            .map(|(pointer, pairs)| NoisyField {
                pointer: pointer.to_string(),
                pairs: *pairs,
                share: *pairs as f64 / self.diffed.max(1) as f64,
            })
            .collect();
        all.sort_by(|a, b| b.pairs.cmp(&a.pairs).then(a.pointer.cmp(&b.pointer)));
        all.truncate(limit);
        all
    }

    /// The locations worth ignoring: those differing in at least
    /// [`SUGGEST_SHARE`] of the pairs diffed.
    pub fn suggested(&self) -> Vec<String> {
        self.top(MAX_LOCATIONS)
            .into_iter()
            .filter(|f| f.share >= SUGGEST_SHARE)
            .map(|f| f.pointer)
            .collect()
    }
}

/// The `compare.ignore` line that adds `pointers` (TOML, in `[compare]`).
pub fn ignore_line(pointers: &[String]) -> Option<String> {
    if pointers.is_empty() {
        return None;
    }
    let quoted: Vec<String> = pointers
        .iter()
        .map(|p| serde_json::to_string(p).unwrap_or_default())
        .collect();
    Some(format!("ignore = [{}]", quoted.join(", ")))
}

/// How many noisy locations reports show.
pub const REPORT_LOCATIONS: usize = 10;

/// The noise floor as `/status` and validation reports show it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NoiseReport {
    /// Stable-vs-stable pairs compared (match + mismatch).
    pub compared: u64,
    pub matched: u64,
    /// matched / compared: how often stable agrees with itself.
    pub self_agreement: Option<f64>,
    /// By outcome: match, mismatch, stable_error, shadow_error (the second
    /// stable request), uncomparable.
    pub outcomes: BTreeMap<String, u64>,
    /// Sampled requests whose second stable request was shed.
    pub dropped: u64,
    /// Pairs of two JSON answers diffed field by field.
    pub fields_diffed: u64,
    /// The locations that differed most often.
    pub fields: Vec<NoisyField>,
    /// Differences at locations beyond those counted one by one.
    pub other_locations: u64,
    /// Locations that differ in most pairs, and the `compare.ignore` line
    /// that would stop comparing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<Suggestion>,
}

/// "These fields are noise: ignore them?"
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Suggestion {
    pub message: String,
    pub ignore: Vec<String>,
    /// The line to add to `[compare]` (merged with any `ignore` there).
    pub config_line: String,
}

impl NoiseReport {
    /// `None` when no request was sent to stable twice in the window.
    pub fn of(noise: &NoiseStats) -> Option<Self> {
        let total: u64 = noise.comparisons.iter().sum();
        if total == 0 && noise.dropped == 0 {
            return None;
        }
        let ignore = noise.fields.suggested();
        let suggestion = ignore_line(&ignore).map(|config_line| Suggestion {
            message: format!(
                "these fields differ between two answers of stable to the same request in at least {:.0}% of pairs: they are noise; ignore them?",
                SUGGEST_SHARE * 100.0
            ),
            ignore,
            config_line,
        });
        Some(Self {
            compared: noise.compared(),
            matched: noise.matched(),
            self_agreement: noise.agreement(),
            outcomes: Outcome::ALL
                .iter()
                .zip(noise.comparisons)
                .map(|(outcome, n)| (outcome.as_str().to_string(), n))
                .collect(),
            dropped: noise.dropped,
            fields_diffed: noise.fields.diffed,
            fields: noise.fields.top(REPORT_LOCATIONS),
            other_locations: noise.fields.other,
            suggestion,
        })
    }
}

impl StatsTask {
    pub(super) fn on_noise(&mut self, outcome: Outcome, fields: Option<Box<[Box<str>]>>) {
        self.metrics.noise_comparisons[outcome.index()].increment(1);
        for w in self.windows() {
            w.noise.comparisons[outcome.index()] += 1;
            if let Some(fields) = &fields {
                w.noise.fields.record(fields);
            }
        }
    }

    pub(super) fn on_noise_dropped(&mut self) {
        self.metrics.noise_dropped.increment(1);
        for w in self.windows() {
            w.noise.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locations(names: &[&str]) -> Vec<Box<str>> {
        names.iter().map(|n| (*n).into()).collect()
    }

    #[test]
    fn counts_rank_merge_and_suggest() {
        let mut a = FieldCounts::default();
        a.record(&locations(&["/id", "/label"]));
        a.record(&locations(&["/id"]));
        let mut b = FieldCounts::default();
        b.record(&locations(&["/id", "/created"]));
        b.record(&[]);
        let mut window = NoiseStats {
            fields: a,
            ..NoiseStats::default()
        };
        window.merge(&NoiseStats {
            fields: b,
            ..NoiseStats::default()
        });
        let top = window.fields.top(2);
        assert_eq!(window.fields.diffed, 4);
        assert_eq!(top[0].pointer, "/id");
        assert_eq!((top[0].pairs, top[0].share), (3, 0.75));
        assert_eq!(top[1].pointer, "/created");
        assert_eq!(window.fields.suggested(), ["/id"]);
        assert_eq!(
            ignore_line(&window.fields.suggested()).unwrap(),
            r#"ignore = ["/id"]"#
        );
    }

    #[test]
    fn locations_beyond_the_cap_count_as_other() {
        let mut counts = FieldCounts::default();
        for i in 0..MAX_LOCATIONS + 10 {
            counts.record(&locations(&[&format!("/k{i}")]));
        }
        counts.record(&locations(&["/k0"]));
        assert_eq!(counts.counts.len(), MAX_LOCATIONS);
        assert_eq!(counts.other, 10);
        assert_eq!(counts.counts["/k0"], 2);
    }
}
