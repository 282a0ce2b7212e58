//! Identity: key bindings verified before use, export/import, and `Debug`
//! output that never shows a secret (snapshot of the redacted forms).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use common::{NOW, established, installation, rng};
use libsignal_protocol_syft::IdentityKeyPair;
use strata_cascade::{
    AccountIdentity, CascadeError, InstallationIdentity, KemKeyPair, MlKemLayer, SignalBundle, SignalLayer,
    SignedKemKey,
};

#[test]
fn kem_key_must_be_signed_by_the_pinned_identity() {
    let mut rng = rng(30);
    let (alice, bob, mallory) = (installation(&mut rng), installation(&mut rng), installation(&mut rng));
    let a_key = KemKeyPair::generate(&alice, 1, &mut rng).unwrap();
    let mut a_kem = MlKemLayer::new(alice.installation_id(), bob.peer_identity(), a_key);
    // Mallory's key, correctly signed by Mallory, claiming to be Bob's.
    let m_key = KemKeyPair::generate(&mallory, 1, &mut rng).unwrap();
    let mut claimed = m_key.public().clone();
    claimed.installation_id = bob.installation_id();
    assert!(matches!(a_kem.set_peer_key(claimed), Err(CascadeError::BadBinding(_))));
    // Bob's key with a substituted encapsulation key.
    let b_key = KemKeyPair::generate(&bob, 1, &mut rng).unwrap();
    let mut swapped = b_key.public().clone();
    swapped.encapsulation_key = m_key.public().encapsulation_key.clone();
    assert!(matches!(a_kem.set_peer_key(swapped), Err(CascadeError::BadBinding(_))));
    // Another key id under the same signature.
    let mut renumbered = b_key.public().clone();
    renumbered.key_id = 9;
    assert!(matches!(
        a_kem.set_peer_key(renumbered),
        Err(CascadeError::BadBinding(_))
    ));
    // Without a verified peer key there is no epoch to send in.
    assert!(a_kem.send_epoch().is_none());
    // The genuine one, through its wire encoding.
    let wire = SignedKemKey::from_bytes(&b_key.public().to_bytes()).unwrap();
    a_kem.set_peer_key(wire).unwrap();
    assert!(SignedKemKey::from_bytes(&b_key.public().to_bytes()[..100]).is_err());
}

#[test]
fn signal_bundle_must_come_from_the_pinned_identity() {
    let mut rng = rng(31);
    let (alice, bob, mallory) = (installation(&mut rng), installation(&mut rng), installation(&mut rng));
    let mut m_sig = SignalLayer::new(&mallory, alice.peer_identity()).unwrap();
    let bundle = m_sig.pre_key_bundle(NOW, &mut rng).unwrap();
    let mut a_sig = SignalLayer::new(&alice, bob.peer_identity()).unwrap();
    assert!(matches!(
        a_sig.process_bundle(&bundle, NOW, &mut rng),
        Err(CascadeError::UntrustedIdentity)
    ));
    // A bundle whose Kyber pre-key signature is broken is refused by libsignal.
    let mut b_sig = SignalLayer::new(&bob, alice.peer_identity()).unwrap();
    let mut bytes = b_sig.pre_key_bundle(NOW, &mut rng).unwrap().to_bytes().unwrap();
    let n = bytes.len();
    bytes[n - 33 - 4 - 10] ^= 1; // inside the Kyber signature
    let bad = SignalBundle::from_bytes(&bytes).unwrap();
    assert!(a_sig.process_bundle(&bad, NOW, &mut rng).is_err());
    assert!(!a_sig.has_session());
}

#[test]
fn identities_round_trip() {
    let mut rng = rng(32);
    let alice = installation(&mut rng);
    let exported = alice.export().unwrap();
    let back = InstallationIdentity::import(exported.as_bytes()).unwrap();
    assert_eq!(back.peer_identity(), alice.peer_identity());
    assert_eq!(back.registration_id(), alice.registration_id());
    assert_eq!(back.export().unwrap(), exported);
    assert!(InstallationIdentity::import(&exported.as_bytes()[..exported.len() - 1]).is_err());
    let acct = AccountIdentity::import(alice.account().export().as_bytes()).unwrap();
    assert_eq!(acct.identity_key(), alice.account().identity_key());
}

