//! The PDU catalog: golden JSON per type, round-trip properties, and hostile input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_proto::limits::{MAX_CATCH_UP, MAX_GROUP_PROPOSALS, MAX_JSON_DEPTH, MAX_PDU_BYTES, MAX_SYNC_RANGES};
use strata_proto::*;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_vectors/pdus")
}

/// Each sample's encoding must equal its golden file byte for byte, and the
/// golden file must decode to the sample. `STRATA_BLESS=1` rewrites the files:
/// a diff there is a wire-format change and needs a decision.
#[test]
fn golden_json_for_every_pdu_type() {
    let bless = std::env::var_os("STRATA_BLESS").is_some();
    let samples = common::samples();
    let covered: BTreeSet<PduType> = samples.iter().map(Pdu::pdu_type).collect();
    let all: BTreeSet<PduType> = PduType::ALL.iter().copied().collect();
    assert_eq!(covered, all, "every PDU type needs a golden sample");

    for pdu in samples {
        let name = pdu.pdu_type().as_str();
        let path = golden_dir().join(format!("{name}.json"));
        // Pretty-printed from the PDU itself, so the file shows the wire's field order.
        let pretty = serde_json::to_string_pretty(&pdu).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &pretty).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with STRATA_BLESS=1 to create)", path.display()));
        assert_eq!(pretty, golden, "{name}: encoding differs from its golden file");
        assert_eq!(
            Pdu::decode(golden.as_bytes()).unwrap(),
            pdu,
            "{name}: golden file decodes differently"
        );
        // `type` comes first on the wire.
        assert!(
            pdu.encode().starts_with(format!("{{\"type\":\"{name}\"").as_bytes()),
            "{name}: `type` must be the first field"
        );
    }
}

#[test]
fn type_strings_are_the_published_ones() {
    let names: Vec<&str> = PduType::ALL.iter().map(|t| t.as_str()).collect();
    for published in [
        "mls-key-package-request",
        "mls-key-package",
        "mls-encryption-sync-request",
        "mls-encryption-sync-response",
        "signal-key-exchange-request",
        "signal-key-exchange-response",
        "signal-session-complete",
        "mlkem-key-exchange",
        "mlkem-key-exchange-response",
        "mls-commit",
        "mls-welcome",
        "mls-welcome-ack",
        "message",
        "__mls_chunk__",
        "protocol-error",
        "rotation-timestamp-broadcast",
        "group-member-joined",
    ] {
        assert!(names.contains(&published), "{published} missing from the catalog");
        assert_eq!(PduType::from_name(published).unwrap().as_str(), published);
    }
    let handshake = PduType::ALL.iter().filter(|t| t.phase() == Phase::Handshake).count();
    assert_eq!(handshake, 12, "P3 steps 1–11, step 10 being commit or welcome");
}

/// Replaces every base64 string that decodes to bytes in `bytes_fields` by
/// the P5 array form.
fn to_p5_arrays(value: &mut serde_json::Value, bytes_fields: &[&str]) {
    use base64::Engine as _;
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if bytes_fields.contains(&k.as_str())
                    && let serde_json::Value::String(s) = v
                {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).unwrap();
                    *v = serde_json::Value::Array(bytes.into_iter().map(serde_json::Value::from).collect());
                } else {
                    to_p5_arrays(v, bytes_fields);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| to_p5_arrays(v, bytes_fields)),
        _ => {}
    }
}

#[test]
fn decoders_accept_the_p5_byte_array_form() {
    let fields = [
        "sessionId",
        "identityKey",
        "keyPackage",
        "proof",
        "preKey",
        "signedPreKey",
        "signedPreKeySignature",
        "kyberPreKey",
        "kyberPreKeySignature",
        "message",
        "encapsulationKey",
        "signature",
        "ciphertext",
        "groupId",
        "commit",
        "welcome",
        "finalCiphertext",
        "kemCiphertext",
        "data",
    ];
    for pdu in common::samples() {
        let mut value: serde_json::Value = serde_json::from_slice(&pdu.encode()).unwrap();
        to_p5_arrays(&mut value, &fields);
        let p5 = serde_json::to_vec(&value).unwrap();
        assert_ne!(p5, pdu.encode());
        assert_eq!(Pdu::decode(&p5).unwrap(), pdu, "{}", pdu.pdu_type());
    }
}

