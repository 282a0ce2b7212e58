//! Device lists: which installations make up an account, signed by the
//! account identity key (54/WAKU2-X3DH-SESSIONS "multi-device", our format).
//!
//! Every installation of an account holds the account identity key, so any
//! of them can sign the list; the list says which ones the account counts
//! as its devices now. Contacts send to those (pairwise, one session per
//! installation) and to no other installation presenting the same key. A
//! list travels inside a pair session (`strata_session::content`,
//! `devices`) and its installations are named in the account's bundles
//! (`paired_installations`). This module is the wire format, its caps and
//! the order of lists; signing and checking the signature is
//! `strata_cascade::devices`.
//!
//! # Wire format (normative)
//!
//! Protobuf (proto3), frozen by golden bytes in the tests:
//!
//! ```protobuf
//! message SignedDeviceList {
//!   bytes list = 1;       // an encoded DeviceList, exactly the bytes signed
//!   bytes signature = 2;  // XEdDSA (64 B) by the identity key
//! }
//! message DeviceList {
//!   uint32 format = 1;                // 1
//!   bytes identity_key = 2;           // the account's Signal identity key, 33 B
//!   uint64 version = 3;               // rises on every change (below)
//!   repeated bytes installations = 4; // 16 B each, strictly ascending, 1 to 17
//! }
//! ```
//!
//! The signature covers `"strata/v1/devices"` ‖ `0x00` ‖ the `list` bytes
//! as received ([`signed_message`]).
//!
//! # Which list wins
//!
//! Of two lists of one account, the one with the higher `version` wins;
//! equal versions (two devices changed the list at once) are ordered by
//! their signed bytes, so every holder picks the same one. A device that
//! changes the list signs version `max(held + 1, now in Unix ms)`: versions
//! rise, and a device restored from the account key alone (account
//! recovery, which knows no list) still outranks the lists of the devices
//! it replaces.

use prost::Message as _;

use crate::bundle::{IDENTITY_KEY_LEN, INSTALLATION_ID_LEN, MAX_PAIRED_INSTALLATIONS, SIGNATURE_LEN};

/// The current `DeviceList.format`.
pub const DEVICE_LIST_FORMAT: u32 = 1;

/// Most installations in one list: one device and as many paired ones as a
/// bundle may name.
pub const MAX_DEVICES: usize = MAX_PAIRED_INSTALLATIONS + 1;

/// The largest signed list accepted, checked before parsing (a full list
/// is about 420 bytes).
pub const MAX_DEVICE_LIST_BYTES: usize = 1024;

/// Domain-separation label of the list signature.
pub const DEVICE_LIST_SIGNATURE_LABEL: &[u8] = b"strata/v1/devices";

/// The outer message: the signed bytes and their signature.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignedDeviceList {
    /// An encoded [`DeviceList`], exactly the bytes the signature covers.
    #[prost(bytes = "vec", tag = "1")]
    pub list: Vec<u8>,
    /// XEdDSA signature by `DeviceList.identity_key` over [`signed_message`].
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

/// The signed contents.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DeviceList {
    /// [`DEVICE_LIST_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The account's identity key (serialized libsignal `IdentityKey`).
    #[prost(bytes = "vec", tag = "2")]
    pub identity_key: Vec<u8>,
    /// Rises on every change (see the module docs).
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// The account's installations, strictly ascending.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub installations: Vec<Vec<u8>>,
}

/// Why a received device list was refused: bad peer input, dropped, and
/// nothing held changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceListError {
    /// Over [`MAX_DEVICE_LIST_BYTES`]; refused before parsing.
    #[error("device list of {0} bytes exceeds the {MAX_DEVICE_LIST_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not a protobuf `SignedDeviceList` wrapping a `DeviceList`.
    #[error("malformed device list: {0}")]
    Malformed(String),
    /// A `format` this implementation does not know.
    #[error("unsupported device list format {0}")]
    UnsupportedFormat(u32),
    /// A field is missing, has the wrong length, is over its cap, or the
    /// installations are not strictly ascending.
    #[error("invalid device list field {0}")]
    InvalidField(&'static str),
    /// The identity key is not a key.
    #[error("device list identity key rejected")]
    BadKey,
    /// The signature does not verify under the list's identity key.
    #[error("device list signature does not verify")]
    BadSignature,
}

impl SignedDeviceList {
    /// Decodes a received signed list: size first, then both protobuf
    /// layers, then the shape of every field. The signature is *not*
    /// checked here: `strata_cascade::devices::verify_device_list` does,
    /// and calls this.
    pub fn decode_bounded(bytes: &[u8]) -> Result<(Self, DeviceList), DeviceListError> {
        if bytes.len() > MAX_DEVICE_LIST_BYTES {
            return Err(DeviceListError::TooLarge(bytes.len()));
        }
        let signed = Self::decode(bytes).map_err(|e| DeviceListError::Malformed(e.to_string()))?;
        if signed.signature.len() != SIGNATURE_LEN {
            return Err(DeviceListError::InvalidField("signature"));
        }
        let list = DeviceList::decode(signed.list.as_slice()).map_err(|e| DeviceListError::Malformed(e.to_string()))?;
        list.check_shape()?;
        Ok((signed, list))
    }

