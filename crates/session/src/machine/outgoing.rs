//! Traffic out (see the crate docs, "Traffic"): messages queued to the
//! outbox ([`Tracked`]), encrypted in bursts while the window allows and
//! committed with the ratchet state before any frame leaves, and
//! acknowledgements sent on their own when no message carries them.
//! Retransmission is [`retransmission`](super::retransmission).

use std::time::{Duration, Instant};

use strata_proto::{EncryptedMessage, Message, Pdu, Text};
use strata_store::OutgoingMessage;

use super::{Event, Now, PeerMachine, Session, Step};
use crate::content::{Body, Content, Control, MAX_ACKS, Plaintext};
use crate::durable;
use crate::error::SessionError;

/// An outgoing message of the outbox, as the machine tracks it.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) id: String,
    pub(super) seq: u64,
    pub(super) frames: Option<Vec<Vec<u8>>>,
    pub(super) mls_epoch: u64,
    pub(super) stale: bool,
    pub(super) next: Instant,
    pub(super) rto: Duration,
    /// When it was sent, while it was sent only once (a measure of the
    /// round trip when its ack comes).
    pub(super) sent: Option<Instant>,
    /// It went more than once (or was encrypted again).
    pub(super) resent: bool,
}

impl Tracked {
    /// Message `id` of the outbox, number `seq`, with the frames it was
    /// encrypted to, if any; it goes at `now`.
    pub(super) const fn new(id: String, seq: u64, frames: Option<Vec<Vec<u8>>>, now: Instant, rto: Duration) -> Self {
        Self {
            id,
            seq,
            frames,
            mls_epoch: 0,
            stale: false,
            next: now,
            rto,
            sent: None,
            resent: false,
        }
    }
}

impl PeerMachine {
    /// Queues `contents`, in order, in one store transaction; returns their
    /// message ids.
    pub(super) fn queue(&mut self, contents: Vec<Content>, now: Now) -> Result<Vec<String>, SessionError> {
        if self.attempt.is_none()
            && let Some(bundle) = self.rekey.take()
        {
            // The session expired on a newer bundle: this send opens the
            // new one (see `PeerMachine::expire`).
            self.start_from_bundle(&bundle, now)?;
        }
        for content in &contents {
            content.check().map_err(SessionError::Misuse)?;
        }
        if self.outbox.len().saturating_add(contents.len()) > self.config.max_outbox {
            return Err(SessionError::Busy {
                queued: self.outbox.len(),
            });
        }
        let peer = self.peer_hex.clone();
        if self.peer.is_none() {
            return Err(SessionError::Misuse(
                "peer installation not known yet: open the session first",
            ));
        }
        let mut next_seq = match &self.session {
            Some(s) => s.next_seq,
            None => self.outbox.iter().map(|t| t.seq).max().unwrap_or(0) + 1,
        };
        let mut messages = Vec::with_capacity(contents.len());
        for content in contents {
            let seq = next_seq;
            next_seq += 1;
            let id = hex::encode(self.random_id());
            let body = Plaintext {
                body: Body::Content(content),
                seq: Some(seq),
                sent_ms: Some(now.unix_ms),
                acks: Vec::new(),
                kem_key_ack: None,
            }
            .to_bytes();
            let message = OutgoingMessage {
                message_id: id,
                peer: peer.clone(),
                created_ms: now.unix_ms,
                body,
                frames: Vec::new(),
                attempts: 0,
            };
            messages.push((seq, message));
        }
        if let Some(s) = &mut self.session {
            s.next_seq = next_seq;
        }
        // While the window has room and nothing older waits, the burst is
        // encrypted now and commits with its frames and the cascade state
        // in the same transaction as the queueing: one commit, no read-back.
        let room = if self.is_ready() && !self.rekeying() && self.outbox.iter().all(|t| t.frames.is_some()) {
            self.config.window.saturating_sub(self.outbox.len())
        } else {
            0
        };
        let mut burst = Vec::new();
        for (_, m) in messages.iter_mut().take(room) {
            let frames = self.encrypt_body(&m.message_id, &m.body, now)?;
            m.frames.clone_from(&frames);
            burst.push((m.message_id.clone(), frames));
        }
        let state = if burst.is_empty() { None } else { Some(self.state()?) };
        let record = self.session.as_ref().map(Session::record_bytes).transpose()?;
        durable::write(&*self.store, |w| {
            for (_, m) in &messages {
                w.queue_outgoing(m)?;
            }
            if let Some(state) = &state {
                w.set_layer_state(&peer, state.as_bytes())?;
            }
            if let Some(r) = &record {
                w.set_handshake(&peer, r)?;
            }
            Ok(())
        })?;
        let mut ids = Vec::with_capacity(messages.len());
        for (seq, m) in messages {
            self.outbox.push(Tracked::new(
                m.message_id.clone(),
                seq,
                None,
                now.at,
                self.round_trip.rto(),
            ));
            self.emit(Event::Queued {
                message_id: m.message_id.clone(),
            });
            ids.push(m.message_id);
        }
        self.sent_burst(burst, now);
        self.wants_session = true;
        self.open_if_idle(now)?;
        Ok(ids)
    }

