//! The judge: one pure function from a window of statistics (candidate vs
//! stable, same window) to a verdict — pass, fail or hold — with the reasons
//! and every number behind it. It never reads clocks, keeps no state and
//! never panics; it does not decide what happens next (that is the machine's
//! job).
//!
//! # Rules
//! Each criterion gets its own verdict (see [`Criteria`]); any fail fails the
//! window, all pass passes it, anything else holds. A fail needs evidence at
//! one-sided [`FAIL_CONFIDENCE`] and may come at any time (no interval or
//! volume minimum); a pass needs every criterion credibly within its
//! threshold at one-sided [`PASS_CONFIDENCE`] *and* the interval and volume
//! minimums. Too little data is neither: it holds.
//!
//! * **interval** — `elapsed >= interval`, else hold.
//! * **volume** — candidate requests and compared responses both
//!   `>= min_requests`, else hold.
//! * **errors** (5xx, timeouts, transport; 4xx are only reported) — fail when
//!   the candidate's rate is credibly above `max_error_rate` *and* the
//!   Newcombe lower bound of (candidate − stable) is above zero, i.e. the
//!   candidate is credibly worse than stable in the same window; an outage
//!   hitting both backends therefore holds. With no stable requests the
//!   absolute test alone decides. Pass when the rate is credibly
//!   `<= max_error_rate`, so a shared outage never passes either.
//! * **match** — fail when matched/compared is credibly below
//!   `min_match_rate`; pass when it is credibly `>=` it.
//! * **latency** — the tolerance around stable's latency `x` is
//!   `max((1 + max_latency_increase) x, x + max_latency_increase_ms)`. The
//!   judged quantile is the highest of p99/p98/p95/p90 the smaller side
//!   supports with 50 samples above it (see [`latency`]); below 500 samples
//!   it holds. Fail when the candidate's distribution-free lower bound
//!   (order statistics: the count above a true quantile is binomial) exceeds
//!   the tolerance of stable's upper bound at [`FAIL_CONFIDENCE`], at the
//!   judged quantile or at p99. Pass when the upper confidence bound of
//!   ln(candidate / stable) at the judged quantile — standard errors read
//!   from the exact order-statistic intervals — is within ln(tolerance /
//!   stable). A live rollout looks every tick, so its pass needs 99% per
//!   look; a one-shot replay needs [`PASS_CONFIDENCE`] and may also fail on
//!   the log-ratio interval ([`Looks`]).
//!
//! "Credibly above/below a threshold" for a rate is the exact one-sided
//! binomial test at the threshold (equivalently, the Clopper–Pearson bound
//! lies beyond it). Unlike Wilson bounds it keeps its confidence at the
//! handful-of-requests sizes a judge polled every second sees first: 12
//! matches of 15 has a Wilson 99% upper bound of 94.1%, yet a 95% matcher
//! does that 3.6% of the time. Wilson bounds are still recorded for reading.
//!
//! The levels were tuned with the seeded simulations in `rollout::sim` and
//! `rollout::sim_latency` (defaults): at 5 req/s no healthy candidate rolled
//! back, a 10%-error candidate rolled back after a median ~110 candidate
//! requests, a ×1.5-latency one after a median 100 s (its 500th sample).

mod evidence;
pub mod latency;
pub mod paired;
pub mod rows;
pub(crate) mod stats;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_rules;

pub use evidence::{Criteria, Evidence, LatencyEvidence, RateEvidence, SideEvidence};
pub use latency::{LatencyTest, Looks};

pub use crate::stats::window::RowClusters;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One-sided confidence of every bound behind a fail.
pub const FAIL_CONFIDENCE: f64 = 0.99;
/// One-sided confidence of every bound behind a pass.
pub const PASS_CONFIDENCE: f64 = 0.95;
/// The latency quantile reported per side (the judged one depends on the
/// sample size, see [`latency`]).
pub const LATENCY_QUANTILE: f64 = 0.99;
/// Default absolute latency slack in milliseconds: half a millisecond is
/// far below what a person notices, yet above the tens of microseconds a
/// sub-millisecond backend's p99 moves by between two hosts.
pub const DEFAULT_LATENCY_SLACK_MS: f64 = 0.5;

