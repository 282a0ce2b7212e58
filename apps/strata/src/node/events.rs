//! The control API's names for node events, and their data: the one place
//! that maps the session layer's typed events to the API's JSON. Pinned by
//! `test_vectors/events.golden`.

use serde_json::{Value, json};
use strata_session::actors::NodeEventKind;
use strata_session::group::GroupEvent;
use strata_session::{Content, Event};

/// The API event name and data of a node event. Keys and ciphertexts never
/// appear; message texts do (the API is the user's own).
pub(crate) fn describe(kind: &NodeEventKind) -> (&'static str, Value) {
    match kind {
        NodeEventKind::Connected => ("connected", json!({})),
        NodeEventKind::Disconnected => ("disconnected", json!({})),
        NodeEventKind::FileReceived {
            file_id,
            path,
            sent_to: None,
        } => ("file-received", json!({"fileId": file_id, "path": path})),
        NodeEventKind::FileReceived {
            file_id,
            path,
            sent_to: Some(to),
        } => (
            "file-sent-copy",
            json!({"fileId": file_id, "path": path, "to": peer_id(to)}),
        ),
        NodeEventKind::FileProgress {
            file_id,
            acked,
            total,
            size,
        } => (
            "file-progress",
            json!({"fileId": file_id, "acked": acked, "total": total, "size": size}),
        ),
        NodeEventKind::FileSent { file_id } => ("file-sent", json!({"fileId": file_id})),
        NodeEventKind::Failed { reason } => ("session-failed", json!({"reason": reason})),
        NodeEventKind::Lagged { dropped } => ("lagged", json!({"dropped": dropped})),
        NodeEventKind::Group { group, event } => describe_group(group, event),
        NodeEventKind::KeyExchanged {
            account,
            name,
            accepted,
            reset,
        } => (
            "kx-completed",
            json!({"peerId": peer_id(account), "name": name, "accepted": accepted, "reset": reset}),
        ),
        NodeEventKind::DevicesChanged {
            account,
            version,
            installations,
        } => (
            "devices-changed",
            json!({
                "peerId": peer_id(account),
                "version": version,
                "installations": installations.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            }),
        ),
        NodeEventKind::GroupFile {
            group,
            sender,
            file_id,
            name,
            path,
        } => (
            "group-file",
            json!({"group": group, "sender": sender.to_hex(), "fileId": file_id, "name": name, "path": path}),
        ),
        NodeEventKind::Session(event) => match event {
            Event::HandshakeStarted { role, from_bundle, .. } => (
                "handshake-started",
                json!({"role": role.as_str(), "fromBundle": from_bundle}),
            ),
            Event::EncryptionReady {
                installation, resumed, ..
            } => (
                "encryption-ready",
                json!({"installation": installation, "resumed": resumed}),
            ),
            Event::NotReady => ("not-ready", json!({})),
            Event::HandshakeStalled { .. } => ("handshake-stalled", json!({})),
            Event::HandshakeFailed { reason } => ("handshake-failed", json!({"reason": reason})),
            Event::SessionReset { reason } => ("session-reset", json!({"reason": reason.as_str()})),
            Event::IdentityChanged { installation } => ("identity-changed", json!({"installation": installation})),
            Event::IdentityMismatch { installation } => ("identity-mismatch", json!({"installation": installation})),
            Event::InstallationChanged { old, new } => ("installation-changed", json!({"old": old, "new": new})),
            Event::Queued { message_id } => ("queued", json!({"messageId": message_id})),
            Event::Delivered { message_id } => ("delivered", json!({"messageId": message_id})),
            Event::Received {
                message_id,
                seq,
                content,
            } => match content {
                Content::Text { text } => ("message", json!({"messageId": message_id, "seq": seq, "text": text})),
                Content::FileChunk {
                    file_id,
                    name,
                    size,
                    index,
                    total,
                    sent_to,
                    ..
                } => {
                    let data = json!({"fileId": file_id, "name": name, "size": size, "index": index, "total": total});
                    match sent_to {
                        // A chunk of a file this account sent from another device.
                        Some(to) => ("file-chunk", with(data, "to", json!(peer_id(to)))),
                        None => ("file-chunk", data),
                    }
                }
                Content::SentCopy { to, text } => (
                    "message-sent-copy",
                    json!({"messageId": message_id, "seq": seq, "to": peer_id(to), "text": text}),
                ),
                // The node hands group PDUs to their group and takes device
                // lists itself; never published.
                Content::GroupPdu { .. } => ("group-pdu", json!({"messageId": message_id})),
                Content::Devices { .. } => ("devices", json!({"messageId": message_id})),
                Content::Introduction { .. } => ("introduction", json!({"messageId": message_id})),
            },
            Event::Rotated { what } => ("rotated", json!({"what": what.as_str()})),
            Event::PeerError { code, reason } => ("peer-error", json!({"code": code.as_str(), "reason": reason})),
            Event::Refused { why } => ("refused", json!({"why": why.as_str()})),
            Event::LowKeyPackages { available, threshold } => (
                "low-key-packages",
                json!({"available": available, "threshold": threshold}),
            ),
            Event::KeyPackageServed { last_resort } => ("key-package-served", json!({"lastResort": last_resort})),
            Event::KeyPackageClaimed { claim, package } => (
                "key-package-claimed",
                json!({
                    "claim": claim,
                    "installation": package.installation,
                    "keyRef": hex::encode(&package.key_ref),
                    "lastResort": package.last_resort,
                    "notAfter": package.not_after_s,
                }),
            ),
            Event::KeyPackageClaimFailed { claim, reason } => {
                ("key-package-claim-failed", json!({"claim": claim, "reason": reason}))
            }
        },
    }
}

