//! Signing and verifying broadcast bundles (the format and the freshness
//! rule are [`strata_proto::bundle`]).
//!
//! [`sign_bundle`] signs what an installation broadcasts — its Signal
//! signed pre-key and Kyber pre-key, one MLS KeyPackage, its
//! identity-signed ML-KEM-768 key, a version, a timestamp and its paired
//! installations (the account's other devices, from its device list) —
//! with the account identity key (XEdDSA, libsignal), after checking that
//! every part really belongs to this installation.
//! [`verify_bundle`] is the only way received bundle bytes become a
//! [`VerifiedBundle`]: bounded decoding, the identity key's signature over
//! the exact bytes received, then every key inside against the bundle's
//! identity and installation (the Signal pre-key signatures, the ML-KEM
//! binding, the KeyPackage's credential binding, lifetime and ciphersuite).
//!
//! A bundle is self-certifying: it proves that the holder of *its* identity
//! key signed it. Whether that identity key is the right one for a contact
//! is the caller's question (TOFU pin or safety number), exactly as for the
//! identity key carried in handshake step 1.
//!
//! # Why no one-time pre-key
//!
//! A broadcast bundle is read by anyone who follows the topic, so nothing in
//! it can be single-use: [`sign_bundle`] drops the Signal one-time EC
//! pre-key that `SignalLayer::pre_key_bundle` makes (53/WAKU2-X3DH does the
//! same: "not possible to guarantee that a prekey will be used only once"),
//! and [`verify_bundle`] refuses a bundle that carries one. The Kyber
//! pre-key stays usable by many initiators (the Signal layer keeps it and
//! refuses only a reused base key); the KeyPackage should be a
//! `KeyPackageKind::LastResort` one for the same reason.

use libsignal_protocol_syft::{IdentityKey, PreKeyBundle};
use rand::{CryptoRng, Rng};
use strata_proto::bundle::{
    BUNDLE_FORMAT, Bundle, BundleError, BundleHeader, MAX_BUNDLE_BYTES, MAX_PAIRED_INSTALLATIONS, SignedBundle,
    signed_message,
};

use crate::error::{CascadeError, Result};
use crate::identity::{InstallationId, InstallationIdentity, PeerIdentity, verify_kem_binding, verify_signed};
use crate::layers::mlkem::{ENCAPSULATION_KEY_LEN, SignedKemKey};
use crate::layers::mls::{VerifiedKeyPackage, verify_key_package};
use crate::layers::signal::SignalBundle;

/// What an installation puts in its bundle. Public keys only.
#[derive(Clone, Debug)]
pub struct BundleContents {
    /// Bumped whenever the key material or `paired` changes.
    pub version: u64,
    /// Unix ms; fresh at every re-broadcast.
    pub timestamp_ms: u64,
    /// From `SignalLayer::pre_key_bundle`; its one-time pre-key is dropped.
    pub signal: SignalBundle,
    /// From `MlsLayer::key_package` (preferably `LastResort`).
    pub mls_key_package: Vec<u8>,
    /// From `KemKeyPair::public`.
    pub kem_key: SignedKemKey,
    /// The account's other installations.
    pub paired: Vec<InstallationId>,
}

/// A bundle that passed [`verify_bundle`]: only that function makes one.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    header: BundleHeader,
    peer: PeerIdentity,
    signal: SignalBundle,
    key_package: VerifiedKeyPackage,
    kem_key: SignedKemKey,
    paired: Vec<InstallationId>,
}

impl VerifiedBundle {
    /// Publisher, version and timestamp: what the freshness rule compares.
    pub fn header(&self) -> &BundleHeader {
        &self.header
    }

    /// The publishing installation and its identity key.
    pub fn peer(&self) -> PeerIdentity {
        self.peer
    }

    /// The PQXDH pre-keys (for `SignalLayer::process_bundle`).
    pub fn signal(&self) -> &SignalBundle {
        &self.signal
    }

    /// The KeyPackage (for `MlsLayer::create_group`).
    pub fn key_package(&self) -> &VerifiedKeyPackage {
        &self.key_package
    }

    /// The identity-signed ML-KEM-768 key (for `MlKemLayer::set_peer_key`).
    pub fn kem_key(&self) -> &SignedKemKey {
        &self.kem_key
    }

