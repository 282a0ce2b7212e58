//! BisonRelay's out-of-band key exchange (issue #19), its cryptography: the
//! KX key pair, signed public identities and invites, sealing to a peer's
//! KEM key, and rendezvous points. The messages and their framing are
//! `strata_proto::kx` (with the deviations from BisonRelay it documents).
//!
//! - **Identity.** A [`PublicIdentity`] carries the account's Signal
//!   identity key (`sigKey`) and an sntrup761 KEM key (`key`), with
//!   `identity = SHA-256(key)`, `digest = SHA-256(sigKey ‖ key ‖ identity)`
//!   and the account key's XEdDSA signature over `digest`: whoever checks it
//!   knows the KEM key belongs to that account.
//! - **Invite.** An [`Invite`] adds two random rendezvous points and an
//!   expiry, all signed by the account key ([`Invite::signed_bytes`]).
//! - **Sealing** ([`seal`], [`open`]), BisonRelay's `EncryptRMO`:
//!   `(c, k) = sntrup761.Encapsulate(their key)`, then
//!   `c ‖ nonce(24) ‖ secretbox(rmo, k)` (NaCl secretbox, XSalsa20-Poly1305,
//!   random nonce). Only the holder of the KEM secret key opens it.
//! - **Rendezvous points** ([`rendezvous`]): `BLAKE-256(header key ‖ LE32
//!   count)`, the full 32-byte digest (Decred's BLAKE-256, not BLAKE2).
//!
//! Not built yet (issue #19 stays open): the half and full KX key
//! exchange itself, the KX state machine and its transport over gossip
//! topics, reset and introductions.

use blake_hash::Digest as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use libsignal_protocol_syft::IdentityKey;
use rand::{CryptoRng, Rng};
use sha2::Sha256;
use strata_proto::kx::{
    ID_BYTES, Invite, KEM_CIPHERTEXT_BYTES, KEM_PUBLIC_KEY_BYTES, MAX_NAME_BYTES, MAX_RMO_BYTES, PublicIdentity,
    SIG_KEY_BYTES, SIGNATURE_BYTES,
};

use crate::identity::{AccountIdentity, verify_signed};
use crate::secret::SecretBytes;
use crate::{CascadeError, Result};

const _: () = assert!(sntrup761::PUBLIC_KEY_SIZE == KEM_PUBLIC_KEY_BYTES);
const _: () = assert!(sntrup761::CIPHERTEXT_SIZE == KEM_CIPHERTEXT_BYTES);

/// Bytes of a secretbox nonce.
const NONCE_BYTES: usize = 24;
/// Bytes of a secretbox tag.
const TAG_BYTES: usize = 16;
/// Most bytes of a sealed `RMO`: the ciphertext, nonce and tag around the
/// largest `RMO` that could inflate within its cap.
pub const MAX_SEALED_BYTES: usize = KEM_CIPHERTEXT_BYTES + NONCE_BYTES + TAG_BYTES + MAX_RMO_BYTES;
const KEY_PAIR_MAGIC: &[u8] = b"strata-kx-sntrup761-v1";

/// Why a KX identity, invite or sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KxError {
    /// `identity` is not SHA-256 of `key`, or `digest` does not match.
    #[error("the identity's hashes do not match its keys")]
    BadIdentity,
    /// `sigKey` is not a Signal identity key.
    #[error("not an account identity key")]
    BadKey,
    /// A signature by the account key does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The invite is past its expiry.
    #[error("the invite expired")]
    Expired,
    /// Too short or too long to be sealed to us.
    #[error("not a sealed KX message")]
    Malformed,
    /// The seal does not open with our KEM key: not for us, or altered.
    #[error("the seal does not open")]
    Unsealed,
}

/// This account's sntrup761 key pair for key exchanges.
pub struct KxKeyPair {
    public: sntrup761::EncapsulationKey,
    secret: sntrup761::DecapsulationKey,
}

impl std::fmt::Debug for KxKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KxKeyPair").finish_non_exhaustive()
    }
}

impl KxKeyPair {
    /// A fresh key pair.
    pub fn generate<R: Rng + CryptoRng>(rng: &mut R) -> Self {
        // The crate's own generator takes another `rand` major version: a
        // seed from ours (it expands it with ChaCha20).
        let (public, secret) = sntrup761::generate_key_from_seed(rng.random());
        Self { public, secret }
    }

    /// The public key, as a [`PublicIdentity`] carries it.
    pub fn public_key(&self) -> [u8; KEM_PUBLIC_KEY_BYTES] {
        let mut out = [0u8; KEM_PUBLIC_KEY_BYTES];
        out.copy_from_slice(self.public.as_ref());
        out
    }

