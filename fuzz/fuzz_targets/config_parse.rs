//! Arbitrary bytes, read as UTF-8 config text, through `Config::parse`: errors are
//! fine, panics are not. A config that parses must also have a comparator that
//! compiles and a sticky key that round-trips through its config spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use understudy::compare::Comparator;
use understudy::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `https://` backends and `[listen.tls]` read the named PEM files during
    // validation; keep the fuzzer away from device files (`/dev/zero` would never
    // end, `/dev/stdin` would block) -- that is I/O, not parsing.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    match Config::parse(text, "fuzz") {
        Ok(config) => {
            // Validation promised the comparator compiles.
            assert!(Comparator::new(&config.compare.spec).is_ok());
            if let Some(key) = &config.split.sticky {
                let again: understudy::split::StickyKey =
                    key.to_string().parse().expect("sticky key round-trips");
                assert_eq!(&again, key);
            }
        }
        Err(ConfigError::Invalid { problems, .. }) => {
            // Every rejection says what is wrong.
            assert!(!problems.is_empty());
            // The error renders (this walks every problem).
            let _ = ConfigError::Invalid {
                origin: "fuzz".into(),
                problems,
            }
            .to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
