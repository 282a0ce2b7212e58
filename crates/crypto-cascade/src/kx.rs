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
//! - **Invite.** An [`Invite`] adds the inviter's installation, two random
//!   rendezvous points and an expiry, all signed by the account key
//!   ([`Invite::signed_bytes`]).
//! - **Half KX.** The invitee's answer ([`make_half_kx`]) carries its own
//!   identity, installation and rendezvous points, signed by its account
//!   key together with the invite's initial rendezvous point
//!   ([`HalfKx::signed_bytes`]); [`verify_half_kx`] checks both.
//! - **Sealing** ([`seal`], [`open`]), BisonRelay's `EncryptRMO`:
//!   `(c, k) = sntrup761.Encapsulate(their key)`, then
//!   `c ‖ nonce(24) ‖ secretbox(rmo, k)` (NaCl secretbox, XSalsa20-Poly1305,
//!   random nonce). Only the holder of the KEM secret key opens it.
//! - **Rendezvous points** ([`rendezvous`]): `BLAKE-256(header key ‖ LE32
//!   count)`, the full 32-byte digest (Decred's BLAKE-256, not BLAKE2).
//! - **Key exchange** ([`fill_key_exchange`], [`complete_key_exchange`]),
//!   BisonRelay's `FillKeyExchange`/`CompleteKeyExchange`: each side
//!   encapsulates to the other's KEM key (its *half*) and sends an X25519
//!   public key sealed under that half. Completing decapsulates the other's
//!   half, opens and checks its X25519 key, and hashes both halves in role
//!   order. One deviation: the X25519 agreement of the two sealed keys is
//!   hashed in too (BisonRelay keeps them for its ratchet, which Strata does
//!   not run), so the secret holds if either the KEM or X25519 holds. The
//!   header keys of the rendezvous points come from it by HMAC-SHA-256 with
//!   BisonRelay's labels ([`KxSecret`]).
//!
//! The KX state machine, its rendezvous topics and persistence are
//! `strata_session::kx`.

use blake_hash::Digest as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use hmac::{Hmac, Mac as _};
use libsignal_protocol_syft::IdentityKey;
use rand::{CryptoRng, Rng};
use sha2::Sha256;
use strata_proto::kx::{
    HalfKx, ID_BYTES, Invite, KEM_CIPHERTEXT_BYTES, KEM_PUBLIC_KEY_BYTES, KeyExchange, MAX_NAME_BYTES, MAX_RMO_BYTES,
    PublicIdentity, SIG_KEY_BYTES, SIGNATURE_BYTES,
};
use zeroize::Zeroize as _;

use crate::identity::{AccountIdentity, InstallationId, verify_signed};
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

/// Who makes an invite or answers one: the account, its KX key pair, the
/// name it shows and the installation the Strata handshake reaches.
#[derive(Clone, Copy, Debug)]
pub struct KxSelf<'a> {
    /// The account.
    pub account: &'a AccountIdentity,
    /// Its KX key pair.
    pub kem: &'a KxKeyPair,
    /// The name it gives.
    pub name: &'a str,
    /// This installation.
    pub installation: InstallationId,
}

/// A new invite of `me` (fresh random rendezvous points), valid until
/// `expires` (Unix seconds), signed.
pub fn make_invite<R: Rng + CryptoRng>(me: KxSelf<'_>, expires: u64, rng: &mut R) -> Result<Invite> {
    let mut invite = Invite {
        public: public_identity(me.account, me.kem, me.name, rng)?,
        initial_rendezvous: rng.random(),
        reset_rendezvous: rng.random(),
        expires,
        installation: *me.installation.as_bytes(),
        signature: [0; SIGNATURE_BYTES],
    };
    invite.signature = signature(me.account.sign(&[&invite.signed_bytes()], rng)?)?;
    Ok(invite)
}

/// An [`Invite`] that checks out at the time it was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedInvite {
    /// The inviter.
    pub inviter: VerifiedIdentity,
    /// The inviter's installation.
    pub installation: InstallationId,
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
        installation: InstallationId::from_bytes(invite.installation),
        initial_rendezvous: invite.initial_rendezvous,
        reset_rendezvous: invite.reset_rendezvous,
        expires: invite.expires,
    })
}

