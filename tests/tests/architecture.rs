//! The crate graph of ARCHITECTURE.md, enforced: dependencies point one way,
//! the session never names a concrete transport, and no transport depends on
//! another transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace package and the workspace packages it may depend on
/// (normal and build dependencies). Anything not listed is a violation.
const ALLOWED: &[(&str, &[&str])] = &[
    ("strata-proto", &[]),
    ("strata-transport", &["strata-proto"]),
    ("strata-cascade", &["strata-proto"]),
    ("strata-store", &["strata-proto", "strata-cascade"]),
    (
        "strata-session",
        &["strata-proto", "strata-transport", "strata-cascade", "strata-store"],
    ),
    ("strata-transport-peerjs", &["strata-proto", "strata-transport"]),
    ("strata-transport-libp2p", &["strata-proto", "strata-transport"]),
    (
        "strata",
        &[
            "strata-proto",
            "strata-transport",
            "strata-cascade",
            "strata-store",
            "strata-session",
            "strata-transport-peerjs",
            "strata-transport-libp2p",
        ],
    ),
    ("strata-tests", &[]),
    // Dev-only: the harness the tests share. It names the concrete transports
    // for their harnesses (an embedded PeerJS broker, libp2p nodes on
    // loopback), which their own tests and the cross-crate tests share.
    (
        "strata-test-support",
        &[
            "strata-transport",
            "strata-transport-peerjs",
            "strata-transport-libp2p",
            "strata-cascade",
            "strata-store",
            "strata-session",
        ],
    ),
];

const APP: &str = "strata";
const TRANSPORTS: &[&str] = &["strata-transport-peerjs", "strata-transport-libp2p"];

struct Graph {
    /// package → (dependency, kind) for workspace dependencies only.
    deps: BTreeMap<String, Vec<(String, Option<String>)>>,
}

/// The workspace's packages and their direct dependencies.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn graph() -> Graph {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let deps = packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| members.contains(d["name"].as_str().unwrap()))
                .map(|d| {
                    (
                        d["name"].as_str().unwrap().to_owned(),
                        d["kind"].as_str().map(str::to_owned),
                    )
                })
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect();
    Graph { deps }
}

#[test]
fn every_member_is_in_the_architecture_table() {
    let g = graph();
    let listed: BTreeSet<&str> = ALLOWED.iter().map(|(p, _)| *p).collect();
    let actual: BTreeSet<&str> = g.deps.keys().map(String::as_str).collect();
    assert_eq!(actual, listed, "add new crates to ARCHITECTURE.md and to ALLOWED here");
}

