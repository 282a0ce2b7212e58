//! Deterministic sample PDUs, one per type, shared by the tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use strata_proto::*;

pub fn blob<const N: usize>(seed: u8, len: usize) -> Blob<N> {
    Blob::new((0..len).map(|i| seed.wrapping_add(i as u8)).collect::<Vec<_>>()).unwrap()
}

pub fn text<const N: usize>(s: &str) -> Text<N> {
    Text::new(s).unwrap()
}

pub fn session() -> SessionId {
    FixedBytes([7; 16])
}

pub fn layers() -> BoundedVec<LayerName, 8> {
    BoundedVec::new(["MLS", "Signal", "ML-KEM", "AES"].iter().map(|s| text(s)).collect()).unwrap()
}

pub fn cascaded(ciphertext: Option<Vec<u8>>, final_size: u64) -> CascadedPayload {
    let mut params = LayerParameters::new();
    params.insert("epoch", ParamValue::Uint(3)).unwrap();
    params.insert("counter", ParamValue::Uint(41)).unwrap();
    params.insert("kemCiphertext", ParamValue::Bytes(blob(9, 12))).unwrap();
    params.insert("first", ParamValue::Bool(true)).unwrap();
    CascadedPayload {
        final_ciphertext: ciphertext.map(|c| Blob::new(c).unwrap()),
        layers: BoundedVec::new(vec![LayerMetadata {
            algorithm: text("AES-GCM-256"),
            version: text("1.0.0"),
            timestamp: 1_717_000_000_000,
            input_size: 10,
            output_size: 26,
            processing_time: 0,
        }])
        .unwrap(),
        layer_parameters: BoundedVec::new(vec![params]).unwrap(),
        total_processing_time: 1,
        original_size: 10,
        final_size,
        timestamp: Some(1_717_000_000_000),
    }
}

pub fn message(id: &str, ciphertext: Vec<u8>) -> Message {
    let len = ciphertext.len() as u64;
    Message {
        message_id: text(id),
        encrypted_message: EncryptedMessage {
            encrypted: true,
            cascaded: true,
            chunked: false,
            total_chunks: None,
            cascaded_payload: cascaded(Some(ciphertext), len),
        },
    }
}

pub fn bundle() -> SignalPreKeyBundle {
    SignalPreKeyBundle {
        registration_id: 4242,
        device_id: 1,
        pre_key_id: Some(11),
        pre_key: Some(blob(1, 33)),
        signed_pre_key_id: 12,
        signed_pre_key: blob(2, 33),
        signed_pre_key_signature: blob(3, 64),
        kyber_pre_key_id: 13,
        kyber_pre_key: blob(4, 40),
        kyber_pre_key_signature: blob(5, 64),
        identity_key: blob(6, 33),
    }
}

