//! The peer installation a machine speaks for, and how far it is trusted:
//! binding to it (loading what the store holds of it), saving its
//! session, and its identity key: TOFU in steps 1 and 2 (pinned only in
//! the transaction that saves the session it completed), a key the user
//! expects (a contact URI), a changed key blocking the peer until the user
//! accepts it. See the crate docs, "TOFU" and "An expected key".

use strata_cascade::{InstallationId, PeerIdentity};
use strata_proto::{Id, PduType, Reassembler};
use strata_store::{IdentityCheck, StoreError, Writer};

use super::outgoing::Tracked;
use super::{Event, Now, PeerMachine, Refusal, ResetReason, Role, Session, Step};
use crate::content::Plaintext;
use crate::crypto;
use crate::durable;
use crate::error::SessionError;

impl PeerMachine {
    /// Binds the machine to `peer`, loading its stored state. A different
    /// installation at the same address replaces the old binding.
    pub(super) fn bind(&mut self, peer: InstallationId, now: Now) -> Step {
        if self.peer == Some(peer) {
            return Ok(());
        }
        if let Some(old) = self.peer {
            self.emit(Event::InstallationChanged {
                old: old.to_hex(),
                new: peer.to_hex(),
            });
            self.session = None;
            self.outbox.clear();
            self.pending_acks.clear();
            self.reassembler = Reassembler::new();
            if self.attempt.as_ref().is_some_and(|a| a.peer.is_some()) {
                self.attempt = None;
            }
            self.rival = None;
        }
        self.peer = Some(peer);
        self.peer_hex = peer.to_hex();
        self.load(now)
    }

    /// Loads what the store holds of the bound peer: its contact (blocked
    /// or not), its session and its outbox.
    fn load(&mut self, now: Now) -> Step {
        let hex = self.peer_hex.clone();
        let (contact, record, layers, outbox) = durable::read(&*self.store, |r| {
            Ok((
                r.contact(&hex)?,
                r.handshake(&hex)?.map(|b| b.to_vec()),
                r.layer_state(&hex)?.map(|b| b.to_vec()),
                r.outbox(&hex)?,
            ))
        })?;
        self.blocked = contact.as_ref().is_some_and(strata_store::Contact::is_blocked);
        let mut next_seq = 1;
        if let (Some(record), Some(layers), Some(contact)) = (record, layers, contact) {
            let restored = Session::restore(
                &record,
                &layers,
                &contact.identity_key,
                self.peer,
                self.config.handshake_rto,
                now,
            );
            match restored {
                Ok(s) => {
                    next_seq = s.next_seq;
                    if self.address.is_none() {
                        self.address.clone_from(&s.address);
                    }
                    self.session = Some(s);
                }
                Err(e) => {
                    tracing::warn!(peer = %hex, error = %e, "stored session unusable; a full handshake follows");
                }
            }
        }
        let rto = self.round_trip.rto();
        for m in outbox {
            let Ok(p) = Plaintext::from_bytes(&m.body) else {
                continue;
            };
            let seq = p.seq.unwrap_or(0);
            next_seq = next_seq.max(seq + 1);
            let frames = (!m.frames.is_empty()).then_some(m.frames);
            self.outbox.push(Tracked::new(m.message_id, seq, frames, now.at, rto));
        }
        self.outbox.sort_by_key(|t| t.seq);
        if let Some(s) = &mut self.session {
            s.next_seq = s.next_seq.max(next_seq);
            let epoch = s.mls_epoch();
            for t in &mut self.outbox {
                t.mls_epoch = epoch;
            }
        } else {
            // No session: nothing encrypted so far can be decrypted by the
            // next one.
            self.outbox.iter_mut().for_each(|t| t.frames = None);
        }
        if !self.outbox.is_empty() {
            self.wants_session = true;
        }
        Ok(())
    }

    /// Persists the session record, and the cascade state with it.
    pub(super) fn save_session(&mut self) -> Step {
        if !self.decrypted.is_empty() {
            // The state to save decrypted these: they commit with it.
            return self.commit_decrypted();
        }
        let Some(s) = &self.session else { return Ok(()) };
        let record = s.record_bytes()?;
        let state = s.cascade.export()?;
        let hex = self.peer_hex.clone();
        self.write_pinned(|w| {
            w.set_layer_state(&hex, state.as_bytes())?;
            w.set_handshake(&hex, &record)
        })?;
        Ok(())
    }

