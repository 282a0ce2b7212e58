//! Shared by the crash test and the benchmark: two installations from
//! nothing to an established cascade, by the layer APIs (the handshake the
//! session would run, without its PDUs).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use strata_cascade::layers::mls::DEFAULT_KEY_PACKAGE_LIFETIME_SECS;
use strata_cascade::{
    AccountIdentity, AesGcmLayer, InstallationIdentity, KemKeyPair, KeyPackageKind, MlKemLayer, MlsLayer, PairCascade,
    SignalLayer,
};

/// Both sides of an established pair.
pub struct Pair {
    pub alice_id: InstallationIdentity,
    pub alice: PairCascade,
    pub bob_id: InstallationIdentity,
    pub bob: PairCascade,
}

pub fn installation() -> InstallationIdentity {
    let mut rng = rand::rng();
    InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap()
}

/// Alice creates the MLS group from Bob's KeyPackage, runs PQXDH on Bob's
/// bundle, both install signed ML-KEM keys; then one message each way and
/// one back, so Signal sessions are confirmed and KEM epochs acknowledged
/// and either side may send next.
pub fn established(now_ms: u64) -> Pair {
    let mut rng = rand::rng();
    let (alice_id, bob_id) = (installation(), installation());
    let (a, b) = (alice_id.installation_id(), bob_id.installation_id());
    let mut a_mls = MlsLayer::new(&alice_id, bob_id.peer_identity()).unwrap();
    let mut b_mls = MlsLayer::new(&bob_id, alice_id.peer_identity()).unwrap();
    let kp = b_mls
        .key_package(KeyPackageKind::LastResort, DEFAULT_KEY_PACKAGE_LIFETIME_SECS)
        .unwrap();
    b_mls.join_group(&a_mls.create_group(&kp).unwrap()).unwrap();
    let mut a_sig = SignalLayer::new(&alice_id, bob_id.peer_identity()).unwrap();
    let mut b_sig = SignalLayer::new(&bob_id, alice_id.peer_identity()).unwrap();
    let bundle = b_sig.pre_key_bundle(now_ms, &mut rng).unwrap();
    a_sig.process_bundle(&bundle, now_ms, &mut rng).unwrap();
    let a_key = KemKeyPair::generate(&alice_id, 1, &mut rng).unwrap();
    let b_key = KemKeyPair::generate(&bob_id, 1, &mut rng).unwrap();
    let (a_pub, b_pub) = (a_key.public().clone(), b_key.public().clone());
    let mut a_kem = MlKemLayer::new(a, bob_id.peer_identity(), a_key);
    let mut b_kem = MlKemLayer::new(b, alice_id.peer_identity(), b_key);
    a_kem.set_peer_key(b_pub).unwrap();
    b_kem.set_peer_key(a_pub).unwrap();
    let mut alice = PairCascade::new(a, b, a_mls, a_sig, a_kem, AesGcmLayer::new(a, b));
    let mut bob = PairCascade::new(b, a, b_mls, b_sig, b_kem, AesGcmLayer::new(b, a));
    let m = alice.encrypt(b"hello", now_ms, &mut rng).unwrap();
    bob.decrypt(&m, &mut rng).unwrap();
    let m = bob.encrypt(b"hello back", now_ms, &mut rng).unwrap();
    alice.decrypt(&m, &mut rng).unwrap();
    let m = alice.encrypt(b"ack", now_ms, &mut rng).unwrap();
    bob.decrypt(&m, &mut rng).unwrap();
    Pair {
        alice_id,
        alice,
        bob_id,
        bob,
    }
}
