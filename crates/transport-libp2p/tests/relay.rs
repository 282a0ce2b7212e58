//! Real libp2p nodes on loopback: links across a relay, zero loss when
//! publishing right after start, and store-and-forward to a node that comes
//! back. Every wait is on an event, with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use bytes::Bytes;
use strata_test_support::libp2p::{publication, tcp_addr};
use strata_transport::conformance::{DEADLINE, connect_pair, expect_event, recv_frame};
use strata_transport::{EventStream, Topic, Transport, TransportEvent};
use strata_transport_libp2p::{Config, Libp2pTransport, StoreConfig};

async fn start(name: &str, bootstrap: &[&Libp2pTransport], store: bool) -> (Libp2pTransport, EventStream) {
    start_with(name, bootstrap, store, &[]).await
}

async fn start_with(
    name: &str,
    bootstrap: &[&Libp2pTransport],
    store: bool,
    topics: &[&Topic],
) -> (Libp2pTransport, EventStream) {
    let mut config = Config::loopback(name);
    config.topics = topics.iter().map(|t| (*t).clone()).collect();
    for peer in bootstrap {
        config.bootstrap.push(tcp_addr(peer).await);
    }
    if store {
        config.store = StoreConfig::serving();
    }
    Libp2pTransport::start(config).await.unwrap()
}

async fn expect_publication(events: &mut EventStream, topic: &Topic, what: &str) -> Bytes {
    publication(events, topic, what, DEADLINE).await.1
}

