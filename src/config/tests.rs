use super::*;

const MINIMAL: &str = r#"
[backends.stable]
url = "http://127.0.0.1:8001"
"#;

fn problems(text: &str) -> Vec<Problem> {
    match build::build(text, "test.toml", None) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = build::build(MINIMAL, "t", None).unwrap();
    assert_eq!(config.listen.addr, DEFAULT_LISTEN_ADDR.parse().unwrap());
    assert_eq!(config.admin.addr, DEFAULT_ADMIN_ADDR.parse().unwrap());
    assert_eq!(config.stable.timeout, DEFAULT_BACKEND_TIMEOUT);
    assert_eq!(
        config.stable.max_connections,
        DEFAULT_BACKEND_MAX_CONNECTIONS
    );
    assert!(config.candidate.is_none());
    // Without a candidate there is nothing to mirror to.
    assert_eq!(config.shadow.percent, 0.0);
    assert!(config.rollout.is_none());
}

#[test]
fn shadow_percent_defaults_to_100_with_a_candidate() {
    let text = format!("{MINIMAL}\n[backends.candidate]\nurl = \"http://127.0.0.1:8002\"\n");
    let config = build::build(&text, "t", None).unwrap();
    assert_eq!(config.shadow.percent, 100.0);
}

#[test]
fn unknown_key_is_an_error_naming_it_and_its_line() {
    let text = format!("{MINIMAL}\n[rollout]\nmax_error_rat = 0.1\n");
    let error = build::build(&text, "t.toml", None).unwrap_err().to_string();
    assert!(error.contains("max_error_rat"), "{error}");
    assert!(error.contains("line 6"), "{error}");
}

#[test]
fn every_invalid_value_is_reported_with_key_and_line() {
    let text = r#"
[listen]
addr = "not-an-address"

[backends.stable]
url = "ftp://x"
timeout = "30"

[backends.candidate]
url = "http://127.0.0.1:8002"
max_connections = 0

[shadow]
percent = 150
max_in_flight = 0

[rollout]
max_error_rate = 1.5
steps = [50, 25]
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "listen.addr",
        "backends.stable.url",
        "backends.stable.timeout",
        "backends.candidate.max_connections",
        "shadow.percent",
        "shadow.max_in_flight",
        "rollout.max_error_rate",
        "rollout.steps",
    ] {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
    let rate = found
        .iter()
        .find(|p| p.key == "rollout.max_error_rate")
        .unwrap();
    assert_eq!(rate.line, Some(18));
    assert!(rate.message.contains("between 0 and 1"), "{}", rate.message);
    let timeout = found
        .iter()
        .find(|p| p.key == "backends.stable.timeout")
        .unwrap();
    assert!(timeout.message.contains("unit"), "{}", timeout.message);
}

#[test]
fn missing_stable_backend_is_reported() {
    let found = problems("[listen]\naddr = \"127.0.0.1:0\"\n");
    assert_eq!(found[0].key, "backends.stable");
}

#[test]
fn admin_on_a_public_address_needs_a_token() {
    let text = format!("{MINIMAL}\n[admin]\naddr = \"0.0.0.0:9901\"\n");
    let found = problems(&text);
    assert_eq!(found[0].key, "admin.addr");
    assert!(
        found[0].message.contains("admin.token"),
        "{}",
        found[0].message
    );
    // The environment variable counts as a token.
    assert!(build::build(&text, "t", Some("s3cret".into())).is_ok());
    let with_token = format!("{text}token = \"s3cret\"\n");
    assert!(build::build(&with_token, "t", None).is_ok());
}

#[test]
fn a_rollout_needs_a_candidate() {
    let text = format!("{MINIMAL}\n[rollout]\n");
    assert_eq!(problems(&text)[0].key, "rollout");
}

#[test]
fn compare_errors_name_the_compare_key() {
    let text = format!("{MINIMAL}\n[compare]\npointer = \"predictions\"\n");
    let found = problems(&text);
    assert_eq!(found[0].key, "compare.pointer");
    assert_eq!(found[0].line, Some(6));
}

#[test]
fn compare_keywords_are_checked() {
    let text = format!("{MINIMAL}\n[compare]\nmode = \"fuzzy\"\n");
    let found = problems(&text);
    assert_eq!(found[0].key, "compare.mode");
    assert!(found[0].message.contains("fuzzy"), "{}", found[0].message);
}

