//! Strata's gossip transport: libp2p gossipsub with Waku-relay framing.
//!
//! This crate will hold a libp2p swarm (TCP + noise + yamux, QUIC, identify,
//! ping, gossipsub on `/vac/waku/relay/2.0.0`), `WakuMessage` envelopes on
//! content topics derived from identity keys and installation ids, and
//! signed pre-key bundles — all behind `strata_transport::Transport`.
//!
//! It sees only opaque frames: it must never depend on the cascade or see a
//! plaintext.
//!
//! Status: the crate exists so the workspace graph is complete; its contents
//! arrive with the libp2p transport issue.
#![forbid(unsafe_code)]
