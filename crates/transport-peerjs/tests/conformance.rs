//! The shared transport conformance suite over real WebRTC on loopback,
//! signaled through the embedded broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

strata_transport::transport_conformance!(common::PeerJsHarness::default());