#[test]
fn debug_output_never_shows_secrets() {
    let mut rng = rng(33);
    let mut p = established(&mut rng);
    let id = &p.alice_id;
    let private = IdentityKeyPair::try_from(id.account().export().as_bytes()).unwrap();
    let private_hex = hex::encode(private.private_key().serialize());
    let public_hex = hex::encode(id.account().identity_key().serialize());

    // Snapshot of the redacted identity forms.
    assert_eq!(
        format!("{:?}", id.account()),
        format!("AccountIdentity {{ identity_key: \"{public_hex}\", private_key: \"[redacted]\" }}")
    );
    let kem = KemKeyPair::generate(id, 7, &mut rng).unwrap();
    assert_eq!(
        format!("{kem:?}"),
        format!(
            "KemKeyPair {{ public: SignedKemKey {{ installation_id: {:?}, key_id: 7, encapsulation_key: 1184 bytes, .. }}, seed: \"[redacted]\" }}",
            id.installation_id()
        )
    );
    let state = p.alice.export().unwrap();
    assert_eq!(
        format!("{state:?}"),
        format!("SecretBytes([redacted; {} bytes])", state.len())
    );

    let m = p.alice.encrypt(b"a secret plaintext", NOW, &mut rng).unwrap();
    let decrypted = p.bob.decrypt(&m, &mut rng).map(|_| "ok");
    let everything = format!(
        "{:?}\n{:?}\n{:#?}\n{:?}\n{:?}\n{:?}",
        id,
        id.account(),
        p.alice,
        p.bob,
        m,
        decrypted
    );
    assert!(!everything.contains(&private_hex), "identity private key leaked");
    assert!(!everything.contains("a secret plaintext"));
    assert!(everything.contains("[redacted]"));
}

#[test]
fn signal_bundle_wire_forms_round_trip_and_refuse_bad_input() {
    let mut rng = rng(34);
    let (alice, bob) = (installation(&mut rng), installation(&mut rng));
    let mut b_sig = SignalLayer::new(&bob, alice.peer_identity()).unwrap();
    let bundle = b_sig.pre_key_bundle(NOW, &mut rng).unwrap();
    let pdu = bundle.to_pdu().unwrap();
    let again = SignalBundle::from_pdu(&pdu).unwrap();
    assert_eq!(again.to_bytes().unwrap(), bundle.to_bytes().unwrap());
    assert_eq!(
        SignalBundle::from_bytes(&bundle.to_bytes().unwrap())
            .unwrap()
            .to_pdu()
            .unwrap(),
        pdu
    );
    // A one-time pre-key id without its key.
    let mut bad = pdu.clone();
    bad.pre_key = None;
    assert!(matches!(
        SignalBundle::from_pdu(&bad),
        Err(CascadeError::Malformed { .. })
    ));
    // A Kyber768-sized key where Kyber1024 is required.
    let mut bad = pdu.clone();
    bad.kyber_pre_key = strata_proto::Blob::new(vec![8u8; 1185]).unwrap();
    assert!(matches!(
        SignalBundle::from_pdu(&bad),
        Err(CascadeError::Malformed { .. })
    ));
    let mut bad = pdu;
    bad.identity_key = strata_proto::Blob::new(vec![5u8; 10]).unwrap();
    assert!(SignalBundle::from_pdu(&bad).is_err());
}

#[test]
fn layers_kept_by_the_caller_go_through_the_same_composition() {
    use strata_cascade::{Cascade, Layer};
    let mut rng = rng(35);
    let (alice, bob) = (installation(&mut rng), installation(&mut rng));
    let (a, b) = (alice.installation_id(), bob.installation_id());
    let mut a_sig = SignalLayer::new(&alice, bob.peer_identity()).unwrap();
    let mut b_sig = SignalLayer::new(&bob, alice.peer_identity()).unwrap();
    let bundle = b_sig.pre_key_bundle(NOW, &mut rng).unwrap();
    a_sig.process_bundle(&bundle, NOW, &mut rng).unwrap();
    let m = Cascade::encrypt_with(&mut [&mut a_sig as &mut dyn Layer], a, b, b"confirm", NOW, &mut rng).unwrap();
    let pt = Cascade::decrypt_with(&mut [&mut b_sig as &mut dyn Layer], b, a, &m, &mut rng).unwrap();
    assert_eq!(pt, b"confirm");
    assert!(b_sig.has_session());
    // A replay through the same path is refused.
    assert!(Cascade::decrypt_with(&mut [&mut b_sig as &mut dyn Layer], b, a, &m, &mut rng).is_err());
    assert!(Cascade::encrypt_with(&mut [], a, b, b"x", NOW, &mut rng).is_err());
}