/// Alice and Bob only know the relay: the link handshake and 200 frames
/// each way cross it, in order.
#[tokio::test]
async fn links_cross_a_relay() {
    let (relay, _relay_events) = start("relay", &[], false).await;
    let (alice, mut alice_events) = start("alice", &[&relay], false).await;
    let (bob, mut bob_events) = start("bob", &[&relay], false).await;
    connect_pair(&alice, &mut alice_events, &bob, &mut bob_events).await;
    let alice_status = alice.status().await.unwrap();
    assert_eq!(alice_status.connected_peers, 1, "alice must only know the relay");

    let sender = async {
        for i in 0u32..200 {
            alice
                .send(&bob.local_addr(), Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
            bob.send(&alice.local_addr(), Bytes::copy_from_slice(&(i + 1000).to_be_bytes()))
                .await
                .unwrap();
        }
    };
    let at_bob = async {
        for i in 0u32..200 {
            assert_eq!(
                recv_frame(&mut bob_events, &alice.local_addr()).await,
                &i.to_be_bytes()[..]
            );
        }
    };
    let at_alice = async {
        for i in 0u32..200 {
            assert_eq!(
                recv_frame(&mut alice_events, &bob.local_addr()).await,
                &(i + 1000).to_be_bytes()[..]
            );
        }
    };
    tokio::join!(sender, at_bob, at_alice);
}

/// A star: twelve nodes know only the relay, more than it keeps in its mesh
/// (D_high 8), so some hear the hub through the relay's IHAVE gossip. A
/// burst of link frames from the hub to each makes those IHAVEs list
/// hundreds of ids; every frame still arrives, in order. (Gossipsub 0.50
/// refused control parts over 16 KiB and then stopped talking to the
/// peer: the ones outside the mesh heard nothing for minutes.)
#[tokio::test]
async fn a_relay_reaches_subscribers_outside_its_mesh() {
    const SPOKES: usize = 11;
    const FRAMES: u32 = 60;
    let (relay, _relay_events) = start("relay", &[], false).await;
    let (hub, mut hub_events) = start("hub", &[&relay], false).await;
    let mut spokes = Vec::new();
    for i in 0..SPOKES {
        spokes.push(start(&format!("spoke-{i}"), &[&relay], false).await);
    }
    for (spoke, events) in &mut spokes {
        connect_pair(&hub, &mut hub_events, spoke, events).await;
    }
    for i in 0..FRAMES {
        for (spoke, _) in &spokes {
            hub.send(&spoke.local_addr(), Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
        }
    }
    for (_, events) in &mut spokes {
        for i in 0..FRAMES {
            assert_eq!(recv_frame(events, &hub.local_addr()).await, &i.to_be_bytes()[..]);
        }
    }
}

/// Publishing before any connection exists loses nothing: the queue holds
/// the messages until the mesh has a peer (gossipsub alone would refuse
/// them with `NoPeersSubscribedToTopic`).
#[tokio::test]
async fn publishing_right_after_start_loses_nothing() {
    const COUNT: usize = 100;
    let topic = Topic::from("/strata/1/cold-start/proto");
    let (bob, mut bob_events) = start("bob", &[], false).await;
    bob.subscribe(&topic).await.unwrap();
    let (alice, _alice_events) = start("alice", &[&bob], false).await;
    for i in 0..COUNT {
        alice.publish(&topic, Bytes::from(format!("cold-{i}"))).await.unwrap();
    }
    for i in 0..COUNT {
        let got = expect_publication(&mut bob_events, &topic, "a cold-start publication").await;
        assert_eq!(got, format!("cold-{i}"), "lost or reordered");
    }
    assert_eq!(alice.status().await.unwrap().expired, 0);
}

/// Bob goes away; Alice publishes on his topic; Bob comes back (a fresh
/// process at the same address) and gets the messages from the relay's
/// store, once each, before anything newer.
#[tokio::test]
async fn the_store_replays_to_a_node_that_comes_back() {
    let topic = Topic::from("bob-inbox");
    let (relay, mut relay_events) = start("relay", &[], true).await;
    relay.subscribe(&topic).await.unwrap();
    let (alice, _alice_events) = start("alice", &[&relay], false).await;
    let (bob, bob_events) = start("bob", &[&relay], false).await;
    bob.subscribe(&topic).await.unwrap();
    bob.shutdown().await;
    drop((bob, bob_events));

    for i in 0..3 {
        alice
            .publish(&topic, Bytes::from(format!("while-away-{i}")))
            .await
            .unwrap();
    }
    // Once the relay has delivered them, it has stored them.
    for i in 0..3 {
        let got = expect_publication(&mut relay_events, &topic, "a publication at the relay").await;
        assert_eq!(got, format!("while-away-{i}"));
    }

    let (bob, mut bob_events) = start("bob", &[&relay], false).await;
    bob.subscribe(&topic).await.unwrap();
    for i in 0..3 {
        let got = expect_publication(&mut bob_events, &topic, "a replayed publication").await;
        assert_eq!(got, format!("while-away-{i}"));
    }
    alice.publish(&topic, Bytes::from_static(b"after")).await.unwrap();
    let got = expect_publication(&mut bob_events, &topic, "the next live publication").await;
    assert_eq!(got, "after", "a replayed message arrived twice");
    assert_eq!(bob.status().await.unwrap().replayed, 3);
    // Nothing else is pending for bob.
    let extra = tokio::time::timeout(Duration::from_millis(300), bob_events.next()).await;
    assert!(
        !matches!(extra, Ok(Some(TransportEvent::Published { .. }))),
        "unexpected extra publication: {extra:?}"
    );
}

/// The cold-start race: a relay forwards a message only to its mesh of the
/// moment, so a node that joins a moment later would never get it. Bob
/// joins after Alice's burst went through the relay (which does not serve
/// a store); the catch-up query to his new neighbour brings it all, once.
#[tokio::test]
async fn a_late_neighbour_catches_up_on_what_it_just_missed() {
    const COUNT: usize = 50;
    let topic = Topic::from("/strata/1/catch-up/proto");
    let (relay, mut relay_events) = start_with("relay", &[], false, &[&topic]).await;
    let (alice, _alice_events) = start("alice", &[&relay], false).await;
    for i in 0..COUNT {
        alice.publish(&topic, Bytes::from(format!("burst-{i}"))).await.unwrap();
    }
    for i in 0..COUNT {
        let got = expect_publication(&mut relay_events, &topic, "the burst at the relay").await;
        assert_eq!(got, format!("burst-{i}"));
    }
    // The burst has passed the relay; Bob was not in anyone's mesh.
    let (bob, mut bob_events) = start_with("bob", &[&relay], false, &[&topic]).await;
    let mut got = std::collections::BTreeSet::new();
    while got.len() < COUNT {
        let bytes = expect_publication(&mut bob_events, &topic, "a caught-up publication").await;
        assert!(got.insert(bytes.clone()), "{bytes:?} delivered twice");
    }
    let expected: std::collections::BTreeSet<Bytes> = (0..COUNT).map(|i| Bytes::from(format!("burst-{i}"))).collect();
    assert_eq!(got, expected);
    assert_eq!(bob.status().await.unwrap().replayed, COUNT as u64);
}

/// Bob's process dies: Alice's link times out (`ConnectionLost`) after the
/// configured silence. Bob comes back as a new process at the same address
/// and connects again: a fresh link works, and Alice's requests on the old
/// one were refused as `NotConnected` in between.
#[tokio::test]
async fn a_dead_peer_times_out_and_a_restarted_one_reconnects() {
    use strata_transport::{DisconnectReason, TransportError};

    let (relay, _relay_events) = start("relay", &[], false).await;
    let mut config = Config::loopback("alice");
    config.bootstrap.push(tcp_addr(&relay).await);
    config.link.keepalive = Duration::from_millis(200);
    config.link.timeout = Duration::from_secs(1);
    let (alice, mut alice_events) = Libp2pTransport::start(config).await.unwrap();
    let (bob, mut bob_events) = start("bob", &[&relay], false).await;
    connect_pair(&alice, &mut alice_events, &bob, &mut bob_events).await;
    let bob_addr = bob.local_addr();

    bob.shutdown().await;
    drop((bob, bob_events));
    let lost = expect_event(
        &mut alice_events,
        "Disconnected { bob, ConnectionLost }",
        |e| matches!(e, TransportEvent::Disconnected { peer, reason: DisconnectReason::ConnectionLost } if *peer == bob_addr),
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(lost, TransportEvent::Disconnected { .. }));
    assert_eq!(
        alice.send(&bob_addr, Bytes::from_static(b"x")).await,
        Err(TransportError::NotConnected(bob_addr.clone()))
    );

    let (bob, mut bob_events) = start("bob", &[&relay], false).await;
    connect_pair(&bob, &mut bob_events, &alice, &mut alice_events).await;
    alice
        .send(&bob_addr, Bytes::from_static(b"welcome back"))
        .await
        .unwrap();
    assert_eq!(recv_frame(&mut bob_events, &alice.local_addr()).await, "welcome back");
}

/// `shutdown` ends the event stream, and every handle then fails with
/// `Closed`.
#[tokio::test]
async fn shutdown_ends_the_stream_and_closes_handles() {
    use strata_transport::TransportError;

    let (node, mut events) = start("solo", &[], false).await;
    let other = node.clone();
    node.shutdown().await;
    let end = tokio::time::timeout(DEADLINE, async { while events.next().await.is_some() {} }).await;
    assert!(end.is_ok(), "the event stream did not end");
    assert_eq!(
        other.publish(&Topic::from("t"), Bytes::from_static(b"x")).await,
        Err(TransportError::Closed)
    );
    assert_eq!(other.connect(&"peer".into()).await, Err(TransportError::Closed));
}

/// Link and store traffic have their own content topics; user topics can
/// never alias them, and empty publications (which Waku relays drop) are
/// refused up front.
#[tokio::test]
async fn reserved_topics_and_empty_publications_are_refused() {
    use strata_transport::TransportError;
    use strata_transport_libp2p::topic::installation_topic;

    let (node, _events) = start("solo", &[], false).await;
    let reserved = [
        Topic::new(installation_topic(&"someone".into())),
        Topic::from(strata_transport_libp2p::store::QUERY_TOPIC),
        Topic::from(strata_transport_libp2p::store::REPLAY_TOPIC),
    ];
    for topic in &reserved {
        assert!(matches!(
            node.subscribe(topic).await,
            Err(TransportError::Unsupported(_))
        ));
        assert!(matches!(
            node.publish(topic, Bytes::from_static(b"x")).await,
            Err(TransportError::Unsupported(_))
        ));
    }
    assert!(matches!(
        node.publish(&Topic::from("ok"), Bytes::new()).await,
        Err(TransportError::Unsupported(_))
    ));
    node.publish(&Topic::from("ok"), Bytes::from_static(b"x"))
        .await
        .unwrap();
}

/// A receiver that stops draining its events does not stall its swarm and
/// loses nothing: past the backlog, data is shed unacknowledged, the
/// sender's window fills (`QueueFull`), and once the receiver drains, the
/// sender's retransmissions deliver everything, in order, once.
#[tokio::test]
async fn a_slow_consumer_sheds_unacked_data_and_loses_nothing() {
    use strata_transport::TransportError;

    // More than the event channel, the backlog and the link window hold.
    const FRAMES: u32 = 8000;
    let mut config = Config::loopback("sender");
    config.link.rto_max = Duration::from_millis(300);
    let (alice, mut alice_events) = Libp2pTransport::start(config).await.unwrap();
    let (bob, mut bob_events) = start("receiver", &[&alice], false).await;
    connect_pair(&alice, &mut alice_events, &bob, &mut bob_events).await;
    let bob_addr = bob.local_addr();

    let (blocked_tx, blocked) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn(async move {
        let mut blocked_tx = Some(blocked_tx);
        for i in 0..FRAMES {
            loop {
                match alice.send(&bob_addr, Bytes::copy_from_slice(&i.to_be_bytes())).await {
                    Ok(()) => break,
                    Err(TransportError::QueueFull) => {
                        if let Some(tx) = blocked_tx.take() {
                            let _ = tx.send(i);
                        }
                        // Back off while the window is full.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("send {i}: {e}"),
                }
            }
        }
        alice
    });
    // Bob reads nothing until Alice's window is full.
    let first_blocked = tokio::time::timeout(DEADLINE, blocked).await.unwrap().unwrap();
    assert!(first_blocked < FRAMES, "the window never filled");
    let alice_addr = strata_transport::PeerAddr::from("sender");
    for i in 0..FRAMES {
        assert_eq!(
            recv_frame(&mut bob_events, &alice_addr).await,
            &i.to_be_bytes()[..],
            "frame {i}"
        );
    }
    let alice = tokio::time::timeout(DEADLINE, sender).await.unwrap().unwrap();
    assert!(
        bob.status().await.unwrap().shed > 0,
        "nothing was shed: the test did not test shedding"
    );
    assert_eq!(alice.status().await.unwrap().expired, 0);
}
