//! Timers and the link: what happens when the link comes up
//! ([`Input::Connected`](super::Input::Connected)) and when a timer fires
//! ([`Input::Timeout`](super::Input::Timeout)). Handshake requests, resume
//! probes, MLS commits and rotation broadcasts are retransmitted ([`Retx`],
//! 1 s doubling to 16 s) until answered; a handshake that stalls is
//! abandoned and retried with backoff; messages of the outbox are
//! retransmitted after the round trip's timeout ([`RoundTrip`], RFC 6298:
//! 2 s until measured, doubling to 60 s) and re-encrypted when the peer
//! cannot decrypt them. The rules are in the crate docs, "Retransmission"
//! and "Traffic".

use std::time::{Duration, Instant};

use super::{Event, Now, PeerMachine, Role, Session, Step};

/// A frame that is retransmitted until answered.
#[derive(Debug)]
pub(crate) struct Retx {
    /// The encoded PDU.
    pub(crate) frame: Vec<u8>,
    /// When it goes again.
    pub(super) next: Instant,
    /// The current retransmission timeout.
    pub(super) rto: Duration,
}

impl Retx {
    /// `frame`, sent at `now`: it goes again after `rto`.
    pub(super) fn new(frame: Vec<u8>, now: Instant, rto: Duration) -> Self {
        Self {
            frame,
            next: now + rto,
            rto,
        }
    }

    /// `frame`, restored from the store: it goes again at `now` (as soon
    /// as the link is up), then after `rto`.
    pub(crate) const fn due(frame: Vec<u8>, now: Instant, rto: Duration) -> Self {
        Self { frame, next: now, rto }
    }

    /// Due at `now`: doubles the timeout (up to `max`) and returns the
    /// frame to send again.
    fn backoff(&mut self, now: Instant, max: Duration) -> Vec<u8> {
        self.rto = (self.rto * 2).min(max);
        self.next = now + self.rto;
        self.frame.clone()
    }
}

/// The least retransmission timeout of a message, as RFC 6298 (2.4) sets
/// it: acknowledgements wait up to [`crate::Config::ack_delay`], and a
/// timeout under a second retransmits what is only late.
const MIN_MESSAGE_RTO: Duration = Duration::from_secs(1);

/// The round trip to the peer, estimated as RFC 6298 does (SRTT, RTTVAR)
/// from the acknowledgements of messages sent once (Karn: the ack of a
/// retransmitted message does not say which copy it answers), and the
/// timeout it sets for the next message. A timeout that fires doubles it
/// until a new measure (RFC 6298 5.5): a peer slowed down by load is not
/// sent every message twice, as a fixed timeout would.
#[derive(Debug)]
pub(super) struct RoundTrip {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
}

impl RoundTrip {
    /// Before any measure, messages wait `initial`.
    pub(super) const fn new(initial: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial,
        }
    }

    /// The timeout of a message sent now.
    pub(super) const fn rto(&self) -> Duration {
        self.rto
    }

    /// A message sent once was acknowledged `r` after it left.
    pub(super) fn measured(&mut self, r: Duration, max: Duration) {
        let (srtt, rttvar) = match self.srtt {
            None => (r, r / 2),
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                ((srtt * 7 + r) / 8, (self.rttvar * 3 + delta) / 4)
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        self.rto = (srtt + rttvar * 4).clamp(MIN_MESSAGE_RTO, max.max(MIN_MESSAGE_RTO));
    }

    /// A message's timeout fired.
    pub(super) fn back_off(&mut self, max: Duration) {
        self.rto = (self.rto * 2).min(max);
    }
}

impl Session {
    /// The session's frames waiting for an answer: our resume probe, MLS
    /// commit and rotation broadcast.
    pub(super) fn retransmitted(&self) -> impl Iterator<Item = &Retx> {
        self.probe
            .iter()
            .map(|(r, _)| r)
            .chain(&self.pending_commit)
            .chain(self.pending_rotation.iter().map(|(_, r)| r))
    }

    /// [`Self::retransmitted`], to re-arm.
    fn retransmitted_mut(&mut self) -> impl Iterator<Item = &mut Retx> {
        self.probe
            .iter_mut()
            .map(|(r, _)| r)
            .chain(self.pending_commit.iter_mut())
            .chain(self.pending_rotation.iter_mut().map(|(_, r)| r))
    }
}

impl PeerMachine {
    /// The link is up: what was waiting for it goes now (a handshake's
    /// requests, a resume probe, or a new handshake the user asked for).
    pub(super) fn on_connected(&mut self, now: Now) -> Step {
        self.link_up = true;
        for a in self.attempt.iter_mut().chain(self.rival.iter_mut()) {
            a.pending.values_mut().for_each(|r| r.next = now.at);
        }
        if self.blocked {
            return Ok(());
        }
        // A session is probed again even with an attempt beside it (a
        // twin, a re-key, a forged start): it must not wait for that.
        if self.session.is_some() && self.attempt.as_ref().is_none_or(|a| a.replacing) {
            self.send_probe(now)?;
        } else if self.attempt.is_none() && self.wants_session {
            self.start_attempt(now)?;
        }
        Ok(())
    }

