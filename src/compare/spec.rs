//! Validates a [`CompareSpec`] and compiles it into a [`Comparator`]: pointers parsed,
//! preset expanded, effective mode chosen.
//!
//! Must never accept a setting whose meaning is ambiguous or contradictory (a pointer
//! plus a preset, a wildcard in `compare.pointer`, a negative or NaN tolerance), and
//! every error must name the offending key as the user wrote it.

use super::llm::TextRules;
use super::pointer::{IgnorePath, Pointer, Reach};
use super::preset::{Layout, PresetRules, preset};
use super::rows::Rules;
use super::text::TextMode;
use super::value::Tolerance;
use super::{Comparator, CompareSpec, Format, Mode, Preset};

/// A configuration the comparator cannot honour. Messages name the key
/// (`compare.pointer`, `compare.ignore[2]`, ...) and say what was expected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// A pointer that does not start with '/'.
    #[error("{key} must start with '/' (RFC 6901 JSON pointer), got {got:?}")]
    PointerStart { key: String, got: String },
    /// A '~' not followed by '0' or '1'.
    #[error(
        "{key} has an invalid escape: '~' must be followed by '0' or '1' (RFC 6901 JSON pointer), got {got:?}"
    )]
    PointerEscape { key: String, got: String },
    /// A `*` segment in `compare.pointer`.
    #[error(
        "{key} cannot contain a '*' segment (wildcards are only supported in compare.ignore), got {got:?}"
    )]
    PointerWildcard { key: String, got: String },
    /// An empty ignore pointer, which would ignore everything.
    #[error("{key} must not be empty (\"\" would ignore the whole document)")]
    IgnoreEmpty { key: String },
    /// `compare.pointer` given together with `compare.preset`.
    #[error(
        "compare.pointer cannot be combined with compare.preset (preset {preset:?} already chooses what to compare)"
    )]
    PointerWithPreset { preset: &'static str },
    /// A tolerance that is negative, NaN or infinite.
    #[error("{key} must be a finite number >= 0, got {got}")]
    Tolerance { key: &'static str, got: f64 },
    /// `compare.min_cosine` outside [-1, 1] (or NaN).
    #[error("compare.min_cosine must be between -1 and 1, got {got}")]
    MinCosine { got: f64 },
    /// `compare.min_similarity` outside [0, 1] (or NaN).
    #[error("compare.min_similarity must be between 0 and 1, got {got}")]
    MinSimilarity { got: f64 },
    /// `compare.text` without `compare.preset = "openai"`.
    #[error(
        "compare.text applies only with compare.preset = \"openai\" (the generated text of chat and completions answers)"
    )]
    TextWithoutOpenai,
    /// A JSON-only setting used with `format = "bytes"`.
    #[error(
        "{key} cannot be combined with compare.format = \"bytes\" (bytes are compared exactly, as one element)"
    )]
    BytesWith { key: &'static str },
}

impl SpecError {
    /// The config key at fault, e.g. `compare.ignore[2]`.
    pub fn key(&self) -> &str {
        match self {
            SpecError::PointerStart { key, .. }
            | SpecError::PointerEscape { key, .. }
            | SpecError::PointerWildcard { key, .. }
            | SpecError::IgnoreEmpty { key } => key,
            SpecError::PointerWithPreset { .. } => "compare.pointer",
            SpecError::Tolerance { key, .. } | SpecError::BytesWith { key } => key,
            SpecError::MinCosine { .. } => "compare.min_cosine",
            SpecError::MinSimilarity { .. } => "compare.min_similarity",
            SpecError::TextWithoutOpenai => "compare.text",
        }
    }
}

