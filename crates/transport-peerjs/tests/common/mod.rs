//! Shared helpers for the integration tests: an embedded broker and
//! transports on the hermetic loopback network (`strata-test-support`'s),
//! the conformance harness, logs.
#![allow(dead_code, unused_imports)]

pub(crate) use strata_test_support::peerjs::{broker, config as node_config, node};
use strata_transport::EventStream;
use strata_transport::conformance::Harness;
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsTransport};

/// Logs to the test's output when `RUST_LOG` is set.
pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
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