/// Appendix A V3: the `cascadedPayload` shape, wrapped in a `message`.
#[test]
fn v3_cascaded_payload_shape_decodes() {
    let v3 = format!(
        r#"{{"type": "message", "messageId": "v3", "encryptedMessage": {}}}"#,
        include_str!("../test_vectors/appendix_a_v3.json")
    );
    let Pdu::Message(m) = Pdu::decode(v3.as_bytes()).unwrap() else {
        panic!("not a message")
    };
    let p = &m.encrypted_message.cascaded_payload;
    assert_eq!(p.final_ciphertext.as_ref().unwrap().as_bytes(), [0x48, 0x69, 1, 2, 3]);
    assert_eq!(p.layers.as_slice()[0].algorithm.as_str(), "MLS");
    assert_eq!(p.layers.as_slice()[0].version.as_str(), "1.0.0-golden");
    assert!(p.layer_parameters.as_slice()[0].is_empty());
    assert_eq!(
        (p.original_size, p.final_size, p.timestamp),
        (2, 5, Some(1_717_000_000_000))
    );
    // Re-encoded in Strata's form (base64), it still decodes to the same value.
    let again = Pdu::decode(&Pdu::Message(m.clone()).encode()).unwrap();
    assert_eq!(again, Pdu::Message(m));
}

/// Round trip over arbitrary PDUs: decode(encode(p)) == p.
#[test]
fn every_pdu_round_trips() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x0574_7a7a);
    let mut seen = BTreeSet::new();
    let mut buf = vec![0u8; 8192];
    for case in 0..3000 {
        rng.fill_bytes(&mut buf);
        let Ok(pdu) = Pdu::arbitrary(&mut Unstructured::new(&buf)) else {
            continue;
        };
        seen.insert(pdu.pdu_type());
        let bytes = pdu.encode();
        let back =
            Pdu::decode(&bytes).unwrap_or_else(|e| panic!("case {case}: {e}: {}", String::from_utf8_lossy(&bytes)));
        assert_eq!(back, pdu, "case {case}");
    }
    assert_eq!(seen.len(), PduType::ALL.len(), "generator covered every type");
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    Pdu::decode(bytes).expect_err("hostile input must be refused")
}

#[test]
fn oversized_pdus_are_refused_before_parsing() {
    // Not even valid JSON: proves the size check runs before the parser.
    let big = vec![b'x'; MAX_PDU_BYTES + 1];
    assert_eq!(
        decode_err(&big),
        DecodeError::TooLarge {
            len: MAX_PDU_BYTES + 1,
            max: MAX_PDU_BYTES
        }
    );
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!(
        "{{\"type\":\"message\",\"x\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_eq!(
        decode_err(deep.as_bytes()),
        DecodeError::TooDeep { max: MAX_JSON_DEPTH }
    );
    // Brackets inside strings do not count.
    let quoted = format!("{{\"type\":\"nope\",\"x\":\"{}\"}}", "[".repeat(10_000));
    assert_eq!(decode_err(quoted.as_bytes()), DecodeError::UnknownType("nope".into()));
}

#[test]
fn huge_arrays_and_strings_hit_their_caps() {
    let sample = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&common::samples()[12].encode()).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    // 100 layers where at most 8 are allowed.
    let many_layers = sample(&|v| {
        let layer = v["encryptedMessage"]["cascadedPayload"]["layers"][0].clone();
        v["encryptedMessage"]["cascadedPayload"]["layers"] = serde_json::Value::Array(vec![layer; 100]);
    });
    assert!(matches!(
        decode_err(&many_layers),
        DecodeError::LimitExceeded {
            pdu_type: "message",
            ..
        }
    ));
    // A message id of 10 000 characters where 64 are allowed.
    let long_id = sample(&|v| v["messageId"] = "m".repeat(10_000).into());
    assert!(matches!(decode_err(&long_id), DecodeError::LimitExceeded { .. }));
    // A 5 MiB byte array in a 4096-byte parameter.
    let mut huge = String::from(
        "{\"type\":\"message\",\"messageId\":\"m\",\"encryptedMessage\":{\"encrypted\":true,\"cascaded\":true,\"cascadedPayload\":{\"layers\":[],\"originalSize\":0,\"finalSize\":0,\"layerParameters\":[{\"k\":[",
    );
    huge.push_str(&vec!["1"; 5 << 20].join(","));
    huge.push_str("]}]}}}");
    assert!(matches!(decode_err(huge.as_bytes()), DecodeError::LimitExceeded { .. }));
    // A chunk carrying more than 8192 bytes, as base64.
    let fat_chunk = format!(
        "{{\"type\":\"__mls_chunk__\",\"messageId\":\"m\",\"chunkIndex\":0,\"totalChunks\":1,\"data\":\"{}\"}}",
        "A".repeat(12_000)
    );
    assert!(matches!(
        decode_err(fat_chunk.as_bytes()),
        DecodeError::LimitExceeded {
            pdu_type: "__mls_chunk__",
            ..
        }
    ));
}

