//! End-to-end tests of the `strata` binary: every test runs the built
//! executable in temporary data directories and checks what a user sees
//! (stdout, stderr, exit codes, files) and what the control API answers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    missing_docs
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

/// Exit codes of the error kinds (src/error.rs, README).
mod exit {
    pub(super) const USAGE: i32 = 2;
    pub(super) const CONFIG: i32 = 3;
    pub(super) const NOT_INITIALIZED: i32 = 4;
    pub(super) const ALREADY_INITIALIZED: i32 = 5;
    pub(super) const LOCKED: i32 = 6;
    pub(super) const BUSY: i32 = 8;
    pub(super) const NO_DAEMON: i32 = 9;
    pub(super) const NOT_FOUND: i32 = 11;
    pub(super) const VERIFICATION_FAILED: i32 = 12;
}

/// A data directory, and the binary pointed at it.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("node")
    }

    /// `strata --data-dir <dir>` with a clean environment.
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .env("HOME", self.tmp.path())
            .arg("--data-dir")
            .arg(self.dir())
            .stdin(Stdio::null());
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        ok(self.cmd().args(args))
    }

    fn fails(&self, args: &[&str], code: i32) -> String {
        fails(self.cmd().args(args), code)
    }

    /// `strata init --json`.
    fn init(&self) -> Value {
        serde_json::from_str(&self.ok(&["init", "--json"])).unwrap()
    }

    fn id(&self) -> Value {
        serde_json::from_str(&self.ok(&["id", "--json"])).unwrap()
    }

    /// Starts `strata run` on free ports and waits for its `api.json`.
    fn daemon(&self) -> Daemon {
        self.daemon_with(&[])
    }

    /// `daemon` with more environment (config overrides, `RUST_LOG`). The
    /// log is appended to, so a restarted daemon's log follows the first.
    fn daemon_with(&self, env: &[(&str, &str)]) -> Daemon {
        let log = self.tmp.path().join("daemon.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = self
            .cmd()
            .arg("run")
            .env("STRATA_API__PORT", "0")
            .env("STRATA_BROKER__PORT", "0")
            .env("STRATA_LIBP2P__LISTEN", "/ip4/127.0.0.1/tcp/0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, log };
        let api_file = self.dir().join("api.json");
        let pid = daemon.child.id();
        // A file left by a killed daemon may be there first: wait for ours.
        let api = daemon.wait_for(|| {
            let text = std::fs::read_to_string(&api_file).ok()?;
            serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|api| api["pid"] == pid)
        });
        daemon_addr(&api);
        daemon
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir().join("api.token")).unwrap()
    }

    fn api_addr(&self) -> SocketAddr {
        let api: Value = serde_json::from_str(&std::fs::read_to_string(self.dir().join("api.json")).unwrap()).unwrap();
        daemon_addr(&api)
    }
}

fn daemon_addr(api: &Value) -> SocketAddr {
    let addr: SocketAddr = api["address"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback(), "control API on {addr}");
    assert_eq!(api["url"], format!("http://{addr}"));
    addr
}

