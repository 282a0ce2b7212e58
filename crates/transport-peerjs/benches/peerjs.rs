//! Transport-level figures against the PeerJS JS↔JS baseline, in one run:
//!
//! - connect → open: `connect()` until the local data channel is open
//!   (PeerJS: `a.connect(b)` → A-side `open`), fresh peer connection each time;
//! - 64 MiB A → B over one link, in 1 MiB frames and in 8 KiB frames (the
//!   session layer's chunk size), until the last byte is delivered.
//!
//! Knobs (environment): `PEERJS_BENCH_CHUNK` (BinaryPack chunk size),
//! `PEERJS_BENCH_SMALL_FRAME` (bytes, instead of 8192),
//! `PEERJS_BENCH_SKIP_JS`, and `PEERJS_BENCH_TWO_LINKS=1`, which instead
//! moves 64 MiB over each of two links at once: if together they beat one
//! link, a link is bound by latency inside webrtc-rs rather than by CPU.
//!
//! The JS side runs `../shared/tools/peerjs-baseline.cjs` from `tests/interop`
//! (its node_modules). The end-to-end targets (connect →
//! `encryptionReady`, 64 MiB through the full cascade) need the session
//! layer; these are the transport's share of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_test_support::bench::{flag, knob, median, peerjs_baseline};
use strata_test_support::peerjs;
use strata_transport::{EventStream, PeerAddr, Transport, TransportEvent};
use strata_transport_peerjs::{BrokerConfig, PeerJsTransport};

const CONNECTS: usize = 20;
const TRANSFER: usize = 64 << 20;
const REPS: usize = 3;

async fn node(id: &str, port: u16) -> (PeerJsTransport, EventStream) {
    let mut config = peerjs::config(id, port);
    config.chunk_size = knob("PEERJS_BENCH_CHUNK", config.chunk_size);
    PeerJsTransport::start(config).await.unwrap()
}

async fn wait_for(events: &mut EventStream, mut f: impl FnMut(&TransportEvent) -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let event = events.next().await.expect("transport stopped");
            if f(&event) {
                return;
            }
        }
    })
    .await
    .expect("bench event timed out");
}

async fn strata_connect(
    a: &PeerJsTransport,
    ae: &mut EventStream,
    b: &PeerJsTransport,
    be: &mut EventStream,
) -> Vec<f64> {
    let b_addr = b.local_addr();
    let mut samples = Vec::new();
    for _ in 0..CONNECTS {
        let t0 = Instant::now();
        a.connect(&b_addr).await.unwrap();
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        wait_for(be, |e| matches!(e, TransportEvent::Connected { .. })).await;
        a.disconnect(&b_addr).await.unwrap();
        wait_for(ae, |e| matches!(e, TransportEvent::Disconnected { .. })).await;
        wait_for(be, |e| matches!(e, TransportEvent::Disconnected { .. })).await;
    }
    samples
}

async fn strata_transfer(a: &PeerJsTransport, b: &PeerJsTransport, be: &mut EventStream, frame: usize) -> f64 {
    let (from, to) = (a.local_addr(), b.local_addr());
    // 64 MiB rounded down to whole frames.
    let frames = TRANSFER / frame;
    let total = frames * frame;
    let payload: Bytes = (0..frame).map(|i| (i % 251) as u8).collect();
    let t0 = Instant::now();
    let sender = {
        let (a, to, payload) = (a.clone(), to.clone(), payload.clone());
        tokio::spawn(async move {
            for _ in 0..frames {
                a.send(&to, payload.clone()).await.unwrap();
            }
        })
    };
    let mut received = 0;
    while received < total {
        let event = tokio::time::timeout(Duration::from_secs(120), be.next())
            .await
            .unwrap()
            .unwrap();
        if let TransportEvent::Frame { from: f, bytes } = event {
            assert_eq!(f, from);
            assert!(bytes == payload, "frame corrupted");
            received += bytes.len();
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    sender.await.unwrap();
    total as f64 / 1e6 / secs
}

/// The "8 KiB" frame size: `PEERJS_BENCH_SMALL_FRAME`, else 8192.
fn small_frame() -> usize {
    knob("PEERJS_BENCH_SMALL_FRAME", 8 << 10)
}

/// 64 MiB in 8 KiB frames over A→B and C→D at once, three times.
async fn two_links(a: &PeerJsTransport, b: &PeerJsTransport, be: &mut EventStream, port: u16) {
    let (c, _ce) = node("bench-c", port).await;
    let (d, mut de) = node("bench-d", port).await;
    a.connect(&b.local_addr()).await.unwrap();
    wait_for(be, |e| matches!(e, TransportEvent::Connected { .. })).await;
    c.connect(&d.local_addr()).await.unwrap();
    wait_for(&mut de, |e| matches!(e, TransportEvent::Connected { .. })).await;
    for _ in 0..REPS {
        let t0 = Instant::now();
        let (ab, cd) = tokio::join!(
            strata_transfer(a, b, be, 8 << 10),
            strata_transfer(&c, &d, &mut de, 8 << 10)
        );
        let sum = 2.0 * TRANSFER as f64 / 1e6 / t0.elapsed().as_secs_f64();
        println!("two links at once, 8 KiB frames MB/s: {ab:.1} + {cd:.1}, together {sum:.1}");
    }
}

#[tokio::main]
async fn main() {
    let broker = peerjs::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut ae) = node("bench-a", port).await;
    let (b, mut be) = node("bench-b", port).await;
    if flag("PEERJS_BENCH_TWO_LINKS") {
        two_links(&a, &b, &mut be, port).await;
        return;
    }

    let connect = strata_connect(&a, &mut ae, &b, &mut be).await;
    let connect_median = median(connect.clone());
    a.connect(&PeerAddr::from("bench-b")).await.unwrap();
    wait_for(&mut be, |e| matches!(e, TransportEvent::Connected { .. })).await;
    let mut big = Vec::new();
    let mut small = Vec::new();
    for _ in 0..REPS {
        big.push(strata_transfer(&a, &b, &mut be, 1 << 20).await);
        small.push(strata_transfer(&a, &b, &mut be, small_frame()).await);
    }
    let (big_median, small_median) = (median(big.clone()), median(small.clone()));
    println!("strata connect->open ms: median {connect_median:.1} samples {connect:.1?}");
    println!("strata 64 MiB in 1 MiB frames MB/s: median {big_median:.1} runs {big:.1?}");
    println!("strata 64 MiB in 8 KiB frames MB/s: median {small_median:.1} runs {small:.1?}");
    drop((a, b));
    broker.shutdown().await;

    if flag("PEERJS_BENCH_SKIP_JS") {
        return;
    }
    let js = peerjs_baseline(&[("PJB_CONNECT_N", CONNECTS.to_string()), ("PJB_REPS", REPS.to_string())]);
    if let Some((js_connect, js_raw)) = js.and_then(|js| js.report()) {
        println!(
            "ratio connect (strata / peerjs, lower is better): {:.2}",
            connect_median / js_connect
        );
        println!(
            "ratio throughput 1 MiB frames (strata / peerjs raw): {:.2}",
            big_median / js_raw
        );
        println!(
            "ratio throughput 8 KiB frames (strata / peerjs raw): {:.2}",
            small_median / js_raw
        );
    }
}
