//! The key schedule shared by the two layers Strata keys itself (ML-KEM and
//! AES-256-GCM): HKDF labels, the symmetric hash ratchet with its bounded
//! skipped-key window, and the counter-nonce AEAD. The normative description
//! is in the crate docs ("Key schedule"); this is the one place it is coded.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::secret::Secret32;

/// Prefix of every HKDF label and signature context in this crate.
pub(crate) const LABEL_PREFIX: &str = "strata/v1/";

/// Skipped message keys a receive chain keeps for late messages. Older ones
/// are evicted; a message whose key was evicted is out of window.
pub const MAX_SKIPPED_KEYS: u64 = 256;

/// The largest counter jump a receive chain accepts in one message.
pub const MAX_FORWARD_GAP: u64 = 1000;

/// HKDF-Extract(salt, ikm) with SHA-256.
pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Hkdf<Sha256> {
    Hkdf::<Sha256>::new(Some(salt), ikm)
}

/// HKDF-Expand to 32 bytes with `info = parts[0] || parts[1] || ...`.
pub(crate) fn expand32(prk: &Hkdf<Sha256>, parts: &[&[u8]]) -> Result<Secret32> {
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA-256 output length; never ignore it.
    prk.expand_multi_info(parts, &mut out)
        .map_err(|_| CascadeError::internal("key schedule", "HKDF-Expand length"))?;
    let s = Secret32::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(s)
}

/// One step of the hash ratchet: `(message_key_n, chain_key_{n+1})` from
/// `chain_key_n`, for the layer labelled `label`. The chain key is used
/// directly as the HKDF PRK (it is a uniformly random 32-byte key).
pub(crate) fn chain_step(chain_key: &Secret32, label: &str) -> Result<(Secret32, Secret32)> {
    let prk = Hkdf::<Sha256>::from_prk(chain_key.expose())
        .map_err(|_| CascadeError::internal("key schedule", "chain key length"))?;
    Ok((
        expand32(&prk, &[LABEL_PREFIX.as_bytes(), label.as_bytes(), b"/message"])?,
        expand32(&prk, &[LABEL_PREFIX.as_bytes(), label.as_bytes(), b"/chain"])?,
    ))
}

/// The 96-bit AES-GCM nonce for message `counter` of a layer: a 4-byte layer
/// tag followed by the big-endian counter. Every message key is used once,
/// so the nonce is belt and braces; it is never random.
fn nonce(tag: [u8; 4], counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    let (head, tail) = n.split_at_mut(4);
    head.copy_from_slice(&tag);
    tail.copy_from_slice(&counter.to_be_bytes());
    n
}

/// AES-256-GCM seal under a one-time message key.
pub(crate) fn aead_seal(key: &Secret32, tag: [u8; 4], counter: u64, aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key.expose()).ok()?;
    let n = nonce(tag, counter);
    #[cfg(feature = "seal-fingerprints")]
    crate::seal_fingerprints::record(key, &n);
    cipher
        .encrypt(Nonce::from_slice(&n), Payload { msg: plaintext, aad })
        .ok()
}

/// AES-256-GCM open; `None` when the tag does not verify.
pub(crate) fn aead_open(key: &Secret32, tag: [u8; 4], counter: u64, aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key.expose()).ok()?;
    let n = nonce(tag, counter);
    cipher
        .decrypt(Nonce::from_slice(&n), Payload { msg: ciphertext, aad })
        .ok()
}

/// The sending half of a hash ratchet.
#[derive(Clone, Debug)]
pub(crate) struct SendChain {
    next: u64,
    key: Secret32,
}

impl SendChain {
    pub(crate) fn new(key: Secret32) -> Self {
        Self { next: 0, key }
    }

    /// The counter and message key of the next message, and the chain as it
    /// will be once that message is committed.
    pub(crate) fn peek(&self, label: &str) -> Result<(u64, Secret32, SendChain)> {
        let (mk, ck) = chain_step(&self.key, label)?;
        let next = self
            .next
            .checked_add(1)
            .ok_or(CascadeError::InvalidArgument("chain counter exhausted"))?;
        Ok((self.next, mk, SendChain { next, key: ck }))
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.next).secret(&self.key);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            next: r.u64()?,
            key: r.secret()?,
        })
    }
}

