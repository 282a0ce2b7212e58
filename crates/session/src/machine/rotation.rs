//! Key rotation during a session (see the crate docs, "Rotation"): when
//! a rotation is due, our new ML-KEM key and its broadcast, the peer's
//! broadcast and its acknowledgement, and MLS self-updates, ours and the
//! peer's commits.

use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use strata_cascade::InstallationIdentity;
use strata_proto::{FixedBytes, MlsCommit, MlsWelcomeAck, Pdu, PduType, RotationTimestampBroadcast};

use super::retransmission::Retx;
use super::{Event, Now, PeerMachine, Refusal, Rotation, Session, Step};
use crate::crypto;
use crate::error::SessionError;

impl PeerMachine {
    /// Rotates what is due, counted in messages sent or in time: our ML-KEM
    /// key, and an MLS self-update (only the side with the lower
    /// installation id commits on schedule).
    pub(super) fn rotate_if_due(&mut self, now: Now) -> Step {
        let (kem_due, mls_due) = match &self.session {
            Some(s) => (
                s.pending_rotation.is_none()
                    && (s.sent_since_kem >= self.config.kem_rotation_messages
                        || now.unix_ms.saturating_sub(s.last_kem_rotation_ms)
                            >= duration_ms(self.config.kem_rotation_interval)),
                s.pending_commit.is_none()
                    && self.local_id < s.peer.installation_id
                    && (s.sent_since_mls >= self.config.mls_update_messages
                        || now.unix_ms.saturating_sub(s.last_mls_update_ms)
                            >= duration_ms(self.config.mls_update_interval)),
            ),
            None => (false, false),
        };
        if kem_due {
            self.rotate_kem(now)?;
        }
        if mls_due {
            self.update_mls(now)?;
        }
        Ok(())
    }

    /// A new ML-KEM receive key, announced by `rotation-timestamp-broadcast`.
    pub(super) fn rotate_kem(&mut self, now: Now) -> Step {
        let rto = self.config.handshake_rto;
        self.rotate(Rotation::KemKey, "no session to rotate", |s, local, rng| {
            if s.pending_rotation.is_some() {
                return Ok(None);
            }
            let key = s.cascade.kem_mut().rotate_receive_key(local, rng)?;
            let (key_id, encapsulation_key, signature) = crypto::kem_key_fields(&key)?;
            let pdu = RotationTimestampBroadcast {
                session_id: FixedBytes(s.id),
                timestamp: now.unix_ms,
                key_id,
                encapsulation_key,
                signature,
            };
            let frame = Pdu::from(pdu).encode();
            s.pending_rotation = Some((key_id, Retx::new(frame.clone(), now.at, rto)));
            s.last_kem_rotation_ms = now.unix_ms;
            s.sent_since_kem = 0;
            // Our next messages open a new epoch too.
            s.cascade.kem_mut().rotate_send_epoch();
            Ok(Some(frame))
        })
    }

