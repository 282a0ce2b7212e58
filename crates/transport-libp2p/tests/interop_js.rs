//! Interop with unmodified JS peers on loopback, whichever side dials:
//! (a) js-libp2p 2.8 + `@chainsafe/libp2p-gossipsub` 14 speaking Waku relay
//! (`tests/interop/waku-relay-peer.mjs`); (b) js-waku's relay node
//! (`@waku/sdk` 0.0.27 + `@waku/relay` 0.0.14,
//! `crates/transport-libp2p/tests/interop/waku-sdk-peer.mjs`, in its own
//! folder because `@waku/core` 0.0.31 needs libp2p 1.x as a peer while
//! `tests/interop` pins libp2p 2.x).
//!
//! Strata publishes a bundle-sized frame on a bundle content topic before
//! the JS peer exists; the JS node must receive it and decode the
//! `WakuMessage` (content topic, payload, version 0, ns timestamp, gossip id
//! = SHA-256 of the data). The JS node publishes two invalid messages (not a
//! protobuf; an empty payload), two valid ones on Strata's installation
//! topic with garbage link headers, then a valid one: Strata rejects the
//! first two with a count, ignores the link garbage, never panics, and
//! delivers the last.
//!
//! With js-waku the same exchange runs through the SDK's own encoder,
//! decoder and relay validator.
//!
//! Needs `node` (20+) and `npm ci` in `tests/interop` and
//! `crates/transport-libp2p/tests/interop` (`scripts/setup` does both).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use serde_json::Value;
use strata_test_support::js::{JsPeer, interop_dir};
use strata_test_support::libp2p::{publication, tcp_addr};
use strata_transport::conformance::DEADLINE;
use strata_transport::{EventStream, Topic, Transport};
use strata_transport_libp2p::topic::{bundle_topic, installation_topic};
use strata_transport_libp2p::{Config, Libp2pTransport};

/// The JS peer's first listen address, ending in `/p2p/<its peer id>`.
fn js_addr(listening: &Value) -> Multiaddr {
    let addr: Multiaddr = listening["addrs"][0].as_str().unwrap().parse().unwrap();
    if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        addr
    } else {
        format!("{addr}/p2p/{}", listening["peerId"].as_str().unwrap())
            .parse()
            .unwrap()
    }
}

