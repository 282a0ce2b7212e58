//! Group messages: sealing ours with the epoch's key, opening others' with
//! the key of their epoch, holding early ones for their commit, dropping
//! duplicates.
//!
//! The sealed plaintext is framed: a version byte ([`FRAMING`]), the
//! sender's sequence number in the epoch (8 bytes, big-endian: what
//! `group-sync` compares), then the content.

use strata_cascade::CascadeError;
use strata_cascade::group::GroupMls;
use strata_proto::{Blob, GroupMessage, Text};

use super::{
    GroupEvent, GroupMachine, GroupOutput, MAX_EARLY_BYTES, MAX_EARLY_MESSAGES, MAX_GROUP_MESSAGE_BYTES, Seqs,
};
use crate::content::Content;
use crate::error::SessionError;

/// The first byte of a group message's plaintext.
const FRAMING: u8 = 1;

fn frame(seq: u64, content: &Content) -> Vec<u8> {
    let mut plain = vec![FRAMING];
    plain.extend_from_slice(&seq.to_be_bytes());
    plain.extend_from_slice(&content.to_bytes());
    plain
}

fn unframe(plain: &[u8]) -> Option<(u64, &[u8])> {
    let (&version, rest) = plain.split_first()?;
    let (seq, content) = rest.split_first_chunk::<8>()?;
    (version == FRAMING).then(|| (u64::from_be_bytes(*seq), content))
}

impl GroupMachine {
    /// Seals `content` for the group and broadcasts it to the others.
    pub(super) fn send(&mut self, content: &Content) -> Result<(), SessionError> {
        if !matches!(content, Content::Text { .. } | Content::FileChunk { sent_to: None, .. }) {
            return Err(SessionError::Misuse("a group message is a text or a file chunk"));
        }
        let key = self
            .keys
            .back()
            .filter(|k| k.epoch() == self.epoch())
            .cloned()
            .ok_or(SessionError::Misuse("no group secret for this epoch yet"))?;
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut self.rng, &mut id);
        let message_id = hex::encode(id);
        let seq = self.heard.get(&(key.epoch(), self.local)).map_or(0, Seqs::next);
        let ciphertext = self.group.seal(&frame(seq, content), &key, &mut self.rng)?;
        if ciphertext.len() > MAX_GROUP_MESSAGE_BYTES {
            return Err(SessionError::Misuse("group message too large"));
        }
        let message = GroupMessage {
            group_id: Blob::new(self.group_id().to_vec())
                .map_err(|_| SessionError::Internal("group id over its cap".into()))?,
            epoch: key.epoch(),
            message_id: Text::new(message_id.clone()).map_err(|_| SessionError::Internal("message id".into()))?,
            ciphertext: Blob::new(ciphertext).map_err(|_| SessionError::Misuse("group message too large"))?,
        };
        self.first_sight(&message_id);
        self.hear(key.epoch(), self.local, seq, &message);
        let to = self.others()?;
        self.out.push_back(GroupOutput::Broadcast {
            message,
            to,
            forwarded: false,
        });
        Ok(())
    }

    /// A group message from anyone: opened with its epoch's key, or held
    /// for its commit; refused (nothing changes) when it does not open.
    pub(super) fn on_message(&mut self, m: &GroupMessage) -> Result<(), SessionError> {
        if m.group_id.as_bytes() != self.group_id() || self.seen.contains(m.message_id.as_str()) {
            return Ok(());
        }
        if m.ciphertext.as_bytes().len() > MAX_GROUP_MESSAGE_BYTES {
            self.refuse(None, "group message over its size cap");
            return Ok(());
        }
        let epoch = GroupMls::sealed_epoch(m.ciphertext.as_bytes()).unwrap_or(u64::MAX);
        if epoch != m.epoch {
            self.refuse(None, "group message whose epoch fields disagree");
            return Ok(());
        }
        if epoch > self.epoch() {
            self.early.push_back(m.clone());
            let bytes = |m: &GroupMessage| m.ciphertext.as_bytes().len();
            let mut total: usize = self.early.iter().map(bytes).sum();
            while self.early.len() > MAX_EARLY_MESSAGES || total > MAX_EARLY_BYTES {
                let Some(old) = self.early.pop_front() else { break };
                total -= bytes(&old);
            }
            // Behind: ask an admin, once per epoch.
            if self.asked_at != Some(self.epoch())
                && let Some(admin) = self.group.admins()?.into_iter().find(|a| *a != self.local)
            {
                self.ask_catch_up(admin)?;
            }
            return Ok(());
        }
        let Some(key) = self.keys.iter().find(|k| k.epoch() == epoch).cloned() else {
            self.refuse(None, "group message of an epoch out of reach");
            return Ok(());
        };
        let opened = match self.group.open(m.ciphertext.as_bytes(), &key) {
            Ok(p) => p,
            Err(e) if matches!(e.class(), strata_cascade::ErrorClass::BadPeerInput) => {
                self.refuse(None, &format!("group message refused: {e}"));
                return Ok(());
            }
            Err(CascadeError::Internal { detail, .. }) => return Err(SessionError::Internal(detail)),
            Err(e) => return Err(e.into()),
        };
        let Some((seq, body)) = unframe(&opened.plaintext) else {
            self.refuse(None, "group message framing");
            return Ok(());
        };
        // Had, whatever its content: nobody sends it again.
        self.hear(epoch, opened.sender, seq, m);
        let content = match Content::from_bytes(body) {
            Ok(c) => c,
            Err(e) => {
                self.refuse(None, &format!("group message content: {e}"));
                return Ok(());
            }
        };
        if let Err(e) = content.check() {
            self.refuse(None, e);
            return Ok(());
        }
        // Group PDUs, device lists and sent copies travel pairwise, never
        // as a group's message.
        if !matches!(content, Content::Text { .. } | Content::FileChunk { sent_to: None, .. }) {
            self.refuse(None, "a group message is a text or a file chunk");
            return Ok(());
        }
        self.first_sight(m.message_id.as_str());
        // An admin passes every member's message on to the others, so a
        // member reaches the whole group through the admin that added it
        // even without a link to every other member; receivers drop the
        // copies they already have.
        if self.group.is_admin(self.local)? {
            let to: Vec<_> = self.others()?.into_iter().filter(|o| *o != opened.sender).collect();
            if !to.is_empty() {
                self.out.push_back(GroupOutput::Broadcast {
                    message: m.clone(),
                    to,
                    forwarded: true,
                });
            }
        }
        self.emit(GroupEvent::Received {
            sender: opened.sender,
            message_id: m.message_id.as_str().to_owned(),
            content,
        });
        Ok(())
    }

    /// Opens the held messages the current epoch has reached.
    pub(super) fn release_early(&mut self) -> Result<(), SessionError> {
        let epoch = self.epoch();
        let (ready, later): (Vec<_>, Vec<_>) = self.early.drain(..).partition(|m| m.epoch <= epoch);
        self.early = later.into();
        for m in ready {
            self.on_message(&m)?;
        }
        Ok(())
    }
}