/// One sample of every PDU type, in catalog order.
pub fn samples() -> Vec<Pdu> {
    let member = MemberInfo {
        installation_id: text("inst-bob"),
        identity_key: blob(6, 33),
    };
    vec![
        KeyPackageRequest {
            session_id: session(),
            installation_id: text("inst-alice"),
            identity_key: blob(6, 33),
            profile: text(PROFILE_V0),
            timestamp: 1_717_000_000_000,
            prior: None,
        }
        .into(),
        KeyPackage {
            session_id: session(),
            installation_id: text("inst-bob"),
            identity_key: blob(16, 33),
            key_package: blob(20, 48),
            last_resort: false,
        }
        .into(),
        EncryptionSyncRequest {
            session_id: session(),
            profile: text(PROFILE_V0),
            layers: layers(),
            resume: Some(ResumeProbe {
                epoch: 5,
                proof: blob(30, 32),
            }),
            bundle: None,
        }
        .into(),
        EncryptionSyncResponse {
            session_id: session(),
            profile: text(PROFILE_V0),
            layers: layers(),
            resume: Some(ResumeAnswer {
                status: ResumeStatus::Resumed,
                proof: Some(blob(31, 32)),
            }),
        }
        .into(),
        SignalKeyExchangeRequest {
            session_id: session(),
            registration_id: 777,
            device_id: 1,
        }
        .into(),
        SignalKeyExchangeResponse {
            session_id: session(),
            bundle: bundle(),
        }
        .into(),
        SignalSessionComplete {
            session_id: session(),
            message: blob(40, 24),
        }
        .into(),
        MlKemKeyExchange {
            session_id: session(),
            key_id: 1,
            encapsulation_key: blob(50, 24),
            signature: blob(51, 64),
        }
        .into(),
        MlKemKeyExchangeResponse {
            session_id: session(),
            key_id: 1,
            encapsulation_key: blob(52, 24),
            signature: blob(53, 64),
        }
        .into(),
        MlsCommit {
            session_id: Some(session()),
            group_id: blob(60, 16),
            epoch: 1,
            commit: blob(61, 24),
        }
        .into(),
        MlsWelcome {
            session_id: Some(session()),
            group_id: blob(60, 16),
            welcome: blob(62, 24),
            ratchet_tree: None,
        }
        .into(),
        MlsWelcomeAck {
            session_id: Some(session()),
            group_id: blob(60, 16),
            epoch: 1,
        }
        .into(),
        message("m-0001", (0..26).collect()).into(),
        Chunk {
            message_id: text("m-0002"),
            chunk_index: 1,
            total_chunks: 2,
            data: blob(70, 16),
        }
        .into(),
        ProtocolError {
            code: ErrorCode::DecryptFailed,
            reason: text("layer Signal failed to authenticate"),
            ref_type: Some(text("message")),
            ref_id: Some(text("m-0001")),
        }
        .into(),
        RotationTimestampBroadcast {
            session_id: session(),
            timestamp: 1_717_000_360_000,
            key_id: 2,
            encapsulation_key: blob(80, 24),
            signature: blob(81, 64),
        }
        .into(),
        GroupMemberJoined {
            group_id: blob(60, 16),
            epoch: 2,
            member: member.clone(),
            added_by: text("inst-alice"),
        }
        .into(),
        GroupMemberLeft {
            group_id: blob(60, 16),
            epoch: 3,
            member,
            removed_by: Some(text("inst-alice")),
        }
        .into(),
        GroupMessage {
            group_id: blob(60, 16),
            epoch: 3,
            message_id: text("g-0001"),
            ciphertext: blob(90, 40),
        }
        .into(),
        GroupWelcome {
            group_id: blob(60, 16),
            epoch: 1,
            welcome: blob(91, 48),
            key_package_ref: blob(92, 32),
            epoch_secret: FixedBytes([93; 32]),
            name: Some(text("climbing")),
        }
        .into(),
        group_commit(),
        GroupProposal {
            group_id: blob(60, 16),
            epoch: 4,
            kind: ProposalKind::Add,
            member: Some(text("inst-carol")),
            address: Some(text("carol-peer-id")),
            proposal: None,
        }
        .into(),
        GroupCatchUpRequest {
            group_id: blob(60, 16),
            epoch: 2,
        }
        .into(),
        GroupCatchUp {
            group_id: blob(60, 16),
            commits: BoundedVec::new(vec![group_commit_fields()]).unwrap(),
            complete: true,
        }
        .into(),
        GroupSync {
            group_id: blob(60, 16),
            from_epoch: 3,
            to_epoch: 5,
            heard: BoundedVec::new(vec![HeardSeqs {
                epoch: 4,
                sender: text("00112233445566778899aabbccddeeff"),
                seqs: BoundedVec::new(vec![[0, 6], [8, 9]]).unwrap(),
            }])
            .unwrap(),
            answer: false,
        }
        .into(),
        DevicePairing {
            pairing: FixedBytes([7; 16]),
            step: 1,
            sealed: Some(blob(97, 48)),
            reason: None,
        }
        .into(),
    ]
}

fn group_commit_fields() -> GroupCommit {
    GroupCommit {
        group_id: blob(60, 16),
        epoch: 3,
        commit: blob(94, 40),
        proposals: BoundedVec::new(vec![blob(95, 20)]).unwrap(),
        epoch_secret: Some(FixedBytes([96; 32])),
    }
}

fn group_commit() -> Pdu {
    group_commit_fields().into()
}
