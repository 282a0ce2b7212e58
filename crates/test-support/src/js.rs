//! The JS interop peers: unmodified third-party JS software run by Node
//! from an npm harness folder, speaking one JSON object per line on stdout.
//! A line names its event in `"event"` (the PeerJS harness) or `"ev"` (the
//! libp2p ones); an event `fail` fails the test.
//!
//! Tests that need Node or the npm harnesses do not skip: they fail
//! wherever those are missing (`scripts/setup` installs them).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a JS peer may take for anything awaited from it.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tests/interop`, the shared npm harness (PeerJS, js-libp2p).
pub fn interop_dir() -> PathBuf {
    workspace_root().join("tests/interop")
}

/// Whether `npm ci` ran in `dir`: it holds `node_modules/<package>`.
pub fn installed(dir: &Path, package: &str) -> bool {
    dir.join("node_modules").join(package).is_dir()
}

/// The event a line names, under `"event"` or `"ev"`.
fn event_of(value: &Value) -> Option<&str> {
    value.get("event").or_else(|| value.get("ev")).and_then(Value::as_str)
}

/// A running JS peer (killed when dropped).
pub struct JsPeer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    name: String,
    /// Lines read but not yet matched by an [`JsPeer::expect`], in order.
    unmatched: Vec<Value>,
}

impl JsPeer {
    /// Runs `node <script> <args>` in `dir`, which must hold
    /// `node_modules/<package>`.
    pub fn spawn(dir: &Path, package: &str, script: &str, args: &[&str]) -> Self {
        assert!(
            installed(dir, package),
            "the JS interop harness is not installed: run scripts/setup (npm ci in {})",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node (Node.js 20+ must be installed)");
        let stdout = child.stdout.take().unwrap();
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
            name: format!("{script} {}", args.join(" ")),
            unmatched: Vec::new(),
        }
    }

    /// Names the peer in failure messages: its script and arguments.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Prints `line` to the test's stderr, tagged with the peer's name.
    #[allow(clippy::print_stderr)]
    pub fn log(&self, line: &str) {
        eprintln!("[{}] {line}", self.name);
    }

    /// The next line, `None` once the peer closed its stdout. A line that is
    /// not JSON is logged and skipped; an event `fail` fails the test; so
    /// does a line that takes longer than [`DEADLINE`].
    pub async fn next_line(&mut self) -> Option<Value> {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("{} silent for {DEADLINE:?}", self.name))
                .unwrap()?;
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                self.log(&line);
                continue;
            };
            if event_of(&value) == Some("fail") {
                panic!("{} failed: {}", self.name, value["reason"]);
            }
            return Some(value);
        }
    }

    async fn next_or_exit(&mut self, what: &str) -> Value {
        match self.next_line().await {
            Some(value) => value,
            None => panic!("{} exited while we waited for {what}", self.name),
        }
    }

    /// The next event `event`; every other line before it is logged and
    /// dropped.
    pub async fn next_event(&mut self, event: &str) -> Value {
        let wait = async {
            loop {
                let value = self.next_or_exit(event).await;
                if event_of(&value) == Some(event) {
                    return value;
                }
                self.log(&value.to_string());
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("{} sent no {event} within {DEADLINE:?}", self.name))
    }

    /// The first event `event` satisfying `pred`, including lines read
    /// earlier while waiting for something else (which stay, in order, for
    /// later calls).
    pub async fn expect(&mut self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let matches = |value: &Value| event_of(value) == Some(event) && pred(value);
        if let Some(i) = self.unmatched.iter().position(matches) {
            return self.unmatched.remove(i);
        }
        let wait = async {
            loop {
                let value = self.next_or_exit(event).await;
                if matches(&value) {
                    return value;
                }
                self.unmatched.push(value);
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {event} from {}", self.name))
    }

    /// Waits for the peer to exit and fails unless it succeeded.
    pub async fn wait_success(mut self) {
        let status: ExitStatus = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} still running after {DEADLINE:?}", self.name))
            .unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}
