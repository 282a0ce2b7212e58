//! Interop with unmodified third-party PeerJS software, run by Node from
//! `tests/interop` (versions pinned in its `package-lock.json`; `scripts/setup`
//! installs them with `npm ci`):
//!
//! - (a) a Strata node and `peerjs` 1.5.5 (node-datachannel polyfill), both on
//!   the reference `peer` 1.0.2 broker, exchange data both ways in `binary`
//!   (chunked included), `json` and `raw`, each side opening;
//! - (b) two `peerjs` clients meet through Strata's embedded broker;
//! - (c) `peerjs` in Debian's headless Chromium (playwright-core) and a Strata
//!   node, each side opening, on Strata's embedded broker; where no Chromium
//!   is installed they fail under CI (`CI` set) and are skipped loudly
//!   elsewhere (`strata_test_support::skip_or_fail`);
//! - close detection both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use bytes::Bytes;
use serde_json::json;
use strata_test_support::js::{self, DEADLINE, JsPeer};
use strata_transport::conformance::{expect_event, recv_frame};
use strata_transport::{DisconnectReason, EventStream, PeerAddr, Transport, TransportEvent};
use strata_transport_peerjs::{BrokerConfig, PeerJsTransport, Serialization};
use tokio::sync::mpsc;

/// Runs a script of the PeerJS harness in `tests/interop`.
fn spawn_js(script: &str, args: &[&str]) -> JsPeer {
    JsPeer::spawn(&js::interop_dir(), "peerjs", script, args)
}

/// Waits for the script's `ok` and its successful exit.
async fn expect_success(mut js: JsPeer) {
    js.next_event("ok").await;
    js.wait_success().await;
}

/// Waits for the script to end; fails if it reported `unavailable` (the
/// test found Chromium, so the driver must too).
async fn finish(mut js: JsPeer) {
    while let Some(value) = js.next_line().await {
        if value["event"] == "unavailable" {
            panic!(
                "{} found no Chromium, though this test did: {}",
                js.name(),
                value["reason"]
            );
        }
        js.log(&value.to_string());
    }
    js.wait_success().await;
}

/// The reference `peer` broker; returns it and its port.
async fn reference_broker() -> (JsPeer, u16) {
    let mut broker = spawn_js("peerjs-broker.cjs", &[]);
    let listening = broker.next_event("listening").await;
    let port = u16::try_from(listening["port"].as_u64().unwrap()).unwrap();
    (broker, port)
}

/// Echoes every frame back to its sender; forwards other events to the test.
fn echo(node: PeerJsTransport, mut events: EventStream) -> mpsc::Receiver<TransportEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                TransportEvent::Frame { from, bytes } => {
                    node.send(&from, bytes).await.unwrap();
                }
                other => {
                    let _ = tx.send(other).await;
                }
            }
        }
    });
    rx
}

