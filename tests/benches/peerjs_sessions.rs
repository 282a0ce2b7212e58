//! Session-level figures over the PeerJS transport against the PeerJS
//! JS↔JS baseline, both sides in one run (issue 6, part 7):
//!
//! - connect → `encryptionReady`: two session `Node`s with fresh identities
//!   and fresh redb stores, `Connect` until both sides report
//!   `encryptionReady` (full P3 handshake over WebRTC through the embedded
//!   broker), against PeerJS's connect → `open`;
//! - 64 MiB through the full cascade (`SendFile`: 48 KiB chunks, each an
//!   acknowledged MLS → Signal → ML-KEM → AES-256-GCM message) until the
//!   receiver wrote the whole file, against PeerJS raw (unencrypted) 64 KiB
//!   frames.
//!
//! The JS side runs `../shared/tools/peerjs-baseline.cjs` from
//! `tests/interop` (its node_modules).
//! `cargo bench -j 2 -p strata-tests --bench peerjs_sessions`; knobs:
//! `PEERJS_BENCH_CONNECTS` (default 10), `PEERJS_BENCH_REPS` (3),
//! `PEERJS_BENCH_MIB` (64), `PEERJS_BENCH_SKIP_JS`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::print_stdout)]

#[path = "../tests/peerjs_common/mod.rs"]
mod peerjs_common;

use std::time::Instant;

use peerjs_common::{PeerNode, random_file, run};
use strata_session::actors::NodeEventKind;
use strata_test_support::bench::{flag, knob, median, peerjs_baseline};
use strata_test_support::peerjs;
use strata_transport_peerjs::BrokerConfig;

/// One fresh pair: connect → data channel open at Alice, and connect →
/// `encryptionReady` on both sides, in ms.
async fn handshake(port: u16) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = PeerNode::start("alice", port, dir.path().join("a")).await;
    let mut bob = PeerNode::start("bob", port, dir.path().join("b")).await;
    let bob_id = bob.id.clone();
    let t0 = Instant::now();
    alice.connect(&bob_id).await;
    let mut open = None;
    let mut ready = false;
    alice
        .wait_for("encryptionReady", |e| {
            if matches!(e.kind, NodeEventKind::Connected) && open.is_none() {
                open = Some(t0.elapsed());
            }
            ready = matches!(
                e.kind,
                NodeEventKind::Session(strata_session::Event::EncryptionReady { .. })
            );
            ready
        })
        .await;
    assert!(!bob.wait_ready().await, "a fresh pair resumed");
    let both = t0.elapsed();
    alice.shutdown().await;
    bob.shutdown().await;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    (open.map_or(f64::NAN, ms), ms(both))
}

/// `reps` transfers of a `mib` MiB file from Alice to Bob over one session;
/// MB/s until Bob wrote the file whole and Alice had every acknowledgement.
async fn transfers(port: u16, mib: usize, reps: usize) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut alice = PeerNode::start("alice", port, dir.path().join("a")).await;
    let mut bob = PeerNode::start("bob", port, dir.path().join("b")).await;
    let bob_id = bob.id.clone();
    alice.connect(&bob_id).await;
    alice.wait_ready().await;
    bob.wait_ready().await;
    let source = dir.path().join("big.bin");
    let data = random_file(&source, mib << 20);
    let mut out = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        let received = alice.send_file(&mut bob, &source).await;
        let secs = t0.elapsed().as_secs_f64();
        assert!(std::fs::read(&received).unwrap() == data, "the file arrived damaged");
        std::fs::remove_file(&received).unwrap();
        out.push(data.len() as f64 / 1e6 / secs);
        // Keep the event backlog of the progress reports from growing.
        alice.seen.clear();
        bob.seen.clear();
    }
    alice.shutdown().await;
    bob.shutdown().await;
    out
}

fn main() {
    let connects: usize = knob("PEERJS_BENCH_CONNECTS", 10);
    let reps = knob("PEERJS_BENCH_REPS", 3);
    let mib = knob("PEERJS_BENCH_MIB", 64);
    let (open, ready, throughput) = run(async move {
        let broker = peerjs::broker(BrokerConfig::default()).await;
        let port = broker.local_addr().port();
        let mut open = Vec::new();
        let mut ready = Vec::new();
        for _ in 0..connects {
            let (o, r) = handshake(port).await;
            open.push(o);
            ready.push(r);
        }
        let throughput = transfers(port, mib, reps).await;
        broker.shutdown().await;
        (open, ready, throughput)
    });
    let (open_median, ready_median, mbps_median) =
        (median(open.clone()), median(ready.clone()), median(throughput.clone()));
    println!("strata connect->open (session node) ms: median {open_median:.1} samples {open:.1?}");
    println!("strata connect->encryptionReady ms: median {ready_median:.1} samples {ready:.1?}");
    println!("strata {mib} MiB file through the cascade MB/s: median {mbps_median:.1} runs {throughput:.1?}");

    if flag("PEERJS_BENCH_SKIP_JS") {
        return;
    }
    let js = peerjs_baseline(&[
        ("PJB_CONNECT_N", connects.max(10).to_string()),
        ("PJB_SIZE_MIB", mib.to_string()),
        ("PJB_REPS", reps.to_string()),
    ]);
    if let Some((js_connect, js_raw)) = js.and_then(|js| js.report()) {
        println!(
            "ratio connect->encryptionReady / peerjs connect->open (target <= 1.5): {:.2}",
            ready_median / js_connect
        );
        println!(
            "ratio cascade file MB/s / peerjs raw MB/s (target >= 1.0): {:.2}",
            mbps_median / js_raw
        );
    }
}
