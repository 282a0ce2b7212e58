//! Signing and verifying an account's device list (the format, its caps
//! and the version rule are [`strata_proto::devices`]).
//!
//! [`sign_device_list`] signs the set of installations an account counts
//! as its devices with the account identity key (XEdDSA, libsignal, as
//! bundles are). [`verify_device_list`] is the only way received bytes
//! become a [`VerifiedDeviceList`]: bounded decoding, then the identity
//! key's signature over the exact bytes received.
//!
//! Like a bundle, a list is self-certifying: it proves that the holder of
//! *its* identity key signed it. Whether that key is a contact's is the
//! caller's question (the key pinned for the session it came over).
//!
//! Every paired installation holds the account key, so a device that was
//! removed can still sign a list naming itself: removal, as in
//! 54/WAKU2-X3DH-SESSIONS, is for cooperating devices. A device that is
//! lost or stolen holds the account key, and only a new account ends that.

use std::cmp::Ordering;

use libsignal_protocol_syft::IdentityKey;
use rand::{CryptoRng, Rng};
use strata_proto::devices::{
    DEVICE_LIST_FORMAT, DeviceList, DeviceListError, MAX_DEVICES, SignedDeviceList, signed_message,
};

use crate::error::{CascadeError, Result};
use crate::identity::{AccountIdentity, InstallationId, verify_signed};

/// A device list that passed [`verify_device_list`] (or that this account
/// signed): only those two make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedDeviceList {
    identity_key: IdentityKey,
    version: u64,
    installations: Vec<InstallationId>,
    bytes: Vec<u8>,
}

impl VerifiedDeviceList {
    /// The account's identity key, which signed the list.
    pub fn identity_key(&self) -> &IdentityKey {
        &self.identity_key
    }

    /// The list's version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The account's installations, ascending.
    pub fn installations(&self) -> &[InstallationId] {
        &self.installations
    }

    /// Whether `installation` is one of the account's devices.
    pub fn contains(&self, installation: &InstallationId) -> bool {
        self.installations.binary_search(installation).is_ok()
    }

    /// The signed bytes, to send or store as they are.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether this list replaces `other` (the same account's): a higher
    /// version, or the same version and greater signed bytes, so that
    /// every holder of both picks the same one.
    pub fn supersedes(&self, other: &Self) -> bool {
        match self.version.cmp(&other.version) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => self.bytes > other.bytes,
        }
    }
}

/// Signs `installations` as `account`'s device list at `version`.
/// Refuses (misuse) an empty list, one over [`MAX_DEVICES`], and version 0.
pub fn sign_device_list<R: Rng + CryptoRng>(
    account: &AccountIdentity,
    version: u64,
    installations: &[InstallationId],
    rng: &mut R,
) -> Result<VerifiedDeviceList> {
    let mut installations = installations.to_vec();
    installations.sort_unstable();
    installations.dedup();
    if installations.is_empty() || installations.len() > MAX_DEVICES {
        return Err(CascadeError::InvalidArgument(
            "a device list names 1 to 17 installations",
        ));
    }
    if version == 0 {
        return Err(CascadeError::InvalidArgument("a device list version is not 0"));
    }
    let identity_key = *account.identity_key();
    let list = DeviceList {
        format: DEVICE_LIST_FORMAT,
        identity_key: identity_key.serialize().to_vec(),
        version,
        installations: installations.iter().map(|i| i.as_bytes().to_vec()).collect(),
    }
    .to_bytes();
    let signature = account.sign(&signed_message(&list), rng)?;
    Ok(VerifiedDeviceList {
        identity_key,
        version,
        installations,
        bytes: SignedDeviceList { list, signature }.to_bytes(),
    })
}

/// Checks a received device list (see the module docs). Every failure is
/// a typed [`DeviceListError`]; nothing here panics on any input.
pub fn verify_device_list(bytes: &[u8]) -> Result<VerifiedDeviceList, DeviceListError> {
    let (signed, list) = SignedDeviceList::decode_bounded(bytes)?;
    let identity_key = IdentityKey::decode(&list.identity_key).map_err(|_| DeviceListError::BadKey)?;
    if !verify_signed(&identity_key, &signed_message(&signed.list), &signed.signature) {
        return Err(DeviceListError::BadSignature);
    }
    let installations = list
        .installations
        .iter()
        .map(|i| {
            <[u8; 16]>::try_from(i.as_slice())
                .map(InstallationId::from_bytes)
                .map_err(|_| DeviceListError::InvalidField("installations"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VerifiedDeviceList {
        identity_key,
        version: list.version,
        installations,
        bytes: bytes.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ids(n: u8) -> Vec<InstallationId> {
        (1..=n).map(|i| InstallationId::from_bytes([i; 16])).collect()
    }

    #[test]
    fn a_signed_list_verifies_and_names_its_installations() {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        let mut unsorted = ids(3);
        unsorted.reverse();
        unsorted.push(InstallationId::from_bytes([2; 16]));
        let signed = sign_device_list(&account, 7, &unsorted, &mut rng).unwrap();
        let verified = verify_device_list(signed.as_bytes()).unwrap();
        assert_eq!(verified, signed);
        assert_eq!(verified.installations(), ids(3).as_slice());
        assert_eq!(verified.identity_key(), account.identity_key());
        assert_eq!(verified.version(), 7);
        assert!(verified.contains(&InstallationId::from_bytes([3; 16])));
        assert!(!verified.contains(&InstallationId::from_bytes([4; 16])));
    }

    #[test]
    fn a_forged_or_spoiled_list_is_refused() {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        let signed = sign_device_list(&account, 7, &ids(2), &mut rng).unwrap();
        // Another account's signature over a list naming this account.
        let forger = AccountIdentity::generate(&mut rng);
        let (mut outer, _) = SignedDeviceList::decode_bounded(signed.as_bytes()).unwrap();
        outer.signature = forger.sign(&signed_message(&outer.list), &mut rng).unwrap();
        assert_eq!(
            verify_device_list(&outer.to_bytes()),
            Err(DeviceListError::BadSignature)
        );
        // Every single-bit change of the signed bytes is refused.
        let bytes = signed.as_bytes();
        for i in 0..bytes.len() {
            let mut spoiled = bytes.to_vec();
            spoiled[i] ^= 0x01;
            assert!(verify_device_list(&spoiled).is_err(), "byte {i}");
        }
    }

    #[test]
    fn the_higher_version_wins_and_equal_versions_agree() {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        let old = sign_device_list(&account, 7, &ids(2), &mut rng).unwrap();
        let new = sign_device_list(&account, 8, &ids(1), &mut rng).unwrap();
        assert!(new.supersedes(&old) && !old.supersedes(&new));
        let a = sign_device_list(&account, 9, &ids(1), &mut rng).unwrap();
        let b = sign_device_list(&account, 9, &ids(3), &mut rng).unwrap();
        assert!(a.supersedes(&b) != b.supersedes(&a));
        assert!(!a.supersedes(&a));
    }

    #[test]
    fn misuse_is_refused() {
        let mut rng = rand::rng();
        let account = AccountIdentity::generate(&mut rng);
        assert!(sign_device_list(&account, 1, &[], &mut rng).is_err());
        assert!(sign_device_list(&account, 0, &ids(1), &mut rng).is_err());
        let too_many: Vec<_> = (0..=u8::try_from(MAX_DEVICES).unwrap())
            .map(|i| InstallationId::from_bytes([i; 16]))
            .collect();
        assert!(sign_device_list(&account, 1, &too_many, &mut rng).is_err());
    }
}
