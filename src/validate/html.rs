//! `--report out.html`: one self-contained page with the verdict, the key
//! numbers, both backends' latency distributions as an inline SVG chart and
//! the mismatch examples.
//!
//! Its one job is rendering a finished [`Report`]. The page must open from a
//! CI artifact store with no network: it never references anything outside
//! itself (no scripts, fonts, images or links) and never contains a URL at
//! all — every text from the outside (paths, values, reasons) goes through
//! [`escape`], which also breaks up `://`.

use std::fmt::Write;

use hdrhistogram::Histogram;

use super::report::Report;
use crate::stats::window::WindowStats;
use crate::units::{ms_or_dash, pct, pct_or_dash};

const CSS: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;\
color:#1f2937;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em}\
.verdict{padding:.8em 1em;border-radius:6px;font-weight:600;font-size:1.2em}\
.pass{background:#dcfce7;color:#14532d}.fail{background:#fee2e2;color:#7f1d1d}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.3em .8em;border-bottom:1px solid #e5e7eb;\
text-align:right}th:first-child,td:first-child{text-align:left}\
code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{background:#f9fafb;padding:1em;\
overflow:auto;max-height:30em}.mm td{text-align:left;vertical-align:top;word-break:break-all}\
svg text{font-size:11px;fill:#374151}";

const STABLE_COLOUR: &str = "#2563eb";
const CANDIDATE_COLOUR: &str = "#ea580c";

/// Escapes text for HTML content and attributes, and breaks up `://` so
/// nothing in the page reads as a URL (the browser shows it unchanged).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out.replace("://", ":&#47;&#47;")
}

/// The whole page.
pub fn render(report: &Report, window: &WindowStats, title: &str) -> String {
    let mut h = String::new();
    let verdict = if report.passed() { "pass" } else { "fail" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>understudy validate: {verdict}</title><style>{CSS}</style></head><body>\
         <h1>understudy validate — {}</h1>\
         <div class=\"verdict {verdict}\">verdict: {}</div><ul>",
        escape(title),
        verdict.to_uppercase()
    );
    for reason in &report.reasons {
        let _ = write!(h, "<li>{}</li>", escape(reason));
    }
    h.push_str("</ul>");
    h.push_str("<h2>Criteria</h2><table><tr><th>criterion</th><th>verdict</th><th>why</th></tr>");
    for c in &report.checks {
        let v = serde_json::to_value(c.verdict).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.criterion),
            escape(v.as_str().unwrap_or("")),
            escape(&c.reason)
        );
    }
    h.push_str("</table>");
    numbers(&mut h, report);
    streams(&mut h, report);
    h.push_str("<h2>Latency (time to response head), by percentile</h2>");
    let stable = window.stable.combined();
    let candidate = window.candidate.combined();
    h.push_str(&chart(&stable.latency_us, &candidate.latency_us));
    mismatches(&mut h, report);
    let evidence = serde_json::to_string_pretty(&report.evidence).unwrap_or_default();
    let _ = writeln!(
        h,
        "<h2>Judge evidence</h2><details><summary>sample sizes, rates, bounds, \
         thresholds</summary><pre>{}</pre></details></body></html>",
        escape(&evidence)
    );
    h
}

fn numbers(h: &mut String, r: &Report) {
    let _ = write!(
        h,
        "<h2>Summary</h2><table><tr><td>requests replayed</td><td>{}</td></tr>\
         <tr><td>lines skipped</td><td>{}</td></tr>\
         <tr><td>compared</td><td>{}</td></tr>\
         <tr><td>match rate</td><td>{} (95% CI {} – {})</td></tr>\
         <tr><td>element agreement</td><td>{} of {} rows ({})</td></tr>\
         <tr><td>duration</td><td>{:.1}s</td></tr></table>",
        r.requests,
        r.skipped_lines,
        r.compared,
        pct_or_dash(r.match_rate),
        pct(r.match_rate_ci[0]),
        pct(r.match_rate_ci[1]),
        r.elements.matched,
        r.elements.matched + r.elements.mismatched,
        pct_or_dash(r.elements.agreement),
        r.duration_secs,
    );
    h.push_str("<table><tr><th></th><th>stable</th><th>candidate</th></tr>");
    let (s, c) = (&r.stable, &r.candidate);
    let rows = [
        ("requests", s.requests.to_string(), c.requests.to_string()),
        (
            "error rate",
            pct_or_dash(s.error_rate),
            pct_or_dash(c.error_rate),
        ),
        (
            "4xx",
            s.client_errors.to_string(),
            c.client_errors.to_string(),
        ),
        ("p50", ms_or_dash(s.p50_ms), ms_or_dash(c.p50_ms)),
        ("p90", ms_or_dash(s.p90_ms), ms_or_dash(c.p90_ms)),
        ("p99", ms_or_dash(s.p99_ms), ms_or_dash(c.p99_ms)),
    ];
    for (name, a, b) in rows {
        let _ = write!(h, "<tr><td>{name}</td><td>{a}</td><td>{b}</td></tr>");
    }
    h.push_str("</table><p>Outcomes: ");
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
    h.push_str(&escape(&outcomes.join(", ")));
    h.push_str("</p>");
}

