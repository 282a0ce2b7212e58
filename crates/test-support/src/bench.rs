//! What the benches share: knobs from the environment, medians, and the JS
//! baselines they run in the same invocation (scripts in the workspace's
//! sibling `shared/tools`, run from an npm harness folder).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::js;

/// The environment variable `name` as a number, else `default`.
pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Whether the environment variable `name` is set (to anything).
pub fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some()
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

/// A baseline script in `shared/tools`, beside the workspace.
pub fn shared_tool(name: &str) -> PathBuf {
    js::workspace_root().join("../shared/tools").join(name)
}

/// Runs the JS baseline `script` from `dir` (which must hold
/// `node_modules/<package>`) with `env` set, and parses the last line it
/// prints. `None` where it cannot run, after saying why on stderr.
#[allow(clippy::print_stderr)]
pub fn js_baseline(script: &Path, dir: &Path, package: &str, env: &[(&str, String)]) -> Option<Value> {
    if !script.exists() || !js::installed(dir, package) {
        eprintln!(
            "JS baseline NOT RUN: need {} and `npm ci` in {}",
            script.display(),
            dir.display()
        );
        return None;
    }
    let output = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last()?.trim()).ok()
}

/// The PeerJS JS↔JS baseline (`shared/tools/peerjs-baseline.cjs`, from
/// `tests/interop`): connect → `open` and raw 64 KiB frames, with `env`
/// (`PJB_*`) set. `None` where it cannot run.
pub fn peerjs_baseline(env: &[(&str, String)]) -> Option<PeerJsBaseline> {
    let mut env = env.to_vec();
    env.push(("PJB_MODES", "raw64k".into()));
    let js = js_baseline(&shared_tool("peerjs-baseline.cjs"), &js::interop_dir(), "peerjs", &env)?;
    Some(PeerJsBaseline {
        connect_ms: js["summary"]["connectMsMedian"].as_f64(),
        raw_mbps: js["summary"]["raw64kMBpsMedian"].as_f64(),
    })
}

/// The PeerJS baseline's medians.
#[derive(Clone, Copy, Debug)]
pub struct PeerJsBaseline {
    /// connect → data channel `open`, ms.
    pub connect_ms: Option<f64>,
    /// Raw (unencrypted) 64 KiB frames, MB/s.
    pub raw_mbps: Option<f64>,
}

impl PeerJsBaseline {
    /// Prints the medians; returns them where the baseline reported both.
    #[allow(clippy::print_stdout)]
    pub fn report(&self) -> Option<(f64, f64)> {
        println!(
            "peerjs JS<->JS connect->open ms: median {:?}; raw 64 KiB MB/s: median {:?}",
            self.connect_ms, self.raw_mbps
        );
        self.connect_ms.zip(self.raw_mbps)
    }
}
