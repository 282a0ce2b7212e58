//! Storage as a provider: the machine reads and writes the store through
//! [`Durable`], synchronously, inside its step. This is how the atomicity
//! rules hold: an acknowledgement cannot be produced before the inbox write
//! that it acknowledges has committed, and a frame cannot leave before the
//! ratchet step that produced it is on disk.
//!
//! The persistence of a session itself (its record, made from the
//! machine's in-memory session and restored into it) is the machine's:
//! `machine/durable.rs`. Here: the provider, and the pin of a first
//! contact's key, written in the same transaction as the session it
//! completed (see the crate docs, "TOFU").

use strata_store::{Backend, IdentityCheck, Reader, Store, StoreError, Writer};

/// Transactions on a store, object-safe so a machine can hold any backend.
pub trait Durable {
    /// Runs `f` on a consistent snapshot.
    fn read_tx(&self, f: &mut dyn FnMut(&Reader<'_>) -> Result<(), StoreError>) -> Result<(), StoreError>;
    /// Runs `f` as one atomic transaction.
    fn write_tx(&self, f: &mut dyn FnMut(&mut Writer<'_>) -> Result<(), StoreError>) -> Result<(), StoreError>;
}

impl<B: Backend> Durable for Store<B> {
    fn read_tx(&self, f: &mut dyn FnMut(&Reader<'_>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.read(|r| f(r))
    }

    fn write_tx(&self, f: &mut dyn FnMut(&mut Writer<'_>) -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.write(|w| f(w))
    }
}

/// Reads one value in a snapshot.
pub(crate) fn read<T>(
    store: &dyn Durable,
    mut f: impl FnMut(&Reader<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    store.read_tx(&mut |r| {
        out = Some(f(r)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Misuse("read produced nothing".into()))
}

/// Runs one write transaction and returns its result.
pub(crate) fn write<T>(
    store: &dyn Durable,
    mut f: impl FnMut(&mut Writer<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut out = None;
    store.write_tx(&mut |w| {
        out = Some(f(w)?);
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Misuse("write produced nothing".into()))
}

/// Pins a first contact's key inside a transaction: false (with the key
/// recorded as offered) when another key is pinned already.
pub(crate) fn pin_in(w: &mut Writer<'_>, peer: &str, pin: Option<&(Vec<u8>, u64)>) -> Result<bool, StoreError> {
    match pin {
        Some((key, at_ms)) => Ok(w.observe_identity(peer, key, *at_ms)? != IdentityCheck::Changed),
        None => Ok(true),
    }
}
