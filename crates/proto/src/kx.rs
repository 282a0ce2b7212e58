//! BisonRelay's out-of-band key exchange messages (issue #19), as Strata
//! carries them: the invite, the half and full KX, their JSON and the
//! `RMO` framing around them. Sealing, signing and the rendezvous points
//! are `strata_cascade::kx`; this module is the wire format and its caps.
//!
//! # Wire format (normative)
//!
//! JSON as BisonRelay's Go encodes it: fixed-size keys, identities,
//! rendezvous points, ciphertexts and signatures are lowercase hex;
//! variable byte strings are standard base64. An `RMO` is
//!
//! ```text
//! zlib( JSON(RmoHeader) "\n" JSON(payload) "\n" )
//! ```
//!
//! with `RmoHeader = {"version":1,"timestamp":<unix s>,"command":<c>}` and
//! the payload of command `oobpublicidentityinvite` ([`Invite`]), `ohalfkx`
//! ([`HalfKx`]) or `ofullkx` ([`FullKx`]). A decompressed `RMO` over
//! [`MAX_RMO_BYTES`] is refused before it is parsed.
//!
//! # Deviations from BisonRelay, on purpose
//!
//! - The KEM is **sntrup761** (public key [`KEM_PUBLIC_KEY_BYTES`] = 1158 B,
//!   ciphertext [`KEM_CIPHERTEXT_BYTES`] = 1039 B, shared key 32 B), the
//!   successor parameter set of BisonRelay's sntrup4591761 (1218 B, 1047 B),
//!   which has no maintained implementation.
//! - `sigKey` is the account's Signal identity key (33 B, the Strata peer
//!   id) and `signature` its XEdDSA signature (64 B) over `digest`, not an
//!   Ed25519 key: the identity an invite carries is the account key the
//!   Strata handshake then pins.
//! - The invite is signed as a whole (`inviteSignature`, over
//!   [`Invite::signed_bytes`]) and carries an expiry (`expires`, Unix
//!   seconds), so its rendezvous points and lifetime cannot be altered on
//!   the way. BisonRelay's invite has neither.
//! - The invite and the half KX name the sender's Strata installation
//!   (`installation`, 16 bytes hex): the address the Strata handshake runs
//!   to once the KX completes. The half KX is signed too
//!   (`halfSignature`, over [`HalfKx::signed_bytes`], which also covers the
//!   invite's initial rendezvous point it answers), so no one who saw the
//!   invite can answer it with another's identity and their own
//!   installation or rendezvous points.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::io::{Read as _, Write as _};

/// Bytes of an sntrup761 public key.
pub const KEM_PUBLIC_KEY_BYTES: usize = 1158;
/// Bytes of an sntrup761 ciphertext.
pub const KEM_CIPHERTEXT_BYTES: usize = 1039;
/// Bytes of a Signal identity key (`sigKey`).
pub const SIG_KEY_BYTES: usize = 33;
/// Bytes of an XEdDSA signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Bytes of a rendezvous point, an identity and a digest.
pub const ID_BYTES: usize = 32;
/// Bytes of a Strata installation id.
pub const INSTALLATION_BYTES: usize = 16;
/// Most bytes of a `name` or `nick`.
pub const MAX_NAME_BYTES: usize = 64;
/// Most bytes of a [`KeyExchange::public`]: a sealed X25519 public key
/// (24 B nonce, 32 B key, 16 B tag).
pub const MAX_KX_PUBLIC_BYTES: usize = 72;
/// Most bytes of a decompressed `RMO` (header and payload).
pub const MAX_RMO_BYTES: usize = 16 * 1024;
/// The `RmoHeader` version.
pub const RMO_VERSION: u32 = 1;
/// The command of an [`Invite`].
pub const INVITE_COMMAND: &str = "oobpublicidentityinvite";
/// The command of a [`HalfKx`].
pub const HALF_KX_COMMAND: &str = "ohalfkx";
/// The command of a [`FullKx`].
pub const FULL_KX_COMMAND: &str = "ofullkx";
/// The domain of an invite's signature.
const INVITE_DOMAIN: &[u8] = b"strata/v1/kx/invite\0";
/// The domain of a half KX's signature.
const HALF_KX_DOMAIN: &[u8] = b"strata/v1/kx/half\0";