    /// The account's other installations.
    pub fn paired(&self) -> &[InstallationId] {
        &self.paired
    }
}

/// Signs `contents` as `local`'s bundle. Refuses (misuse) parts that do not
/// belong to `local`, and a result over the size cap.
pub fn sign_bundle<R: Rng + CryptoRng>(
    local: &InstallationIdentity,
    contents: &BundleContents,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let me = local.peer_identity();
    let signal = contents.signal.inner();
    let signal_err = |_| CascadeError::InvalidArgument("unreadable Signal bundle");
    if *signal.identity_key().map_err(signal_err)? != me.identity_key {
        return Err(CascadeError::InvalidArgument("Signal bundle of another identity"));
    }
    if contents.kem_key.installation_id != me.installation_id {
        return Err(CascadeError::InvalidArgument("ML-KEM key of another installation"));
    }
    verify_key_package(&contents.mls_key_package, &me)
        .map_err(|_| CascadeError::InvalidArgument("KeyPackage not valid for this installation"))?;
    if contents.paired.len() > MAX_PAIRED_INSTALLATIONS {
        return Err(CascadeError::InvalidArgument("too many paired installations"));
    }
    if contents.timestamp_ms == 0 {
        return Err(CascadeError::InvalidArgument("bundle timestamp is zero"));
    }
    // Drop the one-time pre-key: see the module docs.
    let without_one_time = PreKeyBundle::new(
        signal.registration_id().map_err(signal_err)?,
        signal.device_id().map_err(signal_err)?,
        None,
        signal.signed_pre_key_id().map_err(signal_err)?,
        signal.signed_pre_key_public().map_err(signal_err)?,
        signal.signed_pre_key_signature().map_err(signal_err)?.to_vec(),
        signal.kyber_pre_key_id().map_err(signal_err)?,
        signal.kyber_pre_key_public().map_err(signal_err)?.clone(),
        signal.kyber_pre_key_signature().map_err(signal_err)?.to_vec(),
        *signal.identity_key().map_err(signal_err)?,
    )
    .map_err(|e| CascadeError::internal("bundle", e))?;
    let bundle = Bundle {
        format: BUNDLE_FORMAT,
        identity_key: me.identity_key.serialize().to_vec(),
        installation_id: me.installation_id.as_bytes().to_vec(),
        version: contents.version,
        timestamp_ms: contents.timestamp_ms,
        signal_pre_keys: SignalBundle::new(without_one_time).to_bytes()?,
        mls_key_package: contents.mls_key_package.clone(),
        kem_key: contents.kem_key.to_bytes(),
        paired_installations: contents.paired.iter().map(|i| i.as_bytes().to_vec()).collect(),
    }
    .to_bytes();
    let signature = local.account().sign(&signed_message(&bundle), rng)?;
    let signed = SignedBundle { bundle, signature }.to_bytes();
    if signed.len() > MAX_BUNDLE_BYTES {
        return Err(CascadeError::InvalidArgument("bundle over the size cap"));
    }
    Ok(signed)
}

