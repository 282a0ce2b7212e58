//! A handshake in progress ([`Attempt`]) and its bookkeeping: which PDU
//! belongs to the current attempt and role, answers kept for duplicate
//! requests, strays refused, and abandoned session ids remembered so their
//! late PDUs are not taken for new handshakes. The steps themselves are in
//! [`handshake`](super::handshake).

use std::collections::BTreeMap;
use std::time::Instant;

use strata_cascade::{MlKemLayer, MlsLayer, PairCascade, PeerIdentity, SignalLayer, SignedKemKey};
use strata_proto::{Pdu, PduType};

use super::retransmission::Retx;
use super::{Event, Now, PeerMachine, Refusal, Role};

/// A handshake in progress.
pub(super) struct Attempt {
    pub(super) id: [u8; 16],
    pub(super) role: Role,
    pub(super) started: Instant,
    pub(super) peer: Option<PeerIdentity>,
    pub(super) mls: Option<MlsLayer>,
    pub(super) signal: Option<SignalLayer>,
    pub(super) kem: Option<MlKemLayer>,
    pub(super) own_kem: Option<SignedKemKey>,
    pub(super) cascade: Option<PairCascade>,
    pub(super) sync_ok: bool,
    pub(super) signal_ok: bool,
    pub(super) kem_ok: bool,
    pub(super) mls_ok: bool,
    /// Opened from the responder's bundle (one round trip). For the
    /// initiator, a refused step 3 then falls back to the full handshake.
    pub(super) from_bundle: bool,
    /// Responder: started while a session was established. The session
    /// carries on until this attempt completes: its start is
    /// unauthenticated (anyone can name a known installation in step 1),
    /// so it must not be able to pause a working session.
    pub(super) replacing: bool,
    /// Initiator: opened on the peer's newer bundle while a session runs
    /// (`PeerMachine::expire`): new messages wait for it.
    pub(super) rekey: bool,
    /// Responder: the attempt or session of ours this one is the twin of
    /// (see `twins`).
    pub(super) twin_of: Option<[u8; 16]>,
    /// Initiator: our requests, by type, until answered.
    pub(super) pending: BTreeMap<PduType, Retx>,
    /// Responder: our encoded answer, by the request's type.
    pub(super) replies: BTreeMap<PduType, Vec<u8>>,
}

impl Attempt {
    /// Sets the peer and the fresh layers of the handshake with it.
    pub(super) fn set_layers(
        &mut self,
        peer: PeerIdentity,
        mls: MlsLayer,
        layers: (SignalLayer, MlKemLayer, SignedKemKey),
    ) {
        let (signal, kem, own_kem) = layers;
        self.peer = Some(peer);
        self.mls = Some(mls);
        self.signal = Some(signal);
        self.kem = Some(kem);
        self.own_kem = Some(own_kem);
    }

    /// Attempt `id` in `role`, started at `started`, with nothing done yet.
    pub(super) fn new(id: [u8; 16], role: Role, started: Instant) -> Self {
        Self {
            id,
            role,
            started,
            peer: None,
            mls: None,
            signal: None,
            kem: None,
            own_kem: None,
            cascade: None,
            replacing: false,
            sync_ok: false,
            signal_ok: false,
            kem_ok: false,
            mls_ok: false,
            from_bundle: false,
            rekey: false,
            twin_of: None,
            pending: BTreeMap::new(),
            replies: BTreeMap::new(),
        }
    }
}

/// Most abandoned session ids remembered, so late copies of their PDUs are
/// not mistaken for new handshakes.
const MAX_ABANDONED: usize = 16;

impl PeerMachine {
    /// Gives up attempt `id` (current or rival) and remembers its id, so
    /// late copies of its PDUs are ignored.
    pub(super) fn abandon(&mut self, id: [u8; 16]) {
        if self.attempt.as_ref().is_some_and(|a| a.id == id) {
            self.attempt = None;
        }
        if self.rival.as_ref().is_some_and(|a| a.id == id) {
            self.rival = None;
        }
        self.promote_rival();
        self.forget(id);
    }