/// A public identity (BisonRelay `zkidentity.PublicIdentity`): who, with the
/// KEM key others seal to, bound together by the account key's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIdentity {
    /// A display name, at most [`MAX_NAME_BYTES`].
    #[serde(deserialize_with = "name")]
    pub name: String,
    /// A short name, at most [`MAX_NAME_BYTES`].
    #[serde(default, deserialize_with = "name")]
    pub nick: String,
    /// The account's Signal identity key.
    #[serde(rename = "sigKey", with = "hex_array")]
    pub sig_key: [u8; SIG_KEY_BYTES],
    /// The sntrup761 public key.
    #[serde(with = "hex_array")]
    pub key: [u8; KEM_PUBLIC_KEY_BYTES],
    /// SHA-256 of `key`.
    #[serde(with = "hex_array")]
    pub identity: [u8; ID_BYTES],
    /// SHA-256 of `sigKey ‖ key ‖ identity`.
    #[serde(with = "hex_array")]
    pub digest: [u8; ID_BYTES],
    /// The account key's XEdDSA signature over `digest`.
    #[serde(with = "hex_array")]
    pub signature: [u8; SIGNATURE_BYTES],
}

/// `oobpublicidentityinvite`: handed over out of band (or sealed to the
/// peer's reset rendezvous point for a reset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// The inviter.
    pub public: PublicIdentity,
    /// Where the inviter waits for the half KX.
    #[serde(rename = "initialrendezvous", with = "hex_array")]
    pub initial_rendezvous: [u8; ID_BYTES],
    /// Where the inviter waits for a reset.
    #[serde(rename = "resetrendezvous", with = "hex_array")]
    pub reset_rendezvous: [u8; ID_BYTES],
    /// Unix seconds after which the invite is refused (Strata).
    pub expires: u64,
    /// The inviter's installation (Strata).
    #[serde(with = "hex_array")]
    pub installation: [u8; INSTALLATION_BYTES],
    /// The account key's XEdDSA signature over [`Invite::signed_bytes`]
    /// (Strata).
    #[serde(rename = "inviteSignature", with = "hex_array")]
    pub signature: [u8; SIGNATURE_BYTES],
}

impl Invite {
    /// What the invite's signature covers: a domain, the identity's
    /// digest, the installation, both rendezvous points and the expiry.
    pub fn signed_bytes(&self) -> Vec<u8> {
        [
            INVITE_DOMAIN,
            &self.public.digest,
            &self.installation,
            &self.initial_rendezvous,
            &self.reset_rendezvous,
            &self.expires.to_be_bytes(),
        ]
        .concat()
    }
}

/// BisonRelay `ratchet.KeyExchange`: one side's half of the exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyExchange {
    /// A public key sealed with the KEM's shared key (secretbox, nonce
    /// first), at most [`MAX_KX_PUBLIC_BYTES`].
    #[serde(with = "b64_capped")]
    pub public: Vec<u8>,
    /// The sntrup761 ciphertext to the other side's key.
    #[serde(with = "hex_array")]
    pub cipher: [u8; KEM_CIPHERTEXT_BYTES],
}

/// `ohalfkx`: the invitee's answer, sent to the invite's initial
/// rendezvous point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HalfKx {
    /// The invitee.
    pub public: PublicIdentity,
    /// The invitee's half.
    #[serde(rename = "halfkx")]
    pub half_kx: KeyExchange,
    /// Where the invitee waits for the full KX.
    #[serde(rename = "initialrendezvous", with = "hex_array")]
    pub initial_rendezvous: [u8; ID_BYTES],
    /// Where the invitee waits for a reset.
    #[serde(rename = "resetrendezvous", with = "hex_array")]
    pub reset_rendezvous: [u8; ID_BYTES],
    /// The invitee's installation (Strata).
    #[serde(with = "hex_array")]
    pub installation: [u8; INSTALLATION_BYTES],
    /// The invitee's account key's XEdDSA signature over
    /// [`HalfKx::signed_bytes`] (Strata).
    #[serde(rename = "halfSignature", with = "hex_array")]
    pub signature: [u8; SIGNATURE_BYTES],
}

impl HalfKx {
    /// What the half KX's signature covers: a domain, the invitee's digest,
    /// its installation, its rendezvous points and the initial rendezvous
    /// point of the invite it answers (`invite`).
    pub fn signed_bytes(&self, invite: &[u8; ID_BYTES]) -> Vec<u8> {
        [
            HALF_KX_DOMAIN,
            &self.public.digest,
            &self.installation,
            &self.initial_rendezvous,
            &self.reset_rendezvous,
            invite,
        ]
        .concat()
    }
}

/// `ofullkx`: the inviter's answer, sent to the half KX's rendezvous point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullKx {
    /// The inviter's half.
    #[serde(rename = "fullkx")]
    pub full_kx: KeyExchange,
}

/// An `RMO`'s header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmoHeader {
    /// [`RMO_VERSION`].
    pub version: u32,
    /// The sender's clock, Unix seconds; informative.
    pub timestamp: u64,
    /// What the payload is.
    pub command: String,
}

