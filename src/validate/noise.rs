//! The noise floor in a validation report (`validate --noise`): stable's
//! agreement with itself, the fields that differ between its two answers
//! (with the `compare.ignore` line that would stop comparing the noisiest),
//! and the relative match gate's numbers when `rollout.max_match_rate_drop`
//! is set.

use std::fmt::Write as _;

use super::html::escape;
use super::report::Report;
use crate::units::{pct, pct_or_dash};

/// The terminal summary's lines for the noise floor (none without it).
pub(super) fn summary_lines(r: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    let Some(n) = &r.noise else {
        return lines;
    };
    lines.push(format!(
        "self-agreement {} of {} stable-vs-stable pairs = {}",
        n.matched,
        n.compared,
        pct_or_dash(n.self_agreement)
    ));
    for f in n.fields.iter().take(5) {
        lines.push(format!(
            "  noisy field {} differs in {} of {} pairs ({})",
            f.pointer,
            f.pairs,
            n.fields_diffed,
            pct(f.share)
        ));
    }
    if let Some(s) = &n.suggestion {
        lines.push(format!("  {}", s.message));
        lines.push(format!("  [compare] {}", s.config_line));
    }
    if let Some(g) = &r.evidence.relative {
        lines.push(format!(
            "relative gate candidate {} vs self-agreement {}: difference lower bound {} \
             (need >= -{})",
            pct_or_dash(g.candidate_rate),
            pct_or_dash(g.self_agreement),
            g.pass_lower
                .map_or("-".to_owned(), |l| format!("{:+.1} pts", l * 100.0)),
            pct(g.max_drop)
        ));
    }
    lines
}

/// The HTML report's noise-floor section.
pub(super) fn html(h: &mut String, r: &Report) {
    let Some(n) = &r.noise else {
        return;
    };
    let _ = write!(
        h,
        "<h2>Noise floor (stable against itself)</h2><p>self-agreement {} of {} pairs = \
         {}</p><table><tr><th>field</th><th>pairs differing</th><th>share</th></tr>",
        n.matched,
        n.compared,
        pct_or_dash(n.self_agreement)
    );
    for f in &n.fields {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&f.pointer),
            f.pairs,
            pct(f.share)
        );
    }
    h.push_str("</table>");
    if let Some(s) = &n.suggestion {
        let _ = write!(
            h,
            "<p>{}</p><pre>[compare]\n{}</pre>",
            escape(&s.message),
            escape(&s.config_line)
        );
    }
    if let Some(g) = &r.evidence.relative {
        let gate = serde_json::to_string_pretty(g).unwrap_or_default();
        let _ = write!(
            h,
            "<h3>Relative match gate</h3><pre>{}</pre>",
            escape(&gate)
        );
    }
}
