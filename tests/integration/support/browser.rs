//! A real headless Chromium (Debian's `chromium`), driven over the Chrome DevTools Protocol on its own WebSocket.
//!
//! Only what the dashboard's tests need: open a page, evaluate script in it, set the viewport, take screenshots,
//! and collect every console error, uncaught exception and failed load the page reports. The protocol's full
//! client crates generate bindings for all of its hundreds of methods; these tests use seven.
//! Protocol reference: https://chromedevtools.github.io/devtools-protocol/ (Target, Page, Runtime, Log, Emulation).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::PATIENCE;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One browser with one page.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    commands: mpsc::UnboundedSender<String>,
    pending: Pending,
    next: AtomicU64,
    session: String,
    /// Console errors, uncaught exceptions and failed loads, as text.
    problems: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Start Chromium with a fresh profile and a blank page of 1280×900.
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                // The tests run as root in CI containers, where Chromium's own sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium is installed (scripts/setup installs Debian's `chromium`)");
        // Chromium says where its DevTools endpoint is on stderr.
        let stderr = child.stderr.take().unwrap();
        let (found, endpoint) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_string());
                    sent = true;
                }
            }
        });
        let url = endpoint.recv_timeout(PATIENCE).expect("chromium printed its DevTools endpoint");
        let (socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (mut sink, mut stream) = socket.split();
        let (commands, mut outgoing) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        });
        let pending: Pending = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let (answers, problems_seen) = (pending.clone(), problems.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(message) = serde_json::from_str::<Value>(&text) else { continue };
                if let Some(id) = message["id"].as_u64() {
                    if let Some(answer) = answers.lock().unwrap().remove(&id) {
                        let _ = answer.send(message);
                    }
                    continue;
                }
                if let Some(problem) = problem(&message) {
                    problems_seen.lock().unwrap().push(problem);
                }
            }
        });
        let mut browser = Self {
            child,
            _profile: profile,
            commands,
            pending,
            next: AtomicU64::new(1),
            session: String::new(),
            problems,
        };
        let target = browser.call("Target.createTarget", json!({"url": "about:blank"})).await;
        let attached =
            browser.call("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Send a command (to the page, once attached) and wait for its result; a protocol error fails the test.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = json!(self.session);
        }
        let (sender, receiver) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, sender);
        self.commands.send(command.to_string()).unwrap();
        let answer = tokio::time::timeout(PATIENCE, receiver).await.expect("chromium answered").unwrap();
        assert!(answer.get("error").is_none(), "{method} failed: {}", answer["error"]);
        answer["result"].clone()
    }

    /// Open `url` and wait until it has loaded.
    pub async fn open(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'").await;
    }

    /// The value of `expression` in the page (promises awaited); an exception fails the test.
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(result.get("exceptionDetails").is_none(), "`{expression}` threw: {}", result["exceptionDetails"]);
        result["result"]["value"].clone()
    }

    /// Wait until `expression` is truthy in the page; how long it took.
    pub async fn wait_for(&self, expression: &str) -> Duration {
        let started = tokio::time::Instant::now();
        loop {
            let result = self
                .call("Runtime.evaluate", json!({"expression": format!("!!({expression})"), "returnByValue": true}))
                .await;
            if result["result"]["value"] == json!(true) {
                return started.elapsed();
            }
            assert!(started.elapsed() < PATIENCE, "the page never got to `{expression}`");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Click the element `selector` finds.
    pub async fn click(&self, selector: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector:?}); if (e) e.click(); return !!e; }})()"
            ))
            .await;
        assert_eq!(found, json!(true), "no `{selector}` to click");
    }

    /// Type `text` into the input `selector` finds, as a person would (with input events).
    pub async fn fill(&self, selector: &str, text: &str) {
        self.eval(&format!("document.querySelector({selector:?}).focus()")).await;
        self.eval(&format!("document.querySelector({selector:?}).value = ''")).await;
        self.call("Input.insertText", json!({"text": text})).await;
    }

    /// Render at `width`×`height` CSS pixels (a phone when `mobile`).
    pub async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .await;
    }

    /// A PNG of the viewport, saved as `name`.png under the screenshots folder; its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        let dir = screenshots();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Console errors, uncaught exceptions and failed loads so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the screenshots go: kept after the tests as artifacts.
pub fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots")
}

/// What a protocol event says went wrong, if anything did.
fn problem(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" if params["type"] == "error" || params["type"] == "assert" => {
            let args: Vec<String> = params["args"]
                .as_array()?
                .iter()
                .map(|a| a["value"].as_str().map_or_else(|| a["description"].to_string(), String::from))
                .collect();
            Some(format!("console.error: {}", args.join(" ")))
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            Some(format!("uncaught: {} {}", details["text"], details["exception"]["description"]))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => {
            Some(format!("{}: {} ({})", params["entry"]["source"], params["entry"]["text"], params["entry"]["url"]))
        }
        _ => None,
    }
}
