//! The sealed channel that pairs a new device with an account.
//!
//! An existing device makes a one-time [`PairingSecret`] (32 random bytes)
//! and shows it in a pairing URI or QR code; the new device reads it. The
//! two then talk over any transport, every message sealed with a key only
//! holders of the secret can derive:
//!
//! ```text
//! id          = HKDF-SHA-256(salt = "strata/v1/pairing", ikm = secret, info = "id")[..16]
//! key(dir)    = HKDF-SHA-256(salt = "strata/v1/pairing", ikm = secret, info = "key/" ‖ dir)
//!               dir = "to-device" | "to-joiner"
//! sealed      = nonce (24, random) ‖ XChaCha20-Poly1305(key(dir), nonce, plaintext,
//!                                       aad = "strata/v1/pairing" ‖ id ‖ step)
//! ```
//!
//! The `id` names the offer in the clear (it reveals nothing of the key);
//! each direction has its own key and every step is bound into the
//! associated data, so a message can be neither reflected to its sender
//! nor replayed as another step. The secret is high-entropy (not a
//! password), so no PAKE is needed: guessing it is guessing 256 bits.
//! Which offers are one-time, and for how long they hold, is the session
//! layer's rule (`strata_session::pairing`).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::{CryptoRng, Rng};
use zeroize::Zeroizing;

use crate::error::{CascadeError, Result};
use crate::schedule::{expand32, extract};
use crate::secret::Secret32;

const LABEL: &[u8] = b"strata/v1/pairing";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Which way a pairing message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairingDirection {
    /// From the new device to the existing one.
    ToDevice,
    /// From the existing device to the new one.
    ToJoiner,
}

impl PairingDirection {
    fn info(self) -> &'static [u8] {
        match self {
            Self::ToDevice => b"key/to-device",
            Self::ToJoiner => b"key/to-joiner",
        }
    }
}

/// A one-time pairing secret (see the module docs).
#[derive(Clone, PartialEq)]
pub struct PairingSecret(Secret32);

impl std::fmt::Debug for PairingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingSecret([redacted])")
    }
}

impl PairingSecret {
    /// A fresh secret.
    pub fn generate<R: Rng + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *bytes);
        Self(Secret32::new(*bytes))
    }

    /// The secret read from a pairing URI.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Secret32::from_slice(bytes).map(Self)
    }

    /// The secret's bytes, to put in a pairing URI.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.expose()
    }

    /// The public id of the offer this secret opens.
    pub fn id(&self) -> Result<[u8; 16]> {
        let prk = extract(LABEL, self.0.expose());
        let full = expand32(&prk, &[b"id"])?;
        let mut id = [0u8; 16];
        id.copy_from_slice(full.expose().get(..16).unwrap_or(&[0; 16]));
        Ok(id)
    }

    fn cipher(&self, direction: PairingDirection) -> Result<XChaCha20Poly1305> {
        let prk = extract(LABEL, self.0.expose());
        let key = expand32(&prk, &[direction.info()])?;
        XChaCha20Poly1305::new_from_slice(key.expose()).map_err(|_| CascadeError::internal("pairing", "key length"))
    }

    fn aad(&self, step: u8) -> Result<Vec<u8>> {
        let mut aad = LABEL.to_vec();
        aad.extend_from_slice(&self.id()?);
        aad.push(step);
        Ok(aad)
    }

    /// Seals step `step`'s `plaintext` going `direction`.
    pub fn seal<R: Rng + CryptoRng>(
        &self,
        direction: PairingDirection,
        step: u8,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = self.aad(step)?;
        let sealed = self
            .cipher(direction)?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| CascadeError::internal("pairing", "seal"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`PairingSecret::seal`] sealed for the same direction and
    /// step. Anything else — another secret, direction or step, a changed
    /// byte, a truncation — is [`CascadeError::Authentication`].
    pub fn open(&self, direction: PairingDirection, step: u8, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CascadeError::Authentication { layer: "pairing" });
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let aad = self.aad(step)?;
        self.cipher(direction)?
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| CascadeError::Authentication { layer: "pairing" })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_the_same_secret_direction_and_step_open_a_message() {
        let mut rng = rand::rng();
        let secret = PairingSecret::generate(&mut rng);
        let sealed = secret.seal(PairingDirection::ToDevice, 1, b"hello", &mut rng).unwrap();
        assert_eq!(&*secret.open(PairingDirection::ToDevice, 1, &sealed).unwrap(), b"hello");
        assert!(
            secret.open(PairingDirection::ToJoiner, 1, &sealed).is_err(),
            "reflected"
        );
        assert!(
            secret.open(PairingDirection::ToDevice, 2, &sealed).is_err(),
            "another step"
        );
        let other = PairingSecret::generate(&mut rng);
        assert!(
            other.open(PairingDirection::ToDevice, 1, &sealed).is_err(),
            "another secret"
        );
        for i in 0..sealed.len() {
            let mut spoiled = sealed.clone();
            spoiled[i] ^= 1;
            assert!(
                secret.open(PairingDirection::ToDevice, 1, &spoiled).is_err(),
                "byte {i}"
            );
        }
        assert!(secret.open(PairingDirection::ToDevice, 1, &sealed[..39]).is_err());
        assert!(secret.open(PairingDirection::ToDevice, 1, &[]).is_err());
    }

    #[test]
    fn the_id_is_stable_and_names_the_secret() {
        let mut rng = rand::rng();
        let secret = PairingSecret::generate(&mut rng);
        let again = PairingSecret::from_bytes(secret.as_bytes()).unwrap();
        assert_eq!(secret.id().unwrap(), again.id().unwrap());
        assert_ne!(secret.id().unwrap(), PairingSecret::generate(&mut rng).id().unwrap());
        assert!(PairingSecret::from_bytes(&[0; 31]).is_none());
    }
}