#[test]
fn dependencies_point_one_way() {
    let g = graph();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (pkg, deps) in &g.deps {
        for (dep, kind) in deps {
            let is_dev = kind.as_deref() == Some("dev");
            if is_dev {
                continue; // dev-dependencies are checked by the rules below
            }
            if !allowed[pkg.as_str()].contains(&dep.as_str()) {
                violations.push(format!("{pkg} → {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependencies not allowed by ARCHITECTURE.md: {violations:?}"
    );
}

#[test]
fn no_library_depends_on_the_app() {
    for (pkg, deps) in &graph().deps {
        if pkg != APP {
            assert!(!deps.iter().any(|(d, _)| d == APP), "{pkg} depends on the app crate");
        }
    }
}

#[test]
fn session_never_depends_on_a_concrete_transport() {
    let g = graph();
    for (dep, kind) in &g.deps["strata-session"] {
        assert!(
            !TRANSPORTS.contains(&dep.as_str()),
            "strata-session depends on {dep} ({kind:?})"
        );
    }
}

#[test]
fn no_transport_depends_on_another_transport() {
    let g = graph();
    for t in TRANSPORTS {
        for (dep, kind) in &g.deps[*t] {
            assert!(!TRANSPORTS.contains(&dep.as_str()), "{t} depends on {dep} ({kind:?})");
        }
    }
}

/// Crates that implement cryptographic primitives: only the cascade may use
/// them. `sha2` is also allowed where a protocol fixes it for naming rather
/// than security (gossipsub message ids, Waku topics).
const PRIMITIVES: &[&str] = &[
    "aes-gcm",
    "ml-kem",
    "hkdf",
    "argon2",
    "chacha20poly1305",
    "openmls",
    "openmls_rust_crypto",
    "libsignal-protocol-syft",
    "signal-crypto-syft",
    "sha2",
    "sntrup761",
    "crypto_secretbox",
    "blake-hash",
    "hmac",
    "x25519-dalek",
];
const NAMING_HASH_ALLOWED: &[&str] = &["strata-transport-libp2p"];

#[test]
fn only_the_cascade_touches_primitives() {
    let meta = metadata();
    let mut violations = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if name == "strata-cascade" {
            continue;
        }
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            let dev = d["kind"].as_str() == Some("dev");
            let allowed = dep == "sha2" && NAMING_HASH_ALLOWED.contains(&name);
            if PRIMITIVES.contains(&dep) && !dev && !allowed {
                violations.push(format!("{name} → {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "primitive crates outside strata-cascade: {violations:?}"
    );
}

// ---- module rules -------------------------------------------------------------

/// The workspace root (this package is `tests/`).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every `.rs` file below `dir`, recursively.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The source folders whose modules the rules below read.
fn source_dirs() -> Vec<std::path::PathBuf> {
    let root = root();
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    dirs.push(root.join("apps/strata/src"));
    dirs.sort();
    dirs
}

/// A file's code without its comments and its trailing `#[cfg(test)]`
/// module (tests may reach anywhere).
fn code_of(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("\n#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's top-level module `path` belongs to (`None` for the root).
fn top_module(src: &std::path::Path, path: &std::path::Path) -> Option<String> {
    let rel = path.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs");
    (!matches!(first, "lib" | "main")).then(|| first.to_owned())
}

/// No two top-level modules of a crate import each other, directly or
/// through others: the house has no circles (issue #15), so each module
/// can be read, and moved, without the rest.
#[test]
fn no_module_circles_inside_a_crate() {
    let mut circles = Vec::new();
    for src in source_dirs() {
        let files = rust_files(&src);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(from) = top_module(&src, file) else { continue };
            let code = code_of(file);
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if name != from && modules.contains(&name) {
                    edges.entry(from.clone()).or_default().insert(name);
                }
            }
        }
        // Depth-first search for a path back to the start.
        for start in &modules {
            let mut stack = vec![(start.clone(), vec![start.clone()])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for next in edges.get(&at).into_iter().flatten() {
                    if next == start {
                        let mut cycle = path.clone();
                        cycle.push(start.clone());
                        circles.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
                    } else if seen.insert(next.clone()) {
                        let mut longer = path.clone();
                        longer.push(next.clone());
                        stack.push((next.clone(), longer));
                    }
                }
            }
        }
    }
    assert!(circles.is_empty(), "module circles:\n{}", circles.join("\n"));
}

/// One room per concern: no source file of the session crate or the app
/// grows past 900 lines (issue #15); a larger one is split by concern.
#[test]
fn no_source_file_of_the_session_or_the_app_is_over_900_lines() {
    let root = root();
    let mut long = Vec::new();
    for dir in ["crates/session/src", "apps/strata/src"] {
        for file in rust_files(&root.join(dir)) {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > 900 {
                long.push(format!(
                    "{} ({lines} lines)",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

/// The daemon's session layer (`apps/strata/src/node/`) waits on typed
/// replies and events; the API's JSON events are made in `events.rs` and
/// read by API clients only, never parsed back by the daemon.
#[test]
fn the_daemon_never_parses_its_own_event_json() {
    let dir = root().join("apps/strata/src/node");
    for file in rust_files(&dir) {
        if file.ends_with("events.rs") {
            continue;
        }
        let code = code_of(&file);
        for forbidden in ["control::events::NodeEvent", "json::at", "events.subscribe("] {
            assert!(
                !code.contains(forbidden),
                "{} reads the API's JSON events ({forbidden})",
                file.display()
            );
        }
    }
}
