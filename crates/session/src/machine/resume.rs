//! Resuming a stored session without a handshake (see the crate docs,
//! "Reconnection, restart and resume"): our probe on link-up, the peer's
//! probe answered, and the answer to ours, which makes the session ready
//! again or falls back to a full handshake.

use rand::RngCore;
use strata_proto::{Pdu, ResumeAnswer, ResumeProbe, ResumeStatus};

use super::handshake::{sync_request, sync_response};
use super::retransmission::Retx;
use super::{Event, Now, PeerMachine, ResetReason, Session, Step};
use crate::error::SessionError;

impl PeerMachine {
    /// Our resume probe, on link-up while a session is stored: the session
    /// is not ready again until the peer's answer proves it holds it too.
    pub(super) fn send_probe(&mut self, now: Now) -> Step {
        let rto = self.config.handshake_rto;
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        let Some(s) = &mut self.session else { return Ok(()) };
        s.confirmed = false;
        let (epoch, proof) = s.cascade.resume_proof(&resume_context(PROBE, &s.id, &nonce))?;
        let pdu = sync_request(
            s.id,
            Some(ResumeProbe {
                epoch,
                proof: strata_proto::Blob::new([nonce.as_slice(), proof.as_slice()].concat())
                    .map_err(|_| SessionError::Internal("resume proof over 64 bytes".into()))?,
            }),
        );
        let frame = Pdu::from(pdu).encode();
        s.probe = Some((Retx::new(frame.clone(), now.at, rto), nonce));
        self.transmit(frame);
        Ok(())
    }

    /// A peer's resume probe: `resumed`, with our own proof over its
    /// nonce, only when we hold the same session at the same MLS epoch and
    /// its proof checks out; `unknown` otherwise. A probe that does not
    /// check out changes nothing here (it may be forged: the session id
    /// travels in the clear); a peer that really holds another state starts
    /// a handshake on our `unknown`, and that resets the session.
    pub(super) fn on_resume_probe(&mut self, id: [u8; 16], probe: &ResumeProbe, now: Now) -> Step {
        let answer = match self
            .session
            .as_ref()
            .filter(|s| s.id == id && s.mls_epoch() == probe.epoch)
        {
            Some(s) => match verify_probe(s, probe.proof.as_bytes()) {
                Some(nonce) => Some(s.cascade.resume_proof(&resume_context(ANSWER, &id, &nonce))?.1),
                None => {
                    tracing::debug!(peer = %self.peer_hex, "resume probe with a proof that does not match");
                    None
                }
            },
            None => None,
        };
        let known = answer.is_some();
        if known && let Some(s) = &mut self.session {
            if !s.confirmed {
                self.resumed = true;
            }
            s.confirmed = true;
        }
        let status = if known {
            ResumeStatus::Resumed
        } else {
            ResumeStatus::Unknown
        };
        let proof = answer.map(|p| strata_proto::Blob::new(p.to_vec()).unwrap_or_default());
        let _ = now;
        self.transmit_pdu(sync_response(id, Some(ResumeAnswer { status, proof })).into());
        Ok(())
    }

    /// The answer to our resume probe. `resumed` counts only with a proof
    /// over our nonce; `unknown` or a proof that does not match falls back
    /// to a full handshake, and the user is told why.
    pub(super) fn on_resume_answer(&mut self, id: [u8; 16], answer: &ResumeAnswer, now: Now) -> Step {
        let Some(s) = self.session.as_mut().filter(|s| s.id == id) else {
            return Ok(());
        };
        let Some((_, nonce)) = s.probe.take() else {
            return Ok(());
        };
        let reason = match answer.status {
            ResumeStatus::Resumed => {
                let context = resume_context(ANSWER, &id, &nonce);
                let proof = answer.proof.as_ref().map_or(&[][..], |p| p.as_bytes());
                if s.cascade.verify_resume_proof(&context, proof).unwrap_or(false) {
                    if !s.confirmed {
                        self.resumed = true;
                    }
                    s.confirmed = true;
                    return Ok(());
                }
                ResetReason::StateMismatch
            }
            ResumeStatus::Unknown => ResetReason::PeerLostState,
        };
        self.emit(Event::SessionReset { reason });
        self.wants_session = true;
        if self.attempt.is_none() {
            self.start_attempt(now)?;
        }
        Ok(())
    }
}

/// Domain of a probe's proof.
const PROBE: &[u8] = b"strata/v1/resume/probe";
/// Domain of an answer's proof.
const ANSWER: &[u8] = b"strata/v1/resume/answer";

/// What a resume proof is bound to: its role, the session id and the
/// probe's nonce (fresh per probe, so an answer cannot be replayed to a
/// later probe). The cascade adds both installation ids and the epoch.
fn resume_context(role: &[u8], session_id: &[u8; 16], nonce: &[u8; 32]) -> Vec<u8> {
    [role, b"\0", session_id, nonce].concat()
}

/// Checks a probe's `proof` field (`nonce ‖ proof`, 32 + 32 bytes);
/// returns the nonce when it checks out.
fn verify_probe(s: &Session, field: &[u8]) -> Option<[u8; 32]> {
    let (nonce, proof) = field.split_at_checked(32)?;
    let nonce: [u8; 32] = nonce.try_into().ok()?;
    s.cascade
        .verify_resume_proof(&resume_context(PROBE, &s.id, &nonce), proof)
        .unwrap_or(false)
        .then_some(nonce)
}