    /// Whether our re-keying handshake runs (`PeerMachine::expire`).
    pub(super) fn rekeying(&self) -> bool {
        self.attempt.iter().chain(&self.rival).any(|a| a.rekey)
    }

    /// Encrypts and sends queued messages while the window allows.
    pub(super) fn pump(&mut self, now: Now) -> Step {
        if self.rekeying() {
            // New messages wait for the new session: under the expiring
            // one they would reach a peer that already moved on.
            return Ok(());
        }
        let in_flight = self.outbox.iter().filter(|t| t.frames.is_some()).count();
        let burst: Vec<String> = self
            .outbox
            .iter()
            .filter(|t| t.frames.is_none())
            .take(self.config.window.saturating_sub(in_flight))
            .map(|t| t.id.clone())
            .collect();
        self.encrypt_burst(&burst, now)?;
        if self.session.as_ref().is_some_and(|s| s.owe_kem_ack.is_some()) && self.ack_at.is_none() {
            self.ack_at = Some(now.at);
        }
        Ok(())
    }

    /// Encrypts the tracked messages `ids`, in order, and sends them. The
    /// burst commits in one transaction with the cascade state after its
    /// last message (`record_encrypted_batch`), so the pair state is sealed
    /// once per burst, not once per message; no frame leaves before that.
    pub(super) fn encrypt_burst(&mut self, ids: &[String], now: Now) -> Step {
        if ids.is_empty() {
            return Ok(());
        }
        let hex = self.peer_hex.clone();
        let stored = durable::read(&*self.store, |r| {
            ids.iter().map(|id| r.outgoing(&hex, id)).collect::<Result<Vec<_>, _>>()
        })?;
        let mut burst = Vec::with_capacity(ids.len());
        for (id, stored) in ids.iter().zip(stored) {
            let Some(stored) = stored else {
                // Acknowledged meanwhile.
                self.outbox.retain(|t| &t.id != id);
                continue;
            };
            let frames = self.encrypt_body(id, &stored.body, now)?;
            burst.push((id.clone(), frames));
        }
        if burst.is_empty() {
            return Ok(());
        }
        let state = self.state()?;
        let record = self.session.as_ref().map(Session::record_bytes).transpose()?;
        durable::write(&*self.store, |w| {
            w.record_encrypted_batch(&hex, burst.clone(), state.as_bytes())?;
            if let Some(r) = &record {
                w.set_handshake(&hex, r)?;
            }
            Ok(())
        })?;
        self.sent_burst(burst, now);
        Ok(())
    }

    /// Encrypts a stored message body as message `id`, with the acks (and
    /// ML-KEM key ack) owed to the peer riding along.
    fn encrypt_body(&mut self, id: &str, body: &[u8], now: Now) -> Result<Vec<Vec<u8>>, SessionError> {
        let mut plaintext =
            Plaintext::from_bytes(body).map_err(|e| SessionError::Internal(format!("stored message {id}: {e}")))?;
        plaintext.acks = self.take_acks();
        plaintext.kem_key_ack = self.session.as_mut().and_then(|s| s.owe_kem_ack.take());
        self.seal(&plaintext.to_bytes(), id, now)
    }

