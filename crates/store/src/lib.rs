//! Strata's durable state: one redb database per installation, every value
//! sealed at rest.
//!
//! # What is stored
//!
//! The identity, per-peer cascade state, handshake progress, contacts with
//! their trust-on-first-use state, the outbox, the inbox and the set of
//! processed message ids ([`kv::Table`] lists the tables). Keys of rows
//! (installation and message ids) are in the clear; every value is sealed
//! with the storage key ([`strata_cascade::at_rest`]), bound to its table
//! and row, so the file holds no private key, session state or plaintext in
//! the clear and a value moved to another row fails to open.
//!
//! # Atomicity rules
//!
//! Each rule is one [`Writer`] method, so it cannot be split across two
//! transactions by mistake:
//!
//! 1. A ratchet step and the ciphertext it produced commit together:
//!    [`Writer::record_encrypted`].
//! 2. An outgoing message is in the outbox before it is encrypted
//!    ([`Writer::queue_outgoing`]) and leaves only when the peer acknowledges
//!    it ([`Writer::ack_outgoing`]).
//! 3. An incoming message is acknowledged only after the inbox write, the
//!    processed-id mark and the decrypting state commit together:
//!    [`Writer::accept_incoming`]; a replay writes nothing.
//! 4. Decrypting a PreKey message consumes the pre-key and stores the session
//!    in the same transaction (the Signal store, with the Signal issue).
//!
//! The KeyPackage pool's rules are in [`pool`].
//!
//! Any sequence of reads and writes can also be made atomic with
//! [`Store::write`].
//!
//! # Backends
//!
//! [`RedbBackend`] (the product) and [`MemoryBackend`] implement the small
//! [`Backend`] trait: transactional byte maps. Everything above it is
//! written once, and [`store_conformance!`] runs one suite against both.
//!
//! # Schema
//!
//! [`SCHEMA_VERSION`], migrations in [`schema`]; a database of a newer
//! version is refused with [`StoreError::NewerSchema`] and left untouched.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod error;
pub mod kv;
pub mod memory;
pub mod pool;
pub mod records;
pub mod redb_backend;
pub mod schema;
mod store;

pub use error::StoreError;
pub use kv::{Backend, Table};
pub use memory::MemoryBackend;
pub use pool::{Claim, LowKeyPackages, PoolStatus, PooledKeyPackage};
pub use records::{Accepted, Contact, IdentityCheck, IncomingMessage, KeyChange, OutgoingMessage};
pub use redb_backend::RedbBackend;
pub use schema::SCHEMA_VERSION;
pub use store::{KeySource, Reader, Store, Writer, load_or_create_key_file};
