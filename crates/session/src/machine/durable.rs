//! The persistence of a session: its record (`SessionRecord`, kept sealed
//! in the store's handshake table, the cascade state beside it in the layer
//! table), made from the machine's in-memory [`Session`] and restored into
//! it. The record is a frozen format: its bytes are pinned by
//! `test_vectors/session_record_v1.json`, and another version is refused
//! on read.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_cascade::{InstallationId, PairCascade};
use strata_proto::{Pdu, PduType};
use strata_store::StoreError;

use super::{Now, Retx, Session};
use crate::crypto;
use crate::error::SessionError;

/// An established session as persisted (JSON, sealed by the store, in the
/// handshake table under the peer's installation id). The cascade state is
/// stored beside it, in the layer table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRecord {
    /// Format version, 1.
    pub(crate) version: u32,
    /// The session id, hex.
    pub(crate) session_id: String,
    /// Whether this side opened the handshake.
    pub(crate) initiator: bool,
    /// The peer's identity key, base64, as pinned when the session was made.
    pub(crate) peer_identity_key: String,
    /// The peer's transport address when last seen (routing after restart).
    #[serde(default)]
    pub(crate) address: Option<String>,
    /// Encoded handshake replies kept for the peer's late duplicates until
    /// the peer is confirmed (responder), base64.
    #[serde(default)]
    pub(crate) replies: Vec<(String, String)>,
    /// An MLS commit sent and not yet acknowledged, base64 of the PDU.
    #[serde(default)]
    pub(crate) pending_commit: Option<String>,
    /// A rotation broadcast sent and not yet acknowledged, base64 of the PDU.
    #[serde(default)]
    pub(crate) pending_rotation: Option<String>,
    /// The last ML-KEM key id of ours the peer acknowledged.
    #[serde(default)]
    pub(crate) kem_key_acked: u32,
    /// The next `seq` for a stored message to the peer.
    pub(crate) next_seq: u64,
    /// Unix ms of the last ML-KEM rotation.
    #[serde(default)]
    pub(crate) last_kem_rotation_ms: u64,
    /// Unix ms of the last MLS self-update.
    #[serde(default)]
    pub(crate) last_mls_update_ms: u64,
    /// The highest ML-KEM key id of the peer installed.
    #[serde(default)]
    pub(crate) peer_kem_key: u32,
}

