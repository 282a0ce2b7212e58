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