#[test]
fn wrong_types_missing_fields_and_bad_values_are_invalid_fields() {
    for (json, what) in [
        (
            r#"{"type":"mls-welcome-ack","groupId":"AAAA","epoch":"one"}"#,
            "string for integer",
        ),
        (
            r#"{"type":"mls-welcome-ack","groupId":"AAAA","epoch":-1}"#,
            "negative integer",
        ),
        (r#"{"type":"mls-welcome-ack","groupId":"AAAA"}"#, "missing field"),
        (
            r#"{"type":"mls-welcome-ack","groupId":"not base64!","epoch":1}"#,
            "invalid base64",
        ),
        (
            r#"{"type":"mls-welcome-ack","groupId":[1,256],"epoch":1}"#,
            "byte over 255",
        ),
        (
            r#"{"type":"mls-welcome-ack","groupId":{},"epoch":1}"#,
            "object for bytes",
        ),
        (
            r#"{"type":"mls-welcome-ack","groupId":"AA==","epoch":1,"epoch":2}"#,
            "duplicate field",
        ),
        (
            r#"{"type":"mls-key-package-request","sessionId":"AAAA","installationId":"a","identityKey":"","profile":"p","timestamp":0}"#,
            "short session id",
        ),
    ] {
        assert!(
            matches!(decode_err(json.as_bytes()), DecodeError::InvalidField { .. }),
            "{what}: {:?}",
            decode_err(json.as_bytes())
        );
    }
    // serde_json reports a non-string enum tag as a syntax error; refused all the same.
    assert!(matches!(
        decode_err(br#"{"type":"protocol-error","code":7}"#),
        DecodeError::Syntax { .. }
    ));
}

#[test]
fn unknown_and_missing_types_are_typed_errors() {
    assert_eq!(
        decode_err(br#"{"type":"file-offer","x":1}"#),
        DecodeError::UnknownType("file-offer".into())
    );
    let long = format!("{{\"type\":\"{}\"}}", "z".repeat(1000));
    assert!(matches!(decode_err(long.as_bytes()), DecodeError::UnknownType(t) if t.len() <= 64));
    assert_eq!(decode_err(br#"{"kind":"message"}"#), DecodeError::MissingType);
    assert_eq!(decode_err(br#"{"type":42}"#), DecodeError::MissingType);
    assert_eq!(decode_err(br#"[1,2,3]"#), DecodeError::MissingType);
    assert_eq!(decode_err(br#""message""#), DecodeError::MissingType);
    // Unknown error codes from a newer peer are kept as `Other`, not refused.
    let Pdu::ProtocolError(e) = Pdu::decode(br#"{"type":"protocol-error","code":"quantum-storm"}"#).unwrap() else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::Other);
}

#[test]
fn truncated_and_non_utf8_input_are_syntax_errors() {
    let full = common::samples()[12].encode();
    for cut in [1, full.len() / 3, full.len() / 2, full.len() - 1] {
        assert_eq!(decode_err(&full[..cut]), DecodeError::Truncated, "cut at {cut}");
    }
    assert_eq!(decode_err(b""), DecodeError::Truncated);
    let mut bad_utf8 = br#"{"type":"protocol-error","code":"internal","reason":"ab"}"#.to_vec();
    let at = bad_utf8.iter().position(|&b| b == b'a').unwrap();
    bad_utf8[at] = 0xff;
    assert!(matches!(decode_err(&bad_utf8), DecodeError::Syntax { .. }));
    assert!(matches!(
        decode_err(b"{\"type\":\"message\"} trailing"),
        DecodeError::Syntax { .. }
    ));
    assert!(matches!(decode_err(b"\x00\x01\x02"), DecodeError::Syntax { .. }));
}

/// Random corruption of valid PDUs never panics and never yields anything
/// but a PDU or a typed error.
#[test]
fn mutated_pdus_never_panic() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let originals: Vec<Vec<u8>> = common::samples().iter().map(Pdu::encode).collect();
    for _ in 0..20_000 {
        let mut bytes = originals[rng.random_range(0..originals.len())].clone();
        for _ in 0..rng.random_range(1..6) {
            if bytes.is_empty() {
                break;
            }
            let i = rng.random_range(0..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[i] = rng.random(),
                1 => {
                    bytes.remove(i);
                }
                2 => bytes.insert(i, b"{}[]\",:\\0-e9"[rng.random_range(0..12)]),
                _ => bytes.truncate(i.max(1)),
            }
        }
        if let Ok(pdu) = Pdu::decode(&bytes) {
            // Whatever was accepted is well-formed: it re-encodes and decodes to itself.
            assert_eq!(Pdu::decode(&pdu.encode()).unwrap(), pdu);
        }
    }
}

/// A step 3 that opens from the responder's bundle: its fields are on the
/// wire as documented, and it round-trips; without them it is the plain
/// step 3 (older senders omit the field).
#[test]
fn a_bundle_started_sync_request_carries_the_initiator() {
    let pdu: Pdu = EncryptionSyncRequest {
        session_id: common::session(),
        profile: common::text(PROFILE_V0),
        layers: BoundedVec::new(vec![common::text("MLS")]).unwrap(),
        resume: None,
        bundle: Some(BundleStart {
            installation_id: common::text("00112233445566778899aabbccddeeff"),
            identity_key: common::blob(16, 33),
            version: 7,
            prior: Some(FixedBytes([9; 16])),
        }),
    }
    .into();
    let json: serde_json::Value = serde_json::from_slice(&pdu.encode()).unwrap();
    let bundle = &json["bundle"];
    assert_eq!(bundle["installationId"], "00112233445566778899aabbccddeeff");
    assert_eq!(bundle["version"], 7);
    assert!(bundle["identityKey"].is_string());
    assert_eq!(bundle["prior"], "CQkJCQkJCQkJCQkJCQkJCQ==");
    assert_eq!(Pdu::decode(&pdu.encode()).unwrap(), pdu);
    let mut plain = json.clone();
    plain.as_object_mut().unwrap().remove("bundle");
    let Pdu::EncryptionSyncRequest(req) = Pdu::decode(&serde_json::to_vec(&plain).unwrap()).unwrap() else {
        panic!("not a step 3");
    };
    assert!(req.bundle.is_none());
}

/// A start names the session its sender already has with the receiver,
/// or nothing (then the field is absent, as before it existed).
#[test]
fn a_start_names_the_session_it_knows() {
    let start = |prior| KeyPackageRequest {
        session_id: common::session(),
        installation_id: common::text("inst-alice"),
        identity_key: common::blob(6, 33),
        profile: common::text(PROFILE_V0),
        timestamp: 1,
        prior,
    };
    let fresh: Pdu = start(None).into();
    assert!(!String::from_utf8(fresh.encode()).unwrap().contains("prior"));
    let knowing: Pdu = start(Some(FixedBytes([0xab; 16]))).into();
    let json: serde_json::Value = serde_json::from_slice(&knowing.encode()).unwrap();
    assert_eq!(json["prior"], "q6urq6urq6urq6urq6urqw==");
    assert_eq!(Pdu::decode(&knowing.encode()).unwrap(), knowing);
}

/// The group PDUs' caps and fixed sizes: a group secret of the wrong
/// length, too many proposals, catch-up commits or sync ranges, a range
/// that is not a pair, an unknown proposal
/// kind and an over-long name are refused, typed.
#[test]
fn group_pdus_hit_their_caps() {
    let by_type = |ty: &str| -> serde_json::Value {
        let pdu = common::samples()
            .into_iter()
            .find(|p| p.pdu_type().as_str() == ty)
            .unwrap();
        serde_json::from_slice(&pdu.encode()).unwrap()
    };
    let refused = |v: serde_json::Value| decode_err(&serde_json::to_vec(&v).unwrap());
    let mut short_secret = by_type("group-welcome");
    short_secret["epochSecret"] = "AAAA".into();
    assert!(matches!(refused(short_secret), DecodeError::InvalidField { .. }));
    let mut long_name = by_type("group-welcome");
    long_name["name"] = "n".repeat(129).into();
    assert!(matches!(refused(long_name), DecodeError::LimitExceeded { .. }));
    let mut many = by_type("group-commit");
    let one = many["proposals"][0].clone();
    many["proposals"] = serde_json::Value::Array(vec![one; MAX_GROUP_PROPOSALS + 1]);
    assert!(matches!(refused(many), DecodeError::LimitExceeded { .. }));
    let mut log = by_type("group-catch-up");
    let commit = log["commits"][0].clone();
    log["commits"] = serde_json::Value::Array(vec![commit; MAX_CATCH_UP + 1]);
    assert!(matches!(refused(log), DecodeError::LimitExceeded { .. }));
    let mut ranges = by_type("group-sync");
    ranges["heard"][0]["seqs"] = serde_json::Value::Array(vec![serde_json::json!([0, 1]); MAX_SYNC_RANGES + 1]);
    assert!(matches!(refused(ranges), DecodeError::LimitExceeded { .. }));
    let mut range = by_type("group-sync");
    range["heard"][0]["seqs"] = serde_json::json!([[0, 1, 2]]);
    let e = refused(range);
    assert!(
        matches!(e, DecodeError::InvalidField { .. } | DecodeError::Syntax { .. }),
        "{e:?}"
    );
    let mut kind = by_type("group-proposal");
    kind["kind"] = "promote".into();
    assert!(matches!(refused(kind), DecodeError::InvalidField { .. }));
    // Each within its caps decodes.
    for ty in [
        "group-welcome",
        "group-commit",
        "group-proposal",
        "group-catch-up-request",
        "group-catch-up",
        "group-sync",
    ] {
        Pdu::decode(&serde_json::to_vec(&by_type(ty)).unwrap()).unwrap();
    }
}
