//! The private halves of what an installation broadcasts in its bundle
//! ([`crate::bundle`]), kept installation-wide rather than in the layers of
//! one peer's session: any peer holding the bundle may open a session from
//! it (the session layer's one-round-trip handshake), and the responder's
//! layers for that session are seeded from here.
//!
//! One set per bundle version: a Signal signed EC pre-key and a signed
//! Kyber1024 pre-key (both reusable: a broadcast bundle has no one-time
//! pre-key), a last-resort MLS KeyPackage, and an ML-KEM-768 key pair.
//! Re-keying is a new set with a higher version.

use std::fmt;

use libsignal_protocol_syft::{GenericSignedPreKey as _, KyberPreKeyRecord, SignedPreKeyRecord};
use rand::{CryptoRng, Rng};

use crate::bundle::BundleContents;
use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::{InstallationId, InstallationIdentity, PeerIdentity};
use crate::layers::mlkem::{KemKeyPair, MlKemLayer, SignedKemKey};
use crate::layers::mls::{KeyPackageKind, MlsLayer, StorageMap};
use crate::layers::signal::{SignalBundle, SignalLayer};
use crate::secret::SecretBytes;

const MAGIC: &[u8] = b"strata-installation-pre-keys-v1";
/// The key id of the bundle's ML-KEM key.
const KEM_KEY_ID: u32 = 1;
/// Most MLS storage entries a KeyPackage leaves (a handful in practice).
const MAX_MLS_ENTRIES: usize = 64;

/// The installation's bundle pre-keys, private halves included.
pub struct InstallationPreKeys {
    version: u64,
    signal_id: u32,
    signed: SignedPreKeyRecord,
    kyber: KyberPreKeyRecord,
    signal_bundle: SignalBundle,
    key_package: Vec<u8>,
    mls_entries: StorageMap,
    kem: KemKeyPair,
}

impl fmt::Debug for InstallationPreKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstallationPreKeys")
            .field("version", &self.version)
            .field("signal_id", &self.signal_id)
            .finish_non_exhaustive()
    }
}

/// The Signal pre-key id of bundle `version`: never 0, distinct for the
/// next 2^24 versions.
fn signal_id(version: u64) -> u32 {
    u32::try_from(version & 0x00FF_FFFF).unwrap_or(1).max(1)
}

impl InstallationPreKeys {
    /// Fresh pre-keys of `local` for bundle `version`; the KeyPackage is
    /// valid for `key_package_lifetime_secs` from now.
    pub fn generate<R: Rng + CryptoRng>(
        local: &InstallationIdentity,
        version: u64,
        key_package_lifetime_secs: u64,
        now_ms: u64,
        rng: &mut R,
    ) -> Result<Self> {
        let signal_id = signal_id(version);
        let (signed, kyber, signal_bundle) = SignalLayer::reusable_pre_keys(local, signal_id, now_ms, rng)?;
        let (key_package, mls_entries) =
            MlsLayer::detached_key_package(local, KeyPackageKind::LastResort, key_package_lifetime_secs)?;
        let kem = KemKeyPair::generate(local, KEM_KEY_ID, rng)?;
        Ok(Self {
            version,
            signal_id,
            signed,
            kyber,
            signal_bundle,
            key_package,
            mls_entries,
            kem,
        })
    }

    /// The bundle version these keys belong to.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// End of the KeyPackage's lifetime, Unix seconds: when the bundle
    /// stops verifying, so the owner renews before. Read from the package
    /// itself, checked as a peer would check it.
    pub fn key_package_not_after_s(&self, local: &InstallationIdentity) -> Result<u64> {
        Ok(crate::layers::mls::verify_key_package(&self.key_package, &local.peer_identity())?.not_after_s())
    }

    /// The signed public ML-KEM key (in the bundle; also the responder's
    /// answer to step 8).
    pub fn kem_public(&self) -> &SignedKemKey {
        self.kem.public()
    }

