//! PeerJS transports on loopback: an embedded broker on an ephemeral port,
//! hermetic transport configurations, and a node whose runtime can be
//! killed the way a crash would.

use std::net::SocketAddr;
use std::time::Duration;

use strata_transport::{EventStream, PeerAddr, Transport as _};
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsConfig, PeerJsTransport, RtcConfig, SignalingConfig};

/// An embedded broker on an ephemeral loopback port.
pub async fn broker(config: BrokerConfig) -> Broker {
    strata_transport_peerjs::install_crypto_provider();
    Broker::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .unwrap()
}

/// A hermetic transport config for `id` on the broker at `port` (loopback
/// WebRTC); signaling reconnects quickly so broker restarts are short.
pub fn config(id: &str, port: u16) -> PeerJsConfig {
    let mut signaling = SignalingConfig::new("127.0.0.1", port);
    signaling.reconnect_initial = Duration::from_millis(50);
    signaling.reconnect_max = Duration::from_millis(500);
    let mut config = PeerJsConfig::new(id, signaling);
    config.rtc = RtcConfig::loopback();
    config
}

/// Starts a transport named `id` on the broker at `port`.
pub async fn node(id: &str, port: u16) -> (PeerJsTransport, EventStream) {
    PeerJsTransport::start(config(id, port)).await.unwrap()
}

/// Runs transports on their own runtime, so that shutting the runtime down
/// kills them the way a crash would: no close message, no SCTP shutdown,
/// sockets gone.
pub struct Doomed {
    runtime: tokio::runtime::Runtime,
}

impl Default for Doomed {
    fn default() -> Self {
        Self::new()
    }
}

impl Doomed {
    /// A runtime of one worker thread.
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Self { runtime }
    }

    /// Starts a transport on the doomed runtime.
    pub async fn start(&self, config: PeerJsConfig) -> (PeerJsTransport, EventStream) {
        self.runtime
            .spawn(async move { PeerJsTransport::start(config).await.unwrap() })
            .await
            .unwrap()
    }

    /// [`Doomed::start`] with [`config`]`(id, port)`.
    pub async fn node(&self, id: &str, port: u16) -> (PeerJsTransport, EventStream) {
        self.start(config(id, port)).await
    }

    /// Has `node` (on the doomed runtime) connect to `peer`.
    pub async fn connect(&self, node: &PeerJsTransport, peer: &PeerAddr) {
        let (node, peer) = (node.clone(), peer.clone());
        self.runtime
            .spawn(async move { node.connect(&peer).await })
            .await
            .unwrap()
            .unwrap();
    }

    /// Kills everything on the runtime at once.
    pub fn crash(self) {
        self.runtime.shutdown_background();
    }
}
