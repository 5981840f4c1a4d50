//! The shape of the test support code: fake servers, clients and the other
//! helpers under `tests/support/` never use the crate under test, so a bug in
//! the proxy cannot hide in the doubles that test it. Only
//! `tests/support/harness/`, which starts the proxy and runs the crate's toy
//! models, may.

use std::path::{Path, PathBuf};

/// The one folder under `tests/support/` that may use the crate.
const HARNESS: &str = "harness";

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The lines of `source` (numbered from 1) that use the crate, comments aside.
fn crate_uses(source: &str) -> Vec<(usize, &str)> {
    source
        .lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, code)| !code.starts_with("//"))
        .filter(|(_, code)| code.contains("understudy::") || code.contains("use understudy"))
        .collect()
}

#[test]
fn crate_uses_finds_paths_and_imports_but_not_comments() {
    let source = "//! Never `use understudy::x`.\n\
                  use std::fmt;\n\
                  // understudy::config\n\
                  use understudy::config::Config;\n\
                  let c = understudy::config::Config::parse(t, n);\n\
                  use understudy as proxy;\n\
                  let name = \"understudy-test\";\n";
    let lines: Vec<usize> = crate_uses(source).iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, [4, 5, 6]);
}

#[test]
fn support_code_outside_the_harness_never_uses_the_crate() {
    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
    let harness = support.join(HARNESS);
    assert!(harness.is_dir(), "{} is missing", harness.display());
    let files = rust_files(&support);
    let outside: Vec<&PathBuf> = files.iter().filter(|f| !f.starts_with(&harness)).collect();
    assert!(
        outside.len() > 5,
        "too few support files found: {outside:?}"
    );
    let mut offences = Vec::new();
    for file in outside {
        let source = std::fs::read_to_string(file).unwrap();
        for (n, line) in crate_uses(&source) {
            offences.push(format!("{}:{n}: {line}", file.display()));
        }
    }
    assert!(
        offences.is_empty(),
        "support code outside tests/support/{HARNESS}/ uses the crate under test:\n{}",
        offences.join("\n")
    );
}
