//! Recovering lost group messages. Group messages travel on lossy paths
//! (a gossip publish, one frame per link), so each member numbers its own
//! (per epoch, inside the sealed plaintext) and members compare what they
//! have over the pair sessions, which do not lose anything:
//!
//! - every member keeps the sequence numbers it has, per epoch and sender,
//!   for the epochs it can still read, and the last [`KEPT_MESSAGES`]
//!   messages as they came (to send them again);
//! - when that changed (a message sent or opened, a new epoch), at most
//!   once per [`SYNC_INTERVAL`], a member sends a `group-sync` to the
//!   sequencer, and the sequencer sends its own to every member;
//! - the receiver of a `group-sync` sends back, pairwise, the messages it
//!   keeps that the other lacks ([`RESEND_BATCH`] and [`RESEND_BYTES`] a
//!   time: the next round brings the rest), and when the other has some it
//!   lacks, answers with its own `group-sync`, which is not answered. It
//!   answers at most [`SYNCS_PER_TICK`] of one member's between two ticks.
//!
//! So a message anyone has reaches the sequencer, and one the sequencer
//! has reaches everyone, whatever the lossy paths drop; duplicates are
//! dropped by message id as ever. Without a reachable sequencer, the pair
//! sessions hold the syncs until it is back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_cascade::InstallationId;
use strata_proto::limits::{MAX_SYNC_ENTRIES, MAX_SYNC_RANGES};
use strata_proto::{BoundedVec, GroupMessage, GroupSync, HeardSeqs, Pdu, Text};

use super::{GroupMachine, GroupOutput};
use crate::error::SessionError;

/// How often, at most, a member sends what it has.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(3);
/// Group messages each member keeps to send again.
pub const KEPT_MESSAGES: usize = 256;
/// Most bytes of ciphertext kept to send again (they are part of the
/// group's stored record).
pub const KEPT_BYTES: usize = 4 * 1024 * 1024;
/// Messages sent again in answer to one `group-sync`.
pub const RESEND_BATCH: usize = 64;
/// Most ciphertext bytes sent again in answer to one `group-sync` (the
/// first message always goes, whatever its size).
pub const RESEND_BYTES: usize = 1024 * 1024;
/// `group-sync`s answered per member between two ticks: an honest one
/// sends one per [`SYNC_INTERVAL`] and answers one; a flood of them would
/// make this member resend its whole store again and again.
pub const SYNCS_PER_TICK: u8 = 4;

/// Sequence numbers held: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Seqs(Vec<[u64; 2]>);

impl Seqs {
    pub(super) fn contains(&self, n: u64) -> bool {
        self.0.iter().any(|[lo, hi]| *lo <= n && n <= *hi)
    }

    /// The number after the highest held.
    pub(super) fn next(&self) -> u64 {
        self.0.last().map_or(0, |[_, hi]| hi.saturating_add(1))
    }

    /// Adds `n`; false when it was held.
    pub(super) fn insert(&mut self, n: u64) -> bool {
        if self.contains(n) {
            return false;
        }
        let at = self.0.partition_point(|[_, hi]| *hi < n);
        self.0.insert(at, [n, n]);
        let mut merged: Vec<[u64; 2]> = Vec::with_capacity(self.0.len());
        for [lo, hi] in self.0.drain(..) {
            match merged.last_mut() {
                Some([_, last]) if last.saturating_add(1) >= lo => *last = hi.max(*last),
                _ => merged.push([lo, hi]),
            }
        }
        self.0 = merged;
        // Only a sender that skips numbers (or very heavy loss) fragments
        // this far: close the smallest gap, giving up on what is in it.
        if self.0.len() > MAX_SYNC_RANGES
            && let Some((i, _)) = self.0.windows(2).enumerate().min_by_key(|(_, w)| match w {
                [[_, end], [start, _]] => start - end,
                _ => u64::MAX,
            })
        {
            let [_, hi] = self.0.remove(i + 1);
            if let Some([_, end]) = self.0.get_mut(i) {
                *end = hi;
            }
        }
        true
    }

    /// Whether `other` holds a number this does not. Ranges of one set
    /// never touch, so a range of `other` is held only inside one of ours.
    fn lacks_any_of(&self, other: &Seqs) -> bool {
        other
            .0
            .iter()
            .any(|[lo, hi]| !self.0.iter().any(|[a, b]| a <= lo && hi <= b))
    }

    /// From a peer's ranges: sorted, disjoint pairs, or nothing.
    fn parse(ranges: &[[u64; 2]]) -> Option<Self> {
        let ok = ranges.iter().all(|[lo, hi]| lo <= hi)
            && ranges
                .windows(2)
                .all(|w| matches!(w, [[_, end], [start, _]] if end < start));
        ok.then(|| Seqs(ranges.to_vec()))
    }
}

/// A message kept to send again, with where it stands.
#[derive(Clone, Debug)]
pub(super) struct Kept {
    pub(super) epoch: u64,
    pub(super) sender: InstallationId,
    pub(super) seq: u64,
    pub(super) message: GroupMessage,
}

