//! Link management: crossing connects, repeated cycles, and concurrent
//! callers all converge on one working link per peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use strata_transport::conformance::{expect_event, recv_frame};
use strata_transport::{DisconnectReason, EventStream, Transport, TransportEvent};
use strata_transport_peerjs::BrokerConfig;

/// Every event that arrives within `window` (to check nothing extra shows up
/// after the expected ones).
async fn quiet_for(events: &mut EventStream, window: Duration) -> Vec<TransportEvent> {
    let mut extra = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(window, events.next()).await {
        extra.push(event);
    }
    extra
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_connects_converge_on_one_link() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    for round in 0..3 {
        let (a, mut a_events) = common::node(&format!("cross-a{round}"), port).await;
        let (b, mut b_events) = common::node(&format!("cross-b{round}"), port).await;
        let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
        let (ab, ba) = tokio::join!(a.connect(&b_addr), b.connect(&a_addr));
        ab.unwrap();
        ba.unwrap();
        for (events, peer) in [(&mut a_events, &b_addr), (&mut b_events, &a_addr)] {
            expect_event(
                events,
                "Connected",
                |e| matches!(e, TransportEvent::Connected { peer: p } if p == peer),
                Duration::from_secs(30),
            )
            .await;
        }
        a.send(&b_addr, Bytes::from_static(b"one link")).await.unwrap();
        assert_eq!(recv_frame(&mut b_events, &a_addr).await, "one link");
        b.send(&a_addr, Bytes::from_static(b"both ways")).await.unwrap();
        assert_eq!(recv_frame(&mut a_events, &b_addr).await, "both ways");
        // No second link opened or closed behind the scenes.
        let window = Duration::from_millis(300);
        assert_eq!(quiet_for(&mut a_events, window).await, vec![], "round {round}");
        assert_eq!(quiet_for(&mut b_events, window).await, vec![], "round {round}");
    }
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_share_one_negotiation() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut a_events) = common::node("many-callers-a", port).await;
    let (b, mut b_events) = common::node("many-callers-b", port).await;
    let b_addr = b.local_addr();
    let calls: Vec<_> = (0..8).map(|_| a.connect(&b_addr)).collect();
    for outcome in futures::future::join_all(calls).await {
        outcome.unwrap();
    }
    let connected = |e: &TransportEvent| matches!(e, TransportEvent::Connected { .. });
    expect_event(&mut a_events, "Connected at a", connected, Duration::from_secs(30)).await;
    expect_event(&mut b_events, "Connected at b", connected, Duration::from_secs(30)).await;
    let window = Duration::from_millis(300);
    assert_eq!(quiet_for(&mut a_events, window).await, vec![]);
    assert_eq!(quiet_for(&mut b_events, window).await, vec![]);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_cycles_stay_clean() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut a_events) = common::node("cycle-a", port).await;
    let (b, mut b_events) = common::node("cycle-b", port).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    for i in 0..10u8 {
        // Alternate who opens and who closes.
        let (opener, opener_events, other, other_events) = if i % 2 == 0 {
            (&a, &mut a_events, &b, &mut b_events)
        } else {
            (&b, &mut b_events, &a, &mut a_events)
        };
        let (from, to) = (opener.local_addr(), other.local_addr());
        opener.connect(&to).await.unwrap();
        let connected = |e: &TransportEvent| matches!(e, TransportEvent::Connected { .. });
        expect_event(opener_events, "Connected", connected, Duration::from_secs(30)).await;
        expect_event(other_events, "Connected", connected, Duration::from_secs(30)).await;
        opener.send(&to, Bytes::from(vec![i; 100_000])).await.unwrap();
        assert_eq!(recv_frame(other_events, &from).await, vec![i; 100_000]);
        other.disconnect(&from).await.unwrap();
        let lost = |reason: DisconnectReason| move |e: &TransportEvent| matches!(e, TransportEvent::Disconnected { reason: r, .. } if *r == reason);
        expect_event(
            other_events,
            "Disconnected Local",
            lost(DisconnectReason::Local),
            Duration::from_secs(10),
        )
        .await;
        expect_event(
            opener_events,
            "Disconnected Remote",
            lost(DisconnectReason::Remote),
            Duration::from_secs(10),
        )
        .await;
    }
    let _ = (a_addr, b_addr);
    broker.shutdown().await;
}

/// Reconnecting the moment `Disconnected { Remote }` arrives opens a new
/// link: the old one's end must not be mistaken for an open link (its route
/// is withdrawn before the event, its report to the actor comes after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_right_after_a_remote_close_opens_a_new_link() {
    common::init_tracing();
    let broker = common::broker(BrokerConfig::default()).await;
    let port = broker.local_addr().port();
    let (a, mut a_events) = common::node("again-a", port).await;
    let (b, mut b_events) = common::node("again-b", port).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    let connected = |e: &TransportEvent| matches!(e, TransportEvent::Connected { .. });
    a.connect(&b_addr).await.unwrap();
    expect_event(&mut a_events, "Connected", connected, Duration::from_secs(30)).await;
    expect_event(&mut b_events, "Connected", connected, Duration::from_secs(30)).await;
    for i in 0..10u8 {
        a.disconnect(&b_addr).await.unwrap();
        let remote = |e: &TransportEvent| {
            matches!(
                e,
                TransportEvent::Disconnected {
                    reason: DisconnectReason::Remote,
                    ..
                }
            )
        };
        expect_event(&mut b_events, "Disconnected Remote", remote, Duration::from_secs(10)).await;
        b.connect(&a_addr).await.unwrap();
        expect_event(&mut b_events, "Connected again", connected, Duration::from_secs(30)).await;
        expect_event(&mut a_events, "Connected again", connected, Duration::from_secs(30)).await;
        b.send(&a_addr, Bytes::from(vec![i; 1000])).await.unwrap();
        assert_eq!(recv_frame(&mut a_events, &b_addr).await, vec![i; 1000], "round {i}");
    }
    broker.shutdown().await;
}