/// Time to first token, inter-token latency and decode rate, when either
/// backend answered event streams.
fn streams(h: &mut String, r: &Report) {
    let (Some(s), Some(c)) = (&r.stable.streams, &r.candidate.streams) else {
        if r.stable.streams.is_none() && r.candidate.streams.is_none() {
            return;
        }
        h.push_str("<p>Event streams: only one backend streamed output.</p>");
        return;
    };
    h.push_str("<h2>Event streams</h2><table><tr><th></th><th>stable</th><th>candidate</th></tr>");
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let rows = [
        ("streams", s.streams.to_string(), c.streams.to_string()),
        (
            "TTFT p50",
            ms_or_dash(s.ttft_p50_ms),
            ms_or_dash(c.ttft_p50_ms),
        ),
        (
            "TTFT p99",
            ms_or_dash(s.ttft_p99_ms),
            ms_or_dash(c.ttft_p99_ms),
        ),
        (
            "ITL p50",
            ms_or_dash(s.itl_p50_ms),
            ms_or_dash(c.itl_p50_ms),
        ),
        (
            "ITL p99",
            ms_or_dash(s.itl_p99_ms),
            ms_or_dash(c.itl_p99_ms),
        ),
        (
            "tokens/s p50",
            rate(s.tokens_per_second_p50),
            rate(c.tokens_per_second_p50),
        ),
    ];
    for (name, a, b) in rows {
        let _ = write!(h, "<tr><td>{name}</td><td>{a}</td><td>{b}</td></tr>");
    }
    h.push_str("</table>");
}

fn mismatches(h: &mut String, r: &Report) {
    let _ = write!(h, "<h2>Mismatch examples ({})</h2>", r.mismatches.len());
    if r.mismatches.is_empty() {
        h.push_str("<p>none</p>");
        return;
    }
    h.push_str(
        "<table class=\"mm\"><tr><th>line</th><th>request</th><th>pointer</th>\
         <th>stable</th><th>candidate</th></tr>",
    );
    for m in &r.mismatches {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{} {}</code></td><td><code>{}</code> {}</td>\
             <td><code>{}</code></td><td><code>{}</code></td></tr>",
            m.line,
            escape(&m.method),
            escape(&m.path),
            escape(&m.difference.pointer),
            escape(&m.difference.place()),
            escape(&m.difference.stable),
            escape(&m.difference.candidate),
        );
    }
    h.push_str("</table>");
}

/// Percentiles on a "nines" axis: x = -log10(1 - q), so p50, p90, p99 and
/// p99.9 are evenly spaced and the tail, where regressions show, gets room.
const NINES: f64 = 3.0;
const W: f64 = 720.0;
const H: f64 = 320.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

fn chart(stable: &Histogram<u64>, candidate: &Histogram<u64>) -> String {
    let quantile = |x: f64| 1.0 - 10f64.powf(-x);
    let curve = |hist: &Histogram<u64>| -> Vec<(f64, f64)> {
        if hist.is_empty() {
            return Vec::new();
        }
        (0..=300)
            .map(|i| {
                let x = f64::from(i) / 100.0;
                (x, hist.value_at_quantile(quantile(x)) as f64 / 1000.0)
            })
            .collect()
    };
    let series = [
        ("stable", STABLE_COLOUR, curve(stable)),
        ("candidate", CANDIDATE_COLOUR, curve(candidate)),
    ];
    let top = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let y_max = nice_ceiling(top);
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let px = |x: f64| LEFT + x / NINES * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_max * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" \
         aria-label=\"latency percentiles\"><rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" \
         height=\"{plot_h}\" fill=\"#f9fafb\" stroke=\"#d1d5db\"/>"
    );
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y1:.1}\" y2=\"{y1:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{y:.1} ms</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            py(y) + 4.0,
            y1 = py(y),
        );
    }
    for (x, label) in [
        (0.0, "p0"),
        (0.301, "p50"),
        (1.0, "p90"),
        (2.0, "p99"),
        (3.0, "p99.9"),
    ] {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{label}</text>",
            px(x),
            TOP + plot_h,
            TOP + plot_h + 16.0,
        );
    }
    for (i, (name, colour, points)) in series.iter().enumerate() {
        let legend_y = TOP + 16.0 + 18.0 * i as f64;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{name}{}</text>",
            W - RIGHT + 12.0,
            legend_y - 10.0,
            W - RIGHT + 30.0,
            legend_y,
            if points.is_empty() { " (no data)" } else { "" },
        );
        if points.is_empty() {
            continue;
        }
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}

/// The smallest 1, 2 or 5 × 10^k at or above `v` (at least 1 ms).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_urls() {
        let text = r#"<script src="http://x/a.js">'&'</script> https://y"#;
        let out = escape(text);
        assert!(!out.contains('<') && !out.contains('"'), "{out}");
        assert!(
            !out.contains("http://") && !out.contains("https://"),
            "{out}"
        );
        assert!(out.contains("&lt;script"), "{out}");
    }

    #[test]
    fn nice_ceiling_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceiling(0.2), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(21.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
    }

    #[test]
    fn chart_draws_both_curves_or_says_there_is_no_data() {
        let mut h = crate::stats::window::latency_histogram();
        for v in [1_000, 2_000, 30_000] {
            h.record(v).unwrap();
        }
        let svg = chart(&h, &crate::stats::window::latency_histogram());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("candidate (no data)"));
        assert!(!svg.contains("http"));
    }
}
