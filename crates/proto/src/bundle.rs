//! Signed bundles: what an installation broadcasts so that others can start
//! a session with it without asking first (Waku 53/WAKU2-X3DH and
//! 54/WAKU2-X3DH-SESSIONS in spirit, our format).
//!
//! A bundle travels as the payload of a `WakuMessage` on the content topic
//! derived from its identity key (`strata_transport_libp2p::topic::bundle_topic`).
//! This module is the wire format, its caps and the freshness rule; signing
//! and checking the signature and the keys inside is `strata_cascade::bundle`
//! (the only crate that touches keys).
//!
//! # Wire format (normative)
//!
//! Protobuf (proto3), frozen by golden bytes in the tests:
//!
//! ```protobuf
//! message SignedBundle {
//!   bytes bundle = 1;     // an encoded Bundle, exactly the bytes signed
//!   bytes signature = 2;  // XEdDSA (64 B) by the identity key
//! }
//! message Bundle {
//!   uint32 format = 1;                      // 1
//!   bytes identity_key = 2;                 // the account's Signal identity key, 33 B
//!   bytes installation_id = 3;              // the publishing installation, 16 B
//!   uint64 version = 4;                     // bumped on every change of key material or pairing
//!   uint64 timestamp_ms = 5;                // Unix ms at signing; fresh on every re-broadcast
//!   bytes signal_pre_keys = 6;              // SignalBundle::to_bytes: signed pre-key + Kyber pre-key
//!   bytes mls_key_package = 7;              // one MLS KeyPackage (MLSMessage) the receiver may claim
//!   bytes kem_key = 8;                      // SignedKemKey::to_bytes: the identity-signed ML-KEM-768 key
//!   repeated bytes paired_installations = 9; // other installations of the account, 16 B each
//! }
//! ```
//!
//! The signature covers `"strata/v1/bundle"` ‖ `0x00` ‖ the `bundle` bytes
//! as received ([`signed_message`]): the signer signs the bytes it encoded,
//! the verifier verifies the bytes it received, so no canonical re-encoding
//! is ever needed. Inside, the ML-KEM key carries its own binding signature
//! and the Signal pre-keys theirs (both by the same identity key), and the
//! KeyPackage's credential binds its MLS signature key to the identity key:
//! a receiver checks all of them (`strata_cascade::bundle::verify_bundle`).
//!
//! `paired_installations` lists the account's other devices, as its
//! signed device list names them ([`crate::devices`]); a pairing or a
//! removal changes it, and with it the bundle's version.
//!
//! # Which bundle wins (re-keying)
//!
//! Bundles are kept per (identity key, installation id). A received bundle
//! replaces the held one when its `(version, timestamp_ms)` is greater,
//! compared in that order: a higher version is a re-keying (new pre-keys,
//! new ML-KEM key, a device paired or removed; 54/X3DH-SESSIONS says the
//! old bundle then expires), the same version with a later timestamp is the
//! periodic re-broadcast. Anything else is [`BundleError::Stale`], so a
//! replayed old bundle can never roll keys back. A node that holds a
//! session with the installation expires it on a higher version, and its
//! next send opens a new session from the new bundle
//! (`strata_session::PeerMachine::expire`).
//!
//! Independently of what is held, a bundle signed more than
//! [`MAX_BUNDLE_AGE_MS`] ago is [`BundleError::Expired`] and one dated more
//! than [`MAX_CLOCK_SKEW_MS`] ahead is [`BundleError::FromTheFuture`] (a
//! bundle dated far ahead would otherwise block its own owner's next
//! refresh). See [`check_fresh`].
//!
//! # Caps
//!
//! A signed bundle over [`MAX_BUNDLE_BYTES`] is refused before parsing;
//! fields have fixed lengths or caps (see [`SignedBundle::decode_bounded`]).
//! A real bundle is about 4.5 KiB (Kyber1024 pre-key 1569 B, ML-KEM-768
//! key 1184 B, the KeyPackage and four signatures).

use prost::Message as _;

/// The largest signed bundle accepted, checked before parsing: four times
/// a real one, far below Waku's 150 KiB message cap.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024;

/// The current `Bundle.format`.
pub const BUNDLE_FORMAT: u32 = 1;

/// Most entries in `paired_installations` (Status caps installations at 3;
/// we allow more, bounded).
pub const MAX_PAIRED_INSTALLATIONS: usize = 16;

/// A bundle signed longer ago than this (7 days) is refused.
pub const MAX_BUNDLE_AGE_MS: u64 = 7 * 24 * 3600 * 1000;

/// A bundle dated further ahead than this (5 min) is refused.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Domain-separation label of the bundle signature.
pub const BUNDLE_SIGNATURE_LABEL: &[u8] = b"strata/v1/bundle";

