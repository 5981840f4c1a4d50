//! The judge's rules for interval, volume, errors and matching, each from
//! the gathered evidence to one criterion's verdict and the sentence that
//! explains it (the latency rule lives in `latency`). Pure, like the judge.

use super::rows::RowEvidence;
use super::{Evidence, FAIL_CONFIDENCE, JudgeInput, PASS_CONFIDENCE, Thresholds, Verdict};
use crate::config::MatchUnit;
use crate::units::{human_duration, pct, pct_or_na};

/// One criterion's verdict and the reason behind it.
pub(super) type Line = (Verdict, String);

pub(super) fn interval_rule(input: &JudgeInput, t: &Thresholds) -> Line {
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

pub(super) fn volume_rule(e: &Evidence, t: &Thresholds) -> Line {
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

pub(super) fn errors_rule(e: &Evidence, t: &Thresholds) -> Line {
    let (c, s, max) = (&e.candidate.errors, &e.stable.errors, t.max_error_rate);
    if c.total == 0 {
        return (
            Verdict::Hold,
            "errors: no candidate requests yet".to_owned(),
        );
    }
    let what = format!(
        "candidate error rate {} ({} of {})",
        pct_or_na(c.rate),
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
            pct_or_na(s.rate),
            pct_or_na(e.error_excess_lower),
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

pub(super) fn match_rule(e: &Evidence, t: &Thresholds) -> Line {
    if t.match_unit == MatchUnit::Row {
        return row_match_rule(e.row_matching.as_ref(), t);
    }
    let (m, min) = (&e.matching, t.min_match_rate);
    if m.total == 0 {
        return (Verdict::Hold, "match: no compared responses yet".to_owned());
    }
    let what = format!(
        "match: match rate {} ({} of {})",
        pct_or_na(m.rate),
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

/// The match criterion on prediction rows, with the clustered bound.
fn row_match_rule(r: Option<&RowEvidence>, t: &Thresholds) -> Line {
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
