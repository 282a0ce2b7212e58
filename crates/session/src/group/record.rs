//! A group machine's persisted form: everything [`GroupMachine`] holds
//! (the MLS group, the message keys of the epochs still in reach, the
//! commit log, held commits and messages, the ids seen, what `group-sync`
//! compares) as one JSON record, sealed at rest by the store
//! (`Writer::set_group`) and rewritten at every step; and the messages
//! kept to send again as a row each (`Writer::put_group_message`), written
//! once. Byte fields are base64; the PDUs are in their wire form.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use strata_cascade::group::{GroupMessageKey, GroupMls};
use strata_cascade::{InstallationId, InstallationIdentity, SecretBytes};
use strata_proto::{GroupCommit, GroupMessage};

use super::{GroupMachine, Kept, Seqs};
use crate::error::SessionError;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupRecord {
    version: u32,
    name: Option<String>,
    mls: String,
    keys: Vec<String>,
    log: Vec<GroupCommit>,
    future: Vec<GroupCommit>,
    early: Vec<GroupMessage>,
    seen: Vec<String>,
    removed: bool,
    asked_at: Option<u64>,
    #[serde(default)]
    heard: Vec<HeardRecord>,
    /// Only in records written before kept messages had rows of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    kept: Vec<KeptRecord>,
}

#[derive(Serialize, Deserialize)]
struct HeardRecord {
    epoch: u64,
    sender: String,
    seqs: Seqs,
}

#[derive(Serialize, Deserialize)]
struct KeptRecord {
    epoch: u64,
    sender: String,
    seq: u64,
    message: GroupMessage,
}

fn corrupt(what: &str) -> SessionError {
    SessionError::Internal(format!("stored group state: {what}"))
}

impl GroupMachine {
    /// The machine's whole state, to seal and store.
    pub fn export(&self) -> Result<SecretBytes, SessionError> {
        let record = GroupRecord {
            version: VERSION,
            name: self.name.clone(),
            mls: STANDARD.encode(self.group.export_state()?.as_bytes()),
            keys: self
                .keys
                .iter()
                .map(|k| STANDARD.encode(k.to_bytes().as_bytes()))
                .collect(),
            log: self.log.iter().cloned().collect(),
            future: self.future.values().cloned().collect(),
            early: self.early.iter().cloned().collect(),
            seen: self.seen_order.iter().cloned().collect(),
            removed: self.removed,
            asked_at: self.asked_at,
            heard: self
                .heard
                .iter()
                .map(|((epoch, sender), seqs)| HeardRecord {
                    epoch: *epoch,
                    sender: sender.to_hex(),
                    seqs: seqs.clone(),
                })
                .collect(),
            // Stored apart, a row each (`pending_kept`): the record is
            // rewritten at every step, and these may be megabytes.
            kept: Vec::new(),
        };
        let json = serde_json::to_vec(&record).map_err(|e| SessionError::Internal(e.to_string()))?;
        Ok(SecretBytes::from_vec(json))
    }

    /// A machine from [`GroupMachine::export`]'s record and the rows of its
    /// kept messages ([`GroupMachine::pending_kept`]); `seed` seeds its
    /// random generator anew.
    pub fn restore<R: AsRef<[u8]>>(
        local: &InstallationIdentity,
        bytes: &[u8],
        kept: &[R],
        seed: [u8; 32],
    ) -> Result<Self, SessionError> {
        let record: GroupRecord = serde_json::from_slice(bytes).map_err(|e| corrupt(&e.to_string()))?;
        if record.version != VERSION {
            return Err(corrupt("unknown version"));
        }
        let decode = |s: &str| STANDARD.decode(s).map_err(|_| corrupt("base64"));
        let group = GroupMls::import_state(&decode(&record.mls)?)?;
        let mut m = Self::with_group(local, group, record.name, seed);
        for k in &record.keys {
            m.keys.push_back(GroupMessageKey::from_bytes(&decode(k)?)?);
        }
        m.log = record.log.into();
        for commit in record.future {
            m.future.insert(commit.epoch, commit);
        }
        m.early = record.early.into();
        for id in record.seen {
            m.first_sight(&id);
        }
        m.removed = record.removed;
        m.asked_at = record.asked_at;
        let installation = |s: &str| s.parse::<InstallationId>().map_err(|_| corrupt("installation id"));
        for h in record.heard {
            m.heard.insert((h.epoch, installation(&h.sender)?), h.seqs);
        }
        let rows = kept
            .iter()
            .map(|row| serde_json::from_slice::<KeptRecord>(row.as_ref()).map_err(|e| corrupt(&e.to_string())));
        // A record from before kept rows carries them inline: they are
        // stored as rows at the next step.
        let inline = record.kept.len();
        for (i, k) in record.kept.into_iter().map(Ok).chain(rows).enumerate() {
            let k = k?;
            let kept = Kept {
                epoch: k.epoch,
                sender: installation(&k.sender)?,
                seq: k.seq,
                message: k.message,
            };
            if i < inline {
                m.kept_new.push(kept.key());
            }
            m.kept.push_back(kept);
        }
        m.rng = ChaCha20Rng::from_seed(seed);
        Ok(m)
    }
}

impl Kept {
    /// Its stored row.
    pub(super) fn to_row(&self) -> Result<Vec<u8>, SessionError> {
        serde_json::to_vec(&KeptRecord {
            epoch: self.epoch,
            sender: self.sender.to_hex(),
            seq: self.seq,
            message: self.message.clone(),
        })
        .map_err(|e| SessionError::Internal(e.to_string()))
    }
}
