//! [`Duo`] over two memory networks: the conformance suite, and failover
//! between the two paths.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use strata_transport::conformance::{Harness, connect_pair, expect_event, recv_frame};
use strata_transport::duo::Duo;
use strata_transport::memory::{MemoryNetwork, MemoryTransport};
use strata_transport::{EventStream, PeerAddr, Transport, TransportError, TransportEvent};

type Both = Duo<MemoryTransport, MemoryTransport>;

struct DuoHarness {
    first: MemoryNetwork,
    second: MemoryNetwork,
}

impl DuoHarness {
    fn new() -> Self {
        Self {
            first: MemoryNetwork::new(11),
            second: MemoryNetwork::new(12),
        }
    }

    fn join(&self, name: &str) -> (Both, EventStream) {
        Duo::new(
            Some(self.first.join(name).unwrap()),
            Some(self.second.join(name).unwrap()),
            256,
        )
        .unwrap()
    }
}

impl Harness for DuoHarness {
    type T = Both;

    async fn spawn(&mut self, name: &str) -> (Both, EventStream) {
        self.join(name)
    }
}

mod conformance {
    use super::*;

    strata_transport::transport_conformance!(DuoHarness::new());
}

/// Half of a duo: only the second network.
struct SecondOnly {
    second: MemoryNetwork,
}

impl Harness for SecondOnly {
    type T = Both;

    async fn spawn(&mut self, name: &str) -> (Both, EventStream) {
        Duo::new(None, Some(self.second.join(name).unwrap()), 256).unwrap()
    }
}

mod one_side_only {
    use super::*;

    strata_transport::transport_conformance!(SecondOnly {
        second: MemoryNetwork::new(13)
    });
}

fn is_frame(from: &PeerAddr) -> impl Fn(&TransportEvent) -> bool + '_ {
    move |e| matches!(e, TransportEvent::Frame { from: f, .. } if f == from)
}

#[tokio::test]
async fn frames_fail_over_to_the_second_path_and_the_link_stays_up() {
    let h = DuoHarness::new();
    let (a, mut a_events) = h.join("a");
    let (b, mut b_events) = h.join("b");
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    // Connecting raced both paths; wait until the slower one is up too.
    let a_addr = a.local_addr();
    let b_addr = b.local_addr();
    h.first.partition(&a_addr, &b_addr);
    // The first path is cut: its link goes down, the duo's stays up.
    b.first().unwrap().disconnect(&a_addr).await.ok();
    a.send(&b_addr, Bytes::from_static(b"over the second path"))
        .await
        .unwrap();
    assert_eq!(&recv_frame(&mut b_events, &a_addr).await[..], b"over the second path");

    // No Disconnected surfaced while one path remained.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(100), a_events.next()).await {
        assert!(
            !matches!(event, TransportEvent::Disconnected { .. }),
            "a path went down but the duo reported {event:?}"
        );
    }

    // Both paths down: now the peer is gone.
    b.second().unwrap().disconnect(&a_addr).await.ok();
    expect_event(
        &mut a_events,
        "disconnect after both paths",
        |e| matches!(e, TransportEvent::Disconnected { peer, .. } if peer == &b_addr),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(
        a.send(&b_addr, Bytes::from_static(b"nowhere")).await,
        Err(TransportError::NotConnected(_))
    ));
    // And back.
    a.connect(&b_addr).await.unwrap();
    a.send(&b_addr, Bytes::from_static(b"again")).await.unwrap();
    expect_event(
        &mut b_events,
        "frame after reconnect",
        is_frame(&a_addr),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn connecting_succeeds_when_only_one_path_reaches_the_peer() {
    let first = MemoryNetwork::new(21);
    let second = MemoryNetwork::new(22);
    // `b` is on the second network only.
    let (a, mut a_events) = Duo::new(Some(first.join("a").unwrap()), Some(second.join("a").unwrap()), 64).unwrap();
    let (b, mut b_events) =
        Duo::<MemoryTransport, MemoryTransport>::new(None, Some(second.join("b").unwrap()), 64).unwrap();
    a.connect(&b.local_addr()).await.unwrap();
    let connected = |e: &TransportEvent| matches!(e, TransportEvent::Connected { .. });
    expect_event(&mut b_events, "b sees a", connected, Duration::from_secs(5)).await;
    expect_event(&mut a_events, "a sees b", connected, Duration::from_secs(5)).await;
    // The link table says which path holds the peer, per peer.
    assert_eq!(a.links_to(&b.local_addr()), (false, true));
    assert_eq!(a.links_to(&PeerAddr::new("nobody")), (false, false));
    a.send(&b.local_addr(), Bytes::from_static(b"hi")).await.unwrap();
    assert_eq!(&recv_frame(&mut b_events, &a.local_addr()).await[..], b"hi");
    assert_eq!(a.capabilities().max_frame_len, b.capabilities().max_frame_len);
}

#[tokio::test]
async fn mismatched_local_addresses_and_empty_duos_are_refused() {
    let first = MemoryNetwork::new(31);
    let second = MemoryNetwork::new(32);
    let refused = Duo::new(Some(first.join("a").unwrap()), Some(second.join("z").unwrap()), 8);
    assert!(matches!(refused, Err(TransportError::Internal(_))));
    let empty = Duo::<MemoryTransport, MemoryTransport>::new(None, None, 8);
    assert!(matches!(empty, Err(TransportError::Unsupported(_))));
}
