//! `[fleet]` validation.

use super::*;

const ROLLOUT: &str = r#"
[listen]
addr = "127.0.0.1:8080"
[backends.stable]
url = "http://127.0.0.1:8001"
[backends.candidate]
url = "http://127.0.0.1:8002"
[rollout]
"#;

fn with_fleet(fleet: &str) -> String {
    format!("{ROLLOUT}\n[fleet]\n{fleet}")
}

fn problem_keys(text: &str) -> Vec<String> {
    match build::build(text, "t.toml", None) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid { problems, .. }) => problems.into_iter().map(|p| p.key).collect(),
        Err(other) => panic!("expected validation problems, got {other}"),
    }
}

#[cfg(feature = "fleet")]
#[test]
fn a_fleet_gets_defaults_for_replica_id_and_lease() {
    let text =
        with_fleet("endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/understudy/iris/\"\n");
    let fleet = build::build(&text, "t", None).unwrap().fleet.unwrap();
    assert_eq!(fleet.prefix, "/understudy/iris", "trailing slash dropped");
    assert_eq!(fleet.lease_ttl, DEFAULT_LEASE_TTL);
    assert!(fleet.replica_id.ends_with(":8080"), "{}", fleet.replica_id);
    assert!(fleet.tls.is_none());
}

#[cfg(not(feature = "fleet"))]
#[test]
fn without_the_feature_a_fleet_config_is_refused_with_how_to_get_it() {
    let text = with_fleet("endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/u\"\n");
    let error = build::build(&text, "t", None).unwrap_err().to_string();
    assert!(error.contains("--features fleet"), "{error}");
}

#[test]
fn every_bad_fleet_key_is_named() {
    let text = with_fleet(
        "endpoints = [\"etcd-1:2379\", \"http://127.0.0.1:2379\"]\nprefix = \"understudy\"\nreplica_id = \"a/b\"\nlease_ttl = \"500ms\"\n",
    );
    let keys = problem_keys(&text);
    for key in [
        "fleet.endpoints[0]",
        "fleet.prefix",
        "fleet.replica_id",
        "fleet.lease_ttl",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
    assert!(!keys.iter().any(|k| k == "fleet.endpoints[1]"), "{keys:?}");
}

#[test]
fn a_fleet_needs_endpoints_a_prefix_and_a_rollout() {
    let keys = problem_keys("[backends.stable]\nurl = \"http://127.0.0.1:8001\"\n[fleet]\n");
    for key in ["fleet", "fleet.endpoints", "fleet.prefix"] {
        assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
    }
}

#[test]
fn https_endpoints_need_a_ca_and_http_ones_take_no_tls() {
    let keys = problem_keys(&with_fleet(
        "endpoints = [\"https://etcd:2379\"]\nprefix = \"/u\"\n",
    ));
    assert!(keys.iter().any(|k| k == "fleet.tls.ca"), "{keys:?}");
    let keys = problem_keys(&with_fleet(
        "endpoints = [\"http://etcd:2379\"]\nprefix = \"/u\"\n[fleet.tls]\nca = \"ca.pem\"\n",
    ));
    assert!(keys.iter().any(|k| k == "fleet.tls"), "{keys:?}");
    let keys = problem_keys(&with_fleet(
        "endpoints = [\"http://etcd:2379\", \"https://etcd:2379\"]\nprefix = \"/u\"\n",
    ));
    assert!(keys.iter().any(|k| k == "fleet.endpoints"), "{keys:?}");
}

#[test]
fn the_fleet_example_is_valid_in_fleet_builds_and_refused_only_for_the_feature_elsewhere() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fleet.toml");
    let keys = problem_keys(&std::fs::read_to_string(path).unwrap());
    if cfg!(feature = "fleet") {
        assert!(keys.is_empty(), "{keys:?}");
    } else {
        assert_eq!(keys, ["fleet"]);
    }
}
