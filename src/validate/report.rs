//! The verdict of a validation run and its machine-readable report: runs
//! the rollout judge on the replay's window and turns the result into the
//! `--report out.json` document and the terminal summary.
//!
//! Its one job is judging and describing; it never sends a request. Field
//! names of [`Report`] are a contract (CI scripts read them): add fields,
//! never rename or remove one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::compare::Outcome;
use crate::rollout::judge::paired::{self, PairedTest};
use crate::rollout::judge::{
    self, Check, CombinedWindow, Evidence, JudgeInput, Looks, Thresholds, Verdict,
};
use crate::stats::window::{FailureKind, RoleStats};
use crate::status::RoleReport;
use crate::units::{ms_or_dash, pct, pct_or_dash};

use super::replay::{MismatchExample, Tally};

/// Two-sided confidence of the reported match-rate interval.
pub const CI_CONFIDENCE: f64 = 0.95;

/// Per-row agreement over all compared responses.
#[derive(Debug, Clone, Serialize)]
pub struct Elements {
    pub matched: u64,
    pub mismatched: u64,
    /// matched / (matched + mismatched); `null` without rows.
    pub agreement: Option<f64>,
}

/// The whole report; docs/validation.md lists every field.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `pass` or `fail`: what CI gates on (exit 0 or 1).
    pub verdict: &'static str,
    /// The judge's own verdict: `pass`, `fail` or `hold` (too little data,
    /// which fails the gate).
    pub judge_verdict: Verdict,
    pub reasons: Vec<String>,
    /// Ctrl-C stopped the run: the numbers cover what was replayed.
    pub interrupted: bool,
    /// Requests replayed to both backends.
    pub requests: u64,
    /// Lines of the input that could not be used.
    pub skipped_lines: u64,
    pub duration_secs: f64,
    /// Pairs whose predictions were compared (match + mismatch).
    pub compared: u64,
    pub match_rate: Option<f64>,
    /// Wilson score interval of the match rate at [`CI_CONFIDENCE`];
    /// `[0, 1]` when nothing was compared.
    pub match_rate_ci: [f64; 2],
    /// By outcome: match, mismatch, stable_error, shadow_error, uncomparable.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Pairs answered but not compared (a live proxy sheds them when its
    /// comparison pool is saturated; a replay compares every pair, so this
    /// is 0 unless that changes). They are no part of the match rate.
    pub dropped: u64,
    pub elements: Elements,
    pub stable: RoleReport,
    pub candidate: RoleReport,
    /// The first mismatches (by input line): first differing pointer and
    /// both values there.
    pub mismatches: Vec<MismatchExample>,
    /// Everything the judge measured, with the thresholds in force.
    pub evidence: Evidence,
    /// Every criterion with its own verdict and reason (the latency one
    /// combines the quantile rule and the paired test).
    pub checks: Vec<Check>,
    /// The paired signed-rank latency test over every replayed request.
    pub paired_latency: PairedTest,
}

/// How the run ended, besides its counts.
pub struct RunInfo {
    pub skipped_lines: u64,
    pub interrupted: bool,
    pub elapsed: Duration,
}