    /// The protobuf encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

impl DeviceList {
    /// Checks every field's length and cap, and the order of the
    /// installations (not the key itself).
    pub fn check_shape(&self) -> Result<(), DeviceListError> {
        if self.format != DEVICE_LIST_FORMAT {
            return Err(DeviceListError::UnsupportedFormat(self.format));
        }
        let field = |ok: bool, name: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(DeviceListError::InvalidField(name))
            }
        };
        field(self.identity_key.len() == IDENTITY_KEY_LEN, "identity_key")?;
        field(self.version != 0, "version")?;
        field((1..=MAX_DEVICES).contains(&self.installations.len()), "installations")?;
        field(
            self.installations.iter().all(|i| i.len() == INSTALLATION_ID_LEN),
            "installations",
        )?;
        // Strictly ascending: one encoding per set, no duplicates.
        field(
            self.installations.windows(2).all(|w| matches!(w, [a, b] if a < b)),
            "installations",
        )
    }

    /// The protobuf encoding: what the signature covers.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

/// The message an identity key signs for `list_bytes` (an encoded
/// [`DeviceList`]), as the parts of a multipart signature:
/// `"strata/v1/devices"` ‖ `0x00` ‖ `list_bytes`.
pub fn signed_message(list_bytes: &[u8]) -> [&[u8]; 3] {
    [DEVICE_LIST_SIGNATURE_LABEL, &[0u8], list_bytes]
}

/// The version a device signs when it changes a list held at `held` (0 for
/// none) at `now_ms`: see the module docs.
pub fn next_version(held: u64, now_ms: u64) -> u64 {
    held.saturating_add(1).max(now_ms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn list() -> DeviceList {
        DeviceList {
            format: DEVICE_LIST_FORMAT,
            identity_key: vec![5; 33],
            version: 3,
            installations: vec![vec![1; 16], vec![2; 16]],
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The encoding is a wire format: frozen against bytes written out by
    /// hand from the protobuf encoding rules.
    #[test]
    fn golden_bytes() {
        let expected = concat!(
            "0801",
            "1221050505050505050505050505050505050505050505050505050505050505050505",
            "1803",
            "221001010101010101010101010101010101",
            "221002020202020202020202020202020202",
        );
        assert_eq!(hex(&list().to_bytes()), expected);
        let signed = SignedDeviceList {
            list: list().to_bytes(),
            signature: vec![7; 64],
        };
        let (outer, inner) = SignedDeviceList::decode_bounded(&signed.to_bytes()).unwrap();
        assert_eq!((outer, inner), (signed, list()));
        assert_eq!(signed_message(b"xy").concat(), b"strata/v1/devices\0xy".to_vec());
    }

    #[test]
    fn every_bad_shape_is_refused() {
        type Spoil = fn(&mut DeviceList);
        let cases: [(&str, Spoil); 8] = [
            ("format", |l| l.format = 2),
            ("identity_key", |l| {
                l.identity_key.pop();
            }),
            ("version", |l| l.version = 0),
            ("empty", |l| l.installations.clear()),
            ("too many", |l| {
                l.installations = (0..=MAX_DEVICES).map(|i| vec![u8::try_from(i).unwrap(); 16]).collect();
            }),
            ("short id", |l| {
                l.installations[0].pop();
            }),
            ("duplicate", |l| l.installations[1] = l.installations[0].clone()),
            ("descending", |l| l.installations.reverse()),
        ];
        for (name, spoil) in cases {
            let mut bad = list();
            spoil(&mut bad);
            let signed = SignedDeviceList {
                list: bad.to_bytes(),
                signature: vec![7; 64],
            };
            assert!(SignedDeviceList::decode_bounded(&signed.to_bytes()).is_err(), "{name}");
        }
        let unsigned = SignedDeviceList {
            list: list().to_bytes(),
            signature: Vec::new(),
        };
        assert_eq!(
            SignedDeviceList::decode_bounded(&unsigned.to_bytes()),
            Err(DeviceListError::InvalidField("signature"))
        );
        assert_eq!(
            SignedDeviceList::decode_bounded(&[0; MAX_DEVICE_LIST_BYTES + 1]),
            Err(DeviceListError::TooLarge(MAX_DEVICE_LIST_BYTES + 1))
        );
        assert!(SignedDeviceList::decode_bounded(&[0xff; 40]).is_err());
    }

    #[test]
    fn versions_rise_past_both_the_held_one_and_the_clock() {
        assert_eq!(next_version(0, 1_000), 1_000);
        assert_eq!(next_version(5_000, 1_000), 5_001);
        assert_eq!(next_version(u64::MAX, 1), u64::MAX);
    }
}
