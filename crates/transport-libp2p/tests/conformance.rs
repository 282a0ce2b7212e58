//! The shared transport conformance suite over real libp2p on loopback:
//! once with TCP (noise + yamux) and once with QUIC between relays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use strata_transport::EventStream;
use strata_transport::conformance::Harness;
use strata_transport_libp2p::{Config, Libp2pTransport};

/// Spawns loopback nodes; each new node dials the first node and the
/// previous one, so frames between later nodes cross relays.
struct Loopback {
    quic: bool,
    addrs: Vec<Multiaddr>,
}

impl Loopback {
    fn tcp() -> Self {
        Self {
            quic: false,
            addrs: Vec::new(),
        }
    }

    fn quic() -> Self {
        Self {
            quic: true,
            addrs: Vec::new(),
        }
    }
}

impl Harness for Loopback {
    type T = Libp2pTransport;

    async fn spawn(&mut self, name: &str) -> (Libp2pTransport, EventStream) {
        let mut config = Config::loopback(name);
        config.bootstrap = [self.addrs.first(), self.addrs.last()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        config.bootstrap.dedup();
        let (transport, events) = Libp2pTransport::start(config).await.unwrap();
        let quic = self.quic;
        let addr = transport
            .listen_addrs()
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)) == quic)
            .unwrap();
        self.addrs.push(addr);
        (transport, events)
    }
}

mod tcp {
    use super::Loopback;
    strata_transport::transport_conformance!(Loopback::tcp());
}

mod quic {
    use super::Loopback;
    strata_transport::transport_conformance!(Loopback::quic());
}