    /// A burst of tracked messages committed with its frames: arm their
    /// retransmission timers and send them.
    fn sent_burst(&mut self, burst: Vec<(String, Vec<Vec<u8>>)>, now: Now) {
        if burst.is_empty() {
            return;
        }
        if self.ack_at.is_some() && self.pending_acks.is_empty() {
            self.ack_at = None;
        }
        let epoch = self.session.as_ref().map_or(0, Session::mls_epoch);
        let rto = self.round_trip.rto();
        let sent = u64::try_from(burst.len()).unwrap_or(u64::MAX);
        if let Some(s) = &mut self.session {
            s.sent_since_kem += sent;
            s.sent_since_mls += sent;
        }
        for (id, frames) in burst {
            if let Some(t) = self.outbox.iter_mut().find(|t| t.id == id) {
                t.frames = Some(frames.clone());
                t.mls_epoch = epoch;
                t.stale = false;
                // A message encrypted again is sent again: no measure.
                t.sent = (!t.resent).then_some(now.at);
                t.rto = rto;
                t.next = now.at + rto;
            }
            for f in frames {
                self.transmit(f);
            }
        }
    }

    /// The acknowledgements owed that fit in one plaintext.
    fn take_acks(&mut self) -> Vec<String> {
        let n = self.pending_acks.len().min(MAX_ACKS);
        self.pending_acks.drain(..n).collect()
    }

    /// The cascade state of the session, to commit.
    pub(super) fn state(&self) -> Result<strata_cascade::SecretBytes, SessionError> {
        let s = self
            .session
            .as_ref()
            .ok_or_else(|| SessionError::Internal("no session".into()))?;
        Ok(s.cascade.export()?)
    }

    /// Cascade-encrypts `plaintext` as message `id` and splits it into frames.
    fn seal(&mut self, plaintext: &[u8], id: &str, now: Now) -> Result<Vec<Vec<u8>>, SessionError> {
        let s = self
            .session
            .as_mut()
            .ok_or_else(|| SessionError::Internal("no session".into()))?;
        let payload = s.cascade.encrypt(plaintext, now.unix_ms, &mut self.rng)?;
        let message = Message {
            message_id: Text::new(id).map_err(|_| SessionError::Internal("message id".into()))?,
            encrypted_message: EncryptedMessage {
                encrypted: true,
                cascaded: true,
                chunked: false,
                total_chunks: None,
                cascaded_payload: payload,
            },
        };
        let pdus = strata_proto::split(message).map_err(|e| SessionError::Internal(e.to_string()))?;
        Ok(pdus.iter().map(Pdu::encode).collect())
    }

    /// Sends an `ack` plaintext (not stored, not acknowledged).
    pub(super) fn flush_acks(&mut self, now: Now) -> Step {
        self.ack_at = None;
        let kem_key_ack = self.session.as_mut().and_then(|s| s.owe_kem_ack.take());
        while !self.pending_acks.is_empty() || kem_key_ack.is_some() {
            let acks = self.take_acks();
            self.send_plaintext(Body::Control(Control::Ack), acks, kem_key_ack, now)?;
            if self.pending_acks.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Sends a control plaintext (not stored, not acknowledged), with the
    /// acknowledgements owed that fit.
    pub(super) fn send_control(&mut self, control: Control, now: Now) -> Step {
        let acks = self.take_acks();
        self.send_plaintext(Body::Control(control), acks, None, now)
    }

    /// Encrypts and sends `body` at once, under a random message id, and
    /// commits the cascade state that sealed it before the frames leave.
    fn send_plaintext(&mut self, body: Body, acks: Vec<String>, kem_key_ack: Option<u32>, now: Now) -> Step {
        let plaintext = Plaintext {
            body,
            seq: None,
            sent_ms: None,
            acks,
            kem_key_ack,
        };
        let id = hex::encode(self.random_id());
        let frames = self.seal(&plaintext.to_bytes(), &id, now)?;
        let state = self.state()?;
        let hex = self.peer_hex.clone();
        durable::write(&*self.store, |w| w.set_layer_state(&hex, state.as_bytes()))?;
        for f in frames {
            self.transmit(f);
        }
        Ok(())
    }
}