impl Report {
    /// Judges the replay with the shadow gate's thresholds.
    pub fn build(tally: &Tally, thresholds: &Thresholds, info: &RunInfo) -> Report {
        let w = &tally.window;
        let combined = CombinedWindow::of(w);
        let (stable, candidate) = (&combined.stable, &combined.candidate);
        // A replay has no time dimension; the thresholds' interval is 0.
        let input = JudgeInput::from_window(&combined, info.elapsed, Looks::Once);
        let judgement = judge::judge(&input, thresholds);
        let paired_latency = paired::measure(
            &tally.latency_pairs,
            thresholds.max_latency_increase,
            judge::slack_us(thresholds),
        );
        let quantile_line = judgement
            .checks
            .iter()
            .find(|c| c.criterion == "latency")
            .map(|c| (c.verdict, c.reason.clone()));
        let judgement = match quantile_line {
            Some(q) => judgement.with_latency(paired::combine(q, paired::rule(&paired_latency))),
            None => judgement,
        };
        let checks = judgement.checks.clone();
        let mut reasons = Vec::new();
        if info.interrupted {
            reasons.push(format!(
                "interrupted after {} requests: partial results",
                tally.replayed
            ));
        }
        for (name, stats) in [("stable", stable), ("candidate", candidate)] {
            reasons.extend(health(name, stats, thresholds.max_error_rate));
        }
        let hold = judgement.verdict == Verdict::Hold;
        reasons.extend(judgement.reasons.into_iter().map(|r| {
            if hold {
                format!("not enough evidence: {r}")
            } else {
                r
            }
        }));
        let pass = judgement.verdict == Verdict::Pass && !info.interrupted;
        let matched = w.comparisons_of(Outcome::Match);
        let (low, high) = judge::stats::wilson(
            matched,
            w.compared(),
            judge::stats::z_for(0.5 + CI_CONFIDENCE / 2.0),
        );
        let rows = w.elements.matched + w.elements.mismatched;
        let mut mismatches = tally.mismatches.clone();
        mismatches.sort_by_key(|m| m.line);
        Report {
            verdict: if pass { "pass" } else { "fail" },
            judge_verdict: judgement.verdict,
            reasons,
            interrupted: info.interrupted,
            requests: tally.replayed,
            skipped_lines: info.skipped_lines,
            duration_secs: info.elapsed.as_secs_f64(),
            compared: w.compared(),
            match_rate: w.match_rate(),
            match_rate_ci: [low, high],
            outcomes: Outcome::ALL
                .iter()
                .map(|o| (o.as_str(), w.comparisons_of(*o)))
                .collect(),
            dropped: w.compare_dropped_total(),
            elements: Elements {
                matched: w.elements.matched,
                mismatched: w.elements.mismatched,
                agreement: (rows > 0).then(|| w.elements.matched as f64 / rows as f64),
            },
            stable: RoleReport::from_stats(stable),
            candidate: RoleReport::from_stats(candidate),
            mismatches,
            evidence: judgement.evidence,
            checks,
            paired_latency,
        }
    }

    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    /// Pretty JSON for `--report out.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The table printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "replayed {} requests in {:.1}s ({} lines skipped)",
            self.requests, self.duration_secs, self.skipped_lines
        ));
        line(String::new());
        line(format!("{:<14}{:>12}{:>12}", "", "stable", "candidate"));
        let (s, c) = (&self.stable, &self.candidate);
        line(format!(
            "{:<14}{:>12}{:>12}",
            "requests", s.requests, c.requests
        ));
        line(format!(
            "{:<14}{:>12}{:>12}",
            "error rate",
            pct_or_dash(s.error_rate),
            pct_or_dash(c.error_rate)
        ));
        line(format!(
            "{:<14}{:>12}{:>12}",
            "4xx", s.client_errors, c.client_errors
        ));
        for (name, a, b) in [
            ("p50", s.p50_ms, c.p50_ms),
            ("p90", s.p90_ms, c.p90_ms),
            ("p99", s.p99_ms, c.p99_ms),
        ] {
            line(format!(
                "{name:<14}{:>12}{:>12}",
                ms_or_dash(a),
                ms_or_dash(b)
            ));
        }
        line(String::new());
        line(format!(
            "match rate    {} of {} compared = {} (95% CI {} – {})",
            self.outcomes["match"],
            self.compared,
            pct_or_dash(self.match_rate),
            pct(self.match_rate_ci[0]),
            pct(self.match_rate_ci[1])
        ));
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        line(format!("outcomes      {}", outcomes.join(", ")));
        line(format!("not compared  {} pairs dropped", self.dropped));
        line(format!(
            "elements      {} of {} rows agree ({})",
            self.elements.matched,
            self.elements.matched + self.elements.mismatched,
            pct_or_dash(self.elements.agreement)
        ));
        for m in self.mismatches.iter().take(5) {
            let place = m.difference.place();
            line(format!(
                "  mismatch line {} {} {} at {:?}{}{}: stable {} vs candidate {}",
                m.line,
                m.method,
                m.path,
                m.difference.pointer,
                if place.is_empty() { "" } else { " " },
                place,
                m.difference.stable,
                m.difference.candidate
            ));
        }
        line(String::new());
        line(format!("verdict: {}", self.verdict.to_uppercase()));
        for reason in &self.reasons {
            line(format!("  - {reason}"));
        }
        line(String::new());
        line("criteria:".to_owned());
        for c in &self.checks {
            line(format!(
                "  {:<9} {:<5} {}",
                c.criterion,
                verdict_word(c.verdict),
                c.reason
            ));
        }
        out
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Hold => "hold",
    }
}

/// A reason when a backend failed more than the gate allows: the judge
/// only blames the candidate, but a broken stable means nothing could be
/// validated, and the user needs to hear that first.
fn health(name: &str, stats: &RoleStats, max_error_rate: f64) -> Option<String> {
    let (errors, requests) = (stats.errors(), stats.requests());
    if requests == 0 || (errors as f64 / requests as f64) <= max_error_rate {
        return None;
    }
    let kinds: Vec<String> = FailureKind::ALL
        .iter()
        .zip(stats.failures)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{} {n}", k.as_str()))
        .chain((stats.by_class[4] > 0).then(|| format!("5xx {}", stats.by_class[4])))
        .collect();
    let hint = if stats.failures[FailureKind::Connect.index()] == requests {
        format!(": is the {name} backend up?")
    } else {
        String::new()
    };
    Some(format!(
        "{name} errors: {errors} of {requests} requests failed ({}){hint}",
        kinds.join(", ")
    ))
}