/// `me`'s answer to the invite `invite`: a [`HalfKx`] with fresh random
/// rendezvous points (where `me` then waits for the full KX, and for a
/// reset), signed, and the secret part of the half to keep.
pub fn make_half_kx<R: Rng + CryptoRng>(
    me: KxSelf<'_>,
    invite: &VerifiedInvite,
    rng: &mut R,
) -> Result<(HalfKx, KxHalf)> {
    let (half_kx, secret) = fill_key_exchange(&invite.inviter.kem_key, rng)?;
    let mut half = HalfKx {
        public: public_identity(me.account, me.kem, me.name, rng)?,
        half_kx,
        initial_rendezvous: rng.random(),
        reset_rendezvous: rng.random(),
        installation: *me.installation.as_bytes(),
        signature: [0; SIGNATURE_BYTES],
    };
    let signed = half.signed_bytes(&invite.initial_rendezvous);
    half.signature = signature(me.account.sign(&[&signed], rng)?)?;
    Ok((half, secret))
}

/// Checks a half KX that arrived on the invite rendezvous point `invite`:
/// the invitee's identity and its signature over the half. The invitee.
pub fn verify_half_kx(half: &HalfKx, invite: &[u8; ID_BYTES]) -> std::result::Result<VerifiedIdentity, KxError> {
    let invitee = verify_identity(&half.public)?;
    if !verify_signed(&invitee.identity_key, &[&half.signed_bytes(invite)], &half.signature) {
        return Err(KxError::BadSignature);
    }
    Ok(invitee)
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

/// One side's secret part of a key exchange, kept from sending its half
/// until completing with the other's.
pub struct KxHalf {
    /// The KEM shared key this side encapsulated to the peer.
    my_half: [u8; 32],
    /// The X25519 secret whose public key the half carries.
    dh: x25519_dalek::StaticSecret,
}

impl Drop for KxHalf {
    fn drop(&mut self) {
        self.my_half.zeroize();
    }
}

impl KxHalf {
    /// To persist between the two messages (sealed at rest by the store).
    pub fn export(&self) -> SecretBytes {
        SecretBytes::new([&self.my_half[..], self.dh.as_bytes()].concat())
    }

    /// Reads back what [`KxHalf::export`] wrote.
    pub fn import(bytes: &[u8]) -> Result<Self> {
        let corrupt = || CascadeError::CorruptState("KX half");
        let (my_half, dh) = bytes.split_at_checked(32).ok_or_else(corrupt)?;
        Ok(Self {
            my_half: my_half.try_into().map_err(|_| corrupt())?,
            dh: x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(dh).map_err(|_| corrupt())?),
        })
    }
}

/// This side's half of a key exchange with the holder of `their_key`: the
/// [`KeyExchange`] to send and the secret part to keep.
pub fn fill_key_exchange<R: Rng + CryptoRng>(
    their_key: &[u8; KEM_PUBLIC_KEY_BYTES],
    rng: &mut R,
) -> Result<(KeyExchange, KxHalf)> {
    let (cipher, my_half) = sntrup761::EncapsulationKey::from(*their_key).encapsulate_deterministic(rng.random());
    let dh = x25519_dalek::StaticSecret::from(rng.random::<[u8; 32]>());
    let public = x25519_dalek::PublicKey::from(&dh);
    let nonce: [u8; NONCE_BYTES] = rng.random();
    let sealed = XSalsa20Poly1305::new(Key::from_slice(my_half.as_ref()))
        .encrypt(Nonce::from_slice(&nonce), public.as_bytes().as_slice())
        .map_err(|_| CascadeError::internal("kx", "secretbox"))?;
    let mut cipher_bytes = [0u8; KEM_CIPHERTEXT_BYTES];
    cipher_bytes.copy_from_slice(cipher.as_ref());
    let mut half = [0u8; 32];
    half.copy_from_slice(my_half.as_ref());
    Ok((
        KeyExchange {
            public: [&nonce[..], &sealed].concat(),
            cipher: cipher_bytes,
        },
        KxHalf { my_half: half, dh },
    ))
}

