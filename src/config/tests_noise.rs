//! `compare.noise_percent` and `rollout.max_match_rate_drop`.

use super::*;

const BOTH: &str = r#"
[backends.stable]
url = "http://127.0.0.1:8001"
[backends.candidate]
url = "http://127.0.0.1:8002"
"#;

fn build(extra: &str) -> Result<Config, ConfigError> {
    build::build(&format!("{BOTH}{extra}"), "t", None)
}

fn problems(extra: &str) -> Vec<(String, String)> {
    match build(extra) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.into_iter().map(|p| (p.key, p.message)).collect()
        }
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn noise_is_off_by_default_and_the_relative_gate_unset() {
    let config = build("[rollout]\n").unwrap();
    assert_eq!(config.compare.noise_percent, 0.0);
    assert_eq!(config.rollout.unwrap().max_match_rate_drop, None);
}

#[test]
fn noise_percent_and_the_relative_gate_are_read() {
    let config =
        build("[compare]\nnoise_percent = 12.5\n[rollout]\nmax_match_rate_drop = 0.02\n").unwrap();
    assert_eq!(config.compare.noise_percent, 12.5);
    assert_eq!(config.rollout.unwrap().max_match_rate_drop, Some(0.02));
}

#[test]
fn out_of_range_values_name_their_key() {
    for bad in ["-1", "100.5", "nan"] {
        let found = problems(&format!("[compare]\nnoise_percent = {bad}\n"));
        assert_eq!(found[0].0, "compare.noise_percent", "{found:?}");
        assert!(found[0].1.contains("between 0 and 100"), "{found:?}");
    }
    let found = problems("[compare]\nnoise_percent = 5\n[rollout]\nmax_match_rate_drop = 1.5\n");
    assert_eq!(found[0].0, "rollout.max_match_rate_drop", "{found:?}");
    assert!(found[0].1.contains("between 0 and 1"), "{found:?}");
}

#[test]
fn the_relative_gate_needs_noise_pairs_and_whole_responses() {
    let found = problems("[rollout]\nmax_match_rate_drop = 0.02\n");
    assert_eq!(found[0].0, "rollout.max_match_rate_drop", "{found:?}");
    assert!(found[0].1.contains("compare.noise_percent"), "{found:?}");
    let found = problems(
        "[compare]\nnoise_percent = 5\n[rollout]\nmax_match_rate_drop = 0.02\nmatch_unit = \"row\"\n",
    );
    assert_eq!(found[0].0, "rollout.max_match_rate_drop", "{found:?}");
    assert!(found[0].1.contains("row"), "{found:?}");
}