/// A decoded `RMO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rmo {
    /// `oobpublicidentityinvite`.
    Invite(Box<Invite>),
    /// `ohalfkx`.
    HalfKx(Box<HalfKx>),
    /// `ofullkx`.
    FullKx(Box<FullKx>),
}

impl Rmo {
    fn command(&self) -> &'static str {
        match self {
            Self::Invite(_) => INVITE_COMMAND,
            Self::HalfKx(_) => HALF_KX_COMMAND,
            Self::FullKx(_) => FULL_KX_COMMAND,
        }
    }

    /// The `RMO` bytes: zlib of the header and the payload, each JSON and
    /// a newline.
    pub fn compose(&self, timestamp: u64) -> Vec<u8> {
        let header = RmoHeader {
            version: RMO_VERSION,
            timestamp,
            command: self.command().to_owned(),
        };
        // Strings, numbers and fixed-size fields: serialization cannot fail.
        let mut plain = serde_json::to_vec(&header).unwrap_or_default();
        plain.push(b'\n');
        let payload = match self {
            Self::Invite(p) => serde_json::to_vec(p),
            Self::HalfKx(p) => serde_json::to_vec(p),
            Self::FullKx(p) => serde_json::to_vec(p),
        };
        plain.extend(payload.unwrap_or_default());
        plain.push(b'\n');
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing to a Vec cannot fail.
        let _ = z.write_all(&plain);
        z.finish().unwrap_or_default()
    }

    /// Parses `RMO` bytes: at most [`MAX_RMO_BYTES`] once inflated, version
    /// [`RMO_VERSION`], a known command, a payload within its caps.
    pub fn decompose(bytes: &[u8]) -> Result<(RmoHeader, Self), KxFormatError> {
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(bytes)
            .take(MAX_RMO_BYTES as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|_| KxFormatError::Compression)?;
        if plain.len() > MAX_RMO_BYTES {
            return Err(KxFormatError::TooLarge);
        }
        let split = plain
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(KxFormatError::Json("no header line".into()))?;
        let (head, payload) = plain.split_at(split);
        let header: RmoHeader = serde_json::from_slice(head).map_err(json)?;
        if header.version != RMO_VERSION {
            return Err(KxFormatError::Version(header.version));
        }
        let rmo = match header.command.as_str() {
            INVITE_COMMAND => Self::Invite(serde_json::from_slice(payload).map_err(json)?),
            HALF_KX_COMMAND => Self::HalfKx(serde_json::from_slice(payload).map_err(json)?),
            FULL_KX_COMMAND => Self::FullKx(serde_json::from_slice(payload).map_err(json)?),
            _ => return Err(KxFormatError::UnknownCommand),
        };
        Ok((header, rmo))
    }
}

/// Why KX bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KxFormatError {
    /// Not zlib, or cut short.
    #[error("not a zlib stream")]
    Compression,
    /// Over [`MAX_RMO_BYTES`] once inflated.
    #[error("over 16 KiB once inflated")]
    TooLarge,
    /// A header or payload that is not the JSON expected, or a field
    /// over its cap.
    #[error("malformed: {0}")]
    Json(String),
    /// Another `RmoHeader` version.
    #[error("RMO version {0}")]
    Version(u32),
    /// A command this side does not take.
    #[error("unknown command")]
    UnknownCommand,
}

fn json(e: serde_json::Error) -> KxFormatError {
    KxFormatError::Json(e.to_string())
}

fn name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() > MAX_NAME_BYTES {
        return Err(D::Error::custom("a name over 64 bytes"));
    }
    Ok(s)
}

/// A fixed-size byte array as lowercase hex.
mod hex_array {
    use super::*;

