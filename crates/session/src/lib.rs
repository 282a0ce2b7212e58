//! Strata's sessions: the sans-I/O handshake machine and the actors around it.
//!
//! This crate will hold the P3 handshake, key exchange and group state
//! machines (`handle(input, now) -> actions`, deterministic for a given seed)
//! and the actix actors that drive them: `Node`, one `TransportActor` per
//! transport, one `PeerSession` per remote installation, one `Group` per MLS
//! group, and the `Store` actor.
//!
//! It depends on the `Transport` trait only, never on a concrete transport,
//! and it must never send a `message` PDU before `encryptionReady`.
//!
//! Status: the crate exists so the workspace graph is complete; its contents
//! arrive with the session issue.
#![forbid(unsafe_code)]
