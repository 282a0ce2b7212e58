//! Shared helpers for the integration tests: an embedded broker and
//! transports on the hermetic loopback network.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use strata_transport::EventStream;
use strata_transport::conformance::Harness;
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsConfig, PeerJsTransport, RtcConfig, SignalingConfig};

/// Logs to the test's output when `RUST_LOG` is set.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A broker on an ephemeral loopback port.
pub(crate) async fn broker(config: BrokerConfig) -> Broker {
    Broker::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .unwrap()
}

/// A transport config for `id` on the broker at `port`, hermetic.
pub(crate) fn node_config(id: &str, port: u16) -> PeerJsConfig {
    let mut signaling = SignalingConfig::new("127.0.0.1", port);
    signaling.reconnect_initial = Duration::from_millis(50);
    signaling.reconnect_max = Duration::from_millis(500);
    let mut config = PeerJsConfig::new(id, signaling);
    config.rtc = RtcConfig::loopback();
    config
}

/// Starts a node named `id`.
pub(crate) async fn node(id: &str, port: u16) -> (PeerJsTransport, EventStream) {
    PeerJsTransport::start(node_config(id, port)).await.unwrap()
}

/// The conformance harness: one embedded broker per test, started lazily.
#[derive(Default)]
pub(crate) struct PeerJsHarness {
    broker: Option<Broker>,
}

impl Harness for PeerJsHarness {
    type T = PeerJsTransport;

    async fn spawn(&mut self, name: &str) -> (PeerJsTransport, EventStream) {
        init_tracing();
        let port = match &self.broker {
            Some(broker) => broker.local_addr().port(),
            None => {
                let broker = broker(BrokerConfig::default()).await;
                let port = broker.local_addr().port();
                self.broker = Some(broker);
                port
            }
        };
        node(name, port).await
    }
}
