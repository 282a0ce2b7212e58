//! Traffic in (see the crate docs, "Traffic" and "Bad input"): a frame
//! decoded and dispatched to the handler of its PDU, chunks reassembled,
//! messages decrypted and committed to the inbox (in one transaction per
//! input, with the ratchet state) before their acknowledgements and events,
//! and the peer's `protocol-error`s.

use std::collections::BTreeSet;

use strata_cascade::CascadeError;
use strata_proto::{ChunkError, DecodeError, ErrorCode, Message, Pdu, PduType, ProtocolError};
use strata_store::{Accepted, IncomingMessage};

use super::{Event, Now, PeerMachine, Refusal, ResetReason, Role, Session, Step};
use crate::content::{Body, Control, MAX_ACKS, Plaintext};
use crate::durable;
use crate::error::SessionError;

/// Most received message ids waiting to be acknowledged.
const MAX_PENDING_ACKS: usize = 4 * MAX_ACKS;

/// A message decrypted and not yet committed.
pub(super) struct Decrypted {
    id: String,
    /// The plaintext, or why it did not parse (refused after the commit:
    /// the ratchet moved all the same).
    parsed: Result<Plaintext, &'static str>,
    now: Now,
}

impl PeerMachine {
    /// A frame from the peer: decoded, checked against a pending identity
    /// change, and handed to the handler of its PDU type.
    pub(super) fn on_frame(&mut self, bytes: &[u8], now: Now) -> Step {
        let pdu = match Pdu::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                let why = match e {
                    DecodeError::TooLarge { .. } | DecodeError::TooDeep { .. } | DecodeError::LimitExceeded { .. } => {
                        Refusal::TooLarge
                    }
                    DecodeError::UnknownType(_) => Refusal::UnknownType,
                    _ => Refusal::Malformed,
                };
                self.refuse(why, &e.to_string(), None, None, now);
                return Ok(());
            }
        };
        let ty = pdu.pdu_type();
        if self.blocked
            && !matches!(
                pdu,
                Pdu::ProtocolError(_) | Pdu::KeyPackageRequest(_) | Pdu::KeyPackage(_)
            )
        {
            self.refuse(Refusal::IdentityBlocked, "identity change pending", Some(ty), None, now);
            return Ok(());
        }
        if !matches!(pdu, Pdu::Message(_) | Pdu::Chunk(_)) {
            // Everything else may change or persist the cascade state: the
            // messages decrypted before it reach the disk first.
            self.commit_decrypted()?;
        }
        if let Some(id) = super::attempt::session_of(&pdu) {
            self.focus(&id);
        }
        match pdu {
            Pdu::KeyPackageRequest(p) => self.on_kp_request(p, now),
            Pdu::KeyPackage(p) => self.on_key_package(p, now),
            Pdu::EncryptionSyncRequest(p) => self.on_sync_request(p, now),
            Pdu::EncryptionSyncResponse(p) => self.on_sync_response(p, now),
            Pdu::SignalKeyExchangeRequest(p) => self.on_signal_request(p, now),
            Pdu::SignalKeyExchangeResponse(p) => self.on_signal_response(p, now),
            Pdu::SignalSessionComplete(p) => self.on_signal_complete(p, now),
            Pdu::MlKemKeyExchange(p) => self.on_kem_exchange(p, now),
            Pdu::MlKemKeyExchangeResponse(p) => self.on_kem_response(p, now),
            Pdu::MlsWelcome(p) => self.on_welcome(p, now),
            Pdu::MlsWelcomeAck(p) => self.on_welcome_ack(p, now),
            Pdu::MlsCommit(p) => self.on_commit(p, now),
            Pdu::Message(m) => self.on_message(m, now),
            Pdu::Chunk(c) => self.on_chunk(c, now),
            Pdu::ProtocolError(e) => self.on_peer_error(e, now),
            Pdu::RotationTimestampBroadcast(b) => self.on_rotation(b, now),
            Pdu::GroupMemberJoined(_)
            | Pdu::GroupMemberLeft(_)
            | Pdu::GroupMessage(_)
            | Pdu::GroupWelcome(_)
            | Pdu::GroupCommit(_)
            | Pdu::GroupProposal(_)
            | Pdu::GroupCatchUpRequest(_)
            | Pdu::GroupCatchUp(_)
            | Pdu::GroupSync(_) => {
                // A group PDU in the clear on a pair link is refused (the
                // pairwise-only ones carry group secrets: never accepted
                // outside a session's cascade).
                self.refuse(Refusal::Unexpected, "no groups in a pair session", Some(ty), None, now);
                Ok(())
            }
            // The node takes pairing before any session sees it.
            Pdu::DevicePairing(_) => {
                self.refuse(Refusal::Unexpected, "no pairing in a pair session", Some(ty), None, now);
                Ok(())
            }
        }
    }

    /// Whether message `id` of the peer is in the inbox already.
    fn is_processed(&self, id: &str) -> Result<bool, SessionError> {
        if self.peer.is_none() {
            return Ok(false);
        }
        let hex = self.peer_hex.clone();
        Ok(durable::read(&*self.store, |r| r.is_processed(&hex, id))?)
    }

    /// Owes the peer an acknowledgement of message `id`: it rides on the
    /// next message, or goes on its own after the ack delay (at once when
    /// enough are owed).
    fn queue_ack(&mut self, id: &str, now: Now) {
        if !self.pending_acks.iter().any(|a| a == id) && self.pending_acks.len() < MAX_PENDING_ACKS {
            self.pending_acks.push(id.to_owned());
        }
        if self.pending_acks.len() >= self.config.ack_every {
            self.ack_at = Some(now.at);
        } else if self.ack_at.is_none() {
            self.ack_at = Some(now.at + self.config.ack_delay);
        }
    }

    /// A `message` PDU: whole, or the header of a chunked one.
    fn on_message(&mut self, m: Message, now: Now) -> Step {
        let ty = PduType::Message;
        if self.session.is_none() && self.attempt.as_ref().is_none_or(|a| a.cascade.is_none()) {
            if self.attempt.is_none() {
                let id = m.message_id.as_str().to_owned();
                self.refuse(Refusal::Unexpected, "no session", Some(ty), Some(&id), now);
            }
            return Ok(());
        }
        if self.is_processed(m.message_id.as_str())? {
            self.queue_ack(m.message_id.as_str(), now);
            return Ok(());
        }
        if !m.encrypted_message.chunked {
            return self.on_complete(m, now);
        }
        let id = m.message_id.as_str().to_owned();
        match self.reassembler.push_header(m, now.at) {
            Ok(Some(whole)) => self.on_complete(whole, now),
            Ok(None) | Err(ChunkError::DuplicateHeader) => Ok(()),
            Err(e) => {
                self.refuse(chunk_refusal(&e), &e.to_string(), Some(ty), Some(&id), now);
                Ok(())
            }
        }
    }

    /// A chunk of a chunked message.
    fn on_chunk(&mut self, c: strata_proto::Chunk, now: Now) -> Step {
        let ty = PduType::Chunk;
        if self.session.is_none() && self.attempt.as_ref().is_none_or(|a| a.cascade.is_none()) {
            return Ok(());
        }
        if self.is_processed(c.message_id.as_str())? {
            return Ok(());
        }
        let id = c.message_id.as_str().to_owned();
        match self.reassembler.push_chunk(c, now.at) {
            Ok(Some(whole)) => self.on_complete(whole, now),
            Ok(None) | Err(ChunkError::DuplicateChunk(_)) => Ok(()),
            Err(e) => {
                self.refuse(chunk_refusal(&e), &e.to_string(), Some(ty), Some(&id), now);
                Ok(())
            }
        }
    }

    /// A whole `message`: decrypt, commit, acknowledge.
    fn on_complete(&mut self, m: Message, now: Now) -> Step {
        let ty = PduType::Message;
        let id = m.message_id.as_str().to_owned();
        if !m.encrypted_message.encrypted || !m.encrypted_message.cascaded {
            self.refuse(
                Refusal::Malformed,
                "only cascaded messages are accepted",
                Some(ty),
                Some(&id),
                now,
            );
            return Ok(());
        }
        let payload = &m.encrypted_message.cascaded_payload;
        // A message can confirm a handshake that only awaits the peer's ack.
        let via_attempt = self.session.is_none()
            || self
                .attempt
                .as_ref()
                .is_some_and(|a| a.cascade.is_some() && a.role == Role::Initiator);
        // Which session (or attempt) opens it.
        let mut under: Option<[u8; 16]>;
        let mut result = if via_attempt {
            match self.attempt.as_mut().and_then(|a| Some(a.id).zip(a.cascade.as_mut())) {
                Some((id, c)) => {
                    under = Some(id);
                    c.decrypt(payload, &mut self.rng)
                }
                None => return Ok(()),
            }
        } else {
            match self.session.as_mut() {
                Some(s) => {
                    under = Some(s.id);
                    s.cascade.decrypt(payload, &mut self.rng)
                }
                None => return Ok(()),
            }
        };
        // Not the attempt's: a message under the session held beside it (a
        // twin's, or one sent before the peer saw a re-key). A wrong
        // session fails at the outer layer and changes nothing.
        if via_attempt
            && result.is_err()
            && let Some(s) = self.session.as_mut()
            && let Ok(p) = s.cascade.decrypt(payload, &mut self.rng)
        {
            result = Ok(p);
            under = Some(s.id);
        }
        // Under the twin given up (`twins`): the peer may hold only that.
        if result.is_err()
            && let Some((p, id)) = self.open_with_spare(payload, now)
        {
            result = Ok(p);
            under = Some(id);
        }
        let plaintext = match result {
            Ok(p) => p,
            Err(e) => {
                // A twin under way may be what it came under: not refused.
                let twin_of_session = self
                    .session
                    .as_ref()
                    .and_then(|s| s.fresh.as_ref())
                    .and_then(|f| f.twin_of);
                let twin_pending = self
                    .attempt
                    .as_ref()
                    .is_some_and(|a| a.twin_of.is_some() || twin_of_session == Some(a.id));
                self.on_undecryptable(&e, &id, via_attempt || twin_pending, now);
                return Ok(());
            }
        };
        // Queued before anything below saves the state that decrypted it:
        // `save_session` commits it in the same transaction.
        self.on_decrypted(&id, &plaintext, now);
        if let Some(a) = self.attempt.as_mut().filter(|a| Some(a.id) == under) {
            // The peer could only encrypt this with the finished session:
            // it is the implicit step 11.
            a.mls_ok = true;
            a.pending.clear();
            self.try_complete(now)?;
        }
        // The peer holds the session the message came under: our answers
        // kept for its handshake are no longer needed. Not so for another
        // (a twin given up: the peer may still need them for the one kept).
        if let Some(s) = &mut self.session
            && Some(s.id) == under
        {
            s.confirmed = true;
            if !s.replies.is_empty() {
                s.replies.clear();
                self.save_session()?;
            }
        }
        Ok(())
    }

    /// A message that did not decrypt: refused, unless it is a duplicate or
    /// just early.
    fn on_undecryptable(&mut self, e: &CascadeError, id: &str, during_handshake: bool, now: Now) {
        let future_mls = match e {
            CascadeError::UnknownEpoch { layer: "MLS", epoch } => {
                let ours = self.session.as_ref().map_or(0, Session::mls_epoch);
                *epoch > ours
            }
            _ => false,
        };
        if matches!(e, CascadeError::Replay { .. }) || future_mls || during_handshake {
            // A duplicate, a message of an MLS epoch whose commit has not
            // arrived yet, or a race with the end of the handshake: the
            // sender's retransmission will do.
            tracing::debug!(peer = %self.peer_hex, message = id, error = %e, "message not decrypted (yet)");
            return;
        }
        self.refuse(
            Refusal::Undecryptable,
            &e.to_string(),
            Some(PduType::Message),
            Some(id),
            now,
        );
    }

    /// Emits `encryptionReady` on the step the session becomes ready: at
    /// the end of the step, or before the messages that completed the
    /// handshake, so that the owner learns who the peer is before what it
    /// said.
    pub(super) fn announce_ready(&mut self, now: Now) {
        if self.was_ready || !self.is_ready() {
            return;
        }
        self.was_ready = true;
        if let Some(s) = &self.session {
            let (installation, session_id) = (self.peer_hex.clone(), s.id);
            let resumed = std::mem::take(&mut self.resumed);
            self.emit(Event::EncryptionReady {
                installation,
                session_id,
                resumed,
            });
        }
        // Everything in flight goes again now.
        for t in &mut self.outbox {
            t.next = now.at;
        }
    }

    /// A message decrypted: its effects wait, in memory, for the commit at
    /// the end of the input ([`PeerMachine::commit_decrypted`]).
    fn on_decrypted(&mut self, id: &str, plaintext: &[u8], now: Now) {
        self.decrypted.push(Decrypted {
            id: id.to_owned(),
            parsed: Plaintext::from_bytes(plaintext),
            now,
        });
    }

    /// Commits the messages decrypted since the last commit, in one
    /// transaction: each content message to the inbox (marked processed),
    /// the outgoing messages they acknowledge out of the outbox, and the
    /// cascade state after the last of them, with the session record. Only
    /// then are their acks queued and their events emitted.
    pub(super) fn commit_decrypted(&mut self) -> Step {
        if self.decrypted.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.decrypted);
        let hex = self.peer_hex.clone();
        let state = self.state()?;
        let record = self.session.as_ref().map(Session::record_bytes).transpose()?;
        let incoming: Vec<IncomingMessage> = batch
            .iter()
            .filter_map(|d| match &d.parsed {
                Ok(
                    p @ Plaintext {
                        body: Body::Content(_), ..
                    },
                ) => Some(IncomingMessage {
                    peer: hex.clone(),
                    message_id: d.id.clone(),
                    received_ms: d.now.unix_ms,
                    // Acks are transport of the moment, not part of the message.
                    body: Plaintext {
                        acks: Vec::new(),
                        kem_key_ack: None,
                        ..p.clone()
                    }
                    .to_bytes(),
                }),
                _ => None,
            })
            .collect();
        let acks: Vec<&String> = batch
            .iter()
            .filter_map(|d| d.parsed.as_ref().ok())
            .flat_map(|p| &p.acks)
            .collect();
        let committed = self.write_pinned(|w| {
            let accepted = w.accept_incoming_batch(&hex, &incoming, state.as_bytes())?;
            if let Some(r) = &record {
                w.set_handshake(&hex, r)?;
            }
            let mut delivered = BTreeSet::new();
            for a in &acks {
                if w.ack_outgoing(&hex, a)? {
                    delivered.insert((*a).clone());
                }
            }
            Ok((accepted, delivered))
        })?;
        let Some((accepted, delivered)) = committed else {
            return Ok(());
        };
        if let Some(d) = batch.first() {
            self.announce_ready(d.now);
        }
        let mut accepted = accepted.into_iter();
        for d in batch {
            let now = d.now;
            let parsed = match d.parsed {
                Ok(p) => p,
                Err(e) => {
                    self.refuse(Refusal::Malformed, e, Some(PduType::Message), Some(&d.id), now);
                    continue;
                }
            };
            let control = match parsed.body {
                Body::Content(content) => {
                    self.queue_ack(&d.id, now);
                    if accepted.next() == Some(Accepted::New) {
                        self.emit(Event::Received {
                            message_id: d.id,
                            seq: parsed.seq.unwrap_or(0),
                            content,
                        });
                    }
                    None
                }
                Body::Control(control) => Some(control),
            };
            for a in parsed.acks {
                if let Some(pos) = self.outbox.iter().position(|t| t.id == a) {
                    let t = self.outbox.remove(pos);
                    if let Some(sent) = t.sent {
                        let max = self.config.message_rto_max;
                        self.round_trip.measured(d.now.at.saturating_duration_since(sent), max);
                    }
                    if delivered.contains(&a) {
                        self.emit(Event::Delivered { message_id: a });
                    }
                }
            }
            if let Some(key_id) = parsed.kem_key_ack {
                self.on_kem_key_ack(key_id)?;
            }
            match control {
                Some(Control::KeyPackageClaim { claim }) => self.on_claim(claim, now)?,
                Some(Control::KeyPackageGrant { claim, key_package }) => self.on_grant(claim, &key_package, now)?,
                Some(Control::Ack) | None => {}
            }
        }
        Ok(())
    }

    /// The peer's `protocol-error`: a refused bundle or a forgotten
    /// handshake starts over, undecryptable frames are encrypted again, a
    /// peer without our session resets it; reported either way.
    fn on_peer_error(&mut self, e: ProtocolError, now: Now) -> Step {
        tracing::debug!(peer = %self.peer_hex, code = ?e.code, reason = %e.reason, "protocol-error from peer");
        let refused_bundle = self.attempt.as_ref().is_some_and(|a| {
            a.from_bundle
                && a.role == Role::Initiator
                && e.ref_type
                    .as_ref()
                    .is_some_and(|t| t.as_str() == PduType::EncryptionSyncRequest.as_str())
                && e.ref_id.as_ref().is_some_and(|r| r.as_str() == hex::encode(a.id))
        });
        if refused_bundle && let Some(id) = self.attempt.as_ref().map(|a| a.id) {
            // The peer no longer holds that bundle (it re-keyed) or cannot
            // use it: the full handshake needs nothing from it.
            tracing::debug!(peer = %self.peer_hex, "bundle refused; full handshake");
            self.abandon(id);
            self.start_attempt(now)?;
        }
        let forgotten = e.code == ErrorCode::Unexpected
            && self.attempt.as_ref().is_some_and(|a| {
                a.role == Role::Initiator
                    && !a.from_bundle
                    && !a.pending.contains_key(&PduType::KeyPackageRequest)
                    && e.ref_id.as_ref().is_some_and(|r| r.as_str() == hex::encode(a.id))
            });
        if forgotten && let Some(id) = self.attempt.as_ref().map(|a| a.id) {
            // The responder answered step 1 but no longer knows the session
            // (it restarted, or could not save it): retransmitting until
            // the stall would only collect the same refusal for minutes.
            tracing::debug!(peer = %self.peer_hex, "the peer forgot our handshake; starting again");
            self.abandon(id);
            self.emit(Event::HandshakeStalled { session_id: id });
            self.schedule_retry(now);
        }
        if e.code == ErrorCode::DecryptFailed
            && super::twins::refused_at_outer_layer(e.reason.as_str())
            && let Some(id) = &e.ref_id
            && self.outbox.iter().any(|t| t.id == id.as_str() && t.frames.is_some())
            && self.spare_on_refusal(now)
        {
            // The peer holds only the twin we gave up (`twins`): all that
            // is queued goes again under it.
            self.save_session()?;
        }
        if e.code == ErrorCode::DecryptFailed
            && let Some(id) = &e.ref_id
            && let Some(t) = self
                .outbox
                .iter_mut()
                .find(|t| t.id == id.as_str() && t.frames.is_some())
        {
            // The peer cannot decrypt these frames (e.g. an MLS epoch it has
            // left): encrypt the message again.
            t.stale = true;
            t.next = now.at;
        }
        if e.code == ErrorCode::Unexpected
            && e.ref_type
                .as_ref()
                .is_some_and(|t| t.as_str() == PduType::Message.as_str())
            && self.session.is_some()
            && self.attempt.is_none()
            && self.retry_at.is_none()
        {
            // The peer has no session for our messages: it lost its state.
            self.emit(Event::SessionReset {
                reason: ResetReason::PeerLostState,
            });
            self.wants_session = true;
            self.retry_at = Some(now.at);
        }
        self.emit(Event::PeerError {
            code: e.code,
            reason: e.reason.into_string(),
        });
        Ok(())
    }
}

/// The refusal of a chunking error.
fn chunk_refusal(e: &ChunkError) -> Refusal {
    match e {
        ChunkError::MessageTooLarge(_)
        | ChunkError::TooManyReassemblies(_)
        | ChunkError::BudgetExhausted(_)
        | ChunkError::TotalOutOfRange(_) => Refusal::TooLarge,
        _ => Refusal::Malformed,
    }
}