/// Length of an identity key (a Curve25519 key with its type byte).
pub const IDENTITY_KEY_LEN: usize = 33;
/// Length of an installation id.
pub const INSTALLATION_ID_LEN: usize = 16;
/// Length of an XEdDSA signature.
pub const SIGNATURE_LEN: usize = 64;

/// The outer message: the signed bytes and their signature.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignedBundle {
    /// An encoded [`Bundle`], exactly the bytes the signature covers.
    #[prost(bytes = "vec", tag = "1")]
    pub bundle: Vec<u8>,
    /// XEdDSA signature by `Bundle.identity_key` over [`signed_message`].
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

/// The signed contents. Public keys and public data only.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The account's identity key (serialized libsignal `IdentityKey`).
    #[prost(bytes = "vec", tag = "2")]
    pub identity_key: Vec<u8>,
    /// The installation that published it.
    #[prost(bytes = "vec", tag = "3")]
    pub installation_id: Vec<u8>,
    /// Bumped whenever the key material or the pairing list changes.
    #[prost(uint64, tag = "4")]
    pub version: u64,
    /// Unix milliseconds at signing.
    #[prost(uint64, tag = "5")]
    pub timestamp_ms: u64,
    /// The Signal PQXDH pre-keys (`SignalBundle::to_bytes`).
    #[prost(bytes = "vec", tag = "6")]
    pub signal_pre_keys: Vec<u8>,
    /// One MLS KeyPackage (a serialized `MLSMessage`).
    #[prost(bytes = "vec", tag = "7")]
    pub mls_key_package: Vec<u8>,
    /// The identity-signed ML-KEM-768 key (`SignedKemKey::to_bytes`).
    #[prost(bytes = "vec", tag = "8")]
    pub kem_key: Vec<u8>,
    /// The account's other installations.
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub paired_installations: Vec<Vec<u8>>,
}

/// Who published a bundle and which one it is: what the freshness rule
/// compares. Taken from a bundle whose signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BundleHeader {
    /// The account's identity key.
    pub identity_key: Vec<u8>,
    /// The publishing installation.
    pub installation_id: [u8; INSTALLATION_ID_LEN],
    /// Its version.
    pub version: u64,
    /// When it was signed, Unix ms.
    pub timestamp_ms: u64,
}

impl BundleHeader {
    /// The header of a decoded bundle (fields already length-checked by
    /// [`SignedBundle::decode_bounded`]).
    pub fn of(bundle: &Bundle) -> Result<Self, BundleError> {
        let installation_id = bundle
            .installation_id
            .as_slice()
            .try_into()
            .map_err(|_| BundleError::InvalidField("installation_id"))?;
        Ok(Self {
            identity_key: bundle.identity_key.clone(),
            installation_id,
            version: bundle.version,
            timestamp_ms: bundle.timestamp_ms,
        })
    }
}

/// Why a received bundle was refused. Every variant is bad (or outdated)
/// peer input: the bundle is dropped and nothing held changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Over [`MAX_BUNDLE_BYTES`]; refused before parsing.
    #[error("bundle of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// Not a protobuf `SignedBundle` wrapping a `Bundle`.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// No signature at all.
    #[error("unsigned bundle")]
    Unsigned,
    /// A `format` this implementation does not know.
    #[error("unsupported bundle format {0}")]
    UnsupportedFormat(u32),
    /// A field is missing, has the wrong length or is over its cap.
    #[error("invalid bundle field {0}")]
    InvalidField(&'static str),
    /// The signature does not verify under the bundle's identity key.
    #[error("bundle signature does not verify")]
    BadSignature,
    /// A key inside is malformed or not bound to the bundle's identity and
    /// installation.
    #[error("bundle key rejected: {0}")]
    BadKey(&'static str),
    /// The bundle arrived on another identity's bundle topic.
    #[error("bundle published on another identity's topic")]
    WrongTopic,
    /// Not newer than the bundle held for the same installation.
    #[error(
        "stale bundle: version {version} at {timestamp_ms} ms, holding version {held_version} at {held_timestamp_ms} ms"
    )]
    Stale {
        /// The received bundle's version.
        version: u64,
        /// The received bundle's timestamp.
        timestamp_ms: u64,
        /// The held bundle's version.
        held_version: u64,
        /// The held bundle's timestamp.
        held_timestamp_ms: u64,
    },
    /// Signed more than [`MAX_BUNDLE_AGE_MS`] ago.
    #[error("bundle signed {age_ms} ms ago, too old")]
    Expired {
        /// How old it is.
        age_ms: u64,
    },
    /// Dated more than [`MAX_CLOCK_SKEW_MS`] ahead.
    #[error("bundle dated {ahead_ms} ms in the future")]
    FromTheFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
}

