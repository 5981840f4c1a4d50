//! `promtool check metrics` on a scraped exposition: the Prometheus
//! project's own linter (Debian package `prometheus`).

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Lints `text`. `None` when promtool is missing outside CI (skipped loudly:
/// `cargo test` must pass on a newcomer's machine); in CI (`CI` set, where
/// `.ci/run` installs it) a missing promtool is a failure.
pub async fn check_metrics(text: &str) -> Option<Result<(), String>> {
    let child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIPPED promtool check: promtool is not on PATH (Debian/Ubuntu: apt-get install prometheus)"
            );
            return None;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH; install it (Debian/Ubuntu: apt-get install prometheus) \
             to run this test"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics ({}):\n{said}",
            output.status
        ))
    })
}