    /// The key pair, to persist (sealed at rest by the store).
    pub fn export(&self) -> SecretBytes {
        SecretBytes::new([KEY_PAIR_MAGIC, self.secret.as_ref(), self.public.as_ref()].concat())
    }

    /// Reads back what [`KxKeyPair::export`] wrote.
    pub fn import(bytes: &[u8]) -> Result<Self> {
        let corrupt = || CascadeError::CorruptState("KX key pair");
        let rest = bytes.strip_prefix(KEY_PAIR_MAGIC).ok_or_else(corrupt)?;
        if rest.len() != sntrup761::SECRET_KEY_SIZE + KEM_PUBLIC_KEY_BYTES {
            return Err(corrupt());
        }
        let (secret, public) = rest.split_at(sntrup761::SECRET_KEY_SIZE);
        let secret = <[u8; sntrup761::SECRET_KEY_SIZE]>::try_from(secret).map_err(|_| corrupt())?;
        let public = <[u8; KEM_PUBLIC_KEY_BYTES]>::try_from(public).map_err(|_| corrupt())?;
        Ok(Self {
            public: sntrup761::EncapsulationKey::from(public),
            secret: sntrup761::DecapsulationKey::from(secret),
        })
    }
}

/// `account`'s public identity with `kem`'s key, signed. A name over
/// [`MAX_NAME_BYTES`] is cut at a character boundary.
pub fn public_identity<R: Rng + CryptoRng>(
    account: &AccountIdentity,
    kem: &KxKeyPair,
    name: &str,
    rng: &mut R,
) -> Result<PublicIdentity> {
    let mut name = name.to_owned();
    while name.len() > MAX_NAME_BYTES {
        name.pop();
    }
    let sig_key = <[u8; SIG_KEY_BYTES]>::try_from(account.identity_key().serialize().as_ref())
        .map_err(|_| CascadeError::internal("kx", "identity key size"))?;
    let key = kem.public_key();
    let identity = sha256(&[&key]);
    let digest = sha256(&[&sig_key, &key, &identity]);
    let signature = signature(account.sign(&[&digest], rng)?)?;
    Ok(PublicIdentity {
        nick: name.clone(),
        name,
        sig_key,
        key,
        identity,
        digest,
        signature,
    })
}

/// A [`PublicIdentity`] whose hashes and signature check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The account's identity key (the Strata peer id).
    pub identity_key: IdentityKey,
    /// Its KEM key, to seal to.
    pub kem_key: [u8; KEM_PUBLIC_KEY_BYTES],
    /// The name it gave.
    pub name: String,
}

/// Checks `p`: `identity = SHA-256(key)`, the digest, and the account
/// key's signature over it.
pub fn verify_identity(p: &PublicIdentity) -> std::result::Result<VerifiedIdentity, KxError> {
    if p.identity != sha256(&[&p.key]) || p.digest != sha256(&[&p.sig_key, &p.key, &p.identity]) {
        return Err(KxError::BadIdentity);
    }
    let identity_key = IdentityKey::decode(&p.sig_key).map_err(|_| KxError::BadKey)?;
    if !verify_signed(&identity_key, &[&p.digest], &p.signature) {
        return Err(KxError::BadSignature);
    }
    Ok(VerifiedIdentity {
        identity_key,
        kem_key: p.key,
        name: p.name.clone(),
    })
}

/// A new invite of `account` (fresh random rendezvous points), valid until
/// `expires` (Unix seconds), signed.
pub fn make_invite<R: Rng + CryptoRng>(
    account: &AccountIdentity,
    kem: &KxKeyPair,
    name: &str,
    expires: u64,
    rng: &mut R,
) -> Result<Invite> {
    let public = public_identity(account, kem, name, rng)?;
    let initial_rendezvous: [u8; ID_BYTES] = rng.random();
    let reset_rendezvous: [u8; ID_BYTES] = rng.random();
    let signed = Invite::bytes_to_sign(&public.digest, &initial_rendezvous, &reset_rendezvous, expires);
    let signature = signature(account.sign(&[&signed], rng)?)?;
    Ok(Invite {
        public,
        initial_rendezvous,
        reset_rendezvous,
        expires,
        signature,
    })
}

/// An [`Invite`] that checks out at the time it was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedInvite {
    /// The inviter.
    pub inviter: VerifiedIdentity,
    /// Where the inviter waits for the half KX.
    pub initial_rendezvous: [u8; ID_BYTES],
    /// Where the inviter waits for a reset.
    pub reset_rendezvous: [u8; ID_BYTES],
    /// When it expires, Unix seconds.
    pub expires: u64,
}

