//! Known-answer tests: Enkrypted Chat Appendix A V1–V3 through the same
//! composition code as the real layers, and Signal's published safety-number
//! vector (anchors-style-ecosystem.md §B.5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use libsignal_protocol_syft::IdentityKey;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::layers::mock::{GOLDEN_TIMESTAMP, GOLDEN_VERSION};
use strata_cascade::{Cascade, FrozenStopwatch, GoldenMockLayer, InstallationId, Layer, SafetyNumber};
use strata_proto::{EncryptedMessage, ParamValue};

fn golden(names: &[&'static str]) -> Cascade {
    let layers: Vec<Box<dyn Layer>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| Box::new(GoldenMockLayer::new(n, i as u8 + 1)) as Box<dyn Layer>)
        .collect();
    Cascade::new(
        layers,
        InstallationId::from_bytes([1; 16]),
        InstallationId::from_bytes([2; 16]),
    )
    .unwrap()
    .with_stopwatch(Box::new(FrozenStopwatch))
}

fn check_vector(names: &[&'static str], plaintext: &str, expected: &str) {
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let mut sender = golden(names);
    let payload = sender
        .encrypt(&hex::decode(plaintext).unwrap(), GOLDEN_TIMESTAMP, &mut rng)
        .unwrap();
    let ct = payload.final_ciphertext.as_ref().unwrap().as_bytes();
    assert_eq!(hex::encode(ct), expected);
    assert_eq!(payload.original_size, plaintext.len() as u64 / 2);
    assert_eq!(payload.final_size, expected.len() as u64 / 2);
    assert_eq!(payload.timestamp, Some(GOLDEN_TIMESTAMP));
    assert_eq!(payload.total_processing_time, 0);
    for (i, (meta, params)) in payload.layers.iter().zip(payload.layer_parameters.iter()).enumerate() {
        assert_eq!(meta.algorithm.as_str(), names[i]);
        assert_eq!(meta.version.as_str(), GOLDEN_VERSION);
        assert_eq!(meta.timestamp, GOLDEN_TIMESTAMP);
        assert_eq!(meta.input_size, payload.original_size + i as u64);
        assert_eq!(meta.output_size, payload.original_size + i as u64 + 1);
        assert_eq!(meta.processing_time, 0);
        assert_eq!(params.len(), 1);
        assert_eq!(params.get("goldenTag"), Some(&ParamValue::Uint(i as u64 + 1)));
    }
    // And back, on the receiving side.
    let mut receiver = Cascade::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Box::new(GoldenMockLayer::new(n, i as u8 + 1)) as Box<dyn Layer>)
            .collect(),
        InstallationId::from_bytes([2; 16]),
        InstallationId::from_bytes([1; 16]),
    )
    .unwrap();
    assert_eq!(hex::encode(receiver.decrypt(&payload, &mut rng).unwrap()), plaintext);
}

#[test]
fn appendix_a_v1_mock_cascade_hi() {
    check_vector(&["MockCipher1", "MockCipher2", "MockCipher3"], "4869", "4869010203");
}

#[test]
fn appendix_a_v2_profile_order_mock_cascade() {
    check_vector(&["MLS", "Signal", "ML-KEM", "AES"], "0a141e28", "0a141e2801020304");
}