impl SessionRecord {
    /// The format written now. A record of another version is refused on
    /// read (a typed storage error), never read as if it were this one.
    pub(crate) const VERSION: u32 = 1;

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Misuse(format!("cannot encode a session record: {e}")))
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        /// Only the version, read first: the other fields of another
        /// version may mean something else.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            table: "handshakes",
            reason,
        };
        let Versioned { version } = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if version != Self::VERSION {
            return Err(corrupt(format!(
                "session record version {version}, this build reads version {}",
                Self::VERSION
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
    }
}

/// Bytes as a record field: base64.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A record field back to bytes, if it is base64.
fn unb64(field: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(field.as_bytes()).ok()
}

impl Session {
    /// The session as persisted (the cascade state is stored apart).
    fn record(&self) -> SessionRecord {
        SessionRecord {
            version: SessionRecord::VERSION,
            session_id: hex::encode(self.id),
            initiator: self.initiator,
            peer_identity_key: b64(&crypto::peer_identity_key(&self.peer)),
            address: self.address.clone(),
            replies: self
                .replies
                .iter()
                .map(|(t, f)| (t.as_str().to_owned(), b64(f)))
                .collect(),
            pending_commit: self.pending_commit.as_ref().map(|r| b64(&r.frame)),
            pending_rotation: self.pending_rotation.as_ref().map(|(_, r)| b64(&r.frame)),
            kem_key_acked: self.kem_key_acked,
            next_seq: self.next_seq,
            last_kem_rotation_ms: self.last_kem_rotation_ms,
            last_mls_update_ms: self.last_mls_update_ms,
            peer_kem_key: self.peer_kem_key,
        }
    }

    /// The session's record, encoded for the handshake table.
    pub(crate) fn record_bytes(&self) -> Result<Vec<u8>, StoreError> {
        self.record().to_bytes()
    }

    /// The stored session with `peer`, from its `record` and cascade state
    /// (`layers`); refused when made with another key than `pinned_key`.
    /// Its unanswered control PDUs go again as soon as the link is up,
    /// then every `rto` (doubling).
    pub(crate) fn restore(
        record: &[u8],
        layers: &[u8],
        pinned_key: &[u8],
        peer: Option<InstallationId>,
        rto: Duration,
        now: Now,
    ) -> Result<Self, SessionError> {
        let bad = || SessionError::Internal("corrupt session record".into());
        let record = SessionRecord::from_bytes(record)?;
        let peer_id = peer.ok_or_else(bad)?;
        let key = unb64(&record.peer_identity_key).ok_or_else(bad)?;
        if key != pinned_key {
            return Err(SessionError::Misuse(
                "session made with an identity key no longer pinned",
            ));
        }
        let peer = crypto::peer_identity(&key, peer_id).ok_or_else(bad)?;
        let id: [u8; 16] = hex::decode(&record.session_id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        let cascade = PairCascade::import(layers)?;
        let replies = record
            .replies
            .iter()
            .filter_map(|(t, f)| Some((PduType::from_name(t)?, unb64(f)?)))
            .collect();
        let retx = |f: &Option<String>| -> Option<Retx> {
            f.as_deref().and_then(unb64).map(|frame| Retx::due(frame, now.at, rto))
        };
        let pending_rotation = retx(&record.pending_rotation).and_then(|r| match Pdu::decode(&r.frame) {
            Ok(Pdu::RotationTimestampBroadcast(b)) => Some((b.key_id, r)),
            _ => None,
        });
        Ok(Self {
            id,
            initiator: record.initiator,
            peer,
            cascade,
            confirmed: false,
            probe: None,
            replies,
            pending_commit: retx(&record.pending_commit),
            pending_rotation,
            kem_key_acked: record.kem_key_acked,
            next_seq: record.next_seq,
            last_kem_rotation_ms: record.last_kem_rotation_ms,
            last_mls_update_ms: record.last_mls_update_ms,
            sent_since_kem: 0,
            sent_since_mls: 0,
            owe_kem_ack: None,
            peer_kem_key: record.peer_kem_key,
            address: record.address,
            fresh: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SessionRecord {
        SessionRecord {
            version: SessionRecord::VERSION,
            session_id: "000102030405060708090a0b0c0d0e0f".into(),
            initiator: true,
            peer_identity_key: "BWlkZW50aXR5LWtleQ==".into(),
            address: Some("peer-address".into()),
            replies: vec![("mls-key-package".into(), "cmVwbHk=".into())],
            pending_commit: Some("Y29tbWl0".into()),
            pending_rotation: None,
            kem_key_acked: 2,
            next_seq: 42,
            last_kem_rotation_ms: 1_700_000_000_000,
            last_mls_update_ms: 1_700_000_000_001,
            peer_kem_key: 3,
        }
    }

    /// The record is persisted: its bytes are pinned. A diff here is a
    /// format change, which needs a new version and a migration.
    #[test]
    fn session_record_v1_bytes_are_frozen() {
        let golden = include_bytes!("../../test_vectors/session_record_v1.json");
        let golden = golden.strip_suffix(b"\n").unwrap_or(golden);
        assert_eq!(sample().to_bytes().unwrap(), golden);
        assert_eq!(SessionRecord::from_bytes(golden).unwrap(), sample());
    }

    #[test]
    fn other_versions_and_damage_are_typed_storage_errors() {
        let mut other = serde_json::to_value(sample()).unwrap();
        other["version"] = 2.into();
        let other = serde_json::to_vec(&other).unwrap();
        let e = SessionRecord::from_bytes(&other).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::Corrupt {
                    table: "handshakes",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("version 2"), "{e}");
        let bytes = sample().to_bytes().unwrap();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(SessionRecord::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let no_version = br#"{"sessionId":"00","initiator":true}"#;
        assert!(SessionRecord::from_bytes(no_version).is_err());
    }
}