    /// A timer fired: retransmissions, a stalled handshake, a retry, an
    /// expired reassembly, acknowledgements and rotations due.
    pub(super) fn on_timeout(&mut self, now: Now) -> Step {
        let max = self.config.handshake_rto_max;
        // Handshake retransmissions and stall.
        let mut stalled = Vec::new();
        let mut resend = Vec::new();
        for a in self.attempt.iter_mut().chain(self.rival.iter_mut()) {
            if now.at >= a.started + self.config.handshake_stall {
                stalled.push((a.id, a.role));
            } else {
                resend.extend(
                    a.pending
                        .values_mut()
                        .filter(|r| r.next <= now.at)
                        .map(|r| r.backoff(now.at, max)),
                );
            }
        }
        for (id, role) in stalled {
            self.abandon(id);
            self.emit(Event::HandshakeStalled { session_id: id });
            if self.session.is_none() && (role == Role::Initiator || self.wants_session) {
                self.schedule_retry(now);
            }
        }
        if self.retry_at.is_some_and(|r| r <= now.at) {
            self.retry_at = None;
            if self.link_up && self.attempt.is_none() && !self.blocked {
                self.start_attempt(now)?;
            }
        }
        if let Some(s) = &mut self.session {
            resend.extend(
                s.retransmitted_mut()
                    .filter(|r| r.next <= now.at)
                    .map(|r| r.backoff(now.at, max)),
            );
        }
        for f in resend {
            self.transmit(f);
        }
        for id in self.reassembler.expire(now.at) {
            tracing::debug!(message = %id, "chunked message timed out");
        }
        self.claims_due(now)?;
        if self.is_ready() {
            self.retransmit_due(now)?;
            if self.ack_at.is_some_and(|a| a <= now.at) {
                self.flush_acks(now)?;
            }
            self.rotate_if_due(now)?;
        }
        Ok(())
    }

    /// Arms a new handshake after the backoff, and doubles the backoff (up
    /// to the stall time).
    pub(super) fn schedule_retry(&mut self, now: Now) {
        self.retry_at = Some(now.at + self.retry_backoff);
        self.retry_backoff = (self.retry_backoff * 2).min(self.config.handshake_stall);
    }

    /// Retransmits what is due; re-encrypts what the peer cannot decrypt.
    fn retransmit_due(&mut self, now: Now) -> Step {
        let epoch = self.session.as_ref().map_or(0, Session::mls_epoch);
        let max = self.config.message_rto_max;
        let mut again = Vec::new();
        let mut resend = Vec::new();
        for t in &mut self.outbox {
            if t.frames.is_none() || t.next > now.at {
                continue;
            }
            t.resent = true;
            if t.stale || t.mls_epoch < epoch {
                t.frames = None;
                again.push(t.id.clone());
                continue;
            }
            t.rto = (t.rto * 2).min(max);
            t.next = now.at + t.rto;
            t.sent = None;
            resend.extend(t.frames.iter().flatten().cloned());
        }
        // Once per timer, however many messages it found late.
        if !resend.is_empty() || !again.is_empty() {
            self.round_trip.back_off(max);
        }
        for f in resend {
            self.transmit(f);
        }
        self.encrypt_burst(&again, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn the_timeout_follows_the_round_trip_as_rfc_6298_sets_it() {
        let mut rtt = RoundTrip::new(Duration::from_secs(2));
        assert_eq!(rtt.rto(), Duration::from_secs(2), "before any measure");
        // A fast link: never under a second.
        rtt.measured(Duration::from_millis(40), MAX);
        assert_eq!(rtt.rto(), MIN_MESSAGE_RTO);
        // A peer slowed down to 3 s: SRTT + 4·RTTVAR, above the round trip.
        let mut slow = RoundTrip::new(Duration::from_secs(2));
        slow.measured(Duration::from_secs(3), MAX);
        assert_eq!(slow.rto(), Duration::from_secs(9));
        for _ in 0..50 {
            slow.measured(Duration::from_secs(3), MAX);
        }
        assert!(
            slow.rto() > Duration::from_secs(3) && slow.rto() < Duration::from_secs(4),
            "{:?}",
            slow.rto()
        );
        // A timeout doubles it, up to the cap; a measure sets it again.
        slow.back_off(MAX);
        assert!(slow.rto() > Duration::from_secs(6));
        for _ in 0..10 {
            slow.back_off(MAX);
        }
        assert_eq!(slow.rto(), MAX);
        slow.measured(Duration::from_secs(3), MAX);
        assert!(slow.rto() < Duration::from_secs(4));
        // Never above the cap, whatever the measure.
        slow.measured(Duration::from_secs(600), MAX);
        assert_eq!(slow.rto(), MAX);
    }
}