/// Completes a key exchange: `theirs` is the peer's half, `mine` ours.
/// `accepted` is true on the side that accepted the invite (BisonRelay's
/// `alice`): the halves are hashed in role order, so both sides agree.
pub fn complete_key_exchange(
    kem: &KxKeyPair,
    mine: &KxHalf,
    theirs: &KeyExchange,
    accepted: bool,
) -> std::result::Result<KxSecret, KxError> {
    let their_half = kem.secret.decapsulate(&sntrup761::Ciphertext::from(theirs.cipher));
    let (nonce, boxed) = theirs.public.split_at_checked(NONCE_BYTES).ok_or(KxError::Malformed)?;
    let mut their_public = XSalsa20Poly1305::new(Key::from_slice(their_half.as_ref()))
        .decrypt(Nonce::from_slice(nonce), boxed)
        .map_err(|_| KxError::Unsealed)?;
    let point = <[u8; 32]>::try_from(their_public.as_slice()).map_err(|_| KxError::Malformed)?;
    their_public.zeroize();
    let dh = mine.dh.diffie_hellman(&x25519_dalek::PublicKey::from(point));
    if !dh.was_contributory() {
        // A low-order point: the agreement would be known to anyone.
        return Err(KxError::BadKey);
    }
    let their_half: &[u8] = their_half.as_ref();
    let (first, second) = if accepted {
        (&mine.my_half[..], their_half)
    } else {
        (their_half, &mine.my_half[..])
    };
    Ok(KxSecret {
        shared: sha256(&[first, second, dh.as_bytes()]),
        accepted,
    })
}

/// What a completed key exchange leaves both sides with.
pub struct KxSecret {
    shared: [u8; 32],
    accepted: bool,
}

impl Drop for KxSecret {
    fn drop(&mut self) {
        self.shared.zeroize();
    }
}