    /// Remembers `id` as given up: late copies of its PDUs are ignored.
    pub(super) fn forget(&mut self, id: [u8; 16]) {
        self.abandoned.push_back(id);
        while self.abandoned.len() > MAX_ABANDONED {
            self.abandoned.pop_front();
        }
    }

    /// Once the current attempt is gone, the rival becomes current; with a
    /// session established meanwhile it now runs beside it (`replacing`).
    pub(super) fn promote_rival(&mut self) {
        if self.attempt.is_none()
            && let Some(mut rival) = self.rival.take()
        {
            rival.replacing = self.session.is_some();
            self.attempt = Some(rival);
        }
    }

    /// Room for a new start of the peer's: our own attempt, if one runs, is parked
    /// as the rival rather than given up, so a start that never completes
    /// cannot cost us ours; an earlier start of theirs is given up (a newer
    /// one replaces it).
    pub(super) fn make_room_for_theirs(&mut self) {
        let mut ours = None;
        for a in [self.attempt.take(), self.rival.take()].into_iter().flatten() {
            if a.role == Role::Initiator && ours.is_none() {
                ours = Some(a);
            } else {
                self.abandon(a.id);
            }
        }
        self.rival = ours;
    }

    /// Makes attempt `id` current, if it is the rival: each PDU goes to
    /// the attempt it names.
    pub(super) fn focus(&mut self, id: &[u8; 16]) {
        if self.rival.as_ref().is_some_and(|r| &r.id == id) {
            std::mem::swap(&mut self.attempt, &mut self.rival);
        }
    }

    /// The attempt with `id` in `role`, if it is the current one.
    pub(super) fn attempt_mut(&mut self, id: &[u8; 16], role: Role) -> Option<&mut Attempt> {
        self.attempt.as_mut().filter(|a| &a.id == id && a.role == role)
    }

    /// A reply we already gave to request `ty` of session `id`, for a
    /// duplicate request.
    pub(super) fn cached_reply(&self, id: &[u8; 16], ty: PduType) -> Option<Vec<u8>> {
        if let Some(a) = self
            .attempt
            .as_ref()
            .filter(|a| &a.id == id && a.role == Role::Responder)
            && let Some(f) = a.replies.get(&ty)
        {
            return Some(f.clone());
        }
        self.session
            .as_ref()
            .filter(|s| &s.id == id)
            .and_then(|s| s.replies.get(&ty).cloned())
    }

    /// True for a session id we know, whose late duplicates are ignored.
    pub(super) fn known_session(&self, id: &[u8; 16]) -> bool {
        self.attempt.iter().chain(&self.rival).any(|a| &a.id == id)
            || self.session.as_ref().is_some_and(|s| &s.id == id)
            || self.abandoned.contains(id)
    }

    /// Answers a request we cannot place: a duplicate of a known session is
    /// resent or ignored; anything else is refused.
    fn stray_request(&mut self, id: &[u8; 16], ty: PduType, now: Now) {
        if let Some(reply) = self.cached_reply(id, ty) {
            self.transmit(reply);
        } else {
            self.stray_answer(id, ty, now);
        }
    }

    /// The responder's current attempt `id`, for a request of type `ty` it
    /// has not answered yet. A request answered before gets the same answer
    /// again; one of no current attempt is a stray ([`Self::stray_request`]).
    pub(super) fn new_request(&mut self, id: &[u8; 16], ty: PduType, now: Now) -> Option<&mut Attempt> {
        if self.is_new_request(id, ty, now) {
            self.attempt.as_mut()
        } else {
            None
        }
    }

