//! Debian's headless Chromium, started by the test and driven over the
//! DevTools protocol (CDP): JSON commands and events on one websocket.
//!
//! The client is these few hundred lines over `tokio-tungstenite` rather
//! than a CDP crate. The suites need a handful of commands (open a page,
//! evaluate, answer a dialog) and three kinds of event; measured in a clean
//! crate that already has tokio and serde_json (17 s), `tokio-tungstenite`
//! adds about 11 s to a clean debug build on this 2-core machine and
//! `chromiumoxide` 0.9 (the maintained async driver, with code generated
//! for the whole protocol) about 100 s, on every CI run.
//!
//! Included with `#[path]` by `tests/live_page.rs` alone, so the other
//! suites do not compile it. It never uses the crate under test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Where Debian's `chromium` package installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one CDP command may take before the test gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// The browser, or `None` when it is not installed and this is not CI:
/// then the caller skips, after a message no one can miss. Under CI
/// (`CI` set) a missing browser fails the test, so the suite cannot pass
/// by not running.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{CHROMIUM} is missing and CI is set: install Debian's chromium package");
    }
    eprintln!(
        "\n********************************************************************\n\
         SKIPPED {test}: {CHROMIUM} is not installed (apt-get install chromium).\n\
         Under CI this test fails instead.\n\
         ********************************************************************\n"
    );
    None
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running headless Chromium with a fresh profile, connected over CDP.
/// Dropping it kills the browser's process group and removes the profile.
pub struct Browser {
    child: Child,
    dir: PathBuf,
    outgoing: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<Notify>,
    next_id: AtomicU64,
}

impl Browser {
    /// Starts `binary` headless on an ephemeral DevTools port and connects
    /// to it. Its stderr goes to `chromium.log` beside the profile, shown
    /// if it fails to start.
    pub async fn launch(binary: &Path) -> Browser {
        let dir = std::env::temp_dir().join(format!(
            "understudy-chromium-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(dir.join("chromium.log")).unwrap();
        let mut command = Command::new(binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Its own process group, so that dropping the browser can end the
        // renderer and helper processes too, by this one id.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("spawn chromium");
        let port_file = profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let url = loop {
            // Line 1: the port; line 2: the browser target's path.
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break format!("ws://127.0.0.1:{port}{path}");
            }
            if tokio::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("chromium.log")).unwrap_or_default();
                panic!("chromium wrote no DevToolsActivePort within 30s; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let (answers, seen, notify) = (pending.clone(), events.clone(), arrived.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match value["id"].as_u64() {
                    Some(id) => {
                        if let Some(answer) = answers.lock().unwrap().remove(&id) {
                            let _ = answer.send(value);
                        }
                    }
                    None => {
                        seen.lock().unwrap().push(value);
                        notify.notify_waiters();
                    }
                }
            }
        });
        Browser {
            child,
            dir,
            outgoing,
            pending,
            events,
            arrived,
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends one command (to a page's session, or to the browser with
    /// `None`) and waits for its result; a CDP error panics.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let (answer, answered) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, answer);
        self.outgoing
            .send(Message::text(message.to_string()))
            .expect("the websocket writer is running");
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, answered)
            .await
            .unwrap_or_else(|_| panic!("{method}: no answer within {COMMAND_TIMEOUT:?}"))
            .expect("the websocket reader is running");
        if let Some(error) = reply.get("error") {
            panic!("{method} {params}: {error}", params = message["params"]);
        }
        reply["result"].clone()
    }

    /// Opens a new tab on `about:blank` with the runtime, page and log
    /// domains enabled, so that no error or dialog of its is missed.
    pub async fn new_page(&self) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            self.call(Some(&session), domain, json!({})).await;
        }
        Page {
            browser: self,
            session,
        }
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Closes the browser and waits for it to exit (the drop kills it if
    /// this does not finish).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call(None, "Browser.close", json!({})),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // The group this browser leads: its renderers and helpers.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One tab, attached in flat mode: its commands and events carry its
/// session id.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    /// Sends one command to this tab.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).await
    }

    /// Loads `url` and waits for its load event.
    pub async fn navigate(&self, url: &str) {
        let from = self.browser.events().len();
        let navigated = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            navigated.get("errorText").is_none(),
            "navigate to {url}: {navigated}"
        );
        self.wait_event("Page.loadEventFired", from, Duration::from_secs(20))
            .await;
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its
    /// value as JSON; an exception thrown by it panics.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(details) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until `done` accepts its value; panics after
    /// `timeout` naming `what` and the last value.
    pub async fn wait_until(
        &self,
        what: &str,
        expression: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let value = self.eval(expression).await;
            if done(&value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {timeout:?}; `{expression}` is {value}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element with `id` in a task of its own, so that a dialog
    /// it opens does not hold up this command's answer.
    pub async fn click(&self, id: &str) {
        let expression = format!(
            "setTimeout(() => document.getElementById({}).click(), 0)",
            json!(id)
        );
        self.eval(&expression).await;
    }

    /// Waits for this tab's next event `method` at or after index `from`
    /// of [`Browser::events`]; returns its params.
    pub async fn wait_event(&self, method: &str, from: usize, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.browser.arrived.notified();
            let found = self.browser.events.lock().unwrap()[from..]
                .iter()
                .find(|e| e["method"] == method && e["sessionId"] == self.session.as_str())
                .map(|e| e["params"].clone());
            if let Some(params) = found {
                return params;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("no {method} event within {timeout:?}");
            }
        }
    }

    /// Waits for a JavaScript dialog of `kind` (`prompt`, `confirm`, …)
    /// opened at or after event `from`, answers it, and returns its message.
    pub async fn answer_dialog(
        &self,
        kind: &str,
        from: usize,
        accept: bool,
        prompt_text: &str,
    ) -> String {
        let dialog = self
            .wait_event(
                "Page.javascriptDialogOpening",
                from,
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(dialog["type"], kind, "{dialog}");
        self.call(
            "Page.handleJavaScriptDialog",
            json!({ "accept": accept, "promptText": prompt_text }),
        )
        .await;
        dialog["message"].as_str().unwrap_or_default().to_owned()
    }

    /// The page's JavaScript errors so far: uncaught exceptions,
    /// `console.error` and `console.assert` calls, and error entries of
    /// the browser's log (a refused content security policy among them),
    /// except network entries whose URL `expected_network` accepts.
    pub fn errors(&self, expected_network: impl Fn(&str) -> bool) -> Vec<String> {
        self.browser
            .events()
            .into_iter()
            .filter(|e| e["sessionId"] == self.session.as_str())
            .filter_map(|e| {
                let params = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => Some(format!("exception: {}", params)),
                    "Runtime.consoleAPICalled"
                        if matches!(params["type"].as_str(), Some("error" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", params["type"], params["args"]))
                    }
                    "Log.entryAdded" if params["entry"]["level"] == "error" => {
                        let entry = &params["entry"];
                        let url = entry["url"].as_str().unwrap_or_default();
                        let network = entry["source"] == "network";
                        (!(network && expected_network(url)))
                            .then(|| format!("log ({}): {} {url}", entry["source"], entry["text"]))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Index of the next event to arrive, for [`Page::wait_event`].
    pub fn mark(&self) -> usize {
        self.browser.events().len()
    }
}
