//! Long-term identity: the account's Signal identity key, and per
//! installation an installation id, a Signal registration id and an MLS
//! signature key bound to the identity key by signature.
//!
//! # Key bindings (normative)
//!
//! Every other long-term public key is bound to the account's identity key
//! with an XEdDSA signature by the identity key (libsignal's
//! `PrivateKey::calculate_signature_for_multipart_message`) over a
//! domain-separated, length-unambiguous message:
//!
//! | binding | signed message |
//! |---|---|
//! | MLS signature key | `"strata/v1/binding/mls-signature-key"` ‖ `0x00` ‖ installation id (16) ‖ `u16` ciphersuite ‖ `u32` len ‖ key |
//! | ML-KEM-768 key | `"strata/v1/binding/ml-kem-768-key"` ‖ `0x00` ‖ installation id (16) ‖ `u32` key id ‖ encapsulation key (1184) |
//!
//! A receiver verifies the signature against the identity key it pinned
//! (TOFU or safety number) *before* using the bound key.

use std::fmt;
use std::str::FromStr;

use libsignal_protocol_syft::{IdentityKey, IdentityKeyPair};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{BasicCredential, Ciphersuite, CredentialWithKey, SignatureScheme};
use openmls_basic_credential::SignatureKeyPair;
use rand::{CryptoRng, Rng};

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::secret::SecretBytes;

/// The MLS ciphersuite of the profile: 0x0001,
/// `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`.
pub const MLS_CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

const MLS_BINDING_LABEL: &[u8] = b"strata/v1/binding/mls-signature-key";
const KEM_BINDING_LABEL: &[u8] = b"strata/v1/binding/ml-kem-768-key";
/// Version byte of the MLS credential identity encoding.
const CREDENTIAL_VERSION: u8 = 1;

/// The account's long-term Signal identity key pair. Shared by the paired
/// installations of one account.
#[derive(Clone)]
pub struct AccountIdentity {
    key_pair: IdentityKeyPair,
}

impl AccountIdentity {
    /// A fresh identity.
    pub fn generate<R: Rng + CryptoRng>(rng: &mut R) -> Self {
        Self {
            key_pair: IdentityKeyPair::generate(rng),
        }
    }

    /// The public identity key.
    pub fn identity_key(&self) -> &IdentityKey {
        self.key_pair.identity_key()
    }

    pub(crate) fn key_pair(&self) -> &IdentityKeyPair {
        &self.key_pair
    }

    /// Signs `parts` (concatenated) with the identity key.
    pub(crate) fn sign<R: Rng + CryptoRng>(&self, parts: &[&[u8]], rng: &mut R) -> Result<Vec<u8>> {
        self.key_pair
            .private_key()
            .calculate_signature_for_multipart_message(parts, rng)
            .map(|s| s.into_vec())
            .map_err(|e| CascadeError::internal("identity", e))
    }

    /// The secret key pair, to persist.
    pub fn export(&self) -> SecretBytes {
        SecretBytes::new(self.key_pair.serialize().into_vec())
    }

    /// Reads back what [`AccountIdentity::export`] wrote.
    pub fn import(bytes: &[u8]) -> Result<Self> {
        let key_pair = IdentityKeyPair::try_from(bytes).map_err(|_| CascadeError::CorruptState("account identity"))?;
        Ok(Self { key_pair })
    }
}

impl fmt::Debug for AccountIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountIdentity")
            .field("identity_key", &hex(&self.identity_key().serialize()))
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// Verifies an XEdDSA signature by `identity` over `parts`.
pub(crate) fn verify_signed(identity: &IdentityKey, parts: &[&[u8]], signature: &[u8]) -> bool {
    identity
        .public_key()
        .verify_signature_for_multipart_message(parts, signature)
}

/// One installation (device) of an account: 16 random bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstallationId([u8; 16]);

impl InstallationId {
    /// A fresh random id.
    pub fn generate<R: Rng + CryptoRng>(rng: &mut R) -> Self {
        Self(rng.random())
    }