impl Kept {
    /// Its key in the store: epoch, sender, sequence number, fixed width.
    pub(super) fn key(&self) -> String {
        format!("{:016x}{}{:016x}", self.epoch, self.sender.to_hex(), self.seq)
    }
}

/// Kept messages to store apart from the group's record, and stored ones
/// to delete: written in the same transaction as the record.
#[derive(Debug, Default)]
pub struct KeptChanges {
    /// Key and row of each message to store.
    pub put: Vec<(String, Vec<u8>)>,
    /// Keys of the rows to delete.
    pub delete: Vec<String>,
}

impl GroupMachine {
    /// Notes that this member has message `seq` of `sender` in `epoch`
    /// (and keeps `message` to send again); false when it had it.
    pub(super) fn hear(&mut self, epoch: u64, sender: InstallationId, seq: u64, message: &GroupMessage) -> bool {
        if !self.heard.entry((epoch, sender)).or_default().insert(seq) {
            return false;
        }
        self.sync_due = true;
        self.kept.push_back(Kept {
            epoch,
            sender,
            seq,
            message: message.clone(),
        });
        if let Some(k) = self.kept.back() {
            self.kept_new.push(k.key());
        }
        let bytes = |k: &Kept| k.message.ciphertext.as_bytes().len();
        let mut total: usize = self.kept.iter().map(bytes).sum();
        while self.kept.len() > KEPT_MESSAGES || total > KEPT_BYTES {
            let Some(old) = self.kept.pop_front() else { break };
            total -= bytes(&old);
            self.dropped(old.key());
        }
        true
    }

    /// Forgets the messages of epochs no longer readable.
    pub(super) fn forget_before(&mut self, epoch: u64) {
        self.heard.retain(|(e, _), _| *e >= epoch);
        let (gone, kept): (Vec<Kept>, Vec<Kept>) = self.kept.drain(..).partition(|k| k.epoch < epoch);
        self.kept = kept.into();
        for k in gone {
            self.dropped(k.key());
        }
    }

    /// The keys of every stored kept-message row (the state is left).
    pub(super) fn stored_kept(&self) -> Vec<String> {
        let mut keys = self.kept_gone.clone();
        keys.extend(self.kept.iter().map(Kept::key).filter(|k| !self.kept_new.contains(k)));
        keys
    }

    /// A kept message left: its row goes, unless it was never stored.
    fn dropped(&mut self, key: String) {
        match self.kept_new.iter().position(|k| *k == key) {
            Some(i) => {
                self.kept_new.remove(i);
            }
            None => self.kept_gone.push(key),
        }
    }

    /// The kept messages to store and the stored ones to delete since the
    /// last [`GroupMachine::kept_stored`].
    pub fn pending_kept(&self) -> Result<KeptChanges, SessionError> {
        // Every step asks; most steps kept nothing new.
        let put = if self.kept_new.is_empty() {
            Vec::new()
        } else {
            self.kept
                .iter()
                .map(|k| (k.key(), k))
                .filter(|(key, _)| self.kept_new.contains(key))
                .map(|(key, k)| Ok((key, k.to_row()?)))
                .collect::<Result<_, SessionError>>()?
        };
        Ok(KeptChanges {
            put,
            delete: self.kept_gone.clone(),
        })
    }

    /// The owner stored [`GroupMachine::pending_kept`].
    pub fn kept_stored(&mut self) {
        self.kept_new.clear();
        self.kept_gone.clear();
    }

    /// Every kept message's row, as [`GroupMachine::restore`] takes them.
    pub fn kept_rows(&self) -> Result<Vec<Vec<u8>>, SessionError> {
        self.kept.iter().map(Kept::to_row).collect()
    }

    /// The oldest epoch whose messages this member can read.
    fn oldest_readable(&self) -> u64 {
        self.keys.front().map_or(self.epoch(), |k| k.epoch())
    }

    /// Time passes: sends what this member has, when it changed and the
    /// last round is [`SYNC_INTERVAL`] old.
    pub(super) fn on_tick(&mut self, now: Instant) -> Result<(), SessionError> {
        self.syncs_answered.clear();
        self.now = Some(now);
        for pending in self.add_again.values_mut() {
            if let super::AddAgain::Asked(at @ None) = pending {
                *at = Some(now);
            }
        }
        let recent = self
            .last_sync
            .is_some_and(|t| now.saturating_duration_since(t) < SYNC_INTERVAL);
        if !self.sync_due || recent {
            return Ok(());
        }
        let Some(sequencer) = self.group.admins()?.first().copied() else {
            return Ok(());
        };
        let to = if sequencer == self.local {
            self.others()?
        } else {
            vec![sequencer]
        };
        let sync = self.sync_pdu(false)?;
        tracing::debug!(group = %hex::encode(self.group_id()), members = to.len(), "group-sync round");
        for member in to {
            self.out.push_back(GroupOutput::Pairwise {
                to: member,
                pdu: sync.clone().into(),
            });
        }
        self.sync_due = false;
        self.last_sync = Some(now);
        Ok(())
    }