async fn next_matching(rx: &mut mpsc::Receiver<TransportEvent>, what: &str, f: impl Fn(&TransportEvent) -> bool) {
    let wait = async {
        loop {
            let event = rx.recv().await.expect("node stopped");
            if f(&event) {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerjs_opens_to_strata_in_every_mode() {
    common::init_tracing();
    let (_broker, port) = reference_broker().await;
    let (node, events) = common::node("strata-echo", port).await;
    let mut others = echo(node, events);
    for serialization in ["binary", "json", "raw"] {
        for reliable in ["true", "false"] {
            let id = format!("js-{serialization}-{reliable}");
            let js = spawn_js(
                "peerjs-peer.cjs",
                &[
                    "connect",
                    &port.to_string(),
                    &id,
                    "strata-echo",
                    serialization,
                    reliable,
                ],
            );
            expect_success(js).await;
            // PeerJS's conn.close() is seen promptly as the peer closing.
            let peer = PeerAddr::new(id.clone());
            next_matching(&mut others, &format!("Disconnected from {id}"), |e| {
                matches!(e, TransportEvent::Disconnected { peer: p, reason: DisconnectReason::Remote } if *p == peer)
            })
            .await;
        }
    }
}

fn frames_for(serialization: Serialization) -> Vec<Bytes> {
    let pattern = |len: usize, seed: usize| -> Bytes { (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect() };
    match serialization {
        Serialization::Binary => vec![
            Bytes::from_static(b"small"),
            (0..=255u8).collect(),
            pattern(100_000, 1),
            pattern(1 << 20, 2),
        ],
        // Compact, as JSON.stringify writes it, so the echo is byte-identical.
        Serialization::Json => vec![Bytes::from(r#"{"hello":"peerjs","n":[1,2,{"u":"ü"}]}"#)],
        Serialization::Raw => vec![pattern(1001, 3), pattern(60_000, 4)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_opens_to_peerjs_in_every_mode() {
    common::init_tracing();
    let (_broker, port) = reference_broker().await;
    let mut js = spawn_js("peerjs-peer.cjs", &["echo", &port.to_string(), "js-echo"]);
    js.next_event("open").await;
    let js_addr = PeerAddr::from("js-echo");
    for serialization in [Serialization::Binary, Serialization::Json, Serialization::Raw] {
        let id = format!("strata-{serialization}");
        let mut config = common::node_config(&id, port);
        config.serialization = serialization;
        config.metadata = Some(json!({ "from": "strata" }));
        let (node, mut events) = PeerJsTransport::start(config).await.unwrap();
        node.connect(&js_addr).await.unwrap();
        expect_event(
            &mut events,
            "Connected",
            |e| matches!(e, TransportEvent::Connected { .. }),
            DEADLINE,
        )
        .await;

        let seen = js.next_event("connection").await;
        assert_eq!(seen["peer"], id.as_str());
        assert_eq!(seen["serialization"], serialization.as_str());
        assert_eq!(seen["reliable"], true);
        assert_eq!(seen["label"], seen["connectionId"]);
        assert!(seen["label"].as_str().unwrap().starts_with("dc_"));
        assert_eq!(seen["metadata"], json!({ "from": "strata" }));

        for frame in frames_for(serialization) {
            node.send(&js_addr, frame.clone()).await.unwrap();
            let echoed = recv_frame(&mut events, &js_addr).await;
            assert!(
                echoed == frame,
                "{serialization}: echo of {} bytes differs",
                frame.len()
            );
        }
        // Our disconnect reaches PeerJS as its connection's `close`.
        node.disconnect(&js_addr).await.unwrap();
        let closed = js.next_event("close").await;
        assert_eq!(closed["peer"], id.as_str());
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerjs_clients_meet_on_the_embedded_broker() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port().to_string();
    // No id: the client asks the broker's GET /peerjs/id first.
    let mut js = spawn_js("peerjs-peer.cjs", &["echo", &port, "-"]);
    let open = js.next_event("open").await;
    let echo_id = open["id"].as_str().unwrap().to_owned();
    assert_eq!(echo_id.len(), 36, "a UUID from /id: {echo_id}");
    for serialization in ["binary", "json", "raw"] {
        let id = format!("client-{serialization}");
        let client = spawn_js(
            "peerjs-peer.cjs",
            &["connect", &port, &id, &echo_id, serialization, "true"],
        );
        expect_success(client).await;
        js.next_event("close").await;
    }
    broker.shutdown().await;
}

fn chromium_installed() -> bool {
    ["/usr/bin/chromium", "/usr/lib/chromium/chromium"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// Whether the Chromium cases must not run: never under CI, where a
/// missing Chromium fails the test instead (see `skip_or_fail`).
fn skip_without_chromium() -> bool {
    if chromium_installed() {
        return false;
    }
    strata_test_support::skip_or_fail(
        "chromium is missing: interop case (c) needs Debian's Chromium at /usr/bin/chromium \
         (apt-get install chromium; scripts/setup --tests installs it)",
    );
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_peerjs_opens_to_strata() {
    common::init_tracing();
    if skip_without_chromium() {
        return;
    }
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (node, events) = common::node("strata-for-chrome", port).await;
    let mut others = echo(node, events);
    let js = spawn_js(
        "peerjs-browser.cjs",
        &[
            "connect",
            &port.to_string(),
            "chrome-client",
            "strata-for-chrome",
            "binary",
            "json",
            "raw",
        ],
    );
    finish(js).await;
    let chrome = PeerAddr::from("chrome-client");
    for _ in ["binary", "json", "raw"] {
        next_matching(
            &mut others,
            "Disconnected from chrome-client",
            |e| matches!(e, TransportEvent::Disconnected { peer, reason: DisconnectReason::Remote } if *peer == chrome),
        )
        .await;
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_opens_to_chromium_peerjs() {
    common::init_tracing();
    if skip_without_chromium() {
        return;
    }
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut js = spawn_js("peerjs-browser.cjs", &["echo", &port.to_string(), "chrome-echo"]);
    js.next_event("open").await;
    let chrome = PeerAddr::from("chrome-echo");
    for serialization in [Serialization::Binary, Serialization::Json, Serialization::Raw] {
        let mut config = common::node_config(&format!("strata-to-chrome-{serialization}"), port);
        config.serialization = serialization;
        let (node, mut events) = PeerJsTransport::start(config).await.unwrap();
        node.connect(&chrome).await.unwrap();
        let seen = js.next_event("connection").await;
        assert_eq!(seen["serialization"], serialization.as_str());
        for frame in frames_for(serialization) {
            node.send(&chrome, frame.clone()).await.unwrap();
            let echoed = recv_frame(&mut events, &chrome).await;
            assert!(
                echoed == frame,
                "{serialization}: echo of {} bytes differs",
                frame.len()
            );
        }
        node.disconnect(&chrome).await.unwrap();
        js.next_event("close").await;
        node.shutdown().await;
    }
    broker.shutdown().await;
}