/// A running `strata run` (killed if the test ends early).
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Polls `probe` until it yields, failing fast if the daemon exits.
    fn wait_for<T>(&mut self, mut probe: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daemon exited with {status}:\n{}", self.log_text());
            }
            assert!(start.elapsed() < DEADLINE, "daemon not ready:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> ExitStatus {
        terminate(&self.child);
        let status = wait_exit(&mut self.child);
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "process did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail with `code`; returns its stderr.
fn fails(cmd: &mut Command, code: i32) -> String {
    let output = cmd.output().unwrap();
    assert_eq!(output.status.code(), Some(code), "{}", describe(&output));
    assert!(
        output.stdout.is_empty(),
        "a failure printed a result: {}",
        describe(&output)
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("error: ") && stderr.contains("hint: "), "{stderr}");
    stderr
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// One HTTP/1.1 request; returns the status code and the body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

fn rpc(addr: SocketAddr, token: &str, method: &str, params: Value) -> Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let bearer = format!("Bearer {token}");
    let (status, body) = http(
        addr,
        "POST",
        "/api/v1/rpc",
        &[("Authorization", &bearer), ("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn init_creates_a_private_identity_and_refuses_to_overwrite() {
    let node = Node::new();
    let id = node.init();
    let peer_id = id["peerId"].as_str().unwrap();
    assert_eq!(peer_id.len(), 53);
    assert!(
        peer_id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || (b'2'..=b'7').contains(&c))
    );
    let installation = id["installationId"].as_str().unwrap();
    assert_eq!(installation.len(), 32);
    assert!(installation.bytes().all(|c| c.is_ascii_hexdigit()));
    let half = id["safetyNumberHalf"].as_str().unwrap();
    assert_eq!(half.len(), 30);
    assert!(half.bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(id["contactUri"], format!("strata:{peer_id}/{installation}"));
    assert_eq!(id["configWritten"], true);

    let dir = node.dir();
    assert_eq!(mode(&dir), 0o700);
    for file in ["storage.key", "store.redb", "config.toml"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(std::fs::read(dir.join("storage.key")).unwrap().len(), 32);
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.starts_with("# Strata node configuration."), "{config}");
    assert!(config.contains("STRATA_API__PORT"), "the file documents the overrides");
    // The store holds no key in the clear.
    let store = std::fs::read(dir.join("store.redb")).unwrap();
    let key = std::fs::read(dir.join("storage.key")).unwrap();
    assert!(!store.windows(key.len()).any(|w| w == key.as_slice()));

    let stderr = node.fails(&["init"], exit::ALREADY_INITIALIZED);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(node.id()["peerId"], peer_id, "a refused init changes nothing");

    // Human output names the ids.
    let replaced = node.ok(&["init", "--force"]);
    assert!(
        replaced.contains("peer id") && replaced.contains("installation id"),
        "{replaced}"
    );
    assert!(replaced.contains("(your half)"), "{replaced}");
    let new = node.id();
    assert_ne!(new["peerId"], peer_id);
    assert_ne!(new["installationId"], installation);
    assert!(replaced.contains(new["peerId"].as_str().unwrap()));
    assert!(replaced.contains("(kept)"), "the existing config is kept: {replaced}");
}

#[test]
fn id_shows_the_identity_and_a_qr_code() {
    let node = Node::new();
    let stderr = node.fails(&["id"], exit::NOT_INITIALIZED);
    assert!(stderr.contains("strata init"), "{stderr}");

    let init = node.init();
    let id = node.id();
    for key in ["peerId", "installationId", "safetyNumberHalf", "contactUri"] {
        assert_eq!(id[key], init[key], "{key}");
    }
    let identity_key = id["identityKey"].as_str().unwrap();
    assert_eq!(identity_key.len(), 66);
    assert!(identity_key.starts_with("05"));

    let text = node.ok(&["id"]);
    assert!(text.contains(id["contactUri"].as_str().unwrap()), "{text}");
    assert!(text.contains(identity_key), "{text}");
    assert!(!text.contains('\u{2588}'), "no QR unless asked");
    let qr = node.ok(&["id", "--qr"]);
    let blocks: Vec<&str> = qr.lines().filter(|l| l.contains('\u{2588}')).collect();
    assert!(blocks.len() > 10, "{qr}");
    let width = blocks[0].chars().count();
    assert!(blocks.iter().all(|l| l.chars().count() == width), "{qr}");
}

#[test]
fn a_passphrase_seals_the_store_instead_of_a_key_file() {
    let node = Node::new();
    let init: Value = serde_json::from_str(&ok(node
        .cmd()
        .args(["init", "--json"])
        .env("STRATA_PASSPHRASE", "correct horse battery staple")))
    .unwrap();
    assert!(!node.dir().join("storage.key").exists());

    let stderr = node.fails(&["id"], exit::LOCKED);
    assert!(stderr.contains("STRATA_PASSPHRASE"), "{stderr}");
    let stderr = fails(
        node.cmd().arg("id").env("STRATA_PASSPHRASE", "wrong horse"),
        exit::LOCKED,
    );
    assert!(stderr.contains("passphrase"), "{stderr}");
    let stderr = fails(node.cmd().arg("id").env("STRATA_PASSPHRASE", ""), exit::USAGE);
    assert!(stderr.contains("empty"), "{stderr}");
    let id: Value = serde_json::from_str(&ok(node
        .cmd()
        .args(["id", "--json"])
        .env("STRATA_PASSPHRASE", "correct horse battery staple")))
    .unwrap();
    assert_eq!(id["peerId"], init["peerId"]);
}

#[test]
fn config_errors_name_the_key_the_origin_and_the_reason() {
    let node = Node::new();
    node.init();
    let file = node.dir().join("config.toml");

    std::fs::write(&file, "[api]\nprot = 7000\n").unwrap();
    let stderr = node.fails(&["config", "show"], exit::CONFIG);
    assert!(stderr.contains("`api.prot`"), "{stderr}");
    assert!(stderr.contains("unknown key (did you mean `api.port`?)"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    // Every command that reads the config refuses it, `run` included.
    node.fails(&["run"], exit::CONFIG);

    std::fs::write(&file, "[api]\nport = \"high\"\naddress = \"127.0.0.1\"\n").unwrap();
    let stderr = node.fails(&["config", "show"], exit::CONFIG);
    assert!(stderr.contains("`api.port`") && stderr.contains("\"high\""), "{stderr}");

    std::fs::write(&file, "[api]\naddress = \"0.0.0.0\"\n").unwrap();
    let stderr = node.fails(&["config", "show"], exit::CONFIG);
    assert!(
        stderr.contains("`api.address`") && stderr.contains("loopback"),
        "{stderr}"
    );

    std::fs::write(
        &file,
        "[libp2p]\nbootstrap = [\"/ip4/192.0.2.1/tcp/1\", \"nonsense\"]\n",
    )
    .unwrap();
    let stderr = node.fails(&["config", "show"], exit::CONFIG);
    assert!(stderr.contains("`libp2p.bootstrap[1]`"), "{stderr}");

    std::fs::write(&file, "[api]\nport = 7001\n").unwrap();
    let stderr = fails(
        node.cmd().args(["config", "show"]).env("STRATA_API__PORT", "seventy"),
        exit::CONFIG,
    );
    assert!(stderr.contains("`api.port` (from STRATA_API__PORT)"), "{stderr}");
    let stderr = fails(
        node.cmd().args(["config", "show"]).env("STRATA_LIBP2P_MDNS", "true"),
        exit::CONFIG,
    );
    assert!(stderr.contains("did you mean STRATA_LIBP2P__MDNS?"), "{stderr}");

    // JSON errors for scripts.
    let output = node
        .cmd()
        .args(["config", "show", "--json"])
        .env("STRATA_API__PORT", "seventy")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::CONFIG));
    let error: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["error"]["kind"], "config");
    assert_eq!(error["error"]["exitCode"], exit::CONFIG);

    // File, then environment.
    let shown: Value = serde_json::from_str(&ok(node
        .cmd()
        .args(["config", "show", "--json"])
        .env("STRATA_LIBP2P__BOOTSTRAP", "/ip4/192.0.2.1/tcp/1,/ip4/192.0.2.2/tcp/2")))
    .unwrap();
    assert_eq!(shown["api"]["port"], 7001);
    assert_eq!(shown["libp2p"]["bootstrap"][1], "/ip4/192.0.2.2/tcp/2");
    let shown: Value = serde_json::from_str(&ok(node
        .cmd()
        .args(["config", "show", "--json"])
        .env("STRATA_API__PORT", "7002")))
    .unwrap();
    assert_eq!(shown["api"]["port"], 7002);

    // A named config file must exist.
    let stderr = node.fails(
        &["--config", "/nonexistent/strata.toml", "config", "show"],
        exit::CONFIG,
    );
    assert!(stderr.contains("/nonexistent/strata.toml"), "{stderr}");
}

#[test]
fn both_sides_see_the_same_safety_number_and_marking_checks_the_digits() {
    let (alice, bob) = (Node::new(), Node::new());
    let (a, b) = (alice.init(), bob.init());
    let a_uri = a["contactUri"].as_str().unwrap();
    let b_uri = b["contactUri"].as_str().unwrap();

    let from_alice: Value = serde_json::from_str(&alice.ok(&["verify", b_uri, "--json"])).unwrap();
    let from_bob: Value = serde_json::from_str(&bob.ok(&["verify", a_uri, "--json"])).unwrap();
    let number = from_alice["safetyNumber"].as_str().unwrap();
    assert_eq!(number.len(), 60);
    assert_eq!(from_bob["safetyNumber"], number);
    // The number is the two halves that `init` printed, smaller first.
    let (ha, hb) = (
        a["safetyNumberHalf"].as_str().unwrap(),
        b["safetyNumberHalf"].as_str().unwrap(),
    );
    let expected = if ha < hb {
        format!("{ha}{hb}")
    } else {
        format!("{hb}{ha}")
    };
    assert_eq!(number, expected);
    assert_eq!(from_alice["contact"], Value::Null);

    // Human output: 12 groups of 5, and the next step.
    let output = alice.cmd().args(["verify", b_uri]).output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let first_group = &number[..5];
    assert!(text.contains(first_group), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mark-verified"));

    let mut wrong = number.as_bytes().to_vec();
    wrong[30] = if wrong[30] == b'9' { b'0' } else { wrong[30] + 1 };
    let stderr = alice.fails(
        &["verify", b_uri, "--mark-verified", std::str::from_utf8(&wrong).unwrap()],
        exit::VERIFICATION_FAILED,
    );
    assert!(stderr.contains("does not match"), "{stderr}");
    let installation = b["installationId"].as_str().unwrap();
    alice.fails(&["verify", installation], exit::NOT_FOUND);

    // Typed with spaces, as the other side shows it.
    let grouped: Vec<&str> = (0..12).map(|i| &number[i * 5..i * 5 + 5]).collect();
    let marked: Value =
        serde_json::from_str(&alice.ok(&["verify", b_uri, "--mark-verified", &grouped.join(" "), "--json"])).unwrap();
    assert_eq!(marked["marked"], "pinned-verified");
    let by_installation: Value = serde_json::from_str(&alice.ok(&["verify", installation, "--json"])).unwrap();
    assert_eq!(by_installation["contact"]["verified"], true);
    assert_eq!(by_installation["safetyNumber"], number);
    let text = alice.ok(&["verify", installation]);
    assert!(text.contains("contact: verified"), "{text}");
}

#[test]
fn session_commands_without_a_daemon() {
    let node = Node::new();
    let init = node.init();
    let uri = init["contactUri"].as_str().unwrap();
    for args in [
        vec!["connect", uri],
        vec!["send", uri, "hello"],
        vec!["inbox", "--follow"],
    ] {
        let stderr = node.fails(&args, exit::NO_DAEMON);
        assert!(stderr.contains("needs a running node"), "{args:?}: {stderr}");
        assert!(stderr.contains("strata run"), "{stderr}");
    }
    // Read-only ones work on the store.
    let inbox: Value = serde_json::from_str(&node.ok(&["inbox", "--json"])).unwrap_or(Value::Null);
    assert!(inbox.is_null(), "an empty inbox prints nothing: {inbox}");
    let peers: Value = serde_json::from_str(&node.ok(&["peers", "--json"])).unwrap();
    assert_eq!(peers["peers"], serde_json::json!([]));
    // Arguments are still checked first.
    node.fails(&["connect", "not a peer!"], exit::USAGE);
    node.fails(&["send", uri, "--file", "/nonexistent/file"], exit::NOT_FOUND);
}

#[test]
fn the_daemon_serves_its_control_api_to_token_holders_only() {
    let node = Node::new();
    let init = node.init();
    let daemon = node.daemon();
    let addr = node.api_addr();
    let token = node.token();
    assert_eq!(token.len(), 64);
    assert_eq!(mode(&node.dir().join("api.token")), 0o600);

    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {}", "0".repeat(64));
    let basic = format!("Basic {token}");
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", basic.as_str())],
    ] {
        let (status, body) = http(addr, "GET", "/api/v1/check", &headers, "");
        assert_eq!(status, 401, "{headers:?}");
        assert!(body.contains("missing or wrong token"), "{body}");
        let request = r#"{"jsonrpc":"2.0","id":1,"method":"id"}"#;
        let (status, body) = http(addr, "POST", "/api/v1/rpc", &headers, request);
        assert_eq!(status, 401);
        assert!(!body.contains(init["peerId"].as_str().unwrap()), "{body}");
        let (status, _) = http(addr, "GET", "/api/v1/events", &headers, "");
        assert_eq!(status, 401);
    }
    let (status, body) = http(addr, "GET", "/api/v1/check", &[("Authorization", &bearer)], "");
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");

    // JSON-RPC with the token.
    let id = rpc(addr, &token, "id", serde_json::json!({}));
    assert_eq!(id["id"], 1);
    assert_eq!(id["result"]["peerId"], init["peerId"]);
    let unknown = rpc(addr, &token, "nonsense", serde_json::json!({}));
    assert_eq!(unknown["error"]["code"], -32601);
    let send = rpc(
        addr,
        &token,
        "send",
        serde_json::json!({"peer": "x", "body": {"text": "hi"}, "waitAck": false}),
    );
    // No session with that peer yet: say how to open one.
    assert_eq!(send["error"]["data"]["kind"], "usage", "{send}");
    assert!(
        send["error"]["data"]["hint"]
            .as_str()
            .unwrap()
            .contains("strata connect"),
        "{send}"
    );

    // Server-Sent Events: replay from the start shows that the node started.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nLast-Event-ID: 0\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut seen = String::new();
    while !seen.contains("event: started") || !seen.contains(init["peerId"].as_str().unwrap()) {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended: {seen}");
        seen.push_str(&line);
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("id: 1"), "{seen}");

    // The CLI uses the daemon while it holds the store.
    assert_eq!(node.id()["peerId"], init["peerId"]);
    let peers: Value = serde_json::from_str(&node.ok(&["peers", "--json"])).unwrap();
    assert!(peers["peers"].is_array(), "{peers}");
    node.fails(&["run"], exit::BUSY);
    node.fails(&["init", "--force"], exit::BUSY);

    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(!node.dir().join("api.json").exists());
    assert!(!node.dir().join("api.token").exists());
    // Without the daemon the CLI opens the store itself again.
    assert_eq!(node.id()["peerId"], init["peerId"]);
}

#[test]
fn verify_through_the_daemon_matches_verify_on_the_store() {
    let (alice, bob) = (Node::new(), Node::new());
    alice.init();
    let b = bob.init();
    let uri = b["contactUri"].as_str().unwrap();
    let offline: Value = serde_json::from_str(&alice.ok(&["verify", uri, "--json"])).unwrap();
    let daemon = alice.daemon();
    let online: Value = serde_json::from_str(&alice.ok(&["verify", uri, "--json"])).unwrap();
    assert_eq!(online, offline);
    let digits = offline["safetyNumber"].as_str().unwrap();
    alice.fails(
        &["verify", uri, "--mark-verified", &"1".repeat(60)],
        exit::VERIFICATION_FAILED,
    );
    let marked: Value = serde_json::from_str(&alice.ok(&["verify", uri, "--mark-verified", digits, "--json"])).unwrap();
    assert_eq!(marked["marked"], "pinned-verified");
    assert!(daemon.terminate().success());
    // Recorded in the store the daemon held.
    let after: Value = serde_json::from_str(&alice.ok(&["verify", uri, "--json"])).unwrap();
    assert_eq!(after["contact"]["verified"], true);
}

/// Starts `strata broker --port 0 --json <extra>`; returns the child and its
/// `listening` line.
fn start_broker(node: &Node, extra: &[&str]) -> (Child, Value) {
    let mut child = node
        .cmd()
        .args(["broker", "--port", "0", "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(DEADLINE).expect("the broker says where it listens");
    let listening: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(listening["event"], "listening");
    (child, listening)
}

#[test]
fn the_standalone_broker_registers_peerjs_clients() {
    let node = Node::new();
    let (mut child, listening) = start_broker(&node, &[]);
    let addr: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    assert!(addr.ip().is_loopback(), "loopback unless --host says otherwise");
    assert_eq!(listening["url"], format!("ws://{addr}/"));

    let (status, body) = http(addr, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(body.contains("PeerJS Server"), "{body}");
    let (status, id) = http(addr, "GET", "/peerjs/id", &[], "");
    assert_eq!(status, 200);
    assert_eq!(id.len(), 36, "{id}");

    // A PeerJS client registers over the WebSocket and is told OPEN.
    let mut ws = TcpStream::connect(addr).unwrap();
    ws.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        ws,
        "GET /peerjs?key=peerjs&id=alice&token=t1 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(ws);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 101"), "{status_line}");
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header == "\r\n" {
            break;
        }
    }
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a final text frame");
    let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
    reader.read_exact(&mut payload).unwrap();
    let open: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(open["type"], "OPEN");

    terminate(&child);
    let status = wait_exit(&mut child);
    assert!(status.success(), "{status}");
}

#[test]
fn the_broker_reports_a_port_in_use() {
    let node = Node::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let stderr = node.fails(&["broker", "--port", &port], 13);
    assert!(stderr.contains("--port"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes() {
    let node = Node::new();
    let help = node.ok(&["--help"]);
    for line in ["Exit codes:", "14 not-available", "3  config", "12 verification-failed"] {
        assert!(help.contains(line), "{line} missing from:\n{help}");
    }
}

#[test]
fn the_data_directory_comes_from_the_flag_the_environment_or_the_platform() {
    let node = Node::new();
    let mut bare = Command::new(env!("CARGO_BIN_EXE_strata"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STRATA_") {
            bare.env_remove(key);
        }
    }
    bare.env_remove("XDG_DATA_HOME").env("HOME", node.tmp.path());
    let path = ok(bare.args(["config", "path"]));
    let expected = node.tmp.path().join(".local/share/strata/config.toml");
    assert_eq!(path.trim(), expected.display().to_string());

    let home = node.tmp.path().join("from-env");
    let path = ok(bare.env("STRATA_HOME", &home));
    assert_eq!(path.trim(), home.join("config.toml").display().to_string());
    let flagged = node.tmp.path().join("from-flag");
    let path = ok(Command::new(env!("CARGO_BIN_EXE_strata"))
        .env("STRATA_HOME", &home)
        .arg("--data-dir")
        .arg(&flagged)
        .args(["config", "path"]));
    assert_eq!(path.trim(), flagged.join("config.toml").display().to_string());
}

#[test]
fn trace_logs_never_contain_secrets() {
    let node = Node::new();
    let passphrase = "a passphrase that must not leak";
    let output = node
        .cmd()
        .args(["init", "--json"])
        .env("STRATA_PASSPHRASE", passphrase)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let init_log = String::from_utf8_lossy(&output.stderr).into_owned();

    let log = node.tmp.path().join("daemon.log");
    let child = node
        .cmd()
        .arg("run")
        .env("STRATA_PASSPHRASE", passphrase)
        .env("STRATA_API__PORT", "0")
        .env("STRATA_BROKER__PORT", "0")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, log };
    let api_file = node.dir().join("api.json");
    daemon.wait_for(|| std::fs::read_to_string(&api_file).ok().filter(|t| t.ends_with('}')));
    let addr = node.api_addr();
    let token = node.token();
    // Traffic with and without the token, and a verify with typed digits.
    assert_eq!(
        rpc(addr, &token, "id", serde_json::json!({}))["result"]["peerId"]
            .as_str()
            .map(str::len),
        Some(53)
    );
    let (status, _) = http(addr, "GET", "/api/v1/check", &[("Authorization", "Bearer wrong")], "");
    assert_eq!(status, 401);
    let other = Node::new();
    let other_uri = other.init()["contactUri"].as_str().unwrap().to_owned();
    let verify = rpc(addr, &token, "verify", serde_json::json!({"peer": other_uri}));
    let digits = verify["result"]["safetyNumber"].as_str().unwrap().to_owned();
    rpc(
        addr,
        &token,
        "verify",
        serde_json::json!({"peer": other_uri, "markVerified": digits}),
    );
    let status = daemon.terminate();
    assert!(status.success());
    let daemon_log = std::fs::read_to_string(node.tmp.path().join("daemon.log")).unwrap();

    assert!(
        daemon_log.contains("TRACE") || daemon_log.contains("DEBUG"),
        "trace logging was on"
    );
    for (name, log) in [("init", &init_log), ("run", &daemon_log)] {
        assert!(!log.contains(passphrase), "{name} logged the passphrase");
        assert!(!log.contains(&token), "{name} logged the API token");
        assert!(!log.contains(&digits), "{name} logged a safety number");
    }
}

/// At start the daemon stocks its KeyPackage pool (64 one-time packages and
/// a last resort, each with its private parts), and a restart finds it full.
#[test]
fn the_daemon_stocks_its_key_package_pool_at_start() {
    use strata_store::{KeySource, RedbBackend, Store, load_or_create_key_file};
    let node = Node::new();
    node.init();
    let status = || {
        let key = load_or_create_key_file(&node.dir().join("storage.key")).unwrap();
        let backend = RedbBackend::open(&node.dir().join("store.redb")).unwrap();
        let store = Store::open(backend, KeySource::Key(key)).unwrap();
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        store.write(|w| w.key_package_status(now_s)).unwrap()
    };
    assert_eq!(status().available, 0, "init makes no pool");
    for _ in 0..2 {
        let daemon = node.daemon_with(&[("RUST_LOG", "strata=info")]);
        assert!(daemon.terminate().success());
        let status = status();
        assert_eq!(
            (status.available, status.has_last_resort, status.last_resort_used),
            (64, true, false)
        );
    }
    let log = std::fs::read_to_string(node.tmp.path().join("daemon.log")).unwrap();
    // The restart had nothing to do, so it logged nothing.
    let stocked: Vec<_> = log.lines().filter(|l| l.contains("KeyPackage pool stocked")).collect();
    assert_eq!(stocked.len(), 1, "{log}");
    assert!(
        stocked[0].contains("added=64") && stocked[0].contains("last_resort=true"),
        "{log}"
    );
}

/// `strata keys` shows the pool the daemon stocked, through the daemon and
/// from the store alike.
#[test]
fn keys_shows_the_stocked_pool_with_or_without_the_daemon() {
    let node = Node::new();
    node.init();
    let empty = json_of(&node.ok(&["keys", "--json"]));
    assert_eq!(empty["available"], 0, "init makes no pool: {empty}");
    assert_eq!(empty["lastResort"], false);
    assert_eq!(empty["nextExpiryS"], Value::Null);

    let daemon = node.daemon();
    let check = |keys: &Value| {
        assert_eq!(keys["available"], 64, "{keys}");
        assert_eq!(keys["lastResort"], true, "{keys}");
        assert_eq!(keys["lastResortServed"], false, "{keys}");
        assert_eq!(keys["claimsLastHour"], 0, "{keys}");
        assert_eq!(keys["held"], 0, "{keys}");
        let now_s = keys["nowS"].as_u64().unwrap();
        assert!(keys["nextExpiryS"].as_u64().unwrap() > now_s, "{keys}");
        let added = keys["lastResortAddedS"].as_u64().unwrap();
        assert!(added <= now_s, "{keys}");
        assert_eq!(keys["lastResortAgeS"].as_u64().unwrap(), now_s - added, "{keys}");
    };
    let online = json_of(&node.ok(&["keys", "--json"]));
    check(&online);
    // The control API answers the same method.
    let via_rpc = rpc(node.api_addr(), &node.token(), "keys", Value::Null);
    check(&via_rpc["result"]);
    let text = node.ok(&["keys"]);
    assert!(text.contains("one-time KeyPackages: 64"), "{text}");
    assert!(text.contains("not served"), "{text}");
    assert!(text.contains("claims in the last hour: 0"), "{text}");
    assert!(text.contains("claimed by peers, awaiting use: 0"), "{text}");
    assert!(daemon.terminate().success());

    let offline = json_of(&node.ok(&["keys", "--json"]));
    check(&offline);
    assert_eq!(offline["nextExpiryS"], online["nextExpiryS"], "the same pool");
    assert_eq!(offline["lastResortAddedS"], online["lastResortAddedS"]);
}

#[test]
fn a_killed_daemon_leaves_nothing_that_blocks_a_restart() {
    let node = Node::new();
    let init = node.init();
    let mut daemon = node.daemon();
    daemon.child.kill().unwrap(); // SIGKILL: no clean-up runs
    daemon.child.wait().unwrap();
    assert!(node.dir().join("api.json").exists(), "the stale file is still there");
    // Nothing listens at the stale address: the CLI opens the store itself.
    assert_eq!(node.id()["peerId"], init["peerId"]);
    // And a new daemon starts, with a new token.
    let old_token = node.token();
    let daemon = node.daemon();
    let token = node.token();
    assert_ne!(token, old_token);
    let id = rpc(node.api_addr(), &token, "id", serde_json::json!({}));
    assert_eq!(id["result"]["peerId"], init["peerId"]);
    assert!(daemon.terminate().success());
}

#[test]
fn the_standalone_broker_serves_wss_with_a_certificate() {
    let node = Node::new();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_file = node.tmp.path().join("cert.pem");
    let key_file = node.tmp.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();

    // A key that is not a key is refused with a usage error.
    let stderr = node.fails(
        &[
            "broker",
            "--port",
            "0",
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            cert_file.to_str().unwrap(),
        ],
        exit::USAGE,
    );
    assert!(stderr.contains("private key"), "{stderr}");

    let (mut child, listening) = start_broker(
        &node,
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let addr: SocketAddr = listening["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(listening["url"], format!("wss://{addr}/"));

    // A client that trusts the certificate gets the PeerJS description.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, socket);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("PeerJS Server") {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) => panic!("TLS read: {e}; so far {:?}", String::from_utf8_lossy(&response)),
        }
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("PeerJS Server"), "{response}");

    terminate(&child);
    assert!(wait_exit(&mut child).success());
}

/// Reads the SSE stream until the `started` event and returns its broker.
fn started_broker(node: &Node) -> String {
    let started = wait_event(node, "started", |_| true);
    started["broker"].as_str().unwrap().to_owned()
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Lines of `--json` output.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(json_of).collect()
}

/// `send --wait-ack`, which must be acknowledged.
fn send_acked(node: &Node, peer: &str, text: &str) {
    let sent = json_of(&node.ok(&["send", peer, text, "--wait-ack", "--json"]));
    assert_eq!(sent["acknowledged"], true, "{sent}");
}

fn inbox_texts(node: &Node) -> Vec<String> {
    json_lines(&node.ok(&["inbox", "--json"]))
        .into_iter()
        .filter(|m| m["kind"] == "message")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Two daemons on loopback: connect, messages and a file both ways, the
/// same safety number on both sides, then a SIGKILL and restart that loses
/// nothing and needs no new handshake. The daemons log at trace level, and
/// nothing secret may appear in those logs.
#[test]
fn two_daemons_talk_survive_sigkill_and_leak_nothing_to_logs() {
    const TRACE: &str = "strata=trace,strata_session=trace,strata_store=trace,strata_cascade=trace,\
                         strata_transport=trace,strata_transport_peerjs=trace,strata_transport_libp2p=trace";
    let (alice, bob) = (Node::new(), Node::new());
    let a_init = alice.init();
    let b_init = bob.init();
    let a_uri = a_init["contactUri"].as_str().unwrap().to_owned();
    let b_uri = b_init["contactUri"].as_str().unwrap().to_owned();
    let a_daemon = alice.daemon_with(&[("RUST_LOG", TRACE)]);
    let broker = started_broker(&alice);
    let bob_env = [("RUST_LOG", TRACE), ("STRATA_PEERJS__BROKER", broker.as_str())];
    let b_daemon = bob.daemon_with(&bob_env);

    // connect: the handshake's progress, then encryptionReady.
    let connect = json_of(&bob.ok(&["connect", &a_uri, "--json"]));
    assert_eq!(connect["state"], "ready", "{connect}");
    assert_eq!(connect["resumed"], false, "{connect}");

    // Texts both ways, acknowledged end to end.
    send_acked(&bob, &a_uri, "hello from bob, plaintext-marker-1");
    send_acked(&alice, &b_uri, "hello from alice, plaintext-marker-2");
    assert_eq!(inbox_texts(&alice), ["hello from bob, plaintext-marker-1"]);
    assert_eq!(inbox_texts(&bob), ["hello from alice, plaintext-marker-2"]);

    // A file, streamed in chunks, arrives whole.
    let file = bob.tmp.path().join("report.bin");
    let content: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();
    let sent = json_of(&bob.ok(&["send", &a_uri, "--file", file.to_str().unwrap(), "--json"]));
    assert_eq!(sent["acknowledged"], true, "{sent}");
    let file_id = sent["messageId"].as_str().unwrap();
    let received = alice.dir().join("downloads").join(format!("{file_id}-report.bin"));
    let deadline = Instant::now() + DEADLINE;
    while !received.exists() {
        assert!(Instant::now() < deadline, "no {}", received.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(&received).unwrap(), content);

    // Both sides see the same 60 digits.
    let a_verify = json_of(&alice.ok(&["verify", &b_uri, "--json"]));
    let b_verify = json_of(&bob.ok(&["verify", &a_uri, "--json"]));
    let number = a_verify["safetyNumber"].as_str().unwrap().to_owned();
    assert_eq!(number.len(), 60);
    assert_eq!(b_verify["safetyNumber"], number);

    let peers = json_of(&bob.ok(&["peers", "--json"]));
    let a_installation = a_init["installationId"].as_str().unwrap();
    let entry = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["installation"] == a_installation)
        .unwrap_or_else(|| panic!("{peers}"))
        .clone();
    assert_eq!(entry["state"], "ready", "{peers}");
    // The row names the account the session is pinned to, and the paths
    // the link to that peer takes now (WebRTC: the broker signalled it).
    assert_eq!(entry["peerId"], a_init["peerId"], "{peers}");
    let transport = entry["transport"].as_str().unwrap_or_default();
    assert!(
        ["webrtc", "webrtc+libp2p"].contains(&transport),
        "per-peer transport: {peers}"
    );

    // SIGKILL bob, send him a message while he is down, restart him.
    drop(b_daemon); // kill -9
    let queued = json_of(&alice.ok(&["send", &b_uri, "while you were out, plaintext-marker-3", "--json"]));
    assert_eq!(queued["acknowledged"], false);
    let b_daemon = bob.daemon_with(&bob_env);
    let resumed = json_of(&bob.ok(&["connect", &a_uri, "--json"]));
    assert_eq!(resumed["state"], "ready", "{resumed}");
    assert_eq!(
        resumed["resumed"], true,
        "a restart must not need a new handshake: {resumed}"
    );
    send_acked(&bob, &a_uri, "back again, plaintext-marker-4");
    let deadline = Instant::now() + DEADLINE;
    while inbox_texts(&bob).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "bob never got the queued message: {:?}",
            inbox_texts(&bob)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        inbox_texts(&bob),
        [
            "hello from alice, plaintext-marker-2",
            "while you were out, plaintext-marker-3"
        ],
        "every message exactly once"
    );
    assert_eq!(
        inbox_texts(&alice),
        ["hello from bob, plaintext-marker-1", "back again, plaintext-marker-4"]
    );

    // The logs, at trace level, hold no plaintext, file bytes, safety
    // number or storage key.
    let a_log = a_daemon.log_text();
    let b_log = b_daemon.log_text();
    assert!(
        a_log.contains("TRACE") || a_log.contains("DEBUG"),
        "trace logging is on"
    );
    let storage_key = std::fs::read(alice.dir().join("storage.key")).unwrap();
    let mut secrets = vec![
        "plaintext-marker".to_owned(),
        number.clone(),
        number[..30].to_owned(),
        number[30..].to_owned(),
        hex_of(&storage_key),
    ];
    secrets.push(hex_of(&content[1000..1016]));
    for (who, log) in [("alice", &a_log), ("bob", &b_log)] {
        for secret in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "{who}'s log contains a secret ({} chars)",
                secret.len()
            );
        }
    }
    drop(a_daemon);
    drop(b_daemon);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The same over the gossip transport alone: the contact URI carries the
/// libp2p address, `connect` dials it, the session runs over relay topics.
#[test]
fn two_daemons_talk_over_libp2p_alone() {
    let (alice, bob) = (Node::new(), Node::new());
    alice.init();
    bob.init();
    let gossip_only = [("STRATA_PEERJS__ENABLED", "false")];
    let _a_daemon = alice.daemon_with(&gossip_only);
    let _b_daemon = bob.daemon_with(&gossip_only);
    // With the daemon up, the contact URI names where it listens.
    let a_uri = alice.id()["contactUri"].as_str().unwrap().to_owned();
    assert!(a_uri.contains("addr="), "{a_uri}");
    let connect = json_of(&bob.ok(&["connect", &a_uri, "--json"]));
    assert_eq!(connect["state"], "ready", "{connect}");
    send_acked(&bob, &a_uri, "over gossip");
    assert_eq!(inbox_texts(&alice), ["over gossip"]);
    let peers = json_of(&alice.ok(&["peers", "--json"]));
    assert_eq!(peers["peers"][0]["transport"], "libp2p", "{peers}");
    assert_eq!(peers["peers"][0]["state"], "ready", "{peers}");
}

/// A contact URI names the account: one whose installation answers with
/// another account's key (here Alice's installation under Carol's peer id)
/// is refused with `verification-failed`, and nothing is pinned. The real
/// URI connects afterwards.
#[test]
fn connect_refuses_a_uri_whose_installation_belongs_to_another_account() {
    let (alice, bob, carol) = (Node::new(), Node::new(), Node::new());
    let a_init = alice.init();
    bob.init();
    let c_init = carol.init();
    let a_uri = a_init["contactUri"].as_str().unwrap().to_owned();
    let a_installation = a_init["installationId"].as_str().unwrap();
    let _a_daemon = alice.daemon();
    let broker = started_broker(&alice);
    let _b_daemon = bob.daemon_with(&[("STRATA_PEERJS__BROKER", broker.as_str())]);
    let forged = format!("strata:{}/{a_installation}", c_init["peerId"].as_str().unwrap());

    let refused = bob.fails(&["connect", &forged], 12);
    assert!(refused.contains("someone else"), "{refused}");
    // Nothing pinned: the installation is no contact of Bob's.
    bob.fails(&["verify", a_installation], 11);
    let peers = json_of(&bob.ok(&["peers", "--json"]));
    for p in peers["peers"].as_array().unwrap() {
        assert!(p["peerId"].is_null(), "a key was pinned: {peers}");
    }
    // Sending with the forged URI is refused the same way once the real
    // account is pinned; first the real URI connects.
    let connect = json_of(&bob.ok(&["connect", &a_uri, "--json"]));
    assert_eq!(connect["state"], "ready", "{connect}");
    bob.fails(&["send", &forged, "to the wrong account"], 12);
    bob.fails(&["connect", &forged], 12);
}

/// Waits on the daemon's event stream (replayed from the start) for an
/// event of `kind` whose data satisfies `pred`; returns the data.
fn wait_event(node: &Node, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let addr = node.api_addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "GET /api/v1/events?since=0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        node.token()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut current = String::new();
    let started = std::time::Instant::now();
    loop {
        // Keep-alives arrive every 15 s, so this is checked even when no
        // event comes.
        assert!(started.elapsed() < DEADLINE, "no {kind} event within {DEADLINE:?}");
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "event stream ended waiting for {kind}"
        );
        if let Some(k) = line.strip_prefix("event: ") {
            current = k.trim().to_owned();
        }
        if let Some(data) = line.strip_prefix("data: ")
            && current == kind
        {
            let data: Value = serde_json::from_str(data.trim()).unwrap();
            if pred(&data) {
                return data;
            }
        }
    }
}

/// Three daemons over libp2p (issue #17): Alice creates a group chat and
/// adds Bob and Carol, who join from her Welcomes; texts go all ways, and a
/// file; Carol
/// is removed, is told so, and the others go on without her.
#[test]
fn three_daemons_chat_in_a_group() {
    let (alice, bob, carol) = (Node::new(), Node::new(), Node::new());
    for n in [&alice, &bob, &carol] {
        n.init();
    }
    let gossip_only = [("STRATA_PEERJS__ENABLED", "false")];
    let _daemons: Vec<Daemon> = [&alice, &bob, &carol]
        .iter()
        .map(|n| n.daemon_with(&gossip_only))
        .collect();
    let uri = |n: &Node| n.id()["contactUri"].as_str().unwrap().to_owned();
    let (a_uri, b_uri, c_uri) = (uri(&alice), uri(&bob), uri(&carol));
    // Bob and Carol each have a session with Alice only: group messages
    // are published on the group's gossip topic, which all three hear.
    for (from, to) in [(&bob, &a_uri), (&carol, &a_uri)] {
        let connect = json_of(&from.ok(&["connect", to, "--json"]));
        assert_eq!(connect["state"], "ready", "{connect}");
    }
    let created = json_of(&alice.ok(&["group", "create", "--name", "climbing", "--json"]));
    let group = created["group"].as_str().unwrap().to_owned();
    alice.ok(&["group", "add", &group, &b_uri]);
    alice.ok(&["group", "add", &group, &c_uri]);
    for n in [&bob, &carol] {
        let joined = wait_event(n, "group-joined", |d| d["group"] == group.as_str());
        assert_eq!(joined["name"], "climbing", "{joined}");
    }
    // Bob follows the commit that added Carol before he sends.
    wait_event(&bob, "group-epoch", |d| d["epoch"] == 2);
    let listed = json_of(&bob.ok(&["group", "list", "--json"]));
    assert_eq!(listed["groups"][0]["group"], group.as_str(), "{listed}");
    let a_id = alice.id()["installationId"].as_str().unwrap().to_owned();
    let members = json_of(&bob.ok(&["group", "members", &group, "--json"]));
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
    assert_eq!(members["admins"], serde_json::json!([a_id]), "{members}");

    // Bob follows his inbox: group messages show there too. A pair message
    // first, so the follower's first line says it has read the inbox (what
    // comes after is replayed to it from there).
    send_acked(&alice, &b_uri, "before the group talks");
    let mut follower = bob
        .cmd()
        .args(["inbox", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::sync_channel(1024);
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines_rx.recv_timeout(DEADLINE).expect("inbox --follow starts");
    assert_eq!(json_of(&first)["text"], "before the group talks", "{first}");
    let says = |n: &Node, text: &str| {
        n.ok(&["group", "send", &group, text]);
    };
    let hears = |n: &Node, text: &str| {
        wait_event(n, "group-message", |d| d["text"] == text);
    };
    says(&alice, "from alice");
    hears(&bob, "from alice");
    hears(&carol, "from alice");
    let followed = loop {
        let line = lines_rx
            .recv_timeout(DEADLINE)
            .expect("inbox --follow shows the group message");
        let item = json_of(&line);
        if item["kind"] == "group-message" {
            break item;
        }
    };
    assert_eq!(followed["text"], "from alice", "{followed}");
    terminate(&follower);
    wait_exit(&mut follower);
    says(&bob, "from bob");
    hears(&alice, "from bob");
    hears(&carol, "from bob");
    says(&carol, "from carol");
    hears(&alice, "from carol");
    hears(&bob, "from carol");

    // A file to the group: Bob and Carol have it whole.
    let file = alice.dir().join("route.gpx");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let sent = alice.ok(&["group", "send", &group, "--file", file.to_str().unwrap()]);
    let file_id = sent.trim().to_owned();
    for n in [&bob, &carol] {
        let got = wait_event(n, "group-file", |d| d["fileId"] == file_id.as_str());
        assert_eq!(got["name"], "route.gpx", "{got}");
        assert_eq!(std::fs::read(got["path"].as_str().unwrap()).unwrap(), bytes);
    }

    let carol_id = carol.id()["installationId"].as_str().unwrap().to_owned();
    alice.ok(&["group", "remove", &group, &carol_id]);
    wait_event(&carol, "group-removed", |d| d["group"] == group.as_str());
    wait_event(&bob, "group-epoch", |d| d["epoch"] == 3);
    says(&alice, "without carol");
    hears(&bob, "without carol");
    // Carol's node is out of the group: sending to it is not-found (11).
    let refused = carol.fails(&["group", "send", &group, "still here?"], 11);
    assert!(refused.contains("unknown group"), "{refused}");
}

/// Waits until `probe` holds, polling; fails after [`DEADLINE`].
fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !probe() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Multi-device (issue #18): `devices pair` on Alice's device shows a
/// one-time URI; `devices join` on a fresh data directory pairs over
/// PeerJS and gets her contacts. A text Bob sends to Alice's account then
/// arrives on both her devices, and the one she sends from her new device
/// shows on her first as sent. The used URI is refused.
#[test]
fn a_second_device_pairs_and_gets_what_is_sent_to_the_account() {
    let (alice, alice2, bob, stranger) = (Node::new(), Node::new(), Node::new(), Node::new());
    let a_init = alice.init();
    let b_init = bob.init();
    let a_peer = a_init["peerId"].as_str().unwrap().to_owned();
    let b_uri = b_init["contactUri"].as_str().unwrap().to_owned();
    let b_peer = b_init["peerId"].as_str().unwrap().to_owned();
    let _a_daemon = alice.daemon();
    let broker = started_broker(&alice);
    let env = [("STRATA_PEERJS__BROKER", broker.as_str())];
    let _b_daemon = bob.daemon_with(&env);
    let connect = json_of(&alice.ok(&["connect", &b_uri, "--json"]));
    assert_eq!(connect["state"], "ready", "{connect}");

    let pair = json_of(&alice.ok(&["devices", "pair", "--json"]));
    let uri = pair["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("strata-pair:"), "{pair}");
    let joined = json_of(&alice2.ok(&["devices", "join", &uri, "--json"]));
    assert_eq!(joined["peerId"], a_init["peerId"], "{joined}");
    assert_eq!(joined["contacts"], 1, "{joined}");
    assert_ne!(joined["installationId"], a_init["installationId"]);
    let refused = stranger.fails(&["devices", "join", &uri], 12);
    assert!(refused.contains("used"), "{refused}");
    assert!(
        !stranger.dir().join("store.redb").exists(),
        "a refused join writes nothing"
    );
    // The same account: the same safety number with Bob on both devices.
    let number = |n: &Node| json_of(&n.ok(&["verify", &b_peer, "--json"]))["safetyNumber"].clone();
    assert_eq!(number(&alice2), number(&alice));

    let _a2_daemon = alice2.daemon_with(&env);
    let devices = json_of(&alice2.ok(&["devices", "list", "--json"]));
    assert_eq!(devices["devices"].as_array().unwrap().len(), 2, "{devices}");
    wait_event(&bob, "devices-changed", |d| {
        d["peerId"] == a_peer.as_str() && d["installations"].as_array().is_some_and(|i| i.len() == 2)
    });
    send_acked(&bob, &a_peer, "to both of alice's devices");
    for device in [&alice, &alice2] {
        eventually("the text on both devices", || {
            inbox_texts(device).contains(&"to both of alice's devices".to_owned())
        });
    }
    // A file to the account: both of Alice's devices get it whole.
    let file = bob.tmp.path().join("photo.bin");
    let content: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&file, &content).unwrap();
    let sent = json_of(&bob.ok(&["send", &a_peer, "--file", file.to_str().unwrap(), "--json"]));
    let copies = sent["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 2, "{sent}");
    for device in [&alice, &alice2] {
        eventually("the file on the device", || {
            std::fs::read_dir(device.dir().join("downloads"))
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .any(|e| std::fs::read(e.path()).is_ok_and(|b| b == content))
                })
                .unwrap_or(false)
        });
    }
    // From the new device: Bob gets it, and Alice's first device shows it
    // as sent.
    send_acked(&alice2, &b_peer, "from the new device");
    eventually("Bob gets it", || {
        inbox_texts(&bob).contains(&"from the new device".to_owned())
    });
    eventually("the first device shows it as sent", || {
        json_lines(&alice.ok(&["inbox", "--json"]))
            .iter()
            .any(|m| m["sentTo"] == b_peer.as_str() && m["text"] == "from the new device")
    });
}

/// Account recovery (issue #18): the account key exported under a
/// passphrase restores the account on a fresh data directory as a new
/// device: the same peer id, a new installation, and Bob sees the same
/// safety number and no identity change. A wrong passphrase writes
/// nothing.
#[test]
fn a_restored_account_is_a_new_device_of_the_same_account() {
    let (alice, restored, bob, wrong) = (Node::new(), Node::new(), Node::new(), Node::new());
    let a_init = alice.init();
    let b_init = bob.init();
    let b_uri = b_init["contactUri"].as_str().unwrap().to_owned();
    let b_peer = b_init["peerId"].as_str().unwrap().to_owned();
    let backup = alice.tmp.path().join("alice.backup");
    let pass = [("STRATA_BACKUP_PASSPHRASE", "a long enough passphrase")];
    ok(alice
        .cmd()
        .envs(pass)
        .args(["account", "export", "--out", backup.to_str().unwrap()]));
    assert_eq!(mode(&backup) & 0o777, 0o600);
    let refused = fails(
        wrong
            .cmd()
            .env("STRATA_BACKUP_PASSPHRASE", "not the passphrase at all")
            .args(["init", "--restore", backup.to_str().unwrap()]),
        6,
    );
    assert!(refused.contains("does not open"), "{refused}");
    assert!(
        !wrong.dir().join("store.redb").exists(),
        "a refused restore writes nothing"
    );
    let init: Value = serde_json::from_str(&ok(restored.cmd().envs(pass).args([
        "init",
        "--restore",
        backup.to_str().unwrap(),
        "--json",
    ])))
    .unwrap();
    assert_eq!(init["peerId"], a_init["peerId"]);
    assert_ne!(init["installationId"], a_init["installationId"]);

    // Bob knew Alice's first device; the restored one talks to him as a
    // new device of the same account.
    let _b_daemon = bob.daemon();
    let broker = started_broker(&bob);
    let env = [("STRATA_PEERJS__BROKER", broker.as_str())];
    let _a_daemon = alice.daemon_with(&env);
    json_of(&alice.ok(&["connect", &b_uri, "--json"]));
    let _r_daemon = restored.daemon_with(&env);
    let connect = json_of(&restored.ok(&["connect", &b_uri, "--json"]));
    assert_eq!(connect["state"], "ready", "{connect}");
    send_acked(&restored, &b_uri, "from the restored device");
    eventually("Bob gets it", || {
        inbox_texts(&bob).contains(&"from the restored device".to_owned())
    });
    let first = a_init["installationId"].as_str().unwrap();
    let second = init["installationId"].as_str().unwrap();
    let number = |installation: &str| json_of(&bob.ok(&["verify", installation, "--json"]))["safetyNumber"].clone();
    assert_eq!(number(first), number(second));
    let peers = json_of(&bob.ok(&["peers", "--json"]));
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["identityChangePending"] == false),
        "{peers}"
    );
    assert_eq!(
        number(second),
        json_of(&restored.ok(&["verify", &b_peer, "--json"]))["safetyNumber"]
    );
}

/// `invite` and `accept` over libp2p alone: the invite URI carries where
/// Alice listens, Bob's `accept` runs the key exchange and returns once
/// the session is ready, and both see the other verified by invite. Bad,
/// own and spent invites are refused with their exit codes.
#[test]
fn an_invite_accepted_over_libp2p_opens_a_session_verified_by_invite() {
    let (alice, bob) = (Node::new(), Node::new());
    let a_init = alice.init();
    bob.init();
    alice.fails(&["invite"], exit::NO_DAEMON);
    let gossip_only = [("STRATA_PEERJS__ENABLED", "false")];
    let _a_daemon = alice.daemon_with(&gossip_only);
    let _b_daemon = bob.daemon_with(&gossip_only);
    // clap refuses a lifetime over 30 days, with its usage code.
    let over = alice.cmd().args(["invite", "--expires", "45d"]).output().unwrap();
    assert_eq!(over.status.code(), Some(exit::USAGE), "{}", describe(&over));
    let invite = json_of(&alice.ok(&["invite", "--expires", "1h", "--name", "alice", "--json"]));
    let uri = invite["uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("strata-invite:") && uri.contains("addr="), "{uri}");

    bob.fails(&["accept", "strata-invite:AAAA"], exit::USAGE);
    bob.fails(&["accept", "no-such-file"], exit::USAGE);
    alice.fails(&["accept", &uri], exit::USAGE);

    // From a file, as an invite often travels.
    let file = bob.tmp.path().join("invite.txt");
    std::fs::write(&file, format!("{uri}\n")).unwrap();
    let accepted = json_of(&bob.ok(&["accept", file.to_str().unwrap(), "--name", "bob", "--json"]));
    assert_eq!(accepted["state"], "ready", "{accepted}");
    assert_eq!(accepted["peerId"], a_init["peerId"], "{accepted}");
    assert_eq!(accepted["installation"], a_init["installationId"], "{accepted}");
    assert_eq!(accepted["name"], "alice", "{accepted}");

    let a_installation = a_init["installationId"].as_str().unwrap();
    send_acked(&bob, a_installation, "hello from your invite");
    assert_eq!(inbox_texts(&alice), ["hello from your invite"]);
    for node in [&alice, &bob] {
        let peers = json_of(&node.ok(&["peers", "--json"]));
        assert_eq!(peers["peers"][0]["verifiedByInvite"], true, "{peers}");
        assert!(node.ok(&["peers"]).contains("verified-by-invite"));
    }
    let completed = wait_event(&alice, "kx-completed", |d| d["name"] == "bob");
    assert_eq!(completed["accepted"], false, "{completed}");
    bob.fails(&["accept", &uri], exit::USAGE);

    // Introductions need two contacts.
    let b_installation = bob.id()["installationId"].as_str().unwrap().to_owned();
    let stranger = "0123456789abcdef0123456789abcdef";
    alice.fails(&["introduce", &b_installation, stranger], exit::NOT_FOUND);
    alice.fails(&["introduce", &b_installation, &b_installation], exit::USAGE);
}
