//! Twins: two sessions between the same two installations, opened at once
//! (54/WAKU2-X3DH-SESSIONS). Both handshakes run to the end, and of the two
//! sessions both sides keep the one whose tie-break value comes first in
//! byte order. The value is an MLS exporter value of each session
//! ([`strata_cascade::MlsLayer::tie_break`]): both sides compute the same,
//! and no one can choose it, so a forged start (anyone can send step 1 in
//! the peer's name) cannot pick the winner; it never completes, and the
//! session it twins carries on.
//!
//! Which starts are twins is decided where they arrive, the same way on
//! both sides: a start of the peer's is the twin of our own attempt under
//! way, or of the session our own start made less than
//! [`Config::handshake_stall`](crate::Config::handshake_stall) ago, unless
//! the start names that attempt or session as the one it knows (`prior`):
//! then the peer saw it established and replaces it knowingly (a re-key,
//! or a peer that lost the link before our side completed). A start reaches the peer before its sender's
//! attempt stalls, and the peer's session from our start completes only
//! after the peer saw that start, so each side sees the same pair.
//!
//! Unless one of the two never completes on one side (its last answers
//! lost until it stalls). The twin not kept is therefore kept aside, as the
//! *spare*, for [`Config::handshake_stall`](crate::Config::handshake_stall):
//! a message under it is still taken, and the side that kept both moves to
//! the spare when the peer refuses ours at the cascade's outer layer, which
//! shows the peer does not hold the session (only the spare); it moves back to the twin that came first
//! only when the peer's messages come under that one. While a twin is under
//! way beside the session, a message neither opens is not refused (the
//! twin may be the one it came under).

use std::time::Instant;

use strata_proto::{CascadedPayload, PduType};

use super::{Now, PeerMachine, Role, Session, Step};
use crate::machine::attempt::Attempt;

/// What a newly made session keeps to settle a twin (in memory: a session
/// restored from the store is past the point of having one).
#[derive(Clone, Debug)]
pub(crate) struct Fresh {
    /// The session or attempt this one is the twin of, when it is one.
    pub(crate) twin_of: Option<[u8; 16]>,
    /// The session's tie-break value.
    pub(crate) tie_break: Option<[u8; 32]>,
    /// When it was established.
    pub(crate) at: Instant,
}

/// How two twins were settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TieBreak {
    /// The session kept, and its tie-break value.
    pub kept: ([u8; 16], [u8; 32]),
    /// The session dropped, and its value.
    pub dropped: ([u8; 16], [u8; 32]),
}

impl PeerMachine {
    /// How the last two twins with this peer were settled, if ever.
    pub fn last_tie_break(&self) -> Option<TieBreak> {
        self.tie_break
    }

    /// The twin of a start of the peer's naming `prior` as the session it
    /// knows: our own attempt under way, or the session our own start made
    /// recently, unless the start names it.
    pub(super) fn twin_for(&self, prior: Option<[u8; 16]>, now: Now) -> Option<[u8; 16]> {
        if let Some(ours) = self
            .attempt
            .iter()
            .chain(&self.rival)
            .find(|a| a.role == Role::Initiator)
        {
            // Unless the peer names it: it completed there, and the peer
            // replaces it knowingly.
            return (prior != Some(ours.id)).then_some(ours.id);
        }
        let s = self.session.as_ref().filter(|s| s.initiator)?;
        let fresh = s.fresh.as_ref()?;
        let recent = now.at.saturating_duration_since(fresh.at) < self.config.handshake_stall;
        (recent && fresh.twin_of.is_none() && prior != Some(s.id)).then_some(s.id)
    }

