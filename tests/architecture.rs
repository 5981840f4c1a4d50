//! The shape of `src/`, checked: the top-level modules import each other
//! without a cycle, the pure layers import nothing of the request path or
//! the control plane above them, and no source file outgrows a reading.
//!
//! The graph is read from the source text: every `crate::<module>` path
//! outside comments, including the heads of `use crate::{a, b::c}` groups.
//! `lib.rs` and `main.rs` are the root and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Modules that are pure building blocks: comparison, the traffic split,
/// statistics, the body capture, label sets, the byte budget and config.
/// Validation runs and the proxy both reuse them, so they must not reach
/// up into the request path or the control plane.
const PURE: &[&str] = &[
    "budget", "capture", "compare", "config", "labels", "split", "stats", "units",
];

/// The request path and the control plane above the pure layers.
const UPPER: &[&str] = &[
    "admin", "fleet", "listener", "mirror", "proxy", "record", "reload", "rollout", "server",
];

/// A source file longer than this is split by concern. Unit-test files
/// (`tests.rs`, `tests_*.rs`, anything under a `tests/` folder) are exempt.
const MAX_LINES: usize = 500;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/proxy/body.rs` → `proxy`,
/// `src/split.rs` → `split`.
fn top_module(relative: &Path) -> String {
    let first = relative.components().next().expect("non-empty path");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// Every module named right after `crate::` in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_heads(group));
        } else {
            found.insert(leading_ident(rest).to_string());
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// The first identifier of each item in a `{a::b, c, d::{e, f}}` group
/// (`group` starts just after the opening brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut item_start = true;
    for (i, ch) in group.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                heads.push(leading_ident(&group[i..]).to_string());
                item_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn leading_ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Source text without line comments (doc links are not imports).
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the modules it imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue;
        }
        let module = top_module(relative);
        let text = fs::read_to_string(&file).expect("read source");
        let imports = graph.entry(module.clone()).or_default();
        for target in crate_paths(&without_comments(&text)) {
            if target != module {
                imports.insert(target);
            }
        }
    }
    graph
}

/// One cycle through the graph, if there is any, as the modules on it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|m| m == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 10, "the graph was not read: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" → "));
    }
}

#[test]
fn pure_layers_import_nothing_of_the_request_path_or_control_plane() {
    let graph = import_graph();
    let mut wrong = Vec::new();
    for module in PURE {
        for target in graph.get(*module).into_iter().flatten() {
            if UPPER.contains(&target.as_str()) {
                wrong.push(format!("{module} → {target}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the request path: {wrong:?}"
    );
}

#[test]
fn label_sets_are_a_leaf() {
    let graph = import_graph();
    let labels = graph.get("labels").expect("src/labels.rs exists");
    assert!(labels.is_empty(), "labels imports {labels:?}");
}

#[test]
fn no_source_file_outgrows_a_reading() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let name = relative.file_name().unwrap().to_string_lossy();
        let is_test = name == "tests.rs"
            || name.starts_with("tests_")
            || relative.components().any(|c| c.as_os_str() == "tests");
        if is_test {
            continue;
        }
        let lines = fs::read_to_string(&file).expect("read").lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", relative.display()));
        }
    }
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:?}");
}

#[test]
fn the_reader_sees_use_groups_and_skips_comments() {
    let code = "use crate::{a::b, c, d::{e, f}};\n// crate::z\nlet x = crate::g::h();";
    let found = crate_paths(&without_comments(code));
    let expected: BTreeSet<String> = ["a", "c", "d", "g"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, expected);

    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(3));
}
