//! Shared set-up: two installations go from nothing to a working cascade by
//! calling the layer APIs directly.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::layers::mls::DEFAULT_KEY_PACKAGE_LIFETIME_SECS;
use strata_cascade::{
    AccountIdentity, AesGcmLayer, InstallationIdentity, KemKeyPair, KeyPackageKind, MlKemLayer, MlsLayer, PairCascade,
    SignalBundle, SignalLayer,
};

pub const NOW: u64 = 1_760_000_000_000;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub struct Pair {
    pub alice: PairCascade,
    pub bob: PairCascade,
    pub alice_id: InstallationIdentity,
    pub bob_id: InstallationIdentity,
}

pub fn installation(rng: &mut ChaCha20Rng) -> InstallationIdentity {
    InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
}

/// One side's four layers, set up but not yet assembled.
pub struct Layers {
    pub mls: MlsLayer,
    pub signal: SignalLayer,
    pub kem: MlKemLayer,
    pub aes: AesGcmLayer,
}

/// Alice initiates: Bob's KeyPackage → Alice's group + Welcome → Bob joins;
/// Bob's Signal bundle → Alice's PQXDH; signed ML-KEM keys both ways.
pub fn setup_layers(rng: &mut ChaCha20Rng) -> (InstallationIdentity, Layers, InstallationIdentity, Layers) {
    let alice_id = installation(rng);
    let bob_id = installation(rng);
    let (a, b) = (alice_id.installation_id(), bob_id.installation_id());

    let mut a_mls = MlsLayer::new(&alice_id, bob_id.peer_identity()).unwrap();
    let mut b_mls = MlsLayer::new(&bob_id, alice_id.peer_identity()).unwrap();
    let kp = b_mls
        .key_package(KeyPackageKind::LastResort, DEFAULT_KEY_PACKAGE_LIFETIME_SECS)
        .unwrap();
    let welcome = a_mls.create_group(&kp).unwrap();
    b_mls.join_group(&welcome).unwrap();

    let mut a_sig = SignalLayer::new(&alice_id, bob_id.peer_identity()).unwrap();
    let mut b_sig = SignalLayer::new(&bob_id, alice_id.peer_identity()).unwrap();
    let bundle = b_sig.pre_key_bundle(NOW, rng).unwrap();
    // Through the PDU form, as JSON, as the session sends it.
    let pdu = serde_json::to_vec(&bundle.to_pdu().unwrap()).unwrap();
    let bundle = SignalBundle::from_pdu(&serde_json::from_slice(&pdu).unwrap()).unwrap();
    a_sig.process_bundle(&bundle, NOW, rng).unwrap();

    let a_key = KemKeyPair::generate(&alice_id, 1, rng).unwrap();
    let b_key = KemKeyPair::generate(&bob_id, 1, rng).unwrap();
    let (a_pub, b_pub) = (a_key.public().clone(), b_key.public().clone());
    let mut a_kem = MlKemLayer::new(a, bob_id.peer_identity(), a_key);
    let mut b_kem = MlKemLayer::new(b, alice_id.peer_identity(), b_key);
    a_kem.set_peer_key(b_pub).unwrap();
    b_kem.set_peer_key(a_pub).unwrap();

    let alice = Layers {
        mls: a_mls,
        signal: a_sig,
        kem: a_kem,
        aes: AesGcmLayer::new(a, b),
    };
    let bob = Layers {
        mls: b_mls,
        signal: b_sig,
        kem: b_kem,
        aes: AesGcmLayer::new(b, a),
    };
    (alice_id, alice, bob_id, bob)
}

pub fn setup(rng: &mut ChaCha20Rng) -> Pair {
    let (alice_id, a, bob_id, b) = setup_layers(rng);
    let (ai, bi) = (alice_id.installation_id(), bob_id.installation_id());
    let alice = PairCascade::new(ai, bi, a.mls, a.signal, a.kem, a.aes);
    let bob = PairCascade::new(bi, ai, b.mls, b.signal, b.kem, b.aes);
    Pair {
        alice,
        bob,
        alice_id,
        bob_id,
    }
}

/// A set-up pair that has exchanged one message each way (Signal sessions
/// confirmed, ML-KEM epochs acknowledged).
pub fn established(rng: &mut ChaCha20Rng) -> Pair {
    let mut p = setup(rng);
    let m = p.alice.encrypt(b"hello bob", NOW, rng).unwrap();
    assert_eq!(p.bob.decrypt(&m, rng).unwrap(), b"hello bob");
    let m = p.bob.encrypt(b"hello alice", NOW, rng).unwrap();
    assert_eq!(p.alice.decrypt(&m, rng).unwrap(), b"hello alice");
    let m = p.alice.encrypt(b"ack", NOW, rng).unwrap();
    assert_eq!(p.bob.decrypt(&m, rng).unwrap(), b"ack");
    p
}