/// Per-field caps of [`Bundle`] (each far above the real size, all
/// together bounded by [`MAX_BUNDLE_BYTES`] anyway).
const MAX_SIGNAL_PRE_KEYS: usize = 4096;
const MAX_KEY_PACKAGE: usize = 8192;
const MAX_KEM_KEY: usize = 2048;

impl SignedBundle {
    /// Decodes a received signed bundle: size first, then both protobuf
    /// layers, then the shape of every field. The signature is *not*
    /// checked here (no crypto in this crate): use
    /// `strata_cascade::bundle::verify_bundle`, which calls this.
    pub fn decode_bounded(bytes: &[u8]) -> Result<(Self, Bundle), BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                len: bytes.len(),
                max: MAX_BUNDLE_BYTES,
            });
        }
        let signed = Self::decode(bytes).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if signed.signature.is_empty() {
            return Err(BundleError::Unsigned);
        }
        if signed.signature.len() != SIGNATURE_LEN {
            return Err(BundleError::InvalidField("signature"));
        }
        let bundle = Bundle::decode(signed.bundle.as_slice()).map_err(|e| BundleError::Malformed(e.to_string()))?;
        bundle.check_shape()?;
        Ok((signed, bundle))
    }

    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl Bundle {
    /// Checks every field's length and cap (not the keys themselves).
    pub fn check_shape(&self) -> Result<(), BundleError> {
        if self.format != BUNDLE_FORMAT {
            return Err(BundleError::UnsupportedFormat(self.format));
        }
        let field = |ok: bool, name: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(BundleError::InvalidField(name))
            }
        };
        field(self.identity_key.len() == IDENTITY_KEY_LEN, "identity_key")?;
        field(self.installation_id.len() == INSTALLATION_ID_LEN, "installation_id")?;
        field(self.timestamp_ms != 0, "timestamp_ms")?;
        field(
            (1..=MAX_SIGNAL_PRE_KEYS).contains(&self.signal_pre_keys.len()),
            "signal_pre_keys",
        )?;
        field(
            (1..=MAX_KEY_PACKAGE).contains(&self.mls_key_package.len()),
            "mls_key_package",
        )?;
        field((1..=MAX_KEM_KEY).contains(&self.kem_key.len()), "kem_key")?;
        field(
            self.paired_installations.len() <= MAX_PAIRED_INSTALLATIONS,
            "paired_installations",
        )?;
        field(
            self.paired_installations.iter().all(|i| i.len() == INSTALLATION_ID_LEN),
            "paired_installations",
        )
    }

    /// The protobuf encoding: what the signature covers.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// The message an identity key signs for `bundle_bytes` (an encoded
/// [`Bundle`]), as the parts of a multipart signature:
/// `"strata/v1/bundle"` ‖ `0x00` ‖ `bundle_bytes`.
pub fn signed_message(bundle_bytes: &[u8]) -> [&[u8]; 3] {
    [BUNDLE_SIGNATURE_LABEL, &[0u8], bundle_bytes]
}

/// What accepting a fresh bundle means for the one held before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Nothing was held for this installation.
    New,
    /// A higher version (a re-keying): it replaces the held bundle, and a
    /// session with the installation is re-keyed at the next send.
    Rekeyed {
        /// The version it replaces.
        previous_version: u64,
    },
    /// Same version, later timestamp: the periodic re-broadcast.
    Refreshed,
}

