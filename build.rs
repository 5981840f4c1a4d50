//! Stamps the git revision the binary is built from into
//! `UNDERSTUDY_REVISION` (read with `env!` for `understudy_build_info`).
//!
//! The revision is `git rev-parse --short=12 HEAD` of this crate's own
//! repository. Without one (a Docker build context carries no `.git`, a
//! crate unpacked from a tarball) it is the `UNDERSTUDY_REVISION`
//! environment variable of the build, or `unknown`.
//!
//! Cargo reruns this script only when `HEAD` moves (a checkout, or a commit
//! on the checked-out branch) or the variable changes, never on an edit of a
//! source file: each path it watches exists, since a missing one would make
//! every build rerun it.

use std::path::{Path, PathBuf};
use std::process::Command;

const VARIABLE: &str = "UNDERSTUDY_REVISION";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={VARIABLE}");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let revision = match git_revision(&manifest_dir) {
        Some(revision) => revision,
        None => std::env::var(VARIABLE)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "unknown".to_owned()),
    };
    println!("cargo:rustc-env={VARIABLE}={revision}");
}

/// The short hash of `HEAD`, when `dir` is the top of a git work tree;
/// also tells cargo which files move with `HEAD`.
fn git_revision(dir: &Path) -> Option<String> {
    // Only this crate's own repository: a crate built from inside some other
    // repository (a vendored copy) must not take that one's revision.
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let revision = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // `HEAD` itself changes on a checkout; on a commit only the branch's
    // ref moves (a loose file, or a line in packed-refs once packed). In a
    // linked worktree these live in different git directories, which
    // `--git-path` resolves.
    let mut watched = vec![git_path(dir, "HEAD")?];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git_path(dir, &branch)?);
        watched.push(git_path(dir, "packed-refs")?);
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(revision)
}

/// The absolute path of `name` inside the git directory.
fn git_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(dir, &["rev-parse", "--git-path", name])?);
    Some(if path.is_absolute() {
        path
    } else {
        dir.join(path)
    })
}

/// Runs git in `dir`; its trimmed output when it succeeds with some.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