    /// Attempt `a`, just completed with tie-break value `value`, against
    /// the session held: `Some(true)` when they are twins and `a` comes
    /// first (it replaces the session), `Some(false)` when they are twins
    /// and the session stays, `None` when they are not twins.
    pub(super) fn settle_twins(&mut self, a: &Attempt, value: Option<[u8; 32]>) -> Option<bool> {
        let old = self.session.as_ref()?;
        let old_fresh = old.fresh.as_ref();
        let twins = a.twin_of == Some(old.id) || old_fresh.is_some_and(|f| f.twin_of == Some(a.id));
        if !twins || a.peer.is_none_or(|p| p.installation_id != old.peer.installation_id) {
            return None;
        }
        let (Some(new), Some(held)) = (value, old_fresh.and_then(|f| f.tie_break)) else {
            // No value to compare (the export failed): the newer stands,
            // as for a re-key.
            return Some(true);
        };
        let wins = new < held;
        let (kept, dropped) = if wins {
            ((a.id, new), (old.id, held))
        } else {
            ((old.id, held), (a.id, new))
        };
        tracing::debug!(peer = %self.peer_hex, kept = %hex::encode(kept.0), dropped = %hex::encode(dropped.0), "twin sessions settled");
        self.tie_break = Some(TieBreak { kept, dropped });
        Some(wins)
    }

    /// Attempt `dropped`, completed as a session, lost to its twin: it is
    /// given up and kept as the spare. Our answer still lets the peer
    /// complete it and see the same pair.
    pub(super) fn drop_twin(&mut self, dropped: Session, now: Now) -> Step {
        if let Some(ack) = dropped.replies.get(&PduType::MlsWelcome) {
            self.transmit(ack.clone());
        }
        self.abandon(dropped.id);
        self.spare = Some(dropped);
        // The session kept may await its probe since a reconnect.
        if self.link_up && self.session.as_ref().is_some_and(|s| !s.confirmed && s.probe.is_none()) {
            self.send_probe(now)?;
        }
        Ok(())
    }

    /// Whether a spare is held and may still be needed.
    fn spare_alive(&mut self, now: Now) -> bool {
        let stall = self.config.handshake_stall;
        let live = self
            .spare
            .as_ref()
            .and_then(|s| s.fresh.as_ref())
            .is_some_and(|f| now.at.saturating_duration_since(f.at) < stall);
        if !live {
            self.spare = None;
        }
        live
    }

    /// A message the session did not open, opened with the spare: taken
    /// (with the spare's id). If the spare is the twin that came first, the
    /// peer holds it: it becomes the session again.
    pub(super) fn open_with_spare(&mut self, payload: &CascadedPayload, now: Now) -> Option<(Vec<u8>, [u8; 16])> {
        if !self.spare_alive(now) {
            return None;
        }
        let mut spare = self.spare.take()?;
        let opened = spare.cascade.decrypt(payload, &mut self.rng);
        let id = spare.id;
        let first = self.tie_break.is_some_and(|t| t.kept.0 == id);
        self.spare = Some(spare);
        let plaintext = opened.ok()?;
        if first {
            self.swap_spare();
        }
        Some((plaintext, id))
    }

    /// The peer refused a message of ours under the session as
    /// undecryptable: if the session is the twin that came first and a
    /// spare is held, the peer holds only the spare; it becomes the
    /// session. True when it did.
    pub(super) fn spare_on_refusal(&mut self, now: Now) -> bool {
        let first = self.session.as_ref().map(|s| s.id);
        if self.tie_break.is_none_or(|t| Some(t.kept.0) != first) || !self.spare_alive(now) {
            return false;
        }
        self.swap_spare();
        true
    }

    /// The spare and the session change places; everything queued is
    /// encrypted again under the new session.
    fn swap_spare(&mut self) {
        let Some(mut spare) = self.spare.take() else { return };
        if let Some(old) = self.session.take() {
            spare.next_seq = spare.next_seq.max(old.next_seq);
            self.spare = Some(old);
        }
        spare.confirmed = true;
        let epoch = spare.mls_epoch();
        tracing::debug!(peer = %self.peer_hex, session = %hex::encode(spare.id), "twin sessions: moved to the one the peer holds");
        self.session = Some(spare);
        for t in &mut self.outbox {
            t.frames = None;
            t.stale = false;
            t.mls_epoch = epoch;
        }
        self.was_ready = false;
    }
}

/// Whether a peer's refusal `reason` says our message failed the cascade's
/// outer layer (AES-GCM): it was sealed under a session the peer does not
/// hold. A failure further in (Signal, MLS) means the peer holds it.
pub(super) fn refused_at_outer_layer(reason: &str) -> bool {
    reason
        == strata_cascade::CascadeError::Authentication {
            layer: strata_cascade::AES_ALGORITHM,
        }
        .to_string()
}