/// The freshness rule (see the module docs): whether `header` may replace
/// `held` (the bundle held for the same identity key and installation, if
/// any) at `now_ms`.
pub fn check_fresh(header: &BundleHeader, held: Option<&BundleHeader>, now_ms: u64) -> Result<Admission, BundleError> {
    let ahead_ms = header.timestamp_ms.saturating_sub(now_ms);
    if ahead_ms > MAX_CLOCK_SKEW_MS {
        return Err(BundleError::FromTheFuture { ahead_ms });
    }
    let age_ms = now_ms.saturating_sub(header.timestamp_ms);
    if age_ms > MAX_BUNDLE_AGE_MS {
        return Err(BundleError::Expired { age_ms });
    }
    let Some(held) = held else {
        return Ok(Admission::New);
    };
    if (header.version, header.timestamp_ms) <= (held.version, held.timestamp_ms) {
        return Err(BundleError::Stale {
            version: header.version,
            timestamp_ms: header.timestamp_ms,
            held_version: held.version,
            held_timestamp_ms: held.timestamp_ms,
        });
    }
    if header.version > held.version {
        Ok(Admission::Rekeyed {
            previous_version: held.version,
        })
    } else {
        Ok(Admission::Refreshed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn bundle() -> Bundle {
        Bundle {
            format: BUNDLE_FORMAT,
            identity_key: vec![5; 33],
            installation_id: vec![1; 16],
            version: 3,
            timestamp_ms: 1_795_323_512_627,
            signal_pre_keys: vec![0xaa; 2],
            mls_key_package: vec![0xbb; 2],
            kem_key: vec![0xcc; 2],
            paired_installations: vec![vec![2; 16]],
        }
    }

    fn signed() -> SignedBundle {
        SignedBundle {
            bundle: bundle().to_bytes(),
            signature: vec![7; 64],
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The encoding is a wire format: frozen here against bytes built
    /// independently (a hand-written protobuf encoder in Python).
    #[test]
    fn golden_bytes() {
        let expected = concat!(
            "0801",
            "1221050505050505050505050505050505050505050505050505050505050505050505",
            "1a1001010101010101010101010101010101",
            "2003",
            "28b38efb8ca034",
            "3202aaaa",
            "3a02bbbb",
            "4202cccc",
            "4a1002020202020202020202020202020202",
        );
        assert_eq!(hex(&bundle().to_bytes()), expected);
        let (outer, inner) = SignedBundle::decode_bounded(&signed().to_bytes()).unwrap();
        assert_eq!(outer, signed());
        assert_eq!(inner, bundle());
        assert_eq!(signed_message(b"xy").concat(), b"strata/v1/bundle\0xy".to_vec());
    }

    #[test]
    fn hostile_input_is_a_typed_error() {
        let big = vec![0u8; MAX_BUNDLE_BYTES + 1];
        assert_eq!(
            SignedBundle::decode_bounded(&big),
            Err(BundleError::TooLarge {
                len: MAX_BUNDLE_BYTES + 1,
                max: MAX_BUNDLE_BYTES
            })
        );
        assert!(matches!(
            SignedBundle::decode_bounded(&[0x0a, 0x7f]),
            Err(BundleError::Malformed(_))
        ));
        let unsigned = SignedBundle {
            signature: Vec::new(),
            ..signed()
        };
        assert_eq!(
            SignedBundle::decode_bounded(&unsigned.to_bytes()),
            Err(BundleError::Unsigned)
        );
        type Breaker = fn(&mut Bundle);
        let cases: [(&str, Breaker); 6] = [
            ("identity_key", |b| {
                b.identity_key.pop();
            }),
            ("installation_id", |b| b.installation_id.push(0)),
            ("timestamp_ms", |b| b.timestamp_ms = 0),
            ("kem_key", |b| b.kem_key.clear()),
            ("paired_installations", |b| {
                b.paired_installations = vec![vec![0; 16]; MAX_PAIRED_INSTALLATIONS + 1];
            }),
            ("paired_installations", |b| b.paired_installations = vec![vec![0; 15]]),
        ];
        for (name, break_it) in cases {
            let mut b = bundle();
            break_it(&mut b);
            let s = SignedBundle {
                bundle: b.to_bytes(),
                ..signed()
            };
            assert_eq!(
                SignedBundle::decode_bounded(&s.to_bytes()),
                Err(BundleError::InvalidField(name))
            );
        }
        let mut b = bundle();
        b.format = 2;
        let s = SignedBundle {
            bundle: b.to_bytes(),
            ..signed()
        };
        assert_eq!(
            SignedBundle::decode_bounded(&s.to_bytes()),
            Err(BundleError::UnsupportedFormat(2))
        );
    }

    #[test]
    fn freshness_rule() {
        let now = 1_800_000_000_000;
        let header = |version, timestamp_ms| BundleHeader {
            identity_key: vec![5; 33],
            installation_id: [1; 16],
            version,
            timestamp_ms,
        };
        let held = header(2, now - 1000);
        assert_eq!(check_fresh(&held, None, now), Ok(Admission::New));
        assert_eq!(check_fresh(&header(2, now), Some(&held), now), Ok(Admission::Refreshed));
        assert_eq!(
            check_fresh(&header(3, now - 5000), Some(&held), now),
            Ok(Admission::Rekeyed { previous_version: 2 })
        );
        for (v, t) in [(2, now - 1000), (2, now - 2000), (1, now)] {
            assert!(matches!(
                check_fresh(&header(v, t), Some(&held), now),
                Err(BundleError::Stale { .. })
            ));
        }
        assert!(matches!(
            check_fresh(&header(9, now - MAX_BUNDLE_AGE_MS - 1), None, now),
            Err(BundleError::Expired { .. })
        ));
        assert!(matches!(
            check_fresh(&header(9, now + MAX_CLOCK_SKEW_MS + 1), None, now),
            Err(BundleError::FromTheFuture { .. })
        ));
    }
}