/// The peer id of an account's identity key (serialized), or its hex when
/// it is not a key.
fn peer_id(key: &[u8]) -> String {
    crate::identity::PeerId::from_key_bytes(key).map_or_else(|_| hex::encode(key), |p| p.to_string())
}

/// The API name and data of a group chat's event.
fn describe_group(group: &str, event: &GroupEvent) -> (&'static str, Value) {
    match event {
        GroupEvent::Joined { epoch, name, by } => (
            "group-joined",
            json!({"group": group, "epoch": epoch, "name": name, "by": by.to_hex()}),
        ),
        GroupEvent::Epoch {
            epoch,
            committer,
            added,
            removed,
        } => (
            "group-epoch",
            json!({
                "group": group,
                "epoch": epoch,
                "committer": committer.to_hex(),
                "added": added.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
                "removed": removed.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
            }),
        ),
        GroupEvent::Received {
            sender,
            message_id,
            content,
        } => {
            let base = json!({"group": group, "sender": sender.to_hex(), "messageId": message_id});
            match content {
                Content::Text { text } => ("group-message", with(base, "text", json!(text))),
                Content::FileChunk {
                    file_id, index, total, ..
                } => (
                    "group-file-chunk",
                    with(base, "file", json!({"fileId": file_id, "index": index, "total": total})),
                ),
                // The group machine refuses these: never published.
                Content::GroupPdu { .. }
                | Content::Devices { .. }
                | Content::SentCopy { .. }
                | Content::Introduction { .. } => ("group-pdu", base),
            }
        }
        GroupEvent::AddRequested { by, member, address } => (
            "group-add-requested",
            json!({"group": group, "by": by.to_hex(), "member": member, "address": address}),
        ),
        GroupEvent::AddAgain { member } => ("group-add-again", json!({"group": group, "member": member.to_hex()})),
        GroupEvent::Removed => ("group-removed", json!({"group": group})),
        GroupEvent::Refused { from, reason } => (
            "group-refused",
            json!({"group": group, "from": from.map(|f| f.to_hex()), "reason": reason}),
        ),
    }
}