#[test]
fn sticky_key_must_name_header_or_cookie() {
    let text = format!("{MINIMAL}\n[split]\nsticky = \"query:user\"\n");
    assert_eq!(problems(&text)[0].key, "split.sticky");
}

#[test]
fn backend_url_with_a_path_is_rejected() {
    let text = "[backends.stable]\nurl = \"http://127.0.0.1:8001/v1\"\n";
    let found = problems(text);
    assert_eq!(found[0].key, "backends.stable.url");
    assert!(found[0].message.contains("without a path"));
}

#[test]
fn route_patterns_match_one_segment_per_star() {
    let p = RoutePattern::parse("/v2/models/*/infer").unwrap();
    assert!(p.matches("/v2/models/iris/infer"));
    assert!(!p.matches("/v2/models/iris/versions/1/infer"));
    assert!(!p.matches("/v2/models/iris/infer/x"));
    assert!(!p.matches("/v2/models/iris"));
    let prefix = RoutePattern::parse("/v1/models/*:predict").unwrap();
    assert!(prefix.matches("/v1/models/resnet:predict"));
    assert!(!prefix.matches("/v1/models/resnet:classify"));
    assert!(RoutePattern::parse("v2/*").is_err());
}

#[test]
fn shipped_example_configs_are_valid() {
    // tls.toml names certificate files that only exist on a real host.
    for file in ["understudy.toml", "kserve-v2.toml", "grpc.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = build::build(&text, file, Some("example-token".into())) {
            panic!("{file}: {e}");
        }
    }
}

#[test]
fn tls_example_fails_only_on_its_missing_certificate_files() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tls.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let found = problems(&text);
    assert!(!found.is_empty());
    for problem in &found {
        assert!(
            problem.message.contains("/etc/understudy/tls/"),
            "unexpected problem {problem:?}"
        );
    }
}

#[test]
fn record_section_gets_defaults_and_checks_every_key() {
    let text = format!("{MINIMAL}\n[record]\npath = \"t.jsonl\"\n");
    let record = build::build(&text, "t", None).unwrap().record.unwrap();
    assert_eq!(record.path, Some(PathBuf::from("t.jsonl")));
    assert_eq!(record.effective_percent(), DEFAULT_RECORD_PERCENT);
    assert_eq!(record.max_bytes, DEFAULT_RECORD_MAX_BYTES);
    assert_eq!(record.headers, default_record_headers());

    let text = format!(
        "{MINIMAL}\n[record]\npath = \"\"\npercent = 101\nmax_bytes = 10\nheaders = [\"bad header\"]\n"
    );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "record.path",
            "record.percent",
            "record.max_bytes",
            "record.headers[0]"
        ]
    );
    let text = format!("{MINIMAL}\n[record]\npth = \"x\"\n");
    assert!(build::build(&text, "t", None).is_err());
}

#[test]
fn record_flag_records_everything_unless_percent_is_configured() {
    let mut config = build::build(MINIMAL, "t", None).unwrap();
    config.record_to(PathBuf::from("a.jsonl"));
    let record = config.record.unwrap();
    assert_eq!(record.path, Some(PathBuf::from("a.jsonl")));
    assert_eq!(record.effective_percent(), 100.0);

    let text = format!("{MINIMAL}\n[record]\npercent = 5\nheaders = [\"x-tenant\"]\n");
    let mut config = build::build(&text, "t", None).unwrap();
    assert_eq!(config.record.as_ref().unwrap().path, None);
    config.record_to(PathBuf::from("b.jsonl"));
    let record = config.record.unwrap();
    assert_eq!(record.path, Some(PathBuf::from("b.jsonl")));
    assert_eq!(record.effective_percent(), 5.0);
    assert_eq!(record.headers, [HeaderName::from_static("x-tenant")]);
}