#[test]
fn appendix_a_v3_cascaded_payload_shape() {
    // V3 as published (a shape example: its one-entry `layers` does not
    // match its five ciphertext bytes), kept beside the PDU vectors.
    let v3 = include_str!("../../proto/test_vectors/appendix_a_v3.json");
    let parsed: EncryptedMessage = serde_json::from_str(v3).unwrap();
    assert!(parsed.encrypted && parsed.cascaded);
    let p = &parsed.cascaded_payload;
    assert_eq!(p.final_ciphertext.as_ref().unwrap().as_bytes(), &[72, 105, 1, 2, 3]);
    assert_eq!(
        (p.original_size, p.final_size, p.timestamp),
        (2, 5, Some(GOLDEN_TIMESTAMP))
    );
    // Our cascade refuses it (one layer declared, three configured) rather
    // than guessing.
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let mut c = golden(&["MockCipher1", "MockCipher2", "MockCipher3"]);
    assert!(c.decrypt(p, &mut rng).is_err());

    // V1 wrapped in the V3 structure has V3's fields, and its ciphertext
    // bytes are V3's.
    let payload = c.encrypt(b"Hi", GOLDEN_TIMESTAMP, &mut rng).unwrap();
    let wrapped = EncryptedMessage {
        encrypted: true,
        cascaded: true,
        chunked: false,
        total_chunks: None,
        cascaded_payload: payload,
    };
    let json = serde_json::to_value(&wrapped).unwrap();
    let v3_json: serde_json::Value = serde_json::from_str(v3).unwrap();
    let ours = json["cascadedPayload"].as_object().unwrap();
    for key in v3_json["cascadedPayload"].as_object().unwrap().keys() {
        assert!(ours.contains_key(key), "missing {key}");
    }
    assert_eq!(json["encrypted"], true);
    assert_eq!(json["cascaded"], true);
    let back: EncryptedMessage = serde_json::from_value(json).unwrap();
    assert_eq!(
        back.cascaded_payload.final_ciphertext.unwrap().as_bytes(),
        &[72, 105, 1, 2, 3]
    );
    assert_eq!(
        back.cascaded_payload.layers.as_slice()[0].algorithm.as_str(),
        "MockCipher1"
    );
}

const ALICE_IDENTITY: &str = "0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868";
const BOB_IDENTITY: &str = "05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b";
const DISPLAYABLE: &str = "300354477692869396892869876765458257569162576843440918079131";
const ALICE_SCANNABLE_V2: &str = "080212220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d";

fn keys() -> (IdentityKey, IdentityKey) {
    (
        IdentityKey::decode(&hex::decode(ALICE_IDENTITY).unwrap()).unwrap(),
        IdentityKey::decode(&hex::decode(BOB_IDENTITY).unwrap()).unwrap(),
    )
}

#[test]
fn signal_safety_number_vector() {
    let (a, b) = keys();
    let alice = SafetyNumber::signal_compatible(2, b"+14152222222", &a, b"+14153333333", &b).unwrap();
    let bob = SafetyNumber::signal_compatible(2, b"+14153333333", &b, b"+14152222222", &a).unwrap();
    assert_eq!(alice.digits().unwrap(), DISPLAYABLE);
    assert_eq!(bob.digits().unwrap(), DISPLAYABLE);
    assert_eq!(alice.grouped().unwrap().split(' ').count(), 12);
    assert_eq!(hex::encode(alice.scannable().unwrap()), ALICE_SCANNABLE_V2);
    // Each side accepts the other's QR, not its own, not a wrong one.
    assert!(bob.matches_scanned(&alice.scannable().unwrap()).unwrap());
    assert!(alice.matches_scanned(&bob.scannable().unwrap()).unwrap());
    assert!(!alice.matches_scanned(&alice.scannable().unwrap()).unwrap());
    let mut wrong = alice.scannable().unwrap();
    let last = wrong.len() - 1;
    wrong[last] ^= 1;
    assert!(!bob.matches_scanned(&wrong).unwrap());
    // A v1 QR against a v2 number is a version error.
    let v1 = SafetyNumber::signal_compatible(1, b"+14152222222", &a, b"+14153333333", &b).unwrap();
    assert_eq!(v1.digits().unwrap(), DISPLAYABLE);
    assert!(bob.matches_scanned(&v1.scannable().unwrap()).is_err());
    assert!(alice.matches_digits(&bob.grouped().unwrap()).unwrap());
    assert!(!alice.matches_digits(&DISPLAYABLE.replace('3', "4")).unwrap());
}

#[test]
fn strata_safety_numbers_are_domain_separated() {
    let (a, b) = keys();
    let strata = SafetyNumber::new(b"alice", &a, b"bob", &b).unwrap();
    let strata_bob = SafetyNumber::new(b"bob", &b, b"alice", &a).unwrap();
    let signal = SafetyNumber::signal_compatible(2, b"alice", &a, b"bob", &b).unwrap();
    assert_eq!(strata.digits().unwrap(), strata_bob.digits().unwrap());
    assert_eq!(strata.digits().unwrap().len(), 60);
    assert_ne!(strata.digits().unwrap(), signal.digits().unwrap());
    assert!(strata_bob.matches_scanned(&strata.scannable().unwrap()).unwrap());
}
