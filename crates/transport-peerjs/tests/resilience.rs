//! A node survives a broker restart and a peer's disappearance without manual
//! action; failures surface as typed errors and prompt events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use strata_test_support::peerjs::Doomed;
use strata_transport::conformance::{connect_pair, expect_event, recv_frame};
use strata_transport::{DisconnectReason, EventStream, PeerAddr, Transport, TransportError, TransportEvent};
use strata_transport_peerjs::signaling::SignalingError;
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsTransport, StartError};

/// ICE reports `disconnected` after 4 s of silence (see `RtcConfig`); the
/// rest is headroom for a machine shared with parallel builds. (PeerJS itself
/// never reports it.)
const LOSS_DETECTION: Duration = Duration::from_secs(20);

async fn expect_disconnected(events: &mut EventStream, peer: &PeerAddr, reason: DisconnectReason) {
    let what = format!("Disconnected {{ {peer}, {reason:?} }}");
    expect_event(
        events,
        &what,
        |e| matches!(e, TransportEvent::Disconnected { peer: p, reason: r } if p == peer && *r == reason),
        LOSS_DETECTION,
    )
    .await;
}

async fn exchange(a: &PeerJsTransport, a_events: &mut EventStream, b: &PeerJsTransport, b_events: &mut EventStream) {
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    a.send(&b_addr, Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(recv_frame(b_events, &a_addr).await, "ping");
    b.send(&a_addr, Bytes::from_static(b"pong")).await.unwrap();
    assert_eq!(recv_frame(a_events, &b_addr).await, "pong");
}

#[tokio::test]
async fn survives_a_broker_restart() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let addr = broker.local_addr();
    let (a, mut a_events) = common::node("restart-a", addr.port()).await;
    let (b, mut b_events) = common::node("restart-b", addr.port()).await;
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;

    broker.shutdown().await;
    // Open links do not need the broker.
    exchange(&a, &mut a_events, &b, &mut b_events).await;

    // A new broker on the same port; both nodes re-register on their own.
    let broker = Broker::bind(addr, BrokerConfig::default()).await.unwrap();
    let (c, mut c_events) = common::node("restart-c", addr.port()).await;
    // The broker holds C's OFFER until A is back, so this also waits for A.
    connect_pair(&c, &mut c_events, &a, &mut a_events).await;
    exchange(&c, &mut c_events, &a, &mut a_events).await;
    connect_pair(&b, &mut b_events, &c, &mut c_events).await;
    exchange(&b, &mut b_events, &c, &mut c_events).await;
    exchange(&a, &mut a_events, &b, &mut b_events).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detects_a_vanished_peer_and_reconnects_when_it_returns() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut a_events) = common::node("vanish-a", port).await;
    let doomed = Doomed::new();
    let (b, mut b_events) = doomed.node("vanish-b", port).await;
    let b_addr = b.local_addr();
    a.connect(&b_addr).await.unwrap();
    expect_event(
        &mut b_events,
        "Connected at b",
        |e| matches!(e, TransportEvent::Connected { .. }),
        Duration::from_secs(30),
    )
    .await;

    // Crash with the handle still alive: dropping it would close gracefully.
    doomed.crash();
    drop((b, b_events));
    expect_disconnected(&mut a_events, &b_addr, DisconnectReason::ConnectionLost).await;
    assert_eq!(
        a.send(&b_addr, Bytes::from_static(b"gone")).await,
        Err(TransportError::NotConnected(b_addr.clone()))
    );

    // B restarts under the same id (a new token: the broker forgot the old
    // socket when it died) and A reaches it again.
    let (b, mut b_events) = common::node("vanish-b", port).await;
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    exchange(&a, &mut a_events, &b, &mut b_events).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_replaces_its_stale_link() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut a_events) = common::node("stale-a", port).await;
    let doomed = Doomed::new();
    let mut config = common::node_config("stale-b", port);
    config.signaling.token = Some("persistedtoken".to_owned());
    let (b, b_events) = doomed.start(config.clone()).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    doomed.connect(&b, &a_addr).await;
    expect_event(
        &mut a_events,
        "Connected at a",
        |e| matches!(e, TransportEvent::Connected { .. }),
        Duration::from_secs(30),
    )
    .await;
    doomed.crash();
    drop((b, b_events));

    // B comes back with its persisted token (so the broker re-attaches it
    // although the dead socket may linger) and connects before A noticed the
    // crash: its OFFER replaces the stale link, which A reports lost first.
    let (b, mut b_events) = PeerJsTransport::start(config).await.unwrap();
    b.connect(&a_addr).await.unwrap();
    let first = expect_event(
        &mut a_events,
        "the stale link's end or the new link",
        |e| {
            matches!(
                e,
                TransportEvent::Disconnected { .. } | TransportEvent::Connected { .. }
            )
        },
        LOSS_DETECTION,
    )
    .await;
    assert_eq!(
        first,
        TransportEvent::Disconnected {
            peer: b_addr.clone(),
            reason: DisconnectReason::ConnectionLost
        }
    );
    expect_event(
        &mut a_events,
        "Connected to the new b",
        |e| matches!(e, TransportEvent::Connected { peer } if *peer == b_addr),
        LOSS_DETECTION,
    )
    .await;
    exchange(&a, &mut a_events, &b, &mut b_events).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn connecting_to_an_absent_peer_fails_as_unknown() {
    let config = BrokerConfig {
        expire_timeout: Duration::from_millis(500),
        ..BrokerConfig::default()
    };
    let broker = common::broker(config).await;
    let (a, _a_events) = common::node("lonely", broker.local_addr().port()).await;
    let nobody = PeerAddr::from("nobody");
    let outcome = tokio::time::timeout(Duration::from_secs(10), a.connect(&nobody))
        .await
        .unwrap();
    assert_eq!(outcome, Err(TransportError::UnknownPeer(nobody)));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_taken_id_is_refused_and_misuse_is_typed() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, _a_events) = common::node("taken", port).await;
    match PeerJsTransport::start(common::node_config("taken", port)).await {
        Err(StartError::Signaling(SignalingError::IdTaken(id))) => assert_eq!(id, "taken"),
        other => panic!("expected IdTaken, got {other:?}"),
    }
    match PeerJsTransport::start(common::node_config("not/valid", port)).await {
        Err(StartError::Signaling(SignalingError::InvalidId(_))) => {}
        other => panic!("expected InvalidId, got {other:?}"),
    }
    assert!(matches!(
        a.connect(&a.local_addr()).await,
        Err(TransportError::Unsupported(_))
    ));
    assert!(matches!(
        a.subscribe(&"t".into()).await,
        Err(TransportError::Unsupported(_))
    ));
    assert_eq!(
        a.disconnect(&"stranger".into()).await,
        Err(TransportError::NotConnected("stranger".into()))
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn unreachable_broker_is_a_typed_error() {
    // Bind and release a port so nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    match PeerJsTransport::start(common::node_config("orphan", port)).await {
        Err(StartError::Signaling(SignalingError::Connect(_))) => {}
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_number_of_links_is_capped() {
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let mut config = common::node_config("capped", port);
    config.max_links = 1;
    let (a, mut a_events) = PeerJsTransport::start(config).await.unwrap();
    let (b, mut b_events) = common::node("capped-b", port).await;
    let (c, _c_events) = common::node("capped-c", port).await;
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    assert_eq!(a.connect(&c.local_addr()).await, Err(TransportError::QueueFull));
    // An OFFER from a third peer is ignored rather than given a link: its
    // connect fails after the (here short) connect timeout.
    let mut d_config = common::node_config("capped-d", port);
    d_config.connect_timeout = Duration::from_secs(2);
    let (d, _d_events) = PeerJsTransport::start(d_config).await.unwrap();
    assert_eq!(
        d.connect(&a.local_addr()).await,
        Err(TransportError::Unreachable(a.local_addr()))
    );
    exchange(&a, &mut a_events, &b, &mut b_events).await;
    broker.shutdown().await;
}