    /// Wraps known bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lowercase hex, 32 digits: the id's form in PDUs, URIs and store
    /// keys. [`FromStr`] reads it back.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstallationId({self})")
    }
}

/// Lowercase hex, as [`InstallationId::to_hex`].
impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Parses the hex form: exactly 32 hex digits, lower- or uppercase.
impl FromStr for InstallationId {
    type Err = ParseInstallationIdError;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return Err(ParseInstallationIdError::Length(digits.len()));
        }
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
                .ok_or(ParseInstallationIdError::NotHex)
        };
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            for &c in pair {
                *byte = *byte << 4 | digit(c)?;
            }
        }
        Ok(Self(bytes))
    }
}

/// Why a string is not an [`InstallationId`]: one is exactly 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseInstallationIdError {
    /// The string is not 32 bytes long (it is this many).
    #[error("an installation id is 32 hex digits, not {0} bytes")]
    Length(usize),
    /// A character is not a hex digit.
    #[error("an installation id is 32 hex digits")]
    NotHex,
}

/// The public, pinned identity of a remote installation: what a session is
/// keyed by, and what every received binding is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The remote account's identity key (pinned by TOFU or safety number).
    pub identity_key: IdentityKey,
    /// The remote installation.
    pub installation_id: InstallationId,
}

/// This installation's keys: the account identity, an installation id, a
/// Signal registration id, and an MLS signature key bound to the identity.
pub struct InstallationIdentity {
    account: AccountIdentity,
    installation_id: InstallationId,
    registration_id: u32,
    mls_signer: SignatureKeyPair,
    mls_binding: Vec<u8>,
}

impl InstallationIdentity {
    /// New installation keys for `account`. The MLS signature key comes from
    /// the MLS provider's CSPRNG; the rest from `rng`.
    pub fn generate<R: Rng + CryptoRng>(account: AccountIdentity, rng: &mut R) -> Result<Self> {
        let installation_id = InstallationId::generate(rng);
        Self::generate_with_id(account, installation_id, rng)
    }

    /// New installation keys for `account` under an installation id chosen
    /// before (a new device picks its id first: it is its address while it
    /// pairs, before it holds the account key).
    pub fn generate_with_id<R: Rng + CryptoRng>(
        account: AccountIdentity,
        installation_id: InstallationId,
        rng: &mut R,
    ) -> Result<Self> {
        // Signal registration ids are 14-bit and non-zero.
        let registration_id = rng.random_range(1..=0x3ffc);
        let mls_signer = SignatureKeyPair::new(SignatureScheme::ED25519)
            .map_err(|e| CascadeError::internal("identity", format!("{e:?}")))?;
        let mls_binding = account.sign(
            &mls_binding_parts(&installation_id, &mut [0; 6], mls_signer.public()),
            rng,
        )?;
        Ok(Self {
            account,
            installation_id,
            registration_id,
            mls_signer,
            mls_binding,
        })
    }

    /// The account identity.
    pub fn account(&self) -> &AccountIdentity {
        &self.account
    }

    /// This installation's id.
    pub fn installation_id(&self) -> InstallationId {
        self.installation_id
    }

    /// The Signal registration id.
    pub fn registration_id(&self) -> u32 {
        self.registration_id
    }

    /// What peers pin for this installation.
    pub fn peer_identity(&self) -> PeerIdentity {
        PeerIdentity {
            identity_key: *self.account.identity_key(),
            installation_id: self.installation_id,
        }
    }

    pub(crate) fn mls_signer(&self) -> &SignatureKeyPair {
        &self.mls_signer
    }

    /// The MLS credential: a `BasicCredential` whose identity is the binding
    /// encoding (see [`MlsBinding`]), and the MLS signature key.
    pub(crate) fn mls_credential(&self) -> CredentialWithKey {
        let binding = MlsBinding {
            identity_key: *self.account.identity_key(),
            installation_id: self.installation_id,
            signature: self.mls_binding.clone(),
        };
        CredentialWithKey {
            credential: BasicCredential::new(binding.encode()).into(),
            signature_key: self.mls_signer.public().into(),
        }
    }

