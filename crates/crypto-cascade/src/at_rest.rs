//! Encryption at rest: the key that seals every value the store writes.
//!
//! - The storage key is 32 random bytes kept in a key file, or derived from
//!   a passphrase with Argon2id (`m`, `t`, `p` and a 16-byte random salt
//!   stored in the clear next to the data).
//! - A value is sealed with XChaCha20-Poly1305 under a random 192-bit nonce:
//!   `sealed = nonce(24) ‖ ciphertext ‖ tag(16)`. Random nonces are safe at
//!   this size for the life of one key (unlike 96-bit GCM nonces).
//! - The associated data names the value's slot (the store passes table and
//!   key), so a sealed value moved to another row fails to open.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::CryptoRng;
use zeroize::Zeroizing;

use crate::error::{CascadeError, Result};
use crate::secret::Secret32;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const LAYER: &str = "at-rest";

/// Argon2id cost parameters for turning a passphrase into a storage key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// OWASP's Argon2id recommendation (19 MiB, 2 passes, 1 lane).
    pub const RECOMMENDED: Self = Self {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// The minimum Argon2 accepts; for tests only, never for real data.
    pub const INSECURE_FAST: Self = Self {
        m_cost_kib: 8,
        t_cost: 1,
        p_cost: 1,
    };
}

/// The key that seals stored values. Zeroized on drop, redacted in `Debug`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageKey(Secret32);

impl StorageKey {
    /// A fresh random key, for a new key file.
    pub fn generate(rng: &mut dyn CryptoRng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(Secret32::new(*bytes))
    }

    /// The key read back from a key file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Secret32::from_slice(bytes)
            .map(Self)
            .ok_or(CascadeError::InvalidArgument("a storage key is 32 bytes"))
    }

    /// The raw key, to write to a key file.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }

    /// Derives the key from a passphrase with Argon2id.
    pub fn derive(passphrase: &[u8], salt: &[u8; 16], params: KdfParams) -> Result<Self> {
        let params = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|_| CascadeError::InvalidArgument("Argon2id parameters out of range"))?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|e| CascadeError::internal(LAYER, e))?;
        Ok(Self(Secret32::new(*out)))
    }

    /// Seals `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], rng: &mut dyn CryptoRng) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(self.0.expose().into());
        // nonce ‖ ciphertext ‖ tag, encrypted in place: a whole pair state
        // is sealed on every message, so no intermediate copy.
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let body = sealed
            .get_mut(NONCE_LEN..)
            .ok_or_else(|| CascadeError::internal(LAYER, "sealed buffer"))?;
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, body)
            .map_err(|e| CascadeError::internal(LAYER, e))?;
        sealed.extend_from_slice(&tag);
        Ok(sealed)
    }

    /// Opens a value sealed with [`seal`](Self::seal) under the same `aad`.
    /// A wrong key, a different `aad` or any change to `sealed` is an
    /// [`CascadeError::Authentication`] error.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CascadeError::Malformed { what: "sealed value" });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(self.0.expose().into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map(Zeroizing::new)
            .map_err(|_| CascadeError::Authentication { layer: LAYER })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_slot() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let key = StorageKey::generate(&mut rng);
        let sealed = key.seal(b"outbox/m1", b"hello", &mut rng).unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(key.open(b"outbox/m1", &sealed).unwrap().as_slice(), b"hello");
        assert!(matches!(
            key.open(b"outbox/m2", &sealed),
            Err(CascadeError::Authentication { .. })
        ));
        let other = StorageKey::generate(&mut rng);
        assert!(matches!(
            other.open(b"outbox/m1", &sealed),
            Err(CascadeError::Authentication { .. })
        ));
        let mut flipped = sealed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            key.open(b"outbox/m1", &flipped),
            Err(CascadeError::Authentication { .. })
        ));
        assert!(matches!(
            key.open(b"outbox/m1", &sealed[..10]),
            Err(CascadeError::Malformed { .. })
        ));
        // Two seals of the same value differ (fresh nonce).
        assert_ne!(sealed, key.seal(b"outbox/m1", b"hello", &mut rng).unwrap());
    }

    #[test]
    fn passphrase_derivation_is_deterministic_per_salt() {
        let a = StorageKey::derive(b"correct horse", &[1; 16], KdfParams::INSECURE_FAST).unwrap();
        let b = StorageKey::derive(b"correct horse", &[1; 16], KdfParams::INSECURE_FAST).unwrap();
        let c = StorageKey::derive(b"correct horse", &[2; 16], KdfParams::INSECURE_FAST).unwrap();
        let d = StorageKey::derive(b"wrong horse", &[1; 16], KdfParams::INSECURE_FAST).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(format!("{a:?}"), "StorageKey([redacted])");
    }
}
