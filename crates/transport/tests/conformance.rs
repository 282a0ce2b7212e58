//! The transport conformance suite against [`MemoryTransport`]: on perfect
//! links, and on links with delay jitter (which must stay reliable and
//! ordered).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use strata_transport::EventStream;
use strata_transport::conformance::Harness;
use strata_transport::memory::{Faults, MemoryNetwork, MemoryTransport};

struct MemoryHarness {
    network: MemoryNetwork,
}

impl MemoryHarness {
    fn new(seed: u64, faults: Faults) -> Self {
        let network = MemoryNetwork::new(seed);
        network.set_faults(faults).unwrap();
        Self { network }
    }
}

impl Harness for MemoryHarness {
    type T = MemoryTransport;

    async fn spawn(&mut self, name: &str) -> (MemoryTransport, EventStream) {
        self.network.join(name).unwrap()
    }
}

mod perfect {
    use super::*;

    strata_transport::transport_conformance!(MemoryHarness::new(1, Faults::none()));
}

mod jitter {
    use super::*;

    strata_transport::transport_conformance!(MemoryHarness::new(
        2,
        Faults {
            delay: (Duration::ZERO, Duration::from_millis(3)),
            ..Faults::none()
        }
    ));
}