    /// The public parts, for [`crate::bundle::sign_bundle`].
    pub fn contents(&self, timestamp_ms: u64, paired: Vec<InstallationId>) -> Result<BundleContents> {
        Ok(BundleContents {
            version: self.version,
            timestamp_ms,
            signal: self.signal_bundle.clone(),
            mls_key_package: self.key_package.clone(),
            kem_key: self.kem.public().clone(),
            paired,
        })
    }

    /// Responder: the Signal layer of a session `peer` opened from the
    /// bundle.
    pub fn signal_layer(&self, local: &InstallationIdentity, peer: PeerIdentity) -> Result<SignalLayer> {
        SignalLayer::with_pre_keys(local, peer, self.signal_id, self.signed.clone(), self.kyber.clone())
    }

    /// Responder: the MLS layer (holding the KeyPackage's private keys).
    pub fn mls_layer(&self, local: &InstallationIdentity, peer: PeerIdentity) -> Result<MlsLayer> {
        MlsLayer::with_key_package(local, peer, &self.mls_entries)
    }

    /// Responder: the ML-KEM layer (receiving with the bundle's key).
    pub fn kem_layer(&self, local: &InstallationIdentity, peer: PeerIdentity) -> Result<MlKemLayer> {
        Ok(MlKemLayer::new(local.installation_id(), peer, self.kem.duplicate()))
    }

    /// Serialized for sealed storage (the buffer is zeroized on drop).
    pub fn export(&self) -> Result<SecretBytes> {
        let internal = |_| CascadeError::internal("pre-keys", "record serialization");
        let mut w = Writer::new(MAGIC);
        w.u64(self.version).u32(self.signal_id);
        w.bytes(&self.signed.serialize().map_err(internal)?);
        w.bytes(&self.kyber.serialize().map_err(internal)?);
        w.bytes(&self.signal_bundle.to_bytes()?);
        w.bytes(&self.key_package);
        let mut entries: Vec<_> = self.mls_entries.iter().collect();
        entries.sort();
        w.u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
        for (k, v) in entries {
            w.bytes(k).bytes(v);
        }
        self.kem.write(&mut w);
        Ok(w.finish())
    }