    /// Runs `f` in one write transaction that also pins a first contact's
    /// key ([`durable::pin_in`]); `None`, with `f` not run, when another key
    /// was pinned meanwhile: then the session is dropped unsaved
    /// ([`Self::pin_refused`]). Once the transaction ran, the pin is spent.
    pub(super) fn write_pinned<T>(
        &mut self,
        mut f: impl FnMut(&mut Writer<'_>) -> Result<T, StoreError>,
    ) -> Step<Option<T>> {
        let hex = self.peer_hex.clone();
        let pin = self.pin.clone();
        let done = durable::write(&*self.store, |w| {
            if !durable::pin_in(w, &hex, pin.as_ref())? {
                return Ok(None);
            }
            f(w).map(Some)
        })?;
        self.pin = None;
        if done.is_none() {
            self.pin_refused();
        }
        Ok(done)
    }

    /// The pin of a session just completed met another key, pinned
    /// meanwhile (the user added the contact): the session is dropped
    /// unsaved and the contact blocked, as a changed key is.
    fn pin_refused(&mut self) {
        self.session = None;
        self.decrypted.clear();
        self.blocked = true;
        self.emit(Event::IdentityChanged {
            installation: self.peer_hex.clone(),
        });
    }

    /// Records the identity key the user expects at this address. A session
    /// or a contact already pinned to another key refuses it at once.
    pub(super) fn expect_identity(&mut self, identity_key: Vec<u8>) -> Step {
        let pinned = match (&self.session, self.peer) {
            (Some(s), _) => Some(crypto::peer_identity_key(&s.peer)),
            (None, Some(_)) => {
                let hex = self.peer_hex.clone();
                durable::read(&*self.store, |r| r.contact(&hex))?.map(|c| c.identity_key)
            }
            (None, None) => None,
        };
        if pinned.is_some_and(|k| k != identity_key) {
            self.emit(Event::IdentityMismatch {
                installation: self.peer_hex.clone(),
            });
            return Err(SessionError::IdentityMismatch);
        }
        self.expected_identity = Some(identity_key);
        Ok(())
    }

    /// [`Command::AcceptIdentity`](super::Command::AcceptIdentity): the
    /// changed key is pinned, the old session voided, and a new handshake
    /// runs.
    pub(super) fn accept_identity(&mut self, now: Now) -> Step {
        if !self.blocked {
            return Err(SessionError::Misuse("no identity change pending"));
        }
        let hex = self.peer_hex.clone();
        durable::write(&*self.store, |w| {
            w.accept_identity_change(&hex, now.unix_ms)?;
            w.clear_handshake(&hex)?;
            w.clear_layer_state(&hex)
        })?;
        self.blocked = false;
        // The user chose the new key over any earlier expectation.
        self.expected_identity = None;
        if self.session.take().is_some() {
            self.emit(Event::SessionReset {
                reason: ResetReason::IdentityAccepted,
            });
        }
        self.outbox.iter_mut().for_each(|t| t.frames = None);
        self.wants_session = true;
        if self.link_up && self.attempt.is_none() {
            self.start_attempt(now)?;
        }
        Ok(())
    }

    /// Binds and checks the identity a peer presents in step 1 or 2.
    /// Returns the peer identity, or `None` when refused (already answered).
    pub(super) fn check_identity(
        &mut self,
        installation: &Id,
        identity_key: &[u8],
        ty: PduType,
        now: Now,
    ) -> Result<Option<PeerIdentity>, SessionError> {
        let Ok(inst) = installation.as_str().parse::<InstallationId>() else {
            self.refuse(Refusal::Malformed, "installation id", Some(ty), None, now);
            return Ok(None);
        };
        if inst == self.local_id {
            self.refuse(Refusal::Unexpected, "own installation id", Some(ty), None, now);
            return Ok(None);
        }
        if self.expected_identity.as_deref().is_some_and(|k| k != identity_key) {
            // Refused before binding: nothing of this installation is
            // loaded, pinned or stored. Our own attempt, answered by the
            // wrong key, is given up rather than retried against it.
            if ty == PduType::KeyPackage
                && let Some(id) = self
                    .attempt
                    .as_ref()
                    .filter(|a| a.role == Role::Initiator)
                    .map(|a| a.id)
            {
                self.abandon(id);
                self.wants_session = false;
            }
            self.emit(Event::IdentityMismatch {
                installation: installation.as_str().to_owned(),
            });
            self.refuse(
                Refusal::UnexpectedIdentity,
                "unexpected identity key",
                Some(ty),
                None,
                now,
            );
            return Ok(None);
        }
        let Some(peer) = crypto::peer_identity(identity_key, inst) else {
            self.refuse(Refusal::Malformed, "identity key", Some(ty), None, now);
            return Ok(None);
        };
        self.bind(inst, now)?;
        let hex = self.peer_hex.clone();
        // Read first: the known key needs no write (and no fsync), and a
        // first contact is pinned only once its handshake completes
        // (`establish`). Only a changed key is recorded now.
        let known = durable::read(&*self.store, |r| r.contact(&hex))?;
        let check = match known {
            None => IdentityCheck::Pinned,
            Some(c) if c.identity_key == identity_key => IdentityCheck::Same,
            Some(_) => durable::write(&*self.store, |w| w.observe_identity(&hex, identity_key, now.unix_ms))?,
        };
        match check {
            IdentityCheck::Pinned | IdentityCheck::Same if !self.blocked => Ok(Some(peer)),
            IdentityCheck::Same => Ok(None),
            IdentityCheck::Pinned | IdentityCheck::Changed => {
                if !self.blocked {
                    self.blocked = true;
                    self.attempt = None;
                    self.rival = None;
                    self.emit(Event::IdentityChanged { installation: hex });
                }
                self.refuse(Refusal::IdentityBlocked, "identity key changed", Some(ty), None, now);
                Ok(None)
            }
        }
    }
}