/// Checks a received bundle completely (see the module docs). Every
/// failure is a typed [`BundleError`]; nothing here panics on any input.
pub fn verify_bundle(bytes: &[u8]) -> Result<VerifiedBundle, BundleError> {
    let (signed, bundle) = SignedBundle::decode_bounded(bytes)?;
    let identity_key = IdentityKey::decode(&bundle.identity_key).map_err(|_| BundleError::BadKey("identity key"))?;
    if !verify_signed(&identity_key, &signed_message(&signed.bundle), &signed.signature) {
        return Err(BundleError::BadSignature);
    }
    let header = BundleHeader::of(&bundle)?;
    let peer = PeerIdentity {
        identity_key,
        installation_id: InstallationId::from_bytes(header.installation_id),
    };

    let signal =
        SignalBundle::from_bytes(&bundle.signal_pre_keys).map_err(|_| BundleError::BadKey("Signal pre-keys"))?;
    check_signal(signal.inner(), &identity_key)?;

    let kem_key = SignedKemKey::from_bytes(&bundle.kem_key).map_err(|_| BundleError::BadKey("ML-KEM key"))?;
    if kem_key.installation_id != peer.installation_id
        || kem_key.encapsulation_key.len() != ENCAPSULATION_KEY_LEN
        || !verify_kem_binding(&peer, kem_key.key_id, &kem_key.encapsulation_key, &kem_key.signature)
    {
        return Err(BundleError::BadKey("ML-KEM key not bound to the installation"));
    }

    let key_package =
        verify_key_package(&bundle.mls_key_package, &peer).map_err(|_| BundleError::BadKey("MLS KeyPackage"))?;
    // Everyone who reads a broadcast may use its package: only a reusable
    // one belongs there.
    if !key_package.last_resort() {
        return Err(BundleError::BadKey("MLS KeyPackage is not a last-resort package"));
    }

    let paired = bundle
        .paired_installations
        .iter()
        .map(|i| {
            <[u8; 16]>::try_from(i.as_slice())
                .map(InstallationId::from_bytes)
                .map_err(|_| BundleError::InvalidField("paired_installations"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VerifiedBundle {
        header,
        peer,
        signal,
        key_package,
        kem_key,
        paired,
    })
}

/// The Signal part: same identity, no one-time pre-key, and both pre-key
/// signatures by the identity key (libsignal would check them only at
/// `process_bundle`; a bundle is refused at once instead).
fn check_signal(signal: &PreKeyBundle, identity_key: &IdentityKey) -> Result<(), BundleError> {
    let bad = |what| move |_| BundleError::BadKey(what);
    if signal.identity_key().map_err(bad("Signal identity key"))? != identity_key {
        return Err(BundleError::BadKey("Signal pre-keys of another identity"));
    }
    if signal.pre_key_id().map_err(bad("Signal one-time pre-key"))?.is_some() {
        return Err(BundleError::BadKey("one-time pre-key in a broadcast bundle"));
    }
    let public = identity_key.public_key();
    let signed_ok = public.verify_signature(
        &signal
            .signed_pre_key_public()
            .map_err(bad("signed pre-key"))?
            .serialize(),
        signal.signed_pre_key_signature().map_err(bad("signed pre-key"))?,
    );
    let kyber_ok = public.verify_signature(
        &signal.kyber_pre_key_public().map_err(bad("Kyber pre-key"))?.serialize(),
        signal.kyber_pre_key_signature().map_err(bad("Kyber pre-key"))?,
    );
    if !(signed_ok && kyber_ok) {
        return Err(BundleError::BadKey("pre-key signature"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use strata_proto::bundle::{Bundle, SignedBundle};

    use super::*;
    use crate::AccountIdentity;
    use crate::layers::mlkem::KemKeyPair;
    use crate::layers::mls::{KeyPackageKind, MlsLayer};
    use crate::layers::signal::SignalLayer;

    const NOW_MS: u64 = 1_800_000_000_000;

    struct Fixture {
        local: InstallationIdentity,
        contents: BundleContents,
        rng: ChaCha20Rng,
    }

    fn fixture(seed: u64) -> Fixture {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let local = InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap();
        // The layers want a peer; the bundle's keys are for whoever claims
        // them, so any identity will do here.
        let other = InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap();
        let mut signal = SignalLayer::new(&local, other.peer_identity()).unwrap();
        let mut mls = MlsLayer::new(&local, other.peer_identity()).unwrap();
        let contents = BundleContents {
            version: 1,
            timestamp_ms: NOW_MS,
            signal: signal.pre_key_bundle(NOW_MS, &mut rng).unwrap(),
            mls_key_package: mls.key_package(KeyPackageKind::LastResort, 24 * 3600).unwrap(),
            kem_key: KemKeyPair::generate(&local, 1, &mut rng).unwrap().public().clone(),
            paired: vec![InstallationId::from_bytes([9; 16])],
        };
        Fixture { local, contents, rng }
    }

    #[test]
    fn round_trip() {
        let mut f = fixture(1);
        let bytes = sign_bundle(&f.local, &f.contents, &mut f.rng).unwrap();
        let verified = verify_bundle(&bytes).unwrap();
        assert_eq!(verified.peer(), f.local.peer_identity());
        assert_eq!(verified.header().version, 1);
        assert_eq!(verified.header().timestamp_ms, NOW_MS);
        assert_eq!(verified.kem_key(), &f.contents.kem_key);
        assert_eq!(verified.key_package().bytes(), f.contents.mls_key_package.as_slice());
        assert!(verified.key_package().last_resort());
        assert_eq!(verified.paired(), &[InstallationId::from_bytes([9; 16])]);
        assert_eq!(
            verified.signal().inner().pre_key_id().unwrap(),
            None,
            "one-time pre-key dropped"
        );
        assert_eq!(
            verified.signal().inner().kyber_pre_key_public().unwrap().serialize(),
            f.contents.signal.inner().kyber_pre_key_public().unwrap().serialize()
        );
        // A real bundle is a few KiB: well under the cap.
        assert!(bytes.len() < 6 * 1024, "{} bytes", bytes.len());
    }

    /// Flipping any single byte of a signed bundle is refused with a typed
    /// error: the signature covers every byte of the inner bundle, and the
    /// outer message is only the bundle and the signature.
    #[test]
    fn any_tampering_is_refused() {
        let mut f = fixture(2);
        let bytes = sign_bundle(&f.local, &f.contents, &mut f.rng).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(verify_bundle(&bad).is_err(), "byte {i} flipped and accepted");
        }
        // A re-signed bundle with one field changed, but the old signature.
        let (signed, mut inner) = SignedBundle::decode_bounded(&bytes).unwrap();
        inner.version += 1;
        let forged = SignedBundle {
            bundle: inner.to_bytes(),
            signature: signed.signature.clone(),
        };
        assert_eq!(
            verify_bundle(&forged.to_bytes()).unwrap_err(),
            BundleError::BadSignature
        );
    }

    /// A bundle signed by another identity key, or naming another
    /// installation than its keys, is refused even with a valid signature.
    #[test]
    fn keys_must_belong_to_the_signer() {
        let mut f = fixture(3);
        let mut g = fixture(4);
        let bytes = sign_bundle(&f.local, &f.contents, &mut f.rng).unwrap();
        let (_, inner) = SignedBundle::decode_bounded(&bytes).unwrap();
        // Mallory re-signs Alice's keys under her own identity.
        let stolen = Bundle {
            identity_key: g.local.peer_identity().identity_key.serialize().to_vec(),
            installation_id: g.local.installation_id().as_bytes().to_vec(),
            ..inner
        }
        .to_bytes();
        let signature = g.local.account().sign(&signed_message(&stolen), &mut g.rng).unwrap();
        let forged = SignedBundle {
            bundle: stolen,
            signature,
        };
        assert!(matches!(verify_bundle(&forged.to_bytes()), Err(BundleError::BadKey(_))));
        // And signing refuses parts that are not the signer's.
        let mixed = BundleContents {
            kem_key: g.contents.kem_key.clone(),
            ..f.contents.clone()
        };
        assert!(sign_bundle(&f.local, &mixed, &mut f.rng).is_err());
    }

    #[test]
    fn a_one_time_key_package_has_no_place_in_a_broadcast() {
        let mut f = fixture(5);
        let one_time = crate::generate_key_package(&f.local, KeyPackageKind::OneTime, 3600).unwrap();
        let contents = BundleContents {
            mls_key_package: one_time.package.bytes().to_vec(),
            ..f.contents.clone()
        };
        let refused = sign_bundle(&f.local, &contents, &mut f.rng).map(|b| verify_bundle(&b));
        assert!(
            matches!(refused, Err(_) | Ok(Err(BundleError::BadKey(_)))),
            "{refused:?}"
        );
    }

    #[test]
    fn unsigned_and_oversized_are_refused() {
        let mut f = fixture(5);
        let bytes = sign_bundle(&f.local, &f.contents, &mut f.rng).unwrap();
        let (signed, _) = SignedBundle::decode_bounded(&bytes).unwrap();
        let unsigned = SignedBundle {
            signature: Vec::new(),
            ..signed.clone()
        };
        assert_eq!(verify_bundle(&unsigned.to_bytes()).unwrap_err(), BundleError::Unsigned);
        let mut big = bytes.clone();
        big.resize(MAX_BUNDLE_BYTES + 1, 0);
        assert_eq!(
            verify_bundle(&big).unwrap_err(),
            BundleError::TooLarge {
                len: MAX_BUNDLE_BYTES + 1,
                max: MAX_BUNDLE_BYTES
            }
        );
        let too_many = BundleContents {
            paired: vec![InstallationId::from_bytes([1; 16]); MAX_PAIRED_INSTALLATIONS + 1],
            ..f.contents.clone()
        };
        assert!(sign_bundle(&f.local, &too_many, &mut f.rng).is_err());
    }
}