#[test]
fn shadow_budget_and_comparison_pool_have_defaults_and_are_checked() {
    let config = build::build(MINIMAL, "t", None).unwrap();
    assert_eq!(
        config.shadow.max_buffered_bytes,
        DEFAULT_SHADOW_MAX_BUFFERED_BYTES
    );
    assert_eq!(config.compare.threads, default_compare_threads());
    assert_eq!(config.compare.queue, DEFAULT_COMPARE_QUEUE);
    assert_eq!(config.compare.priority, ComparePriority::Idle);

    let text = format!(
        "{MINIMAL}\n[shadow]\nmax_buffered_bytes = 1024\n[compare]\nthreads = 3\nqueue = 5\npriority = \"normal\"\n"
    );
    let config = build::build(&text, "t", None).unwrap();
    assert_eq!(config.shadow.max_buffered_bytes, 1024);
    assert_eq!((config.compare.threads, config.compare.queue), (3, 5));
    assert_eq!(config.compare.priority, ComparePriority::Normal);

    let text = format!(
        "{MINIMAL}\n[shadow]\nmax_buffered_bytes = -1\n[compare]\nthreads = 0\nqueue = 0\npriority = \"high\"\n"
    );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    for key in [
        "shadow.max_buffered_bytes",
        "compare.threads",
        "compare.queue",
        "compare.priority",
    ] {
        assert!(keys.iter().any(|k| k == key), "missing {key} in {keys:?}");
    }
}

#[test]
fn latency_slack_and_match_unit_are_read_and_checked() {
    let text = format!(
        "{MINIMAL}\n[backends.candidate]\nurl = \"http://127.0.0.1:8002\"\n\n[rollout]\n\
         max_latency_increase_ms = 2.5\nmatch_unit = \"row\"\n"
    );
    let config = build::build(&text, "t", None).expect("valid");
    let r = config.rollout.expect("rollout");
    assert_eq!(r.max_latency_increase_ms, 2.5);
    assert_eq!(r.match_unit, MatchUnit::Row);
    let bad = format!(
        "{MINIMAL}\n[backends.candidate]\nurl = \"http://127.0.0.1:8002\"\n\n[rollout]\n\
         max_latency_increase_ms = -1\nmatch_unit = \"rows\"\n"
    );
    let keys: Vec<String> = problems(&bad).into_iter().map(|p| p.key).collect();
    assert!(
        keys.contains(&"rollout.max_latency_increase_ms".to_owned())
            && keys.contains(&"rollout.match_unit".to_owned()),
        "{keys:?}"
    );
}

#[test]
fn a_webhook_is_http_or_https_and_its_ca_is_for_https_only() {
    let rollout = |keys: &str| {
        format!(
            "{MINIMAL}\n[backends.candidate]\nurl = \"http://127.0.0.1:8002\"\n\n[rollout]\n{keys}"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("hooks-ca.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["hooks.internal".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(&ca, cert.pem()).unwrap();
    let https = format!(
        "webhook = \"https://hooks.internal/rollout\"\nwebhook_ca = \"{}\"\n",
        ca.display()
    );
    let r = build::build(&rollout(&https), "t", None)
        .expect("valid")
        .rollout
        .unwrap();
    assert_eq!(r.webhook.unwrap().scheme_str(), Some("https"));
    assert_eq!(r.webhook_ca, Some(ca.clone()));

    let messages = |keys: &str| -> Vec<(String, String)> {
        problems(&rollout(keys))
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    };
    assert_eq!(
        messages("webhook = \"ftp://hooks.internal/rollout\"\n"),
        [(
            "rollout.webhook".to_owned(),
            "unsupported scheme \"ftp\": expected an http:// or https:// URL, got \
             \"ftp://hooks.internal/rollout\""
                .to_owned()
        )]
    );
    let plain = format!(
        "webhook = \"http://hooks.internal/rollout\"\nwebhook_ca = \"{}\"\n",
        ca.display()
    );
    assert_eq!(messages(&plain)[0].0, "rollout.webhook_ca");
    assert!(messages(&plain)[0].1.contains("https:// webhook only"));
    let alone = format!("webhook_ca = \"{}\"\n", ca.display());
    assert!(
        messages(&alone)[0]
            .1
            .contains("rollout.webhook, which is not set")
    );
    let missing = "webhook = \"https://hooks.internal/\"\nwebhook_ca = \"/nonexistent/ca.pem\"\n";
    let found = messages(missing);
    assert_eq!(found[0].0, "rollout.webhook_ca");
    assert!(found[0].1.contains("/nonexistent/ca.pem"), "{found:?}");
}