fn now_ns() -> i128 {
    i128::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// Logs to the test's output with `RUST_LOG` (e.g.
/// `RUST_LOG=strata_transport_libp2p=debug,libp2p_gossipsub=debug`).
fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A Strata node subscribed to `js_topic` that published `bundle` on
/// `bundle_topic` before any peer exists: the queue must hold it.
async fn strata_node(
    name: &str,
    js_topic: &Topic,
    bundle_topic: &Topic,
    bundle: &Bytes,
) -> (Libp2pTransport, EventStream) {
    let (strata, events) = Libp2pTransport::start(Config::loopback(name)).await.unwrap();
    strata.subscribe(js_topic).await.unwrap();
    strata.publish(bundle_topic, bundle.clone()).await.unwrap();
    (strata, events)
}

/// Runs the JS peer `script` from `dir` (which holds
/// `node_modules/<package>`) with `args`; Strata dials it if `rust_dials`,
/// else it dials Strata.
async fn meet(
    strata: &Libp2pTransport,
    rust_dials: bool,
    (dir, package, script): (&Path, &str, &str),
    args: &[&str],
) -> JsPeer {
    let rust_addr = tcp_addr(strata).await.to_string();
    let mut args = args.to_vec();
    if !rust_dials {
        args.extend(["--dial", rust_addr.as_str()]);
    }
    let mut js = JsPeer::spawn(dir, package, script, &args);
    let listening = js.expect("listening", |_| true).await;
    if rust_dials {
        strata.dial(js_addr(&listening)).await.unwrap();
    }
    js
}

/// The JS peer's decoding of Strata's WakuMessage on `topic`, checked to
/// carry `bundle` as version 0, not ephemeral.
async fn bundle_received(js: &mut JsPeer, topic: &Topic, bundle: &Bytes) -> Value {
    let got = js.expect("message", |m| m["contentTopic"] == topic.as_str()).await;
    assert_eq!(got["payloadHex"], hex::encode(bundle));
    assert_eq!(got["version"], 0);
    assert_eq!(got["ephemeral"], false);
    got
}

async fn interop(rust_dials: bool) {
    init_logs();
    let js_topic = Topic::from("/strata/1/interop-js/proto");
    let bundle_topic = bundle_topic(&[0x02; 33]);
    // A bundle-sized opaque frame with every byte value.
    let bundle: Bytes = (0..2048u32).map(|i| (i % 251) as u8).collect();
    let (strata, mut events) = strata_node("strata-interop", &js_topic, &bundle_topic, &bundle).await;

    let link_topic = installation_topic(&strata.local_addr());
    let args = [
        "--publish-topic",
        js_topic.as_str(),
        "--bad",
        "1",
        "--link-topic",
        link_topic.as_str(),
    ];
    let dir = interop_dir();
    let mut js = meet(
        &strata,
        rust_dials,
        (&dir, "@chainsafe/libp2p-gossipsub", "waku-relay-peer.mjs"),
        &args,
    )
    .await;

    // JS decodes Strata's WakuMessage on the bundle topic.
    let got = bundle_received(&mut js, &bundle_topic, &bundle).await;
    assert_eq!(got["idOk"], true, "gossip message id must be sha256(data)");
    let ts: i128 = got["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(
        (now_ns() - ts).abs() < 60_000_000_000,
        "timestamp {ts} is not ns near now"
    );

    // Strata receives the valid JS message, having rejected the two bad ones.
    let (from, bytes) = publication(&mut events, &js_topic, "the JS publication", DEADLINE).await;
    assert_eq!(bytes, "hello from js-libp2p");
    assert_eq!(from, None, "anonymous gossip names no publisher");
    let status = strata.status().await.unwrap();
    assert_eq!(status.rejected, 2, "the bad JS messages must be counted as rejected");
    assert!(status.relay_peers >= 1);

    // And the connection still works after the bad input: a second frame.
    strata
        .publish(&bundle_topic, Bytes::from_static(b"still alive"))
        .await
        .unwrap();
    let got = js
        .expect("message", |m| m["payloadHex"] == hex::encode(b"still alive"))
        .await;
    assert_eq!(got["contentTopic"], bundle_topic.as_str());
}

#[tokio::test]
async fn js_libp2p_dials_strata() {
    interop(false).await;
}

#[tokio::test]
async fn strata_dials_js_libp2p() {
    interop(true).await;
}

/// Interop (b): js-waku's relay node exchanges messages with Strata.
async fn interop_js_waku(rust_dials: bool) {
    init_logs();
    let js_topic = Topic::from("/strata/1/interop-js-waku/proto");
    let bundle_topic = bundle_topic(&[0x03; 33]);
    let bundle: Bytes = (0..1024u32).map(|i| (i % 253) as u8).collect();
    let (strata, mut events) = strata_node("strata-js-waku", &js_topic, &bundle_topic, &bundle).await;

    let args = [
        "--subscribe-topic",
        bundle_topic.as_str(),
        "--publish-topic",
        js_topic.as_str(),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let mut js = meet(&strata, rust_dials, (&dir, "@waku/sdk", "waku-sdk-peer.mjs"), &args).await;

    let got = bundle_received(&mut js, &bundle_topic, &bundle).await;
    let ts_ms = got["timestampMs"].as_i64().unwrap();
    assert!(
        (now_ns() / 1_000_000 - i128::from(ts_ms)).abs() < 60_000,
        "js-waku read timestamp {ts_ms} ms"
    );

    let (_, bytes) = publication(&mut events, &js_topic, "the js-waku publication", DEADLINE).await;
    assert_eq!(bytes, "hello from js-waku");
    let published = js.expect("published", |_| true).await;
    assert!(published["recipients"].as_u64().unwrap() >= 1, "{published}");
    assert_eq!(strata.status().await.unwrap().rejected, 0);
}

#[tokio::test]
async fn js_waku_dials_strata() {
    interop_js_waku(false).await;
}

#[tokio::test]
async fn strata_dials_js_waku() {
    interop_js_waku(true).await;
}
