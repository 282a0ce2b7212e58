//! Two installations from nothing to a working cascade, by calling the
//! layer APIs directly (the handshake the session would run, without its
//! PDUs): shared by the cascade's and the store's tests and benches.

use rand::{CryptoRng, Rng};
use strata_cascade::layers::mls::DEFAULT_KEY_PACKAGE_LIFETIME_SECS;
use strata_cascade::{
    AccountIdentity, AesGcmLayer, InstallationIdentity, KemKeyPair, KeyPackageKind, MlKemLayer, MlsLayer, PairCascade,
    SignalBundle, SignalLayer,
};

/// A fresh installation (new account, new device keys) from `rng`.
pub fn installation<R: Rng + CryptoRng>(rng: &mut R) -> InstallationIdentity {
    InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap()
}

/// One side's four layers, set up but not yet assembled.
pub struct Layers {
    /// MLS, in the pair's group.
    pub mls: MlsLayer,
    /// Signal, with a PQXDH session (Alice's side unconfirmed).
    pub signal: SignalLayer,
    /// ML-KEM, with both signed keys installed.
    pub kem: MlKemLayer,
    /// AES-256-GCM.
    pub aes: AesGcmLayer,
}

/// Alice initiates at `now_ms`: Bob's KeyPackage → Alice's group + Welcome
/// → Bob joins; Bob's Signal bundle (through its PDU form, as JSON, as the
/// session sends it) → Alice's PQXDH; signed ML-KEM keys both ways.
pub fn setup_layers<R: Rng + CryptoRng>(
    rng: &mut R,
    now_ms: u64,
) -> (InstallationIdentity, Layers, InstallationIdentity, Layers) {
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
    let bundle = b_sig.pre_key_bundle(now_ms, rng).unwrap();
    let pdu = serde_json::to_vec(&bundle.to_pdu().unwrap()).unwrap();
    let bundle = SignalBundle::from_pdu(&serde_json::from_slice(&pdu).unwrap()).unwrap();
    a_sig.process_bundle(&bundle, now_ms, rng).unwrap();

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

/// Both sides of a pair.
pub struct Pair {
    /// Alice's cascade.
    pub alice: PairCascade,
    /// Bob's cascade.
    pub bob: PairCascade,
    /// Alice's installation.
    pub alice_id: InstallationIdentity,
    /// Bob's installation.
    pub bob_id: InstallationIdentity,
}

/// [`setup_layers`], assembled into two cascades.
pub fn setup<R: Rng + CryptoRng>(rng: &mut R, now_ms: u64) -> Pair {
    let (alice_id, a, bob_id, b) = setup_layers(rng, now_ms);
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

/// A set-up pair that has exchanged one message each way and one back
/// (Signal sessions confirmed, ML-KEM epochs acknowledged), so either side
/// may send next.
pub fn established<R: Rng + CryptoRng>(rng: &mut R, now_ms: u64) -> Pair {
    let mut p = setup(rng, now_ms);
    let m = p.alice.encrypt(b"hello bob", now_ms, rng).unwrap();
    assert_eq!(p.bob.decrypt(&m, rng).unwrap(), b"hello bob");
    let m = p.bob.encrypt(b"hello alice", now_ms, rng).unwrap();
    assert_eq!(p.alice.decrypt(&m, rng).unwrap(), b"hello alice");
    let m = p.alice.encrypt(b"ack", now_ms, rng).unwrap();
    assert_eq!(p.bob.decrypt(&m, rng).unwrap(), b"ack");
    p
}