pub(crate) fn compile(spec: &CompareSpec) -> Result<Comparator, SpecError> {
    if spec.format == Format::Bytes {
        let json_only = [
            ("compare.preset", spec.preset.is_some()),
            ("compare.pointer", spec.pointer.is_some()),
            ("compare.ignore", !spec.ignore.is_empty()),
            (
                "compare.mode",
                matches!(spec.mode, Some(Mode::Argmax | Mode::Cosine)),
            ),
        ];
        if let Some((key, _)) = json_only.into_iter().find(|(_, set)| *set) {
            return Err(SpecError::BytesWith { key });
        }
    }
    let generic = |target| PresetRules {
        target,
        layout: Layout::Generic,
        mode: Mode::Value,
        ignores: Vec::new(),
    };
    let PresetRules {
        target,
        layout,
        mode: default_mode,
        mut ignores,
    } = match (spec.preset, &spec.pointer) {
        (Some(p), Some(_)) => return Err(SpecError::PointerWithPreset { preset: p.as_str() }),
        (Some(p), None) => preset(p),
        (None, Some(text)) => generic(Pointer::parse(text, "compare.pointer")?),
        (None, None) => generic(Pointer::root()),
    };
    for (i, text) in spec.ignore.iter().enumerate() {
        ignores.push(IgnorePath::parse(text, &format!("compare.ignore[{i}]"))?);
    }
    for (key, got) in [
        ("compare.abs_tolerance", spec.abs_tolerance),
        ("compare.rel_tolerance", spec.rel_tolerance),
    ] {
        if !(got.is_finite() && got >= 0.0) {
            return Err(SpecError::Tolerance { key, got });
        }
    }
    if !(-1.0..=1.0).contains(&spec.min_cosine) {
        return Err(SpecError::MinCosine {
            got: spec.min_cosine,
        });
    }
    if spec.text.is_some() && spec.preset != Some(Preset::Openai) {
        return Err(SpecError::TextWithoutOpenai);
    }
    if !(0.0..=1.0).contains(&spec.min_similarity) {
        return Err(SpecError::MinSimilarity {
            got: spec.min_similarity,
        });
    }
    let inner_ignores = ignores
        .iter()
        .map(|ignore| match ignore.reach(target.tokens()) {
            Reach::Outside => Some(None),
            Reach::Target => None,
            Reach::Inside(relative) => Some(Some(relative)),
        })
        .collect::<Option<Vec<_>>>()
        .map(|inner| inner.into_iter().flatten().collect());
    Ok(Comparator {
        format: spec.format,
        target,
        layout,
        ignores,
        inner_ignores,
        rules: Rules {
            mode: spec.mode.unwrap_or(default_mode),
            tol: Tolerance {
                abs: spec.abs_tolerance,
                rel: spec.rel_tolerance,
            },
            min_cosine: spec.min_cosine,
        },
        text: TextRules {
            mode: spec.text.unwrap_or(TextMode::Exact),
            min_similarity: spec.min_similarity,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: CompareSpec) -> String {
        Comparator::new(&spec)
            .expect_err("spec must be rejected")
            .to_string()
    }

    #[test]
    fn default_spec_compiles_to_whole_document_value_mode() {
        let c = Comparator::new(&CompareSpec::default()).expect("defaults are valid");
        assert_eq!(c.mode(), Mode::Value);
        assert!(c.target.tokens().is_empty());
        assert_eq!(c.layout, Layout::Generic);
    }

    #[test]
    fn pointer_without_slash_names_key_and_value() {
        let spec = CompareSpec {
            pointer: Some("predictions".into()),
            ..Default::default()
        };
        assert_eq!(
            err(spec),
            "compare.pointer must start with '/' (RFC 6901 JSON pointer), got \"predictions\""
        );
    }

    #[test]
    fn bad_ignore_names_its_index() {
        let spec = CompareSpec {
            ignore: vec!["/id".into(), "/ok".into(), "model_version".into()],
            ..Default::default()
        };
        assert_eq!(
            err(spec),
            "compare.ignore[2] must start with '/' (RFC 6901 JSON pointer), got \"model_version\""
        );
    }

    #[test]
    fn preset_with_pointer_is_rejected() {
        let spec = CompareSpec {
            preset: Some(Preset::TfServing),
            pointer: Some("/predictions".into()),
            ..Default::default()
        };
        let msg = err(spec);
        assert!(
            msg.starts_with("compare.pointer cannot be combined with compare.preset"),
            "{msg}"
        );
        assert!(msg.contains("tf-serving"), "{msg}");
    }

    #[test]
    fn tolerances_must_be_finite_and_non_negative() {
        for bad in [-1e-9, f64::NAN, f64::INFINITY] {
            let spec = CompareSpec {
                abs_tolerance: bad,
                ..Default::default()
            };
            assert!(
                err(spec).starts_with("compare.abs_tolerance must be a finite number >= 0, got ")
            );
            let spec = CompareSpec {
                rel_tolerance: bad,
                ..Default::default()
            };
            assert!(
                err(spec).starts_with("compare.rel_tolerance must be a finite number >= 0, got ")
            );
        }
        let zero = CompareSpec {
            abs_tolerance: 0.0,
            rel_tolerance: 0.0,
            ..Default::default()
        };
        assert!(Comparator::new(&zero).is_ok());
    }

    #[test]
    fn min_cosine_must_be_between_minus_one_and_one() {
        for bad in [1.0000001, -1.5, f64::NAN] {
            let spec = CompareSpec {
                min_cosine: bad,
                ..Default::default()
            };
            assert!(err(spec).starts_with("compare.min_cosine must be between -1 and 1"));
        }
        for ok in [-1.0, 0.0, 1.0] {
            assert!(
                Comparator::new(&CompareSpec {
                    min_cosine: ok,
                    ..Default::default()
                })
                .is_ok()
            );
        }
    }

    #[test]
    fn bytes_format_rejects_json_only_settings() {
        let bytes = CompareSpec {
            format: Format::Bytes,
            ..Default::default()
        };
        assert!(Comparator::new(&bytes).is_ok());
        let spec = CompareSpec {
            ignore: vec!["/id".into()],
            ..bytes.clone()
        };
        assert_eq!(
            Comparator::new(&spec).err(),
            Some(SpecError::BytesWith {
                key: "compare.ignore"
            })
        );
        let spec = CompareSpec {
            mode: Some(Mode::Argmax),
            ..bytes.clone()
        };
        assert_eq!(
            Comparator::new(&spec).err(),
            Some(SpecError::BytesWith {
                key: "compare.mode"
            })
        );
        let spec = CompareSpec {
            preset: Some(Preset::Openai),
            ..bytes
        };
        assert_eq!(
            Comparator::new(&spec).err(),
            Some(SpecError::BytesWith {
                key: "compare.preset"
            })
        );
    }

    #[test]
    fn text_needs_the_openai_preset_and_min_similarity_a_share() {
        let text = CompareSpec {
            text: Some(TextMode::Json),
            ..Default::default()
        };
        assert_eq!(
            Comparator::new(&text).err().map(|e| e.key().to_owned()),
            Some("compare.text".to_owned())
        );
        let openai = CompareSpec {
            preset: Some(Preset::Openai),
            ..text
        };
        assert!(Comparator::new(&openai).is_ok());
        for bad in [-0.1, 1.5, f64::NAN] {
            let spec = CompareSpec {
                min_similarity: bad,
                ..openai.clone()
            };
            assert!(err(spec).starts_with("compare.min_similarity must be between 0 and 1"));
        }
    }

    #[test]
    fn preset_default_mode_yields_to_user_mode() {
        let openai = CompareSpec {
            preset: Some(Preset::Openai),
            ..Default::default()
        };
        assert_eq!(Comparator::new(&openai).map(|c| c.mode()), Ok(Mode::Cosine));
        let kserve = CompareSpec {
            preset: Some(Preset::KserveV2),
            ..Default::default()
        };
        assert_eq!(Comparator::new(&kserve).map(|c| c.mode()), Ok(Mode::Value));
        let argmax = CompareSpec {
            mode: Some(Mode::Argmax),
            ..kserve
        };
        assert_eq!(Comparator::new(&argmax).map(|c| c.mode()), Ok(Mode::Argmax));
        let value = CompareSpec {
            mode: Some(Mode::Value),
            ..openai
        };
        assert_eq!(Comparator::new(&value).map(|c| c.mode()), Ok(Mode::Value));
    }
}
