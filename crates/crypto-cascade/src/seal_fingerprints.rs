//! Test observation of key and nonce use (feature `seal-fingerprints`, off
//! in every product build): each AES-256-GCM seal of the ML-KEM and AES-GCM
//! layers records `SHA-256(label ‖ key ‖ nonce)` on the sealing thread, so
//! a crash test can prove no (key, nonce) pair is ever used twice across
//! restarts. Only the digest leaves the crate, never the key: a digest of a
//! 256-bit random key reveals nothing of it.

use std::cell::RefCell;
use std::collections::VecDeque;

use sha2::{Digest as _, Sha256};

use crate::secret::Secret32;

/// Domain label, so these digests cannot collide with any other use.
const LABEL: &[u8] = b"strata/test/seal-fingerprint\0";
/// Bound on unread fingerprints per thread, so a forgotten reader does not
/// grow memory forever; the oldest are dropped.
const MAX_PENDING: usize = 1 << 16;

thread_local! {
    static SEEN: RefCell<VecDeque<[u8; 32]>> = const { RefCell::new(VecDeque::new()) };
}

pub(crate) fn record(key: &Secret32, nonce: &[u8; 12]) {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(LABEL)
        .chain_update(key.expose())
        .chain_update(nonce)
        .finalize()
        .into();
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if seen.len() >= MAX_PENDING {
            seen.pop_front();
        }
        seen.push_back(digest);
    });
}

/// Takes the fingerprints of every seal made on this thread since the last
/// call, oldest first.
pub fn take() -> Vec<[u8; 32]> {
    SEEN.with(|seen| seen.borrow_mut().drain(..).collect())
}