/// Checks `invite` at `now_s` (Unix seconds): its identity, its signature
/// and its expiry.
pub fn verify_invite(invite: &Invite, now_s: u64) -> std::result::Result<VerifiedInvite, KxError> {
    let inviter = verify_identity(&invite.public)?;
    if !verify_signed(&inviter.identity_key, &[&invite.signed_bytes()], &invite.signature) {
        return Err(KxError::BadSignature);
    }
    if now_s > invite.expires {
        return Err(KxError::Expired);
    }
    Ok(VerifiedInvite {
        inviter,
        initial_rendezvous: invite.initial_rendezvous,
        reset_rendezvous: invite.reset_rendezvous,
        expires: invite.expires,
    })
}

/// Seals `rmo` (an `RMO`, `strata_proto::kx::Rmo::compose`) to the holder
/// of `their_key`: `c ‖ nonce ‖ secretbox(rmo, k)`.
pub fn seal<R: Rng + CryptoRng>(their_key: &[u8; KEM_PUBLIC_KEY_BYTES], rmo: &[u8], rng: &mut R) -> Result<Vec<u8>> {
    if rmo.len() > MAX_RMO_BYTES {
        return Err(CascadeError::InvalidArgument("an RMO over 16 KiB"));
    }
    let (ciphertext, shared) = sntrup761::EncapsulationKey::from(*their_key).encapsulate_deterministic(rng.random());
    let nonce: [u8; NONCE_BYTES] = rng.random();
    let sealed = XSalsa20Poly1305::new(Key::from_slice(shared.as_ref()))
        .encrypt(Nonce::from_slice(&nonce), rmo)
        .map_err(|_| CascadeError::internal("kx", "secretbox"))?;
    Ok([ciphertext.as_ref(), &nonce, &sealed].concat())
}

/// Opens what [`seal`] sealed to `kem`'s public key; the `RMO` bytes.
pub fn open(kem: &KxKeyPair, sealed: &[u8]) -> std::result::Result<Vec<u8>, KxError> {
    if sealed.len() < KEM_CIPHERTEXT_BYTES + NONCE_BYTES + TAG_BYTES || sealed.len() > MAX_SEALED_BYTES {
        return Err(KxError::Malformed);
    }
    let (ciphertext, rest) = sealed.split_at(KEM_CIPHERTEXT_BYTES);
    let (nonce, boxed) = rest.split_at(NONCE_BYTES);
    let ciphertext = <[u8; KEM_CIPHERTEXT_BYTES]>::try_from(ciphertext).map_err(|_| KxError::Malformed)?;
    // sntrup761 rejects implicitly: a wrong ciphertext yields another key,
    // and the secretbox tag then fails.
    let shared = kem.secret.decapsulate(&sntrup761::Ciphertext::from(ciphertext));
    XSalsa20Poly1305::new(Key::from_slice(shared.as_ref()))
        .decrypt(Nonce::from_slice(nonce), boxed)
        .map_err(|_| KxError::Unsealed)
}