    pub(super) fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() != N * 2 {
            return Err(D::Error::custom(format!("expected {N} bytes of hex")));
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

/// Base64 bytes, at most [`MAX_KX_PUBLIC_BYTES`].
mod b64_capped {
    use super::*;

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > MAX_KX_PUBLIC_BYTES.div_ceil(3) * 4 {
            return Err(D::Error::custom("a sealed public key over 72 bytes"));
        }
        STANDARD.decode(s.as_bytes()).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn identity() -> PublicIdentity {
        PublicIdentity {
            name: "alice".into(),
            nick: "al".into(),
            sig_key: [5; SIG_KEY_BYTES],
            key: [7; KEM_PUBLIC_KEY_BYTES],
            identity: [1; ID_BYTES],
            digest: [2; ID_BYTES],
            signature: [3; SIGNATURE_BYTES],
        }
    }

    fn invite() -> Invite {
        Invite {
            public: identity(),
            initial_rendezvous: [0xaa; ID_BYTES],
            reset_rendezvous: [0xbb; ID_BYTES],
            expires: 1_800_000_000,
            installation: [0x11; INSTALLATION_BYTES],
            signature: [4; SIGNATURE_BYTES],
        }
    }

    fn kx() -> KeyExchange {
        KeyExchange {
            public: vec![9; MAX_KX_PUBLIC_BYTES],
            cipher: [8; KEM_CIPHERTEXT_BYTES],
        }
    }

    #[test]
    fn every_rmo_goes_through_zlib_and_back() {
        let all = [
            Rmo::Invite(Box::new(invite())),
            Rmo::HalfKx(Box::new(HalfKx {
                public: identity(),
                half_kx: kx(),
                initial_rendezvous: [0xcc; ID_BYTES],
                reset_rendezvous: [0xdd; ID_BYTES],
                installation: [0x22; INSTALLATION_BYTES],
                signature: [6; SIGNATURE_BYTES],
            })),
            Rmo::FullKx(Box::new(FullKx { full_kx: kx() })),
        ];
        for rmo in all {
            let bytes = rmo.compose(1_700_000_000);
            let (header, back) = Rmo::decompose(&bytes).unwrap();
            assert_eq!(back, rmo);
            assert_eq!(header.version, RMO_VERSION);
            assert_eq!(header.command, rmo.command());
        }
    }

    /// BisonRelay's JSON: hex for fixed sizes, its field names, the header
    /// line first.
    #[test]
    fn the_json_is_bisonrelays_shape() {
        let bytes = Rmo::Invite(Box::new(invite())).compose(7);
        let mut plain = String::new();
        flate2::read::ZlibDecoder::new(&bytes[..])
            .read_to_string(&mut plain)
            .unwrap();
        let mut lines = plain.split('\n');
        assert_eq!(
            lines.next().unwrap(),
            r#"{"version":1,"timestamp":7,"command":"oobpublicidentityinvite"}"#
        );
        let payload: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(payload["initialrendezvous"], "aa".repeat(32));
        assert_eq!(payload["public"]["sigKey"], "05".repeat(33));
        assert_eq!(
            payload["public"]["key"].as_str().unwrap().len(),
            2 * KEM_PUBLIC_KEY_BYTES
        );
        assert_eq!(payload["expires"], 1_800_000_000);
        assert_eq!(lines.next(), Some(""));
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn bad_rmos_are_refused_with_their_reason() {
        let z = |plain: &[u8]| {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(Rmo::decompose(b"not zlib"), Err(KxFormatError::Compression));
        // A zip bomb stops at the cap.
        let bomb = z(&vec![b' '; 10 * MAX_RMO_BYTES]);
        assert!(bomb.len() < 1024);
        assert_eq!(Rmo::decompose(&bomb), Err(KxFormatError::TooLarge));
        assert_eq!(
            Rmo::decompose(&z(b"{\"version\":2,\"timestamp\":1,\"command\":\"ofullkx\"}\n{}\n")),
            Err(KxFormatError::Version(2))
        );
        assert_eq!(
            Rmo::decompose(&z(
                b"{\"version\":1,\"timestamp\":1,\"command\":\"mediateidentity\"}\n{}\n"
            )),
            Err(KxFormatError::UnknownCommand)
        );
        assert!(matches!(
            Rmo::decompose(&z(b"{\"version\":1,\"timestamp\":1,\"command\":\"ofullkx\"}")),
            Err(KxFormatError::Json(_))
        ));
        // A field of the wrong size, and a name over its cap.
        let mut short = serde_json::to_value(FullKx { full_kx: kx() }).unwrap();
        short["fullkx"]["cipher"] = serde_json::json!("00");
        let plain = format!("{{\"version\":1,\"timestamp\":1,\"command\":\"ofullkx\"}}\n{short}\n");
        assert!(matches!(
            Rmo::decompose(&z(plain.as_bytes())),
            Err(KxFormatError::Json(_))
        ));
        let mut long = serde_json::to_value(invite()).unwrap();
        long["public"]["name"] = serde_json::json!("n".repeat(65));
        let plain = format!("{{\"version\":1,\"timestamp\":1,\"command\":\"{INVITE_COMMAND}\"}}\n{long}\n");
        assert!(matches!(
            Rmo::decompose(&z(plain.as_bytes())),
            Err(KxFormatError::Json(_))
        ));
    }

    #[test]
    fn an_invites_signature_covers_its_rendezvous_points_and_expiry() {
        let a = invite();
        let mut b = invite();
        b.reset_rendezvous[0] ^= 1;
        let mut c = invite();
        c.expires += 1;
        let mut d = invite();
        d.installation[0] ^= 1;
        assert_ne!(a.signed_bytes(), b.signed_bytes());
        assert_ne!(a.signed_bytes(), c.signed_bytes());
        assert_ne!(a.signed_bytes(), d.signed_bytes());
        assert!(a.signed_bytes().starts_with(INVITE_DOMAIN));
    }
}
