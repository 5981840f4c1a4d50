//! Checks of single values: durations with units, addresses, counts,
//! fractions and keywords. Each reports a problem under its key and returns
//! a safe fallback, so the remaining keys are still checked.

use std::net::SocketAddr;
use std::time::Duration;

use super::build::Checker;

impl Checker<'_> {
    pub(super) fn keyword<T: serde::de::DeserializeOwned>(
        &mut self,
        key: &str,
        value: Option<String>,
    ) -> Option<T> {
        let text = value?;
        match T::deserialize(
            serde::de::value::StrDeserializer::<serde::de::value::Error>::new(&text),
        ) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(key, format!("{e}"));
                None
            }
        }
    }

    pub(super) fn socket_addr(
        &mut self,
        key: &str,
        value: Option<String>,
        default: &str,
    ) -> SocketAddr {
        let text = value.unwrap_or_else(|| default.to_owned());
        text.parse().unwrap_or_else(|_| {
            self.problem(
                key,
                format!("expected IP:PORT like \"127.0.0.1:8080\", got {text:?}"),
            );
            // Safe fallback so the remaining keys are still checked.
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<String>,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(key, format!("expected a duration above zero, got {text:?}"));
                default
            }
            Err(_) => {
                self.problem(
                    key,
                    format!("expected a duration with a unit like \"30s\", \"500ms\" or \"5m\", got {text:?}"),
                );
                default
            }
        }
    }

    pub(super) fn count(
        &mut self,
        key: &str,
        value: Option<i64>,
        default: usize,
        min: usize,
    ) -> usize {
        let Some(v) = value else { return default };
        match usize::try_from(v) {
            Ok(n) if n >= min => n,
            _ => {
                self.problem(key, format!("expected a whole number >= {min}, got {v}"));
                default
            }
        }
    }

    pub(super) fn rate(&mut self, key: &str, value: Option<f64>, default: f64) -> f64 {
        let Some(v) = value else { return default };
        if (0.0..=1.0).contains(&v) {
            v
        } else {
            self.problem(key, format!("expected a fraction between 0 and 1, got {v}"));
            default
        }
    }

    pub(super) fn non_negative(&mut self, key: &str, value: Option<f64>, default: f64) -> f64 {
        let Some(v) = value else { return default };
        if v.is_finite() && v >= 0.0 {
            v
        } else {
            self.problem(key, format!("expected a number >= 0, got {v}"));
            default
        }
    }
}