/// The rendezvous point of message `count` under `header_key`:
/// `BLAKE-256(header_key ‖ LE32(count))`.
pub fn rendezvous(header_key: &[u8; 32], count: u32) -> [u8; ID_BYTES] {
    let mut hasher = blake_hash::Blake256::new();
    hasher.update(header_key);
    hasher.update(count.to_le_bytes());
    let mut out = [0u8; ID_BYTES];
    out.copy_from_slice(&hasher.finalize());
    out
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn signature(bytes: Vec<u8>) -> Result<[u8; SIGNATURE_BYTES]> {
    <[u8; SIGNATURE_BYTES]>::try_from(bytes.as_slice()).map_err(|_| CascadeError::internal("kx", "signature size"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use rand::SeedableRng as _;
    use rand_chacha::ChaCha20Rng;
    use strata_proto::kx::{FullKx, KeyExchange, Rmo};

    use super::*;

    fn alice(rng: &mut ChaCha20Rng) -> (AccountIdentity, KxKeyPair) {
        (AccountIdentity::generate(rng), KxKeyPair::generate(rng))
    }

    #[test]
    fn an_invite_checks_out_and_names_its_account() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (account, kem) = alice(&mut rng);
        let invite = make_invite(&account, &kem, "alice", 1_000, &mut rng).unwrap();
        let ok = verify_invite(&invite, 999).unwrap();
        assert_eq!(ok.inviter.identity_key, *account.identity_key());
        assert_eq!(ok.inviter.kem_key, kem.public_key());
        assert_eq!(verify_invite(&invite, 1_001), Err(KxError::Expired));
        // Through its JSON and back.
        let (_, back) = Rmo::decompose(&Rmo::Invite(Box::new(invite.clone())).compose(5)).unwrap();
        assert_eq!(back, Rmo::Invite(Box::new(invite)));
    }

    /// Every field an attacker could change is covered: the KEM key, the
    /// hashes, the rendezvous points, the expiry, the signatures, and a
    /// key swapped for another account's.
    #[test]
    fn an_altered_invite_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (account, kem) = alice(&mut rng);
        let (mallory, _) = alice(&mut rng);
        let invite = make_invite(&account, &kem, "alice", 1_000, &mut rng).unwrap();
        let altered: Vec<(Invite, KxError)> = vec![
            {
                let mut i = invite.clone();
                i.public.key[0] ^= 1;
                (i, KxError::BadIdentity)
            },
            {
                let mut i = invite.clone();
                i.public.digest[0] ^= 1;
                (i, KxError::BadIdentity)
            },
            {
                let mut i = invite.clone();
                i.initial_rendezvous[0] ^= 1;
                (i, KxError::BadSignature)
            },
            {
                let mut i = invite.clone();
                i.expires += 1;
                (i, KxError::BadSignature)
            },
            {
                let mut i = invite.clone();
                i.public.signature[0] ^= 1;
                (i, KxError::BadSignature)
            },
            {
                // Mallory's key on Alice's KEM key: the digest no longer
                // matches, and re-hashed it is not Mallory's signature.
                let mut i = invite.clone();
                i.public.sig_key.copy_from_slice(&mallory.identity_key().serialize());
                i.public.digest = sha256(&[&i.public.sig_key, &i.public.key, &i.public.identity]);
                (i, KxError::BadSignature)
            },
            {
                let mut i = invite.clone();
                i.public.sig_key = [0; SIG_KEY_BYTES];
                i.public.digest = sha256(&[&i.public.sig_key, &i.public.key, &i.public.identity]);
                (i, KxError::BadKey)
            },
        ];
        for (i, why) in altered {
            assert_eq!(verify_invite(&i, 0), Err(why));
        }
    }

    #[test]
    fn a_seal_opens_only_with_the_right_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (_, kem) = alice(&mut rng);
        let (_, other) = alice(&mut rng);
        let rmo = Rmo::FullKx(Box::new(FullKx {
            full_kx: KeyExchange {
                public: vec![1; 72],
                cipher: [2; KEM_CIPHERTEXT_BYTES],
            },
        }))
        .compose(9);
        let sealed = seal(&kem.public_key(), &rmo, &mut rng).unwrap();
        assert_eq!(sealed.len(), KEM_CIPHERTEXT_BYTES + NONCE_BYTES + TAG_BYTES + rmo.len());
        assert_eq!(open(&kem, &sealed).unwrap(), rmo);
        assert_eq!(open(&other, &sealed), Err(KxError::Unsealed));
        for i in [
            0,
            KEM_CIPHERTEXT_BYTES,
            KEM_CIPHERTEXT_BYTES + NONCE_BYTES,
            sealed.len() - 1,
        ] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(open(&kem, &bad), Err(KxError::Unsealed), "byte {i}");
        }
        assert_eq!(open(&kem, &sealed[..100]), Err(KxError::Malformed));
        assert_eq!(open(&kem, &vec![0; MAX_SEALED_BYTES + 1]), Err(KxError::Malformed));
        // Two seals of the same RMO share nothing.
        let again = seal(&kem.public_key(), &rmo, &mut rng).unwrap();
        assert_ne!(again[..KEM_CIPHERTEXT_BYTES], sealed[..KEM_CIPHERTEXT_BYTES]);
    }

    #[test]
    fn a_key_pair_survives_export() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let kem = KxKeyPair::generate(&mut rng);
        let back = KxKeyPair::import(kem.export().as_bytes()).unwrap();
        assert_eq!(back.public_key(), kem.public_key());
        let sealed = seal(&kem.public_key(), b"x", &mut rng).unwrap();
        assert_eq!(open(&back, &sealed).unwrap(), b"x");
        assert!(KxKeyPair::import(b"strata-kx-sntrup761-v1short").is_err());
    }

    /// BLAKE-256 (Decred's, the SHA-3 finalist, not BLAKE2): the empty
    /// message's digest, then the rendezvous layout.
    #[test]
    fn rendezvous_points_are_blake256_of_key_and_count() {
        let empty = blake_hash::Blake256::digest(b"");
        assert_eq!(
            hex::encode(empty),
            "716f6e863f744b9ac22c97ec7b76ea5f5908bc5b2f67c61510bfc4751384ea7a"
        );
        let key = [7u8; 32];
        let mut manual = blake_hash::Blake256::new();
        manual.update([&key[..], &3u32.to_le_bytes()].concat());
        assert_eq!(rendezvous(&key, 3).to_vec(), manual.finalize().to_vec());
        assert_ne!(rendezvous(&key, 3), rendezvous(&key, 4));
    }
}