    /// Signs an ML-KEM-768 encapsulation key for this installation.
    pub(crate) fn sign_kem_key<R: Rng + CryptoRng>(
        &self,
        key_id: u32,
        encapsulation_key: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>> {
        let id = key_id.to_be_bytes();
        self.account
            .sign(&kem_binding_parts(&self.installation_id, &id, encapsulation_key), rng)
    }

    /// The secret keys, to persist.
    pub fn export(&self) -> Result<SecretBytes> {
        let mut w = Writer::new(b"strata-installation-v1");
        w.bytes(self.account.export().as_bytes())
            .raw(&self.installation_id.0)
            .u32(self.registration_id)
            .bytes(encode_signer(&self.mls_signer)?.as_bytes())
            .bytes(&self.mls_binding);
        Ok(w.finish())
    }

    /// Reads back what [`InstallationIdentity::export`] wrote.
    pub fn import(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, b"strata-installation-v1", "installation identity")?;
        let account = AccountIdentity::import(r.bytes(1024)?)?;
        let installation_id = InstallationId(r.array()?);
        let registration_id = r.u32()?;
        let mls_signer = decode_signer(r.bytes(1024)?)?;
        let mls_binding = r.bytes(128)?.to_vec();
        r.finish()?;
        Ok(Self {
            account,
            installation_id,
            registration_id,
            mls_signer,
            mls_binding,
        })
    }
}

impl fmt::Debug for InstallationIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationIdentity")
            .field("account", &self.account)
            .field("installation_id", &self.installation_id)
            .field("registration_id", &self.registration_id)
            .field("mls_signature_key", &hex(self.mls_signer.public()))
            .field("mls_private_key", &"[redacted]")
            .finish()
    }
}

/// The MLS signer's TLS encoding (private key, public key, scheme): the
/// only way openmls_basic_credential exposes the private key outside tests.
pub(crate) fn encode_signer(s: &SignatureKeyPair) -> Result<SecretBytes> {
    s.tls_serialize_detached()
        .map(SecretBytes::new)
        .map_err(|e| CascadeError::internal("MLS", format!("{e:?}")))
}

/// Reads back what [`encode_signer`] wrote.
pub(crate) fn decode_signer(bytes: &[u8]) -> Result<SignatureKeyPair> {
    SignatureKeyPair::tls_deserialize_exact(bytes).map_err(|_| CascadeError::CorruptState("MLS signature key"))
}

fn mls_binding_parts<'a>(
    installation_id: &'a InstallationId,
    scratch: &'a mut [u8; 6],
    mls_key: &'a [u8],
) -> [&'a [u8]; 5] {
    let (suite, len) = scratch.split_at_mut(2);
    suite.copy_from_slice(&u16::from(MLS_CIPHERSUITE).to_be_bytes());
    len.copy_from_slice(&u32::try_from(mls_key.len()).unwrap_or(u32::MAX).to_be_bytes());
    [MLS_BINDING_LABEL, &[0u8], &installation_id.0, scratch, mls_key]
}

fn kem_binding_parts<'a>(
    installation_id: &'a InstallationId,
    key_id: &'a [u8; 4],
    encapsulation_key: &'a [u8],
) -> [&'a [u8]; 5] {
    [KEM_BINDING_LABEL, &[0u8], &installation_id.0, key_id, encapsulation_key]
}

/// Verifies that `signature` binds the ML-KEM key to `peer`.
pub(crate) fn verify_kem_binding(peer: &PeerIdentity, key_id: u32, encapsulation_key: &[u8], signature: &[u8]) -> bool {
    let id = key_id.to_be_bytes();
    verify_signed(
        &peer.identity_key,
        &kem_binding_parts(&peer.installation_id, &id, encapsulation_key),
        signature,
    )
}