impl KxSecret {
    fn derive(&self, label: &str) -> [u8; 32] {
        let Ok(mut h) = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.shared) else {
            unreachable!("HMAC takes a key of any length")
        };
        h.update(label.as_bytes());
        h.finalize().into_bytes().into()
    }

    /// The rendezvous point of this side's `count`th message after the
    /// exchange (BisonRelay's `send_rv`: `header key` for the inviter,
    /// `next send header key` for the side that accepted).
    pub fn send_rendezvous(&self, count: u32) -> [u8; ID_BYTES] {
        let label = if self.accepted {
            "next send header key"
        } else {
            "header key"
        };
        rendezvous(&self.derive(label), count)
    }

    /// The rendezvous point of the peer's `count`th message: the other
    /// side's [`KxSecret::send_rendezvous`].
    pub fn recv_rendezvous(&self, count: u32) -> [u8; ID_BYTES] {
        let label = if self.accepted {
            "header key"
        } else {
            "next send header key"
        };
        rendezvous(&self.derive(label), count)
    }

    /// A value both sides hold and no one else can compute, to confirm the
    /// exchange and to bind what follows to it.
    pub fn confirmation(&self) -> [u8; 32] {
        self.derive("root key")
    }
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

    fn me<'a>(account: &'a AccountIdentity, kem: &'a KxKeyPair) -> KxSelf<'a> {
        KxSelf {
            account,
            kem,
            name: "alice",
            installation: InstallationId::from_bytes([0x11; 16]),
        }
    }

    #[test]
    fn an_invite_checks_out_and_names_its_account() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let (account, kem) = alice(&mut rng);
        let invite = make_invite(me(&account, &kem), 1_000, &mut rng).unwrap();
        let ok = verify_invite(&invite, 999).unwrap();
        assert_eq!(ok.inviter.identity_key, *account.identity_key());
        assert_eq!(ok.inviter.kem_key, kem.public_key());
        assert_eq!(ok.installation, InstallationId::from_bytes([0x11; 16]));
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
        let invite = make_invite(me(&account, &kem), 1_000, &mut rng).unwrap();
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
                i.installation[0] ^= 1;
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

    /// A half KX checks out only on the invite it answers, with every
    /// field as signed.
    #[test]
    fn a_half_kx_is_bound_to_its_invitee_and_invite() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (alice_account, alice_kem) = alice(&mut rng);
        let (bob_account, bob_kem) = alice(&mut rng);
        let invite = make_invite(me(&alice_account, &alice_kem), 1_000, &mut rng).unwrap();
        let verified = verify_invite(&invite, 0).unwrap();
        let bob = KxSelf {
            name: "bob",
            installation: InstallationId::from_bytes([0x22; 16]),
            ..me(&bob_account, &bob_kem)
        };
        let (half, _) = make_half_kx(bob, &verified, &mut rng).unwrap();
        let invitee = verify_half_kx(&half, &invite.initial_rendezvous).unwrap();
        assert_eq!(invitee.identity_key, *bob_account.identity_key());
        assert_eq!(invitee.name, "bob");
        assert_eq!(verify_half_kx(&half, &[0; ID_BYTES]), Err(KxError::BadSignature));
        for field in 0..3 {
            let mut bad = half.clone();
            match field {
                0 => bad.installation[0] ^= 1,
                1 => bad.initial_rendezvous[0] ^= 1,
                _ => bad.reset_rendezvous[0] ^= 1,
            }
            assert_eq!(
                verify_half_kx(&bad, &invite.initial_rendezvous),
                Err(KxError::BadSignature),
                "field {field}"
            );
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

    /// Invitee and inviter each send a half and complete with the other's:
    /// both hold the same secret, and each one's sending rendezvous points
    /// are the other's receiving ones.
    #[test]
    fn both_sides_of_a_key_exchange_agree() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let alice = KxKeyPair::generate(&mut rng);
        let bob = KxKeyPair::generate(&mut rng);
        // Bob accepted Alice's invite: his half first, then hers.
        let (bob_kx, bob_half) = fill_key_exchange(&alice.public_key(), &mut rng).unwrap();
        let (alice_kx, alice_half) = fill_key_exchange(&bob.public_key(), &mut rng).unwrap();
        let at_alice = complete_key_exchange(&alice, &alice_half, &bob_kx, false).unwrap();
        let at_bob = complete_key_exchange(&bob, &bob_half, &alice_kx, true).unwrap();
        assert_eq!(at_alice.confirmation(), at_bob.confirmation());
        for n in [0, 1, 80] {
            assert_eq!(at_alice.send_rendezvous(n), at_bob.recv_rendezvous(n));
            assert_eq!(at_bob.send_rendezvous(n), at_alice.recv_rendezvous(n));
            assert_ne!(at_alice.send_rendezvous(n), at_alice.recv_rendezvous(n));
        }
        // A half kept across a restart completes the same way.
        let kept = KxHalf::import(alice_half.export().as_bytes()).unwrap();
        let again = complete_key_exchange(&alice, &kept, &bob_kx, false).unwrap();
        assert_eq!(again.confirmation(), at_alice.confirmation());
        // Roles swapped do not agree.
        let wrong = complete_key_exchange(&bob, &bob_half, &alice_kx, false).unwrap();
        assert_ne!(wrong.confirmation(), at_alice.confirmation());
    }

    #[test]
    fn a_bad_half_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let alice = KxKeyPair::generate(&mut rng);
        let bob = KxKeyPair::generate(&mut rng);
        let (bob_kx, _) = fill_key_exchange(&alice.public_key(), &mut rng).unwrap();
        let (_, alice_half) = fill_key_exchange(&bob.public_key(), &mut rng).unwrap();
        // Not for Alice's key.
        let (to_bob, _) = fill_key_exchange(&bob.public_key(), &mut rng).unwrap();
        assert_eq!(
            complete_key_exchange(&alice, &alice_half, &to_bob, false).err(),
            Some(KxError::Unsealed)
        );
        let mut bad = bob_kx.clone();
        bad.cipher[3] ^= 1;
        assert_eq!(
            complete_key_exchange(&alice, &alice_half, &bad, false).err(),
            Some(KxError::Unsealed)
        );
        let mut bad = bob_kx.clone();
        bad.public.truncate(10);
        assert_eq!(
            complete_key_exchange(&alice, &alice_half, &bad, false).err(),
            Some(KxError::Malformed)
        );
        // A sealed low-order point (all zeros) gives a known agreement.
        let (cipher, k) = sntrup761::EncapsulationKey::from(alice.public_key()).encapsulate_deterministic([9; 32]);
        let nonce = [1u8; NONCE_BYTES];
        let sealed = XSalsa20Poly1305::new(Key::from_slice(k.as_ref()))
            .encrypt(Nonce::from_slice(&nonce), [0u8; 32].as_slice())
            .unwrap();
        let low = KeyExchange {
            public: [&nonce[..], &sealed].concat(),
            cipher: <[u8; KEM_CIPHERTEXT_BYTES]>::try_from(cipher.as_ref()).unwrap(),
        };
        assert_eq!(
            complete_key_exchange(&alice, &alice_half, &low, false).err(),
            Some(KxError::BadKey)
        );
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