    /// The peer's `rotation-timestamp-broadcast`: its new ML-KEM key,
    /// checked against its pinned identity and installed; acknowledged
    /// (`kemKeyAck`) with the next message or ack either way.
    pub(super) fn on_rotation(&mut self, b: RotationTimestampBroadcast, now: Now) -> Step {
        let ty = PduType::RotationTimestampBroadcast;
        let id = b.session_id.0;
        let Some(s) = self.session.as_mut().filter(|s| s.id == id) else {
            self.stray_answer(&id, ty, now);
            return Ok(());
        };
        if b.key_id <= s.kem_key_acked_peer() {
            s.owe_kem_ack = Some(b.key_id);
            self.ack_at.get_or_insert(now.at);
            return Ok(());
        }
        let installed = crypto::install_peer_kem(
            s.cascade.kem_mut(),
            s.peer,
            b.key_id,
            &b.encapsulation_key,
            &b.signature,
        );
        if let Err(e) = installed {
            self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        s.set_peer_kem_key(b.key_id);
        s.owe_kem_ack = Some(b.key_id);
        self.save_session()?;
        self.ack_at.get_or_insert(now.at);
        self.emit(Event::Rotated {
            what: Rotation::PeerKemKey,
        });
        Ok(())
    }

    /// The peer acknowledged our ML-KEM key `key_id`: the broadcast stops.
    pub(super) fn on_kem_key_ack(&mut self, key_id: u32) -> Step {
        let Some(s) = self.session.as_mut() else { return Ok(()) };
        if s.pending_rotation.as_ref().is_some_and(|(k, _)| *k <= key_id) {
            s.pending_rotation = None;
            s.kem_key_acked = key_id;
            self.save_session()?;
        }
        Ok(())
    }

    /// An MLS self-update; only the side with the lower installation id
    /// commits on schedule, so two commits never race.
    pub(super) fn update_mls(&mut self, now: Now) -> Step {
        let rto = self.config.handshake_rto;
        self.rotate(Rotation::MlsUpdate, "no session to update", |s, _, _| {
            if s.pending_commit.is_some() {
                return Ok(None);
            }
            let epoch = s.mls_epoch();
            let commit = s.cascade.mls_mut().self_update()?;
            let pdu = MlsCommit {
                session_id: Some(FixedBytes(s.id)),
                group_id: s.group_id(),
                epoch,
                commit: strata_proto::Blob::new(commit)
                    .map_err(|_| SessionError::Internal("commit over the field cap".into()))?,
            };
            let frame = Pdu::from(pdu).encode();
            s.pending_commit = Some(Retx::new(frame.clone(), now.at, rto));
            s.last_mls_update_ms = now.unix_ms;
            s.sent_since_mls = 0;
            Ok(Some(frame))
        })
    }

    /// What [`Self::rotate_kem`] and [`Self::update_mls`] share: the session
    /// (without one, a misuse: `no_session`), renewed by `renew` unless a
    /// rotation of its kind is still unanswered (then `renew` returns
    /// `None` and nothing happens); then the session is saved, `renew`'s
    /// announcement sent and the rotation reported.
    fn rotate(
        &mut self,
        what: Rotation,
        no_session: &'static str,
        renew: impl FnOnce(&mut Session, &InstallationIdentity, &mut ChaCha20Rng) -> Step<Option<Vec<u8>>>,
    ) -> Step {
        let Some(s) = self.session.as_mut() else {
            return Err(SessionError::Misuse(no_session));
        };
        let Some(frame) = renew(s, &self.local, &mut self.rng)? else {
            return Ok(());
        };
        self.save_session()?;
        self.transmit(frame);
        self.emit(Event::Rotated { what });
        Ok(())
    }

    /// The peer's MLS commit, processed at our epoch (or acknowledged again
    /// when already processed) and answered with `mls-welcome-ack`.
    pub(super) fn on_commit(&mut self, c: MlsCommit, now: Now) -> Step {
        let ty = PduType::MlsCommit;
        let Some(id) = c.session_id.map(|s| s.0) else {
            self.refuse(
                Refusal::Unexpected,
                "commit outside a pair session",
                Some(ty),
                None,
                now,
            );
            return Ok(());
        };
        let Some(s) = self.session.as_mut().filter(|s| s.id == id) else {
            self.stray_answer(&id, ty, now);
            return Ok(());
        };
        if c.group_id != s.group_id() {
            self.refuse(Refusal::Unexpected, "commit for another group", Some(ty), None, now);
            return Ok(());
        }
        let ours = s.mls_epoch();
        let new_epoch = if c.epoch + 1 == ours {
            // Already processed: the ack was lost.
            ours
        } else if c.epoch == ours {
            match s.cascade.mls_mut().process_commit(c.commit.as_bytes()) {
                Ok(e) => e,
                Err(e) => {
                    self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
                    return Ok(());
                }
            }
        } else {
            self.refuse(Refusal::Unexpected, "commit for another epoch", Some(ty), None, now);
            return Ok(());
        };
        let ack = MlsWelcomeAck {
            session_id: Some(FixedBytes(id)),
            group_id: c.group_id,
            epoch: new_epoch,
        };
        if new_epoch != ours {
            self.save_session()?;
            self.emit(Event::Rotated {
                what: Rotation::PeerMlsUpdate,
            });
        }
        self.transmit_pdu(ack.into());
        Ok(())
    }
}

impl Session {
    /// The highest peer ML-KEM key id installed (1 from the handshake).
    fn kem_key_acked_peer(&self) -> u32 {
        self.peer_kem_key.max(1)
    }

    /// Records the peer's ML-KEM key `id` as installed.
    fn set_peer_kem_key(&mut self, id: u32) {
        self.peer_kem_key = id;
    }
}

/// `d` in whole milliseconds.
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