    /// [`Self::new_request`], for handlers that need other fields of the
    /// machine beside the attempt.
    pub(super) fn is_new_request(&mut self, id: &[u8; 16], ty: PduType, now: Now) -> bool {
        let state = self
            .attempt
            .as_ref()
            .filter(|a| &a.id == id && a.role == Role::Responder)
            .map(|a| a.replies.get(&ty).cloned());
        match state {
            Some(None) => true,
            Some(Some(reply)) => {
                self.transmit(reply);
                false
            }
            None => {
                self.stray_request(id, ty, now);
                false
            }
        }
    }

    /// Sends the responder's answer to request `ty` and keeps it for
    /// duplicates of the request.
    pub(super) fn answer(&mut self, ty: PduType, pdu: Pdu) {
        let frame = pdu.encode();
        if let Some(a) = &mut self.attempt {
            a.replies.insert(ty, frame.clone());
        }
        self.transmit(frame);
    }

    /// The initiator's current attempt `id` while its `request` is
    /// unanswered; an `answer` that fits none is a stray
    /// ([`Self::stray_answer`]).
    pub(super) fn awaited(
        &mut self,
        id: &[u8; 16],
        request: PduType,
        answer: PduType,
        now: Now,
    ) -> Option<&mut Attempt> {
        if self.is_awaited(id, request, answer, now) {
            self.attempt.as_mut()
        } else {
            None
        }
    }

    /// [`Self::awaited`], for handlers that need other fields of the
    /// machine beside the attempt.
    pub(super) fn is_awaited(&mut self, id: &[u8; 16], request: PduType, answer: PduType, now: Now) -> bool {
        let awaited = self
            .attempt
            .as_ref()
            .is_some_and(|a| &a.id == id && a.role == Role::Initiator && a.pending.contains_key(&request));
        if !awaited {
            self.stray_answer(id, answer, now);
        }
        awaited
    }

    /// Makes `attempt` the current one and reports it.
    pub(super) fn begin(&mut self, attempt: Attempt) {
        let (session_id, role, from_bundle) = (attempt.id, attempt.role, attempt.from_bundle);
        self.attempt = Some(attempt);
        self.emit(Event::HandshakeStarted {
            session_id,
            role,
            from_bundle,
        });
    }

    /// An answer for which no request is pending (or a request of no
    /// session we can place): a late duplicate of a known session is
    /// ignored, anything else refused.
    pub(super) fn stray_answer(&mut self, id: &[u8; 16], ty: PduType, now: Now) {
        if !self.known_session(id) {
            self.refuse(
                Refusal::Unexpected,
                "unknown session",
                Some(ty),
                Some(&hex::encode(id)),
                now,
            );
        }
    }
}

/// The handshake session a PDU names, if any: the attempt it goes to.
pub(super) fn session_of(pdu: &Pdu) -> Option<[u8; 16]> {
    match pdu {
        Pdu::KeyPackageRequest(p) => Some(p.session_id.0),
        Pdu::KeyPackage(p) => Some(p.session_id.0),
        Pdu::EncryptionSyncRequest(p) => Some(p.session_id.0),
        Pdu::EncryptionSyncResponse(p) => Some(p.session_id.0),
        Pdu::SignalKeyExchangeRequest(p) => Some(p.session_id.0),
        Pdu::SignalKeyExchangeResponse(p) => Some(p.session_id.0),
        Pdu::SignalSessionComplete(p) => Some(p.session_id.0),
        Pdu::MlKemKeyExchange(p) => Some(p.session_id.0),
        Pdu::MlKemKeyExchangeResponse(p) => Some(p.session_id.0),
        Pdu::MlsWelcome(p) => p.session_id.map(|s| s.0),
        Pdu::MlsWelcomeAck(p) => p.session_id.map(|s| s.0),
        Pdu::MlsCommit(p) => p.session_id.map(|s| s.0),
        Pdu::ProtocolError(e) => e
            .ref_id
            .as_ref()
            .and_then(|r| hex::decode(r.as_str()).ok())
            .and_then(|b| b.try_into().ok()),
        _ => None,
    }
}