    /// Reads back [`InstallationPreKeys::export`] output.
    pub fn import(bytes: &[u8]) -> Result<Self> {
        let corrupt = |what| move |_| CascadeError::CorruptState(what);
        let mut r = Reader::new(bytes, MAGIC, "installation pre-keys")?;
        let version = r.u64()?;
        let signal_id = r.u32()?;
        let signed = SignedPreKeyRecord::deserialize(r.bytes(4096)?).map_err(corrupt("signed pre-key"))?;
        let kyber = KyberPreKeyRecord::deserialize(r.bytes(16384)?).map_err(corrupt("Kyber pre-key"))?;
        let signal_bundle =
            SignalBundle::from_bytes(r.bytes(8192)?).map_err(|_| CascadeError::CorruptState("Signal bundle"))?;
        let key_package = r.bytes(16384)?.to_vec();
        let n = r.count(MAX_MLS_ENTRIES)?;
        let mut mls_entries = StorageMap::with_capacity(n);
        for _ in 0..n {
            let k = r.bytes(1 << 16)?.to_vec();
            let v = r.bytes(1 << 20)?.to_vec();
            mls_entries.insert(k, v);
        }
        let kem = KemKeyPair::read(&mut r)?;
        r.finish()?;
        if signed.id().map(u32::from).ok() != Some(signal_id) {
            return Err(CascadeError::CorruptState("signed pre-key id"));
        }
        Ok(Self {
            version,
            signal_id,
            signed,
            kyber,
            signal_bundle,
            key_package,
            mls_entries,
            kem,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::bundle::{VerifiedBundle, sign_bundle, verify_bundle};
    use crate::{AccountIdentity, AesGcmLayer, PairCascade};

    const NOW_MS: u64 = 1_800_000_000_000;

    fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
        InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
    }

    /// `a`'s side of a session opened from `bundle`: its layers, the
    /// Welcome and its signed ML-KEM key for the responder.
    fn initiator(
        a: &InstallationIdentity,
        bundle: &VerifiedBundle,
        rng: &mut ChaCha20Rng,
    ) -> (MlsLayer, SignalLayer, MlKemLayer, Vec<u8>, SignedKemKey) {
        let mut mls = MlsLayer::new(a, bundle.peer()).unwrap();
        let welcome = mls.create_group(bundle.key_package().bytes()).unwrap();
        let mut signal = SignalLayer::new(a, bundle.peer()).unwrap();
        signal.process_bundle(bundle.signal(), NOW_MS, rng).unwrap();
        let pair = KemKeyPair::generate(a, 1, rng).unwrap();
        let public = pair.public().clone();
        let mut kem = MlKemLayer::new(a.installation_id(), bundle.peer(), pair);
        kem.set_peer_key(bundle.kem_key().clone()).unwrap();
        (mls, signal, kem, welcome, public)
    }

    fn published(b: &InstallationIdentity, pre_keys: &InstallationPreKeys, rng: &mut ChaCha20Rng) -> VerifiedBundle {
        let bytes = sign_bundle(b, &pre_keys.contents(NOW_MS, Vec::new()).unwrap(), rng).unwrap();
        verify_bundle(&bytes).unwrap()
    }

    /// Two initiators open sessions from the same bundle; the responder's
    /// layers come from a stored (exported, imported) copy of its pre-keys,
    /// and both sessions carry messages both ways.
    #[test]
    fn every_holder_of_the_bundle_gets_a_working_session() {
        let mut rng = ChaCha20Rng::seed_from_u64(61);
        let b = installation(&mut rng);
        let pre_keys = InstallationPreKeys::generate(&b, 3, 3600, NOW_MS, &mut rng).unwrap();
        let stored = InstallationPreKeys::import(pre_keys.export().unwrap().as_bytes()).unwrap();
        assert_eq!(stored.version(), 3);
        assert_eq!(stored.kem_public(), pre_keys.kem_public());
        // The KeyPackage's lifetime runs on the wall clock (openmls).
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let not_after = stored.key_package_not_after_s(&b).unwrap();
        assert!(
            (now_s + 3590..=now_s + 3610).contains(&not_after),
            "{not_after} vs {now_s}"
        );
        let bundle = published(&b, &stored, &mut rng);
        assert_eq!(bundle.header().version, 3);
        for _ in 0..2 {
            let a = installation(&mut rng);
            let (a_mls, a_signal, a_kem, welcome, a_kem_key) = initiator(&a, &bundle, &mut rng);
            let mut b_mls = stored.mls_layer(&b, a.peer_identity()).unwrap();
            b_mls.join_group(&welcome).unwrap();
            let b_signal = stored.signal_layer(&b, a.peer_identity()).unwrap();
            let mut b_kem = stored.kem_layer(&b, a.peer_identity()).unwrap();
            b_kem.set_peer_key(a_kem_key).unwrap();
            let (ai, bi) = (a.installation_id(), b.installation_id());
            let mut at_a = PairCascade::new(ai, bi, a_mls, a_signal, a_kem, AesGcmLayer::new(ai, bi));
            let mut at_b = PairCascade::new(bi, ai, b_mls, b_signal, b_kem, AesGcmLayer::new(bi, ai));
            for k in 0..3u8 {
                let p = at_a.encrypt(&[k; 40], NOW_MS, &mut rng).unwrap();
                assert_eq!(at_b.decrypt(&p, &mut rng).unwrap(), vec![k; 40]);
                let p = at_b.encrypt(&[k + 10; 40], NOW_MS, &mut rng).unwrap();
                assert_eq!(at_a.decrypt(&p, &mut rng).unwrap(), vec![k + 10; 40]);
            }
            // B's seeded layers store and restore through the usual state
            // format, as a session is kept between messages.
            let mut at_b = PairCascade::import(at_b.export().unwrap().as_bytes()).unwrap();
            let p = at_a.encrypt(b"after restart", NOW_MS, &mut rng).unwrap();
            assert_eq!(at_b.decrypt(&p, &mut rng).unwrap(), b"after restart");
            let p = at_b.encrypt(b"answer", NOW_MS, &mut rng).unwrap();
            assert_eq!(at_a.decrypt(&p, &mut rng).unwrap(), b"answer");
        }
    }

    /// A first flight made from another installation's bundle opens
    /// nothing here: typed errors, no group, no Signal session.
    #[test]
    fn a_flight_for_another_bundle_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(62);
        let (a, b, c) = (installation(&mut rng), installation(&mut rng), installation(&mut rng));
        let b_keys = InstallationPreKeys::generate(&b, 1, 3600, NOW_MS, &mut rng).unwrap();
        let c_keys = InstallationPreKeys::generate(&c, 1, 3600, NOW_MS, &mut rng).unwrap();
        let c_bundle = published(&c, &c_keys, &mut rng);
        let (_, mut a_signal, _, welcome, _) = initiator(&a, &c_bundle, &mut rng);
        let mut b_mls = b_keys.mls_layer(&b, a.peer_identity()).unwrap();
        let err = b_mls.join_group(&welcome).unwrap_err();
        assert!(matches!(err, CascadeError::PeerProtocol { .. }), "{err:?}");
        assert!(b_mls.epoch().is_none());
        // The first Signal message, for C's pre-keys, does not open at B.
        let (ai, bi) = (a.installation_id(), b.installation_id());
        let p = crate::Cascade::encrypt_with(
            &mut [&mut a_signal as &mut dyn crate::Layer],
            ai,
            bi,
            b"hi",
            NOW_MS,
            &mut rng,
        )
        .unwrap();
        let mut b_signal = b_keys.signal_layer(&b, a.peer_identity()).unwrap();
        let err = crate::Cascade::decrypt_with(&mut [&mut b_signal as &mut dyn crate::Layer], bi, ai, &p, &mut rng)
            .unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::BadPeerInput, "{err:?}");
        assert!(!b_signal.has_session());
        // C's own layers, from C's pre-keys, do accept that same message:
        // the refusal above is about the keys, not a broken flight.
        let mut c_signal = c_keys.signal_layer(&c, a.peer_identity()).unwrap();
        let ci = c.installation_id();
        let p = crate::Cascade::encrypt_with(
            &mut [&mut a_signal as &mut dyn crate::Layer],
            ai,
            ci,
            b"hi",
            NOW_MS,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            crate::Cascade::decrypt_with(&mut [&mut c_signal as &mut dyn crate::Layer], ci, ai, &p, &mut rng).unwrap(),
            b"hi"
        );
    }

    /// Stored bytes that are cut, grown or changed never import silently
    /// wrong and never panic.
    #[test]
    fn damaged_stored_pre_keys_are_typed_errors() {
        let mut rng = ChaCha20Rng::seed_from_u64(63);
        let b = installation(&mut rng);
        let bytes = InstallationPreKeys::generate(&b, 1, 3600, NOW_MS, &mut rng)
            .unwrap()
            .export()
            .unwrap();
        let bytes = bytes.as_bytes();
        let corrupt = |b: &[u8]| matches!(InstallationPreKeys::import(b), Err(CascadeError::CorruptState(_)));
        for cut in [0, 1, MAGIC.len(), MAGIC.len() + 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(corrupt(&bytes[..cut]), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(corrupt(&longer));
        let mut garbage = MAGIC.to_vec();
        garbage.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        assert!(corrupt(&garbage));
        // A length field claiming more than the buffer holds.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0; 12]);
        huge.extend_from_slice(&[0xFF; 4]);
        assert!(corrupt(&huge));
        for i in (0..bytes.len()).step_by(97) {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0x55;
            // Either a typed error or (a flipped key byte) well-formed keys.
            let _ = InstallationPreKeys::import(&flipped);
        }
    }
}