/// The identity carried in an MLS `BasicCredential`: the account identity
/// key, the installation id and the identity key's signature over the MLS
/// signature key. Encoding: `0x01` ‖ identity key (33) ‖ installation id (16)
/// ‖ signature (64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlsBinding {
    /// The account identity key.
    pub identity_key: IdentityKey,
    /// The installation that owns the MLS leaf.
    pub installation_id: InstallationId,
    signature: Vec<u8>,
}

impl MlsBinding {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(&[CREDENTIAL_VERSION]);
        w.raw(&self.identity_key.serialize())
            .raw(&self.installation_id.0)
            .raw(&self.signature);
        w.finish_public()
    }

    /// Parses a credential identity and verifies its signature over
    /// `mls_signature_key`. Returns the verified binding.
    pub(crate) fn verify(credential_identity: &[u8], mls_signature_key: &[u8]) -> Result<Self> {
        let binding = Self::parse(credential_identity)?;
        let ok = verify_signed(
            &binding.identity_key,
            &mls_binding_parts(&binding.installation_id, &mut [0; 6], mls_signature_key),
            &binding.signature,
        );
        if !ok {
            return Err(CascadeError::BadBinding(
                "MLS signature key not signed by the identity key",
            ));
        }
        Ok(binding)
    }

    /// Parses a credential identity *without* checking its signature: only
    /// for a credential checked with [`MlsBinding::verify`] when its leaf
    /// entered the group (a group's member list is read often; a signature
    /// check per member per message would dominate).
    pub(crate) fn parse(credential_identity: &[u8]) -> Result<Self> {
        let bad = CascadeError::BadBinding("MLS credential");
        let rest = credential_identity.strip_prefix(&[CREDENTIAL_VERSION]).ok_or(bad)?;
        if rest.len() != 33 + 16 + 64 {
            return Err(CascadeError::BadBinding("MLS credential length"));
        }
        let (key, rest) = rest.split_at(33);
        let (inst, signature) = rest.split_at(16);
        let identity_key =
            IdentityKey::decode(key).map_err(|_| CascadeError::BadBinding("MLS credential identity key"))?;
        let installation_id = InstallationId(
            inst.try_into()
                .map_err(|_| CascadeError::BadBinding("installation id"))?,
        );
        Ok(Self {
            identity_key,
            installation_id,
            signature: signature.to_vec(),
        })
    }
}

/// Lowercase hex of public bytes, for `Debug` output.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_ids_round_trip_through_hex() {
        let id = InstallationId::from_bytes([
            0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff, 9, 10, 11, 12, 13, 14, 15, 16,
        ]);
        let text = id.to_hex();
        assert_eq!(text, "00017f80abcdefff090a0b0c0d0e0f10");
        assert_eq!(id.to_string(), text);
        assert_eq!(text.parse::<InstallationId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<InstallationId>(), Ok(id));
        let random = InstallationId::generate(&mut rand::rng());
        assert_eq!(random.to_hex().parse::<InstallationId>(), Ok(random));
    }

    #[test]
    fn installation_ids_of_the_wrong_length_are_refused() {
        for text in ["", "00", &"0".repeat(31), &"0".repeat(33), &"0".repeat(64)] {
            assert_eq!(
                text.parse::<InstallationId>(),
                Err(ParseInstallationIdError::Length(text.len())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn installation_ids_with_other_characters_are_refused() {
        let good = "00112233445566778899aabbccddeeff";
        for bad in [
            good.replace('f', "g"),
            good.replacen('0', " ", 1),
            format!("+{}", &good[1..]),
            format!("0x{}", &good[2..]),
            format!("{}é", &good[..30]),
        ] {
            assert_eq!(
                bad.parse::<InstallationId>(),
                Err(ParseInstallationIdError::NotHex),
                "{bad:?}"
            );
        }
        assert_eq!(
            ParseInstallationIdError::NotHex.to_string(),
            "an installation id is 32 hex digits"
        );
    }
}
