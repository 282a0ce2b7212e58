//! Strata's durable state: one redb database per installation.
//!
//! This crate will own the identity and installation id, the five Signal
//! stores, the openmls storage provider, the ML-KEM/AES layer chains, the
//! KeyPackage pool, contacts with their trust-on-first-use state, the outbox,
//! the inbox, the processed-message-id set and per-peer handshake progress —
//! every value sealed at rest, every state change that must survive a crash
//! committed in one write transaction.
//!
//! It must never write a private key, session state or plaintext to disk in
//! the clear, and never split one logical change over two transactions.
//!
//! Status: the crate exists so the workspace graph is complete; its contents
//! arrive with the store issue.
#![forbid(unsafe_code)]
