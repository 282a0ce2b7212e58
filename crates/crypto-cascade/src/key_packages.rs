//! KeyPackages of this installation made for its pool (polyproto-mls: many
//! one-time packages and one reusable last-resort package), each with its
//! private parts detached from any MLS layer.
//!
//! A pooled package is handed out long before anyone uses it: a peer claims
//! it today and sends a Welcome for it days later. So the private parts
//! openmls needs to join from that Welcome (the KeyPackage bundle with the
//! HPKE init private key, and the leaf's encryption private key) are
//! exported as one [`KeyPackageSecrets`] blob per package, for the owner to
//! seal and store beside the package, and imported into the MLS layer made
//! for the peer when the Welcome arrives ([`MlsLayer::with_key_package_secrets`]).

use std::fmt;

use crate::codec::{Reader, Writer};
use crate::error::{CascadeError, Result};
use crate::identity::{InstallationIdentity, PeerIdentity};
use crate::layers::mls::{KeyPackageKind, MlsLayer, StorageMap, VerifiedKeyPackage, verify_key_package};
use crate::secret::SecretBytes;

const MAGIC: &[u8] = b"strata-mls-key-package-secrets-v1";
/// Most storage entries one KeyPackage leaves (a handful in practice).
const MAX_ENTRIES: usize = 64;
/// Longest `KeyPackageRef` accepted (SHA-256: 32 bytes).
const MAX_KEY_REF: usize = 64;

/// The private parts of one KeyPackage: the openmls storage entries a
/// layer needs to join a group from a Welcome for that package. Meant to be
/// sealed at rest; zeroized on drop; `Debug` shows no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPackageSecrets(SecretBytes);

impl fmt::Debug for KeyPackageSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPackageSecrets([redacted; {} bytes])", self.0.len())
    }
}

impl KeyPackageSecrets {
    fn encode(key_ref: &[u8], entries: &StorageMap) -> Self {
        let mut w = Writer::new(MAGIC);
        w.bytes(key_ref);
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort();
        w.u32(u32::try_from(sorted.len()).unwrap_or(u32::MAX));
        for (k, v) in sorted {
            w.bytes(k).bytes(v);
        }
        Self(w.finish())
    }

    /// The blob, to seal and store.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Reads back a stored blob. Its structure is checked here; that it
    /// holds the private bundle of its package is checked when a layer
    /// imports it ([`MlsLayer::with_key_package_secrets`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::parse(bytes)?;
        Ok(Self(SecretBytes::from_vec(bytes.to_vec())))
    }

    /// The package's `KeyPackageRef` and the storage entries.
    pub(crate) fn parse(bytes: &[u8]) -> Result<(Vec<u8>, StorageMap)> {
        let mut r = Reader::new(bytes, MAGIC, "KeyPackage secrets")?;
        let key_ref = r.bytes(MAX_KEY_REF)?.to_vec();
        let n = r.count(MAX_ENTRIES)?;
        let mut entries = StorageMap::with_capacity(n);
        for _ in 0..n {
            let k = r.bytes(1 << 16)?.to_vec();
            let v = r.bytes(1 << 20)?.to_vec();
            if entries.insert(k, v).is_some() {
                return Err(CascadeError::CorruptState("KeyPackage secrets: repeated entry"));
            }
        }
        r.finish()?;
        if key_ref.is_empty() || entries.is_empty() {
            return Err(CascadeError::CorruptState("KeyPackage secrets: empty"));
        }
        Ok((key_ref, entries))
    }
}

/// A KeyPackage of this installation for the pool: its public form (as a
/// peer would see it after checking it) and its private parts.
#[derive(Debug)]
pub struct GeneratedKeyPackage {
    /// The package, checked against this installation's own identity.
    pub package: VerifiedKeyPackage,
    /// Its private parts, to seal and keep beside it.
    pub secrets: KeyPackageSecrets,
}