/// What one backend handled in the window: requests it served *and* shadowed.
#[derive(Clone, Copy, Debug)]
pub struct SideWindow<'a> {
    /// Requests handled (served + shadow) in the window.
    pub requests: u64,
    /// 5xx responses, timeouts and transport errors.
    pub errors: u64,
    /// 4xx responses; reported, never judged.
    pub client_errors: u64,
    /// Latency of the handled requests, in microseconds.
    pub latency_us: &'a hdrhistogram::Histogram<u64>,
}

/// Both backends over the same window, plus the response comparisons.
#[derive(Clone, Copy, Debug)]
pub struct JudgeInput<'a> {
    /// The stable backend.
    pub stable: SideWindow<'a>,
    /// The candidate backend.
    pub candidate: SideWindow<'a>,
    /// Responses compared (matched + mismatched).
    pub compared: u64,
    /// Compared responses that matched.
    pub matched: u64,
    /// Time since the step (and the window) started.
    pub elapsed: Duration,
    /// How often this window is looked at (sets the latency confidence).
    pub looks: Looks,
    /// Per-request row sums, for `match_unit = "row"`.
    pub rows: RowClusters,
}

/// Thresholds a step is judged against. Missing fields deserialize to the
/// defaults; `interval` is in seconds (a float).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Candidate requests (and compared responses) needed before a pass.
    pub min_requests: u64,
    /// Minimum time in a step before a pass.
    #[serde(with = "secs_f64")]
    pub interval: Duration,
    /// Highest acceptable candidate error rate (0..=1).
    pub max_error_rate: f64,
    /// Highest acceptable relative latency increase over stable (0.2 = +20%).
    pub max_latency_increase: f64,
    /// Absolute latency slack in milliseconds: the candidate may always be
    /// this much slower than stable (0 = the relative threshold alone).
    pub max_latency_increase_ms: f64,
    /// Lowest acceptable share of matching responses (0..=1).
    pub min_match_rate: f64,
    /// What `min_match_rate` counts: whole responses or prediction rows.
    pub match_unit: MatchUnit,
}

/// The unit the match criterion counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchUnit {
    /// A response matches when every compared part of it matches.
    #[default]
    Request,
    /// Each prediction row of a batch counts, with a bound that allows
    /// for rows of one request being alike ([`rows`]).
    Row,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_requests: 100,
            interval: Duration::from_secs(60),
            max_error_rate: 0.05,
            max_latency_increase: 0.20,
            max_latency_increase_ms: DEFAULT_LATENCY_SLACK_MS,
            min_match_rate: 0.95,
            match_unit: MatchUnit::Request,
        }
    }
}

/// Outcome of judging a window (or of one criterion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Credibly within every threshold, with enough data and time.
    Pass,
    /// Credibly outside a threshold.
    Fail,
    /// Not enough evidence either way.
    Hold,
}

/// A verdict with its human-readable reasons and all the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, citing numbers: the failing criteria for a fail, the blocking
    /// ones for a hold, every criterion for a pass.
    pub reasons: Vec<String>,
    /// Sample sizes, rates, bounds, p99s, thresholds, per-criterion verdicts.
    pub evidence: Evidence,
    /// Every criterion with its own verdict and reason, in judging order.
    #[serde(default)]
    pub checks: Vec<Check>,
}

/// One criterion's verdict and the reason behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `interval`, `volume`, `errors`, `latency` or `match`.
    pub criterion: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// Why, citing numbers.
    pub reason: String,
}

impl Judgement {
    /// Replaces the latency criterion with `line` (e.g. combined with a
    /// paired test) and recomputes the verdict and reasons.
    pub fn with_latency(mut self, line: (Verdict, String)) -> Self {
        self.evidence.criteria.latency = line.0;
        for c in &mut self.checks {
            if c.criterion == "latency" {
                (c.verdict, c.reason) = (line.0, line.1.clone());
            }
        }
        let lines: Vec<Line> = self
            .checks
            .iter()
            .map(|c| (c.verdict, c.reason.clone()))
            .collect();
        (self.verdict, self.reasons) = summarize(&lines);
        self
    }
}

