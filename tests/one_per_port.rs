//! One proxy per data-plane address: the real binary refuses to start on
//! a `listen.addr` that another understudy (or any other process) already
//! listens on, instead of silently sharing it through `SO_REUSEPORT`.

mod support;

use std::net::SocketAddr;

use http::Method;
use support::harness::{self, Binary, TempDir, run_cli};
use support::{FakeUpstream, Reply, http_client, send};

/// `understudy.toml` in `dir` listening on `addr`.
fn config_on(dir: &TempDir, stable: &str, addr: &str) -> std::path::PathBuf {
    let text = harness::config_text(stable, None, "").replacen(
        "addr = \"127.0.0.1:0\"",
        &format!("addr = \"{addr}\""),
        1,
    );
    assert!(text.contains(addr), "{text}");
    let path = dir.path("understudy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `understudy run -c CONFIG` expecting it to fail; returns stderr.
async fn run_expecting_failure(config: &std::path::Path) -> String {
    let output = run_cli(&["run", "-c", config.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "exit {:?}: {stderr}",
        output.status
    );
    stderr
}

async fn serves(url: &str) {
    let (status, _, _) = send(&http_client(), Method::GET, &format!("{url}/x"), &[], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_second_understudy_on_the_same_address_fails_at_startup() {
    let stable = FakeUpstream::start(Reply::json(200, "{}")).await;
    let first_dir = TempDir::new("port-first");
    let first = Binary::start(&config_on(&first_dir, &stable.url(), "127.0.0.1:0"), &[]).await;
    let addr = first.url.trim_start_matches("http://").to_owned();

    let second_dir = TempDir::new("port-second");
    let stderr = run_expecting_failure(&config_on(&second_dir, &stable.url(), &addr)).await;
    assert!(
        stderr.contains(&format!("cannot listen on {addr}"))
            && stderr.contains("another understudy process already serves"),
        "{stderr}"
    );
    serves(&first.url).await;
}

#[tokio::test]
async fn an_address_another_program_listens_on_with_reuseport_is_refused() {
    use socket2::{Domain, Socket, Type};
    let stable = FakeUpstream::start(Reply::json(200, "{}")).await;
    // Another program that set SO_REUSEPORT, as nginx's `reuseport` does.
    let other = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    other.bind(&any.into()).unwrap();
    other.listen(16).unwrap();
    let addr = other.local_addr().unwrap().as_socket().unwrap().to_string();

    let dir = TempDir::new("port-other");
    let stderr = run_expecting_failure(&config_on(&dir, &stable.url(), &addr)).await;
    assert!(
        stderr.contains("another process already listens"),
        "{stderr}"
    );
}
