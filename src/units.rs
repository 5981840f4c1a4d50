//! Numbers as people read them in reports, logs and the judge's reasons:
//! percentages, milliseconds and durations. Formatting only; a leaf that
//! imports nothing of the crate.
//!
//! Two audiences, two placeholders for a missing number: table cells and
//! summaries write `-` (the `_or_dash` forms), the judge's sentences write
//! `n/a` (the `_or_na` forms).

use std::time::Duration;

/// A share (0..=1) as a percentage with two decimals: 0.9512 → "95.12%".
pub fn pct(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// [`pct`], or "-" without a value.
pub fn pct_or_dash(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), pct)
}

/// [`pct`], or "n/a" without a value.
pub fn pct_or_na(share: Option<f64>) -> String {
    share.map_or_else(|| "n/a".to_owned(), pct)
}

/// Milliseconds with one decimal: 12.34 → "12.3ms".
pub fn ms(millis: f64) -> String {
    format!("{millis:.1}ms")
}

/// [`ms`], or "-" without a value.
pub fn ms_or_dash(millis: Option<f64>) -> String {
    millis.map_or_else(|| "-".to_owned(), ms)
}

/// Microseconds as milliseconds with two decimals, the judge's precision
/// (sub-millisecond backends differ in the hundredths): 1234 → "1.23ms";
/// "n/a" without a value.
pub fn us_as_ms_or_na(micros: Option<u64>) -> String {
    micros.map_or_else(
        || "n/a".to_owned(),
        |us| format!("{:.2}ms", us as f64 / 1000.0),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_have_two_decimals() {
        assert_eq!(pct(0.9512), "95.12%");
        assert_eq!(pct_or_dash(None), "-");
        assert_eq!(pct_or_na(None), "n/a");
        assert_eq!(pct_or_na(Some(1.0)), "100.00%");
    }

    #[test]
    fn milliseconds_keep_the_precision_of_their_audience() {
        assert_eq!(ms(12.34), "12.3ms");
        assert_eq!(ms_or_dash(None), "-");
        assert_eq!(us_as_ms_or_na(Some(1234)), "1.23ms");
        assert_eq!(us_as_ms_or_na(None), "n/a");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(Duration::ZERO), "0s");
        assert_eq!(human_duration(Duration::from_secs(60)), "60s");
        assert_eq!(human_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_micros(500)), "500µs");
    }
}