    fn sync_pdu(&self, answer: bool) -> Result<GroupSync, SessionError> {
        let from_epoch = self.oldest_readable();
        // Newest first, so a cut keeps what is most likely still missing.
        let heard = self
            .heard
            .iter()
            .rev()
            .filter(|((e, _), seqs)| *e >= from_epoch && !seqs.0.is_empty())
            .take(MAX_SYNC_ENTRIES)
            .map(|((epoch, sender), seqs)| {
                Ok(HeardSeqs {
                    epoch: *epoch,
                    sender: Text::new(sender.to_hex()).map_err(|_| SessionError::Internal("installation id".into()))?,
                    seqs: BoundedVec::new(seqs.0.clone()).map_err(|_| SessionError::Internal("sync ranges".into()))?,
                })
            })
            .collect::<Result<Vec<_>, SessionError>>()?;
        Ok(GroupSync {
            group_id: strata_proto::Blob::new(self.group_id().to_vec())
                .map_err(|_| SessionError::Internal("group id over its cap".into()))?,
            from_epoch,
            to_epoch: self.epoch(),
            heard: BoundedVec::new(heard).map_err(|_| SessionError::Internal("sync entries".into()))?,
            answer,
        })
    }

    /// A member's `group-sync`: what it lacks goes back to it, and when it
    /// has what this member lacks, this member's own (unless it answers).
    pub(super) fn on_sync(&mut self, from: InstallationId, sync: &GroupSync) -> Result<(), SessionError> {
        if !self.members()?.contains(&from) {
            self.refuse(Some(from), "group-sync from a non-member");
            return Ok(());
        }
        let answered = self.syncs_answered.entry(from).or_insert(0);
        if *answered >= SYNCS_PER_TICK {
            self.refuse(Some(from), "group-sync over its rate");
            return Ok(());
        }
        *answered += 1;
        let mut theirs: BTreeMap<(u64, InstallationId), Seqs> = BTreeMap::new();
        for entry in sync.heard.iter() {
            let sender = entry.sender.as_str().parse::<InstallationId>().ok();
            let (Some(sender), Some(seqs)) = (sender, Seqs::parse(entry.seqs.as_slice())) else {
                self.refuse(Some(from), "group-sync with a bad entry");
                return Ok(());
            };
            theirs.insert((entry.epoch, sender), seqs);
        }
        let readable = |e: u64| sync.from_epoch <= e && e <= sync.to_epoch;
        let none = Seqs::default();
        let mut bytes = 0;
        let lacking: Vec<GroupMessage> = self
            .kept
            .iter()
            .filter(|k| readable(k.epoch) && !theirs.get(&(k.epoch, k.sender)).unwrap_or(&none).contains(k.seq))
            .take(RESEND_BATCH)
            .take_while(|k| {
                let first = bytes == 0;
                bytes += k.message.ciphertext.as_bytes().len();
                first || bytes <= RESEND_BYTES
            })
            .map(|k| k.message.clone())
            .collect();
        if !lacking.is_empty() {
            tracing::debug!(group = %hex::encode(self.group_id()), to = %from, count = lacking.len(), "group messages sent again");
        }
        for message in lacking {
            self.out.push_back(GroupOutput::Pairwise {
                to: from,
                pdu: Pdu::GroupMessage(message),
            });
        }
        let from_epoch = self.oldest_readable();
        let behind = theirs.iter().any(|((e, s), seqs)| {
            *e >= from_epoch && *e <= self.epoch() && self.heard.get(&(*e, *s)).unwrap_or(&none).lacks_any_of(seqs)
        });
        if behind && !sync.answer {
            let answer = self.sync_pdu(true)?;
            self.out.push_back(GroupOutput::Pairwise {
                to: from,
                pdu: answer.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn ranges_merge_and_stay_bounded() {
        let mut s = Seqs::default();
        for n in [3, 1, 2, 0, 7, 5] {
            assert!(s.insert(n));
        }
        assert!(!s.insert(2));
        assert_eq!(s.0, vec![[0, 3], [5, 5], [7, 7]]);
        assert!(s.insert(6));
        assert_eq!(s.0, vec![[0, 3], [5, 7]]);
        assert_eq!(s.next(), 8);
        let other = Seqs(vec![[0, 2], [4, 4]]);
        assert!(s.lacks_any_of(&other));
        assert!(!other.lacks_any_of(&Seqs(vec![[1, 2]])));
        // A sender skipping every other number cannot grow it unbounded.
        let mut holes = Seqs::default();
        for n in 0..1000 {
            holes.insert(n * 2);
        }
        assert!(holes.0.len() <= MAX_SYNC_RANGES);
        assert!(holes.contains(1998));
        assert!(Seqs::parse(&[[0, 3], [3, 5]]).is_none());
        assert!(Seqs::parse(&[[4, 3]]).is_none());
        assert!(Seqs::parse(&[[0, 3], [5, 5]]).is_some());
    }
}
