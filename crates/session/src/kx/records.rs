//! What the book stores in the `kx` table, one JSON row each.

use serde::{Deserialize, Serialize};
use strata_proto::kx::ID_BYTES;

use super::PEER;
use crate::durable::{self, Durable};
use crate::error::SessionError;

/// An invite this account made, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OpenInvite {
    #[serde(with = "hex::serde")]
    pub(super) reset: [u8; ID_BYTES],
    pub(super) expires: u64,
    /// A reset invite, sealed to the peer at this installation: only its
    /// account may answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) for_peer: Option<String>,
    /// An introduction's invite, sealed to this account: only it may
    /// answer.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_option")]
    pub(super) for_account: Option<Vec<u8>>,
    /// The half KX that used it, and the answer, for repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) used: Option<Answered>,
}

/// The half KX that used an invite, and the full KX answering it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Answered {
    /// The half's KEM ciphertext: a repeat carries the same.
    #[serde(with = "hex::serde")]
    pub(super) cipher: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub(super) their_kem: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub(super) their_rv: [u8; ID_BYTES],
    /// The full KX's `RMO`, sealed anew for each repeat.
    #[serde(with = "hex::serde")]
    pub(super) full: Vec<u8>,
}

/// An invite this account accepted, awaiting the full KX (by the
/// rendezvous point it waits on).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Pending {
    /// The invite's initial rendezvous point, where the half goes.
    #[serde(with = "hex::serde")]
    pub(super) invite_rv: [u8; ID_BYTES],
    #[serde(with = "hex::serde")]
    pub(super) identity_key: Vec<u8>,
    pub(super) installation: String,
    pub(super) name: String,
    #[serde(with = "hex::serde")]
    pub(super) their_kem: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub(super) their_reset: [u8; ID_BYTES],
    #[serde(with = "hex::serde")]
    pub(super) my_reset: [u8; ID_BYTES],
    /// `KxHalf::export` (sealed at rest with the rest of the row).
    #[serde(with = "hex::serde")]
    pub(super) secret: Vec<u8>,
    /// The half KX's `RMO`, sealed anew for each retry.
    #[serde(with = "hex::serde")]
    pub(super) half: Vec<u8>,
    pub(super) expires: u64,
    /// It answers a reset invite.
    #[serde(default)]
    pub(super) reset: bool,
    /// It answers an introduction's invite.
    #[serde(default)]
    pub(super) introduction: bool,
    /// When it is next published again, and the wait after that (not
    /// stored: a restart publishes at once).
    #[serde(skip)]
    pub(super) retry_at_ms: u64,
    #[serde(skip)]
    pub(super) backoff_ms: u64,
}

/// A peer met through a completed exchange, by installation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KxPeer {
    /// Its account identity key (serialized).
    #[serde(with = "hex::serde")]
    pub identity_key: Vec<u8>,
    /// The name it gave.
    pub name: String,
    /// Its KEM key, to seal a reset to.
    #[serde(with = "hex::serde")]
    pub kem_key: Vec<u8>,
    /// Where it waits for a reset.
    #[serde(with = "hex::serde")]
    pub their_reset: [u8; ID_BYTES],
    /// Where this side waits for its reset.
    #[serde(with = "hex::serde")]
    pub my_reset: [u8; ID_BYTES],
    /// The initial rendezvous point of the invite that started it.
    #[serde(with = "hex::serde")]
    pub invite_rv: [u8; ID_BYTES],
    /// When it completed, Unix milliseconds.
    pub completed_ms: u64,
}

/// An introduction this account asked for, by the installation to meet.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Asked {
    /// The mediator asked, an installation.
    pub(super) via: String,
    /// When, Unix milliseconds.
    pub(super) at_ms: u64,
}

mod hex_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| hex::decode(t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The peer met at installation `hex`, if any.
pub(super) fn peer_at(store: &dyn Durable, hex: &str) -> Result<Option<KxPeer>, SessionError> {
    let bytes = durable::read(store, |r| r.kx(&format!("{PEER}{hex}")))?;
    Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
}