/// Why a receive chain refused a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainRefusal {
    /// The key for this counter was already used.
    Replay,
    /// Evicted from the skipped window, or too far ahead.
    OutOfWindow,
    /// The key schedule failed (a bug, never peer input).
    Internal,
}

/// The receiving half of a hash ratchet, with a bounded store of skipped
/// message keys for out-of-order delivery.
///
/// Invariant: every counter below `floor` is used or evicted; every counter
/// in `floor..next` is either in `skipped` or already used.
#[derive(Clone, Debug)]
pub(crate) struct RecvChain {
    next: u64,
    floor: u64,
    key: Secret32,
    skipped: BTreeMap<u64, Secret32>,
}

/// A receive-chain change, computed without mutating the chain and applied
/// only when the whole message has decrypted.
#[derive(Debug)]
pub(crate) enum RecvStep {
    /// Use (and delete) a stored skipped key.
    UseSkipped(u64),
    /// Move the chain forward, storing the keys it skipped.
    Advance {
        next: u64,
        key: Secret32,
        skipped: Vec<(u64, Secret32)>,
    },
}

impl RecvChain {
    pub(crate) fn new(key: Secret32) -> Self {
        Self {
            next: 0,
            floor: 0,
            key,
            skipped: BTreeMap::new(),
        }
    }

    /// The message key for `counter` and the change that consumes it.
    pub(crate) fn key_for(&self, counter: u64, label: &str) -> std::result::Result<(Secret32, RecvStep), ChainRefusal> {
        if counter < self.next {
            if counter < self.floor {
                return Err(ChainRefusal::OutOfWindow);
            }
            return match self.skipped.get(&counter) {
                Some(k) => Ok((k.clone(), RecvStep::UseSkipped(counter))),
                None => Err(ChainRefusal::Replay),
            };
        }
        if counter - self.next > MAX_FORWARD_GAP {
            return Err(ChainRefusal::OutOfWindow);
        }
        let mut key = self.key.clone();
        let mut skipped = Vec::new();
        let mut n = self.next;
        loop {
            let (mk, ck) = chain_step(&key, label).map_err(|_| ChainRefusal::Internal)?;
            key = ck;
            if n == counter {
                let step = RecvStep::Advance {
                    next: n.saturating_add(1),
                    key,
                    skipped,
                };
                return Ok((mk, step));
            }
            // Only the newest MAX_SKIPPED_KEYS survive eviction anyway.
            if counter - n <= MAX_SKIPPED_KEYS {
                skipped.push((n, mk));
            }
            n += 1;
        }
    }

    /// Applies a change computed by [`RecvChain::key_for`] on this chain.
    pub(crate) fn apply(&mut self, step: RecvStep) {
        match step {
            RecvStep::UseSkipped(n) => {
                self.skipped.remove(&n);
            }
            RecvStep::Advance { next, key, skipped } => {
                // Counters jumped over without storing a key are lost.
                if let Some((first, _)) = skipped.first()
                    && *first > self.next
                {
                    self.evict_below(*first);
                }
                self.skipped.extend(skipped);
                self.next = next;
                self.key = key;
                while u64::try_from(self.skipped.len()).unwrap_or(u64::MAX) > MAX_SKIPPED_KEYS {
                    match self.skipped.pop_first() {
                        Some((n, _)) => self.floor = self.floor.max(n.saturating_add(1)),
                        None => break,
                    }
                }
            }
        }
    }

