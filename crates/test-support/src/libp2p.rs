//! Real libp2p nodes on loopback.

use std::time::Duration;

use ::libp2p::Multiaddr;
use ::libp2p::multiaddr::Protocol;
use bytes::Bytes;
use strata_transport::conformance::expect_event;
use strata_transport::{EventStream, PeerAddr, Topic, TransportEvent};
use strata_transport_libp2p::Libp2pTransport;

/// The node's first TCP listen address: the one other nodes and the JS
/// peers dial.
pub async fn tcp_addr(node: &Libp2pTransport) -> Multiaddr {
    node.listen_addrs()
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .unwrap()
}

/// The next publication on `topic` in `events` (other events are
/// skipped), within `deadline`: its publisher, where the transport knows
/// it, and its bytes.
pub async fn publication(
    events: &mut EventStream,
    topic: &Topic,
    what: &str,
    deadline: Duration,
) -> (Option<PeerAddr>, Bytes) {
    let event = expect_event(
        events,
        what,
        |e| matches!(e, TransportEvent::Published { topic: t, .. } if t == topic),
        deadline,
    )
    .await;
    match event {
        TransportEvent::Published { from, bytes, .. } => (from, bytes),
        _ => unreachable!("the wait matched a publication"),
    }
}
