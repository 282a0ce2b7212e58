//! The records the store persists. Every one of them is sealed before it is
//! written; these types are what is inside the seal. Their encoding (JSON,
//! bytes as base64) is frozen by snapshot tests: changing it needs a schema
//! version and a migration.

use serde::{Deserialize, Serialize};
use strata_cascade::VerifiedKeyPackage;

/// Serde helpers: byte fields as standard base64.
pub(crate) mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }

    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(b) => super::serialize(b, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
            s.map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    pub(crate) mod list {
        use serde::ser::SerializeSeq;

        use super::*;

        pub(crate) fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(items.len()))?;
            for item in items {
                seq.serialize_element(&STANDARD.encode(item))?;
            }
            seq.end()
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
            let items = <Vec<String>>::deserialize(d)?;
            items
                .iter()
                .map(|s| STANDARD.decode(s.as_bytes()).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

/// A message on its way out. It is written before it is encrypted and
/// deleted only when the peer acknowledges it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingMessage {
    /// The message id (unique per sender).
    pub message_id: String,
    /// The recipient installation.
    pub peer: String,
    /// When the user sent it, Unix milliseconds.
    pub created_ms: u64,
    /// The application plaintext.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
    /// The encrypted frames, once the cascade has run: retransmissions send
    /// these again rather than encrypt twice.
    #[serde(default, with = "b64::list", skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<Vec<u8>>,
    /// How many times the frames were handed to a transport.
    #[serde(default)]
    pub attempts: u32,
}

/// A message received, decrypted and committed before it was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncomingMessage {
    /// The sender installation.
    pub peer: String,
    /// The sender's message id.
    pub message_id: String,
    /// When it was received, Unix milliseconds.
    pub received_ms: u64,
    /// The application plaintext.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

/// A remote installation and what we trust of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// The installation id.
    pub installation_id: String,
    /// The pinned account identity key (trust on first use).
    #[serde(with = "b64")]
    pub identity_key: Vec<u8>,
    /// When the pinned key was first seen, Unix milliseconds.
    pub first_seen_ms: u64,
    /// Whether the user compared safety numbers for the pinned key.
    pub verified: bool,
    /// Whether the pinned key came from a completed out-of-band key
    /// exchange (an invite): verified by invite, with no first-use window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invited: bool,
    /// A different identity key the peer presented, awaiting the user's
    /// decision. While set, nothing is sent to this peer.
    #[serde(default, with = "b64::option", skip_serializing_if = "Option::is_none")]
    pub offered_key: Option<Vec<u8>>,
    /// Every accepted key change, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_history: Vec<KeyChange>,
}

/// One accepted change of a contact's identity key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyChange {
    /// The key pinned before.
    #[serde(with = "b64")]
    pub old_key: Vec<u8>,
    /// The key pinned after.
    #[serde(with = "b64")]
    pub new_key: Vec<u8>,
    /// When the user accepted it, Unix milliseconds.
    pub accepted_ms: u64,
}

impl Contact {
    /// A contact first seen now, its key pinned, neither verified nor
    /// invited.
    pub fn first_seen(installation_id: &str, identity_key: &[u8], now_ms: u64) -> Self {
        Self {
            installation_id: installation_id.to_owned(),
            identity_key: identity_key.to_vec(),
            first_seen_ms: now_ms,
            verified: false,
            invited: false,
            offered_key: None,
            key_history: Vec::new(),
        }
    }

    /// True while an identity change awaits the user: sending is blocked.
    pub fn is_blocked(&self) -> bool {
        self.offered_key.is_some()
    }
}

/// What [`crate::Writer::observe_identity`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityCheck {
    /// First contact: the key is now pinned.
    Pinned,
    /// The key is the pinned one.
    Same,
    /// The key differs from the pinned one: it is recorded as offered and
    /// the contact is blocked until the user accepts or verifies it.
    Changed,
}

/// What [`crate::Writer::accept_incoming`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Stored; acknowledge it.
    New,
    /// Seen before; nothing was written. Acknowledge it again (the first ack
    /// may have been lost) but do not deliver it twice.
    Duplicate,
}

/// A KeyPackage as the store keeps it, ours in the pool or a peer's
/// ([`PeerKeyPackage`]): its public bytes and what the rules need to know
/// of it. The private parts of a pooled one are sealed in a row of their
/// own ([`crate::PoolEntry`]); a peer's have none here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKeyPackage {
    /// Its RFC 9420 `KeyPackageRef`.
    #[serde(with = "b64")]
    pub key_ref: Vec<u8>,
    /// Its HPKE `init_key`, unique among the packages of one owner.
    #[serde(with = "b64")]
    pub init_key: Vec<u8>,
    /// End of its lifetime, Unix seconds.
    pub not_after_s: u64,
    /// Whether it is its owner's reusable last-resort package.
    pub last_resort: bool,
    /// The serialized KeyPackage (`MLSMessage`), as handed out or received.
    #[serde(with = "b64")]
    pub bytes: Vec<u8>,
}

impl From<&VerifiedKeyPackage> for StoredKeyPackage {
    fn from(kp: &VerifiedKeyPackage) -> Self {
        Self {
            key_ref: kp.key_ref().to_vec(),
            init_key: kp.init_key().to_vec(),
            not_after_s: kp.not_after_s(),
            last_resort: kp.last_resort(),
            bytes: kp.bytes().to_vec(),
        }
    }
}

/// A peer's KeyPackage, as stored after its check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerKeyPackage {
    /// The peer installation (lower-case hex), the one it was checked
    /// against.
    pub installation_id: String,
    /// The package; its `init_key` is unique among the peer's packages.
    #[serde(flatten)]
    pub key_package: StoredKeyPackage,
}

impl From<&VerifiedKeyPackage> for PeerKeyPackage {
    fn from(kp: &VerifiedKeyPackage) -> Self {
        Self {
            installation_id: kp.installation_id().to_hex(),
            key_package: kp.into(),
        }
    }
}