/// Makes a KeyPackage of `local` for its pool: one-time, or last-resort
/// (extension 0x000A and the matching capability), valid for
/// `lifetime_secs` from now (capped as [`MlsLayer::key_package`] caps it).
/// No layer keeps its private keys: they are in the returned secrets only.
pub fn generate_key_package(
    local: &InstallationIdentity,
    kind: KeyPackageKind,
    lifetime_secs: u64,
) -> Result<GeneratedKeyPackage> {
    let (bytes, entries) = MlsLayer::detached_key_package(local, kind, lifetime_secs)?;
    let package = verify_key_package(&bytes, &local.peer_identity())?;
    let secrets = KeyPackageSecrets::encode(package.key_ref(), &entries);
    Ok(GeneratedKeyPackage { package, secrets })
}

impl MlsLayer {
    /// A layer for `local` talking to `peer` that holds the private parts
    /// of a pooled KeyPackage ([`generate_key_package`]), so it can join a
    /// group from a Welcome for that package ([`MlsLayer::join_group`]).
    /// Secrets that do not hold the private bundle of their package, or of
    /// a package of `local`, are [`CascadeError::CorruptState`].
    pub fn with_key_package_secrets(
        local: &InstallationIdentity,
        peer: PeerIdentity,
        secrets: &KeyPackageSecrets,
    ) -> Result<Self> {
        let (key_ref, entries) = KeyPackageSecrets::parse(secrets.as_bytes())?;
        let layer = Self::with_key_package(local, peer, &entries)?;
        if !layer.holds_key_package(&key_ref)? {
            return Err(CascadeError::CorruptState(
                "KeyPackage secrets: no bundle for the package",
            ));
        }
        Ok(layer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use std::collections::HashSet;

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::{AccountIdentity, AesGcmLayer, KemKeyPair, MlKemLayer, PairCascade, SignalLayer};

    const NOW_MS: u64 = 1_800_000_000_000;

    fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
        InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
    }

    /// A package made, its secrets exported and the original dropped; later
    /// a fresh layer imports the stored blob and joins the group another
    /// installation created from the package; messages flow both ways.
    #[test]
    fn a_pooled_package_joins_a_group_later() {
        let mut rng = ChaCha20Rng::seed_from_u64(71);
        let (a, b) = (installation(&mut rng), installation(&mut rng));
        for kind in [KeyPackageKind::OneTime, KeyPackageKind::LastResort] {
            let made = generate_key_package(&b, kind, 3600).unwrap();
            assert_eq!(made.package.last_resort(), kind == KeyPackageKind::LastResort);
            let public = made.package.bytes().to_vec();
            let stored = made.secrets.as_bytes().to_vec();
            drop(made);

            // Days later: A claimed `public` and sends a Welcome.
            let mut a_mls = MlsLayer::new(&a, b.peer_identity()).unwrap();
            let welcome = a_mls.create_group(&public).unwrap();
            let secrets = KeyPackageSecrets::from_bytes(&stored).unwrap();
            let mut b_mls = MlsLayer::with_key_package_secrets(&b, a.peer_identity(), &secrets).unwrap();
            b_mls.join_group(&welcome).unwrap();
            assert_eq!(b_mls.epoch(), a_mls.epoch());

            // The other layers of a pair, so messages go through the
            // whole cascade.
            let (ai, bi) = (a.installation_id(), b.installation_id());
            let mut a_signal = SignalLayer::new(&a, b.peer_identity()).unwrap();
            let mut b_signal = SignalLayer::new(&b, a.peer_identity()).unwrap();
            let b_bundle = b_signal.pre_key_bundle(NOW_MS, &mut rng).unwrap();
            a_signal.process_bundle(&b_bundle, NOW_MS, &mut rng).unwrap();
            let a_pair = KemKeyPair::generate(&a, 1, &mut rng).unwrap();
            let b_pair = KemKeyPair::generate(&b, 1, &mut rng).unwrap();
            let (a_pub, b_pub) = (a_pair.public().clone(), b_pair.public().clone());
            let mut a_kem = MlKemLayer::new(ai, b.peer_identity(), a_pair);
            let mut b_kem = MlKemLayer::new(bi, a.peer_identity(), b_pair);
            a_kem.set_peer_key(b_pub).unwrap();
            b_kem.set_peer_key(a_pub).unwrap();
            let mut at_a = PairCascade::new(ai, bi, a_mls, a_signal, a_kem, AesGcmLayer::new(ai, bi));
            let mut at_b = PairCascade::new(bi, ai, b_mls, b_signal, b_kem, AesGcmLayer::new(bi, ai));
            for k in 0..3u8 {
                let p = at_a.encrypt(&[k; 32], NOW_MS, &mut rng).unwrap();
                assert_eq!(at_b.decrypt(&p, &mut rng).unwrap(), vec![k; 32]);
                let p = at_b.encrypt(&[k + 9; 32], NOW_MS, &mut rng).unwrap();
                assert_eq!(at_a.decrypt(&p, &mut rng).unwrap(), vec![k + 9; 32]);
            }
        }
    }

    /// The secrets of one package do not let a layer join from a Welcome
    /// made for another package.
    #[test]
    fn secrets_only_open_their_own_package() {
        let mut rng = ChaCha20Rng::seed_from_u64(72);
        let (a, b) = (installation(&mut rng), installation(&mut rng));
        let first = generate_key_package(&b, KeyPackageKind::OneTime, 3600).unwrap();
        let second = generate_key_package(&b, KeyPackageKind::OneTime, 3600).unwrap();
        let mut a_mls = MlsLayer::new(&a, b.peer_identity()).unwrap();
        let welcome = a_mls.create_group(second.package.bytes()).unwrap();
        let mut b_mls = MlsLayer::with_key_package_secrets(&b, a.peer_identity(), &first.secrets).unwrap();
        assert!(matches!(
            b_mls.join_group(&welcome),
            Err(CascadeError::PeerProtocol { .. })
        ));
        assert!(b_mls.epoch().is_none());
        // Another installation cannot use B's secrets as its own.
        let c = installation(&mut rng);
        assert!(matches!(
            MlsLayer::with_key_package_secrets(&c, a.peer_identity(), &first.secrets),
            Err(CascadeError::CorruptState(_))
        ));
    }

    /// Cut, grown, garbage or altered blobs are typed errors, never a
    /// panic and never a layer that silently lacks its keys.
    #[test]
    fn damaged_secrets_are_typed_errors() {
        let mut rng = ChaCha20Rng::seed_from_u64(73);
        let (a, b) = (installation(&mut rng), installation(&mut rng));
        let made = generate_key_package(&b, KeyPackageKind::OneTime, 3600).unwrap();
        let bytes = made.secrets.as_bytes();
        let corrupt = |blob: &[u8]| {
            matches!(
                KeyPackageSecrets::from_bytes(blob).and_then(|s| MlsLayer::with_key_package_secrets(
                    &b,
                    a.peer_identity(),
                    &s
                )),
                Err(CascadeError::CorruptState(_))
            )
        };
        for cut in [0, 1, MAGIC.len(), MAGIC.len() + 3, bytes.len() / 2, bytes.len() - 1] {
            assert!(corrupt(&bytes[..cut]), "cut at {cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(corrupt(&longer));
        let mut garbage = MAGIC.to_vec();
        garbage.extend((0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        assert!(corrupt(&garbage));
        // The package reference changed: no bundle for it.
        let mut other_ref = bytes.to_vec();
        other_ref[MAGIC.len() + 4] ^= 1;
        assert!(corrupt(&other_ref));
        // Any flipped byte: a typed error, or (a byte of a private key) a
        // layer; never a panic.
        for i in (0..bytes.len()).step_by(7) {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0x55;
            let _ = KeyPackageSecrets::from_bytes(&flipped)
                .and_then(|s| MlsLayer::with_key_package_secrets(&b, a.peer_identity(), &s));
        }
        // Debug shows no bytes.
        let shown = format!("{:?}", made.secrets);
        assert!(shown.contains("redacted"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", &bytes[..8])));
    }

    /// Every package, one-time or last-resort, has its own `init_key`
    /// (and reference).
    #[test]
    fn packages_never_share_an_init_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(74);
        let b = installation(&mut rng);
        let mut init_keys = HashSet::new();
        let mut refs = HashSet::new();
        for i in 0..24 {
            let kind = if i % 8 == 0 {
                KeyPackageKind::LastResort
            } else {
                KeyPackageKind::OneTime
            };
            let made = generate_key_package(&b, kind, 3600).unwrap();
            assert!(init_keys.insert(made.package.init_key().to_vec()));
            assert!(refs.insert(made.package.key_ref().to_vec()));
        }
    }
}