/// `value` (an object) with one more field.
fn with(mut value: Value, key: &str, field: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.insert(key.to_owned(), field);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::ErrorCode;
    use strata_session::{Refusal, ResetReason, Role, Rotation};

    fn chunk() -> Content {
        Content::FileChunk {
            file_id: "f".into(),
            name: "n".into(),
            size: 3,
            index: 0,
            total: 1,
            data: vec![1, 2, 3],
            sent_to: None,
        }
    }

    /// One of every event kind, with every value of the enums they carry.
    fn every_event() -> Vec<NodeEventKind> {
        let session = |e: Event| NodeEventKind::Session(e);
        let mut all = vec![
            NodeEventKind::Connected,
            NodeEventKind::Disconnected,
            NodeEventKind::FileReceived {
                file_id: "f".into(),
                path: "downloads/f-n".into(),
                sent_to: None,
            },
            NodeEventKind::FileReceived {
                file_id: "f".into(),
                path: "downloads/f-n".into(),
                sent_to: Some(vec![5; 33]),
            },
            NodeEventKind::FileProgress {
                file_id: "f".into(),
                acked: 1,
                total: 2,
                size: 3,
            },
            NodeEventKind::FileSent { file_id: "f".into() },
            NodeEventKind::Failed { reason: "r".into() },
            NodeEventKind::Lagged { dropped: 4 },
        ];
        for role in [Role::Initiator, Role::Responder] {
            all.push(session(Event::HandshakeStarted {
                session_id: [1; 16],
                role,
                from_bundle: role == Role::Responder,
            }));
        }
        all.extend([
            session(Event::EncryptionReady {
                installation: "i".into(),
                session_id: [1; 16],
                resumed: true,
            }),
            session(Event::NotReady),
            session(Event::HandshakeStalled { session_id: [1; 16] }),
            session(Event::HandshakeFailed { reason: "r".into() }),
        ]);
        for reason in [
            ResetReason::PeerLostState,
            ResetReason::PeerRestarted,
            ResetReason::IdentityAccepted,
            ResetReason::StateMismatch,
            ResetReason::Rekeyed,
        ] {
            all.push(session(Event::SessionReset { reason }));
        }
        all.extend([
            session(Event::IdentityChanged {
                installation: "i".into(),
            }),
            session(Event::IdentityMismatch {
                installation: "i".into(),
            }),
            session(Event::InstallationChanged {
                old: "o".into(),
                new: "n".into(),
            }),
            session(Event::Queued { message_id: "m".into() }),
            session(Event::Delivered { message_id: "m".into() }),
            session(Event::Received {
                message_id: "m".into(),
                seq: 5,
                content: Content::Text { text: "t".into() },
            }),
            session(Event::Received {
                message_id: "m".into(),
                seq: 6,
                content: chunk(),
            }),
            session(Event::Received {
                message_id: "m".into(),
                seq: 7,
                content: Content::SentCopy {
                    to: vec![5; 33],
                    text: "t".into(),
                },
            }),
            NodeEventKind::DevicesChanged {
                account: vec![5; 33],
                version: 9,
                installations: vec![
                    strata_cascade::InstallationId::from_bytes([2; 16]),
                    strata_cascade::InstallationId::from_bytes([3; 16]),
                ],
            },
        ]);
        for what in [
            Rotation::KemKey,
            Rotation::PeerKemKey,
            Rotation::MlsUpdate,
            Rotation::PeerMlsUpdate,
        ] {
            all.push(session(Event::Rotated { what }));
        }
        for code in [
            ErrorCode::Malformed,
            ErrorCode::TooLarge,
            ErrorCode::UnknownType,
            ErrorCode::Unexpected,
            ErrorCode::DecryptFailed,
            ErrorCode::Replay,
            ErrorCode::RateLimited,
            ErrorCode::IdentityChanged,
            ErrorCode::UnknownSession,
            ErrorCode::Internal,
            ErrorCode::Other,
        ] {
            all.push(session(Event::PeerError {
                code,
                reason: "r".into(),
            }));
        }
        for why in [
            Refusal::Malformed,
            Refusal::TooLarge,
            Refusal::UnknownType,
            Refusal::Unexpected,
            Refusal::Undecryptable,
            Refusal::IdentityBlocked,
            Refusal::UnexpectedIdentity,
            Refusal::BadKeyPackage,
        ] {
            all.push(session(Event::Refused { why }));
        }
        all.push(session(Event::LowKeyPackages {
            available: 3,
            threshold: 16,
        }));
        for last_resort in [false, true] {
            all.push(session(Event::KeyPackageServed { last_resort }));
        }
        let id = |b: u8| strata_cascade::InstallationId::from_bytes([b; 16]);
        let group = |event: GroupEvent| NodeEventKind::Group {
            group: "ab".into(),
            event,
        };
        all.extend([
            group(GroupEvent::Joined {
                epoch: 1,
                name: Some("n".into()),
                by: id(1),
            }),
            group(GroupEvent::Epoch {
                epoch: 2,
                committer: id(1),
                added: vec![id(2)],
                removed: vec![id(3)],
            }),
            group(GroupEvent::Received {
                sender: id(2),
                message_id: "m".into(),
                content: Content::Text { text: "t".into() },
            }),
            group(GroupEvent::Received {
                sender: id(2),
                message_id: "m".into(),
                content: chunk(),
            }),
            group(GroupEvent::AddRequested {
                by: id(2),
                member: "i".into(),
                address: Some("a".into()),
            }),
            group(GroupEvent::AddAgain { member: id(3) }),
            group(GroupEvent::Removed),
            group(GroupEvent::Refused {
                from: Some(id(2)),
                reason: "r".into(),
            }),
        ]);
        all.push(NodeEventKind::KeyExchanged {
            account: vec![5; 33],
            name: "n".into(),
            accepted: true,
            reset: false,
        });
        all.push(NodeEventKind::GroupFile {
            group: "ab".into(),
            sender: id(2),
            file_id: "f".into(),
            name: "n".into(),
            path: "/d/f-n".into(),
        });
        all.extend([
            session(Event::KeyPackageClaimed {
                claim: "c".into(),
                package: strata_session::ClaimedKeyPackage {
                    installation: "i".into(),
                    key_ref: vec![0xab; 4],
                    last_resort: false,
                    not_after_s: 7,
                },
            }),
            session(Event::KeyPackageClaimFailed {
                claim: "c".into(),
                reason: "r".into(),
            }),
        ]);
        all
    }

    /// Fails to compile when an event kind is added without a sample in
    /// [`every_event`] (no wildcard arm).
    fn sampled(kind: &NodeEventKind) -> bool {
        match kind {
            NodeEventKind::Connected
            | NodeEventKind::Disconnected
            | NodeEventKind::FileReceived { .. }
            | NodeEventKind::FileProgress { .. }
            | NodeEventKind::FileSent { .. }
            | NodeEventKind::Failed { .. }
            | NodeEventKind::Lagged { .. }
            | NodeEventKind::GroupFile { .. }
            | NodeEventKind::KeyExchanged { .. }
            | NodeEventKind::DevicesChanged { .. } => true,
            NodeEventKind::Group { event, .. } => match event {
                GroupEvent::Joined { .. }
                | GroupEvent::Epoch { .. }
                | GroupEvent::Received { .. }
                | GroupEvent::AddRequested { .. }
                | GroupEvent::AddAgain { .. }
                | GroupEvent::Removed
                | GroupEvent::Refused { .. } => true,
            },
            NodeEventKind::Session(e) => match e {
                Event::HandshakeStarted { .. }
                | Event::EncryptionReady { .. }
                | Event::NotReady
                | Event::HandshakeStalled { .. }
                | Event::HandshakeFailed { .. }
                | Event::SessionReset { .. }
                | Event::IdentityChanged { .. }
                | Event::IdentityMismatch { .. }
                | Event::InstallationChanged { .. }
                | Event::Queued { .. }
                | Event::Delivered { .. }
                | Event::Received { .. }
                | Event::Rotated { .. }
                | Event::PeerError { .. }
                | Event::Refused { .. }
                | Event::LowKeyPackages { .. }
                | Event::KeyPackageServed { .. }
                | Event::KeyPackageClaimed { .. }
                | Event::KeyPackageClaimFailed { .. } => true,
            },
        }
    }

    /// The control API's event names and data are a format clients rely
    /// on: every kind is pinned in `test_vectors/events.golden`. A diff is
    /// a decision; `STRATA_BLESS=1` rewrites the file.
    #[test]
    fn event_names_and_data_match_the_golden_file() {
        let lines: Vec<String> = every_event()
            .iter()
            .map(|kind| {
                assert!(sampled(kind));
                let (name, data) = describe(kind);
                format!("{name} {data}")
            })
            .collect();
        let text = lines.join("\n") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_vectors/events.golden");
        if std::env::var_os("STRATA_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, golden, "event names or data changed (STRATA_BLESS=1 to accept)");
    }

    #[test]
    fn file_chunks_are_described_without_their_bytes() {
        let (kind, data) = describe(&NodeEventKind::Session(Event::Received {
            message_id: "m".into(),
            seq: 1,
            content: Content::FileChunk {
                file_id: "f".into(),
                name: "n".into(),
                size: 3,
                index: 0,
                total: 1,
                data: b"secret-bytes".to_vec(),
                sent_to: None,
            },
        }));
        assert_eq!(kind, "file-chunk");
        assert!(!data.to_string().contains("secret"), "{data}");
    }
}