    fn evict_below(&mut self, bound: u64) {
        self.skipped.retain(|n, _| *n >= bound);
        self.floor = self.floor.max(bound);
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.next).u64(self.floor).secret(&self.key);
        w.u32(u32::try_from(self.skipped.len()).unwrap_or(u32::MAX));
        for (n, k) in &self.skipped {
            w.u64(*n).secret(k);
        }
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let next = r.u64()?;
        let floor = r.u64()?;
        let key = r.secret()?;
        let count = r.count(usize::try_from(MAX_SKIPPED_KEYS).unwrap_or(usize::MAX))?;
        let mut skipped = BTreeMap::new();
        for _ in 0..count {
            let n = r.u64()?;
            skipped.insert(n, r.secret()?);
        }
        Ok(Self {
            next,
            floor,
            key,
            skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn pair() -> (SendChain, RecvChain) {
        let k = Secret32::new([7u8; 32]);
        (SendChain::new(k.clone()), RecvChain::new(k))
    }

    fn send_n(s: &mut SendChain, n: usize) -> Vec<(u64, Secret32)> {
        (0..n)
            .map(|_| {
                let (c, mk, next) = s.peek("t").unwrap();
                *s = next;
                (c, mk)
            })
            .collect()
    }

    #[test]
    fn in_order_and_out_of_order_keys_match() {
        let (mut s, mut r) = pair();
        let keys = send_n(&mut s, 10);
        for i in [3usize, 0, 1, 9, 2, 4, 8, 5, 7, 6] {
            let (c, k) = &keys[i];
            let (got, step) = r.key_for(*c, "t").unwrap();
            assert_eq!(&got, k);
            r.apply(step);
        }
        assert!(r.skipped.is_empty());
        assert_eq!(r.key_for(5, "t").unwrap_err(), ChainRefusal::Replay);
    }

    #[test]
    fn distinct_keys_per_message_and_label() {
        let (mut s, _) = pair();
        let keys = send_n(&mut s, 3);
        assert!(keys[0].1 != keys[1].1 && keys[1].1 != keys[2].1);
        let (_, other, _) = SendChain::new(Secret32::new([7u8; 32])).peek("u").unwrap();
        assert!(other != keys[0].1);
    }

    #[test]
    fn window_is_bounded() {
        let (mut s, mut r) = pair();
        let keys = send_n(&mut s, (MAX_SKIPPED_KEYS + 10) as usize);
        let (last_c, _) = keys.last().unwrap();
        let (_, step) = r.key_for(*last_c, "t").unwrap();
        r.apply(step);
        assert_eq!(r.skipped.len() as u64, MAX_SKIPPED_KEYS);
        // The oldest ones were evicted.
        assert_eq!(r.key_for(0, "t").unwrap_err(), ChainRefusal::OutOfWindow);
        assert_eq!(r.key_for(8, "t").unwrap_err(), ChainRefusal::OutOfWindow);
        // The newest skipped ones are still there.
        let (c, k) = &keys[keys.len() - 2];
        assert_eq!(&r.key_for(*c, "t").unwrap().0, k);
        // Too far ahead.
        let far = r.next + MAX_FORWARD_GAP + 1;
        assert_eq!(r.key_for(far, "t").unwrap_err(), ChainRefusal::OutOfWindow);
    }

    #[test]
    fn long_gap_without_stored_keys_moves_the_floor() {
        let (mut s, mut r) = pair();
        let keys = send_n(&mut s, 600);
        let (_, step) = r.key_for(599, "t").unwrap();
        r.apply(step);
        assert_eq!(r.key_for(10, "t").unwrap_err(), ChainRefusal::OutOfWindow);
        assert_eq!(&r.key_for(598, "t").unwrap().0, &keys[598].1);
    }

    #[test]
    fn aead_binds_key_counter_and_aad() {
        let k = Secret32::new([1u8; 32]);
        let ct = aead_seal(&k, *b"test", 5, b"aad", b"hello").unwrap();
        assert_eq!(aead_open(&k, *b"test", 5, b"aad", &ct).unwrap(), b"hello");
        assert!(aead_open(&k, *b"test", 6, b"aad", &ct).is_none());
        assert!(aead_open(&k, *b"tesu", 5, b"aad", &ct).is_none());
        assert!(aead_open(&k, *b"test", 5, b"aae", &ct).is_none());
        assert!(aead_open(&Secret32::new([2u8; 32]), *b"test", 5, b"aad", &ct).is_none());
    }

    #[test]
    fn chain_state_round_trips() {
        let (mut s, mut r) = pair();
        let keys = send_n(&mut s, 5);
        let (_, step) = r.key_for(4, "t").unwrap();
        r.apply(step);
        let mut w = Writer::new(b"T");
        r.write(&mut w);
        let bytes = w.finish();
        let mut rd = Reader::new(bytes.as_bytes(), b"T", "t").unwrap();
        let r2 = RecvChain::read(&mut rd).unwrap();
        rd.finish().unwrap();
        assert_eq!(&r2.key_for(2, "t").unwrap().0, &keys[2].1);
        assert_eq!(r2.key_for(4, "t").unwrap_err(), ChainRefusal::Replay);
    }
}