/// The overall verdict and the reasons worth showing for it.
fn summarize(lines: &[Line]) -> (Verdict, Vec<String>) {
    let any = |v: Verdict| lines.iter().any(|(lv, _)| *lv == v);
    let verdict = if any(Verdict::Fail) {
        Verdict::Fail
    } else if any(Verdict::Hold) {
        Verdict::Hold
    } else {
        Verdict::Pass
    };
    let reasons = lines
        .iter()
        .filter(|(v, _)| verdict == Verdict::Pass || *v == verdict)
        .map(|(_, r)| r.clone())
        .collect();
    (verdict, reasons)
}

/// Judges one window against the thresholds. Pure; see the module doc.
pub fn judge(input: &JudgeInput, t: &Thresholds) -> Judgement {
    let mut evidence = Evidence::gather(input, t);
    let lines = [
        interval_rule(input, t),
        volume_rule(&evidence, t),
        errors_rule(&evidence, t),
        latency::rule(
            &evidence.latency,
            (
                evidence.candidate.latency.samples,
                evidence.stable.latency.samples,
            ),
            t.max_latency_increase,
            slack_us(t),
            input.looks,
        ),
        match_rule(&evidence, t),
    ];
    evidence.criteria = Criteria {
        interval: lines[0].0,
        volume: lines[1].0,
        errors: lines[2].0,
        latency: lines[3].0,
        matching: lines[4].0,
    };
    let (verdict, reasons) = summarize(&lines);
    let checks = CRITERIA
        .iter()
        .zip(lines)
        .map(|(name, (verdict, reason))| Check {
            criterion: (*name).to_owned(),
            verdict,
            reason,
        })
        .collect();
    Judgement {
        verdict,
        reasons,
        evidence,
        checks,
    }
}

/// Names of the criteria in judging order.
const CRITERIA: [&str; 5] = ["interval", "volume", "errors", "latency", "match"];

/// The absolute latency slack in microseconds; non-finite or negative
/// settings count as none.
pub(crate) fn slack_us(t: &Thresholds) -> f64 {
    let us = t.max_latency_increase_ms * 1000.0;
    if us.is_finite() && us > 0.0 { us } else { 0.0 }
}

/// A duration as a person reads it: `0s`, `90s`, `1.5s`, `250ms`, `500µs`.
pub fn human_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

type Line = (Verdict, String);

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn pct_opt(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), pct)
}

fn interval_rule(input: &JudgeInput, t: &Thresholds) -> Line {
    // Whole seconds read better and the rule only needs a lower bound.
    let have = input.elapsed.as_secs();
    let need = human_duration(t.interval);
    if input.elapsed >= t.interval {
        (
            Verdict::Pass,
            format!("interval: {have}s in step >= {need}"),
        )
    } else {
        (
            Verdict::Hold,
            format!("interval: need {need} in step, have {have}s"),
        )
    }
}

fn volume_rule(e: &Evidence, t: &Thresholds) -> Line {
    let (reqs, compared, need) = (e.candidate.requests, e.matching.total, t.min_requests);
    let mut missing = Vec::new();
    if reqs < need {
        missing.push(format!("need {need} candidate requests, have {reqs}"));
    }
    if compared < need {
        missing.push(format!("need {need} compared responses, have {compared}"));
    }
    if missing.is_empty() {
        let msg = format!("volume: {reqs} candidate requests and {compared} compared >= {need}");
        (Verdict::Pass, msg)
    } else {
        (Verdict::Hold, format!("volume: {}", missing.join("; ")))
    }
}

fn errors_rule(e: &Evidence, t: &Thresholds) -> Line {
    let (c, s, max) = (&e.candidate.errors, &e.stable.errors, t.max_error_rate);
    if c.total == 0 {
        return (
            Verdict::Hold,
            "errors: no candidate requests yet".to_owned(),
        );
    }
    let what = format!(
        "candidate error rate {} ({} of {})",
        pct_opt(c.rate),
        c.hits,
        c.total
    );
    let above = c.p_above <= 1.0 - FAIL_CONFIDENCE;
    // No stable data means no sign of a shared outage: the absolute test decides.
    let worse_than_stable = e.error_excess_lower.is_none_or(|d| d > 0.0);
    let p_above = format!("P(>={} | {}) = {}", c.hits, pct(max), p_value(c.p_above));
    if above && worse_than_stable {
        let msg = format!(
            "errors: {what} credibly above max {} ({p_above}) and above stable's {} \
             (excess lower bound {})",
            pct(max),
            pct_opt(s.rate),
            pct_opt(e.error_excess_lower),
        );
        (Verdict::Fail, msg)
    } else if above {
        let msg = format!(
            "errors: {what} credibly above max {} but stable errors too ({} of {}): \
             shared outage, not blaming the candidate",
            pct(max),
            s.hits,
            s.total,
        );
        (Verdict::Hold, msg)
    } else {
        let p_below = format!("P(<={} | {}) = {}", c.hits, pct(max), p_value(c.p_below));
        let credible = c.p_below <= 1.0 - PASS_CONFIDENCE;
        rate_line(credible, format!("errors: {what}"), "<= max", max, p_below)
    }
}

/// Pass or hold line for a rate that is not failing.
fn rate_line(credible: bool, what: String, rel: &str, threshold: f64, test: String) -> Line {
    if credible {
        (
            Verdict::Pass,
            format!("{what} credibly {rel} {} ({test})", pct(threshold)),
        )
    } else {
        let need = p_value(1.0 - PASS_CONFIDENCE);
        let msg = format!(
            "{what} not yet credibly {rel} {} ({test}, need <= {need})",
            pct(threshold)
        );
        (Verdict::Hold, msg)
    }
}

fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "<0.01%".to_owned()
    } else {
        pct(p)
    }
}

fn match_rule(e: &Evidence, t: &Thresholds) -> Line {
    if t.match_unit == MatchUnit::Row {
        return row_match_rule(e.row_matching.as_ref(), t);
    }
    let (m, min) = (&e.matching, t.min_match_rate);
    if m.total == 0 {
        return (Verdict::Hold, "match: no compared responses yet".to_owned());
    }
    let what = format!(
        "match: match rate {} ({} of {})",
        pct_opt(m.rate),
        m.hits,
        m.total
    );
    if m.p_below <= 1.0 - FAIL_CONFIDENCE {
        let test = format!("P(<={} | {}) = {}", m.hits, pct(min), p_value(m.p_below));
        (
            Verdict::Fail,
            format!("{what} credibly below min {} ({test})", pct(min)),
        )
    } else {
        let test = format!("P(>={} | {}) = {}", m.hits, pct(min), p_value(m.p_above));
        rate_line(
            m.p_above <= 1.0 - PASS_CONFIDENCE,
            what,
            ">= min",
            min,
            test,
        )
    }
}

/// Serde for a `Duration` as float seconds; rejects negative or non-finite.
mod secs_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs)
            .map_err(|_| D::Error::custom(format!("interval must be >= 0 seconds, got {secs}")))
    }
}

/// The match criterion on prediction rows, with the clustered bound.
fn row_match_rule(r: Option<&rows::RowEvidence>, t: &Thresholds) -> Line {
    let min = t.min_match_rate;
    let Some(r) = r else {
        return (
            Verdict::Hold,
            "match (rows): no compared rows yet".to_owned(),
        );
    };
    let what = format!(
        "match (rows): agreement {} ({} of {} rows in {} requests, design effect {:.2}, worth \
         {:.0} independent rows)",
        pct(r.rate),
        r.matched,
        r.rows,
        r.requests,
        r.design_effect,
        r.effective_rows
    );
    if r.p_below <= 1.0 - FAIL_CONFIDENCE {
        let test = format!("P(<= | {}) = {}", pct(min), p_value(r.p_below));
        (
            Verdict::Fail,
            format!("{what} credibly below min {} ({test})", pct(min)),
        )
    } else {
        let test = format!("P(>= | {}) = {}", pct(min), p_value(r.p_above));
        rate_line(
            r.p_above <= 1.0 - PASS_CONFIDENCE,
            what,
            ">= min",
            min,
            test,
        )
    }
}
