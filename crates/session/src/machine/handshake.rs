//! The P3 handshake, steps 1–11 (see the crate docs for the diagram and
//! its rules): starting an attempt, the responder's and the initiator's
//! handler of every step, opening from a peer's bundle in one round trip
//! (and the responder's side of it), and, once every layer is set up, the
//! session it establishes. Which PDU belongs to which attempt is
//! [`attempt`](super::attempt); the identity checks of steps 1 and 2 are
//! [`peer`](super::peer).

use strata_cascade::{
    AesGcmLayer, InstallationPreKeys, KemKeyPair, KeyPackageKind, KeyPackageSecrets, MlKemLayer, MlsLayer, PairCascade,
    PeerIdentity, SignalBundle, SignalLayer, SignedKemKey, bundle::VerifiedBundle,
};
use strata_proto::{
    BoundedVec, BundleStart, EncryptionSyncRequest, EncryptionSyncResponse, FixedBytes, Id, KeyPackage,
    KeyPackageRequest, LayerName, MlKemKeyExchange, MlKemKeyExchangeResponse, MlsWelcome, MlsWelcomeAck, PROFILE_V0,
    Pdu, PduType, ResumeAnswer, ResumeProbe, SignalKeyExchangeRequest, SignalKeyExchangeResponse,
    SignalSessionComplete, Text,
};

use super::attempt::Attempt;
use super::claims::Keep;
use super::retransmission::Retx;
use super::{CIPHER_LAYERS, Event, Now, PeerMachine, Refusal, ResetReason, Role, Session, Step, group_id_blob};
use crate::crypto;
use crate::durable;
use crate::error::SessionError;

/// [`CIPHER_LAYERS`], as `layers` on the wire.
fn layer_names() -> BoundedVec<LayerName, 8> {
    BoundedVec::new(
        CIPHER_LAYERS
            .iter()
            .filter_map(|n| Text::new(*n).ok())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default()
}

/// Whether the peer runs [`CIPHER_LAYERS`], in that order.
fn layers_match(layers: &BoundedVec<LayerName, 8>) -> bool {
    layers.len() == CIPHER_LAYERS.len() && layers.iter().zip(CIPHER_LAYERS).all(|(a, b)| a.as_str() == b)
}

/// `mls-encryption-sync-request` for session `id`: step 3, or a resume probe.
pub(super) fn sync_request(id: [u8; 16], resume: Option<ResumeProbe>) -> EncryptionSyncRequest {
    EncryptionSyncRequest {
        session_id: FixedBytes(id),
        profile: Text::new(PROFILE_V0).unwrap_or_default(),
        layers: layer_names(),
        resume,
        bundle: None,
    }
}

/// Steps 8 and 10 of session `id`, as the initiator sends them in its
/// first flight: our signed ML-KEM key, and the Welcome of the group it
/// made from the peer's KeyPackage.
fn initiator_keys(
    id: [u8; 16],
    own_kem: &SignedKemKey,
    mls: &MlsLayer,
    welcome: Vec<u8>,
) -> Result<[Pdu; 2], SessionError> {
    let (key_id, encapsulation_key, signature) = crypto::kem_key_fields(own_kem)?;
    let session_id = FixedBytes(id);
    Ok([
        MlKemKeyExchange {
            session_id,
            key_id,
            encapsulation_key,
            signature,
        }
        .into(),
        MlsWelcome {
            session_id: Some(session_id),
            group_id: group_id_blob(mls),
            welcome: strata_proto::Blob::new(welcome)
                .map_err(|_| SessionError::Internal("Welcome over the field cap".into()))?,
            ratchet_tree: None,
        }
        .into(),
    ])
}

/// `mls-encryption-sync-response` for session `id`: step 4, or a resume answer.
pub(super) fn sync_response(id: [u8; 16], resume: Option<ResumeAnswer>) -> EncryptionSyncResponse {
    EncryptionSyncResponse {
        session_id: FixedBytes(id),
        profile: Text::new(PROFILE_V0).unwrap_or_default(),
        layers: layer_names(),
        resume,
    }
}

impl PeerMachine {
    /// Starts a handshake when the user wants a session and nothing stands
    /// in the way: the link is up, no session or handshake exists, and no
    /// identity change is pending.
    pub(super) fn open_if_idle(&mut self, now: Now) -> Step {
        if self.link_up && self.session.is_none() && self.attempt.is_none() && !self.blocked {
            self.start_attempt(now)?;
        }
        Ok(())
    }

    /// The peer published `bundle`, of a higher version than the one seen
    /// before (54/WAKU2-X3DH-SESSIONS re-keying): the current session
    /// expires, and the next send opens a new session from the bundle,
    /// replacing it once established (messages meanwhile still go under
    /// the old one, and are sent again under the new). Nothing happens
    /// without a session, or for another installation's bundle.
    pub fn expire(&mut self, bundle: VerifiedBundle) {
        if self.session.as_ref().is_some_and(|s| s.peer == bundle.peer()) {
            tracing::info!(peer = %self.peer_hex, version = bundle.header().version, "a newer bundle: the session is re-keyed at the next send");
            self.rekey = Some(Box::new(bundle));
        }
    }

    /// Step 1: a new attempt of ours, as the initiator.
    pub(super) fn start_attempt(&mut self, now: Now) -> Step {
        let id = self.random_id();
        let (installation_id, identity_key) = self.own_identity_fields();
        let prior = self.session.as_ref().map(|s| s.id);
        let pdu = KeyPackageRequest {
            session_id: FixedBytes(id),
            installation_id,
            identity_key,
            profile: Text::new(PROFILE_V0).unwrap_or_default(),
            timestamp: now.unix_ms,
            prior: prior.map(FixedBytes),
        };
        let frame = self.transmit_pdu(pdu.into());
        let mut attempt = Attempt::new(id, Role::Initiator, now.at);
        attempt.pending.insert(
            PduType::KeyPackageRequest,
            Retx::new(frame, now.at, self.config.handshake_rto),
        );
        self.begin(attempt);
        Ok(())
    }

    /// Our installation id and identity key, as steps 1 and 2 carry them.
    fn own_identity_fields(&self) -> (Id, strata_proto::KeyBytes) {
        (
            Text::new(self.local_hex.clone()).unwrap_or_default(),
            strata_proto::Blob::new(crypto::own_identity_key(&self.local)).unwrap_or_default(),
        )
    }

    /// Fresh Signal and ML-KEM layers for a handshake with `peer` (both
    /// roles), with our signed ML-KEM key for steps 8 and 9.
    fn fresh_layers(&mut self, peer: PeerIdentity) -> Step<(SignalLayer, MlKemLayer, SignedKemKey)> {
        let signal = SignalLayer::new(&self.local, peer)?;
        let kem_key = KemKeyPair::generate(&self.local, 1, &mut self.rng)?;
        let own_kem = kem_key.public().clone();
        Ok((signal, MlKemLayer::new(self.local_id, peer, kem_key), own_kem))
    }

    /// The initiator's side of [`PeerMachine::open_from_bundle`].
    pub(super) fn start_from_bundle(&mut self, bundle: &VerifiedBundle, now: Now) -> Step {
        // With a session, only a re-keying replaces it (`PeerMachine::expire`).
        let rekeying = self.session.as_ref().is_some_and(|s| s.peer == bundle.peer());
        if (self.session.is_some() && !rekeying) || self.attempt.is_some() || self.blocked {
            return Ok(());
        }
        let ty = PduType::KeyPackage;
        let announced = bundle.peer();
        let installation = Text::new(announced.installation_id.to_hex()).unwrap_or_default();
        let identity_key = crypto::peer_identity_key(&announced);
        let Some(peer) = self.check_identity(&installation, &identity_key, ty, now)? else {
            return Ok(());
        };
        self.wants_session = true;
        // The bundle's package passes the checks of any other: a reused
        // init_key (only the same last resort may come again) is not
        // built on, and the full handshake goes instead.
        if let Err(e) = self.accept_key_package(peer, bundle.key_package().bytes(), Keep::UsedNow, now)? {
            tracing::warn!(peer = %self.peer_hex, error = %e, "the bundle's KeyPackage was refused");
            return Ok(());
        }
        let id = self.random_id();
        let mut mls = MlsLayer::new(&self.local, peer)?;
        let welcome = mls.create_group(bundle.key_package().bytes())?;
        let (mut signal, mut kem, own_kem) = self.fresh_layers(peer)?;
        signal.process_bundle(bundle.signal(), now.unix_ms, &mut self.rng)?;
        let confirmation = crypto::signal_confirmation(
            &mut signal,
            self.local_id,
            peer.installation_id,
            &id,
            now.unix_ms,
            &mut self.rng,
        )?;
        kem.set_peer_key(bundle.kem_key().clone())?;
        let [kem_pdu, welcome_pdu] = initiator_keys(id, &own_kem, &mls, welcome)?;
        let (installation_id, identity_key) = self.own_identity_fields();
        let session_id = FixedBytes(id);
        let mut start = sync_request(id, None);
        let prior = self.session.as_ref().map(|s| s.id);
        start.bundle = Some(BundleStart {
            installation_id,
            identity_key,
            version: bundle.header().version,
            prior: prior.map(FixedBytes),
        });
        let pdus: [Pdu; 4] = [
            start.into(),
            SignalSessionComplete {
                session_id,
                message: strata_proto::Blob::new(confirmation)
                    .map_err(|_| SessionError::Internal("Signal message over the field cap".into()))?,
            }
            .into(),
            kem_pdu,
            welcome_pdu,
        ];
        let rto = self.config.handshake_rto;
        let mut attempt = Attempt::new(id, Role::Initiator, now.at);
        for pdu in pdus {
            let t = pdu.pdu_type();
            attempt
                .pending
                .insert(t, Retx::new(self.transmit_pdu(pdu), now.at, rto));
        }
        attempt.set_layers(peer, mls, (signal, kem, own_kem));
        // The bundle stood in for steps 6 and 9.
        attempt.signal_ok = true;
        attempt.kem_ok = true;
        attempt.from_bundle = true;
        attempt.replacing = rekeying;
        attempt.rekey = rekeying;
        self.begin(attempt);
        Ok(())
    }

    /// Step 3 naming our bundle, for a session we have not heard of: the
    /// responder's attempt starts here, its layers seeded from the
    /// installation pre-keys that bundle published. A bundle version we no
    /// longer hold is refused (naming the session), and the initiator falls
    /// back to the full handshake.
    fn on_bundle_start(&mut self, req: EncryptionSyncRequest, start: BundleStart, now: Now) -> Step {
        let id = req.session_id.0;
        let ty = PduType::EncryptionSyncRequest;
        let session = hex::encode(id);
        if !(layers_match(&req.layers) && req.profile.as_str() == PROFILE_V0) {
            self.refuse(
                Refusal::Unexpected,
                "unknown profile or layers",
                Some(ty),
                Some(&session),
                now,
            );
            return Ok(());
        }
        // Simultaneous open: both handshakes run, and the twins are settled
        // once both are done (`twins`).
        let stored = durable::read(&*self.store, |r| r.pre_keys())?;
        let pre_keys = match stored.map(|b| InstallationPreKeys::import(&b)).transpose()? {
            Some(p) if p.version() == start.version => p,
            _ => {
                self.refuse(
                    Refusal::Unexpected,
                    "bundle version not held",
                    Some(ty),
                    Some(&session),
                    now,
                );
                return Ok(());
            }
        };
        let Some(peer) = self.check_identity(&start.installation_id, start.identity_key.as_bytes(), ty, now)? else {
            return Ok(());
        };
        let twin_of = self.twin_for(start.prior.map(|p| p.0), now);
        self.make_room_for_theirs();
        let mls = pre_keys.mls_layer(&self.local, peer)?;
        let signal = pre_keys.signal_layer(&self.local, peer)?;
        let kem = pre_keys.kem_layer(&self.local, peer)?;
        let mut attempt = Attempt::new(id, Role::Responder, now.at);
        attempt.set_layers(peer, mls, (signal, kem, pre_keys.kem_public().clone()));
        attempt.sync_ok = true;
        attempt.from_bundle = true;
        attempt.replacing = self.session.is_some();
        attempt.twin_of = twin_of;
        self.begin(attempt);
        self.answer(ty, sync_response(id, None).into());
        self.try_complete(now)
    }

    /// Step 1 received.
    pub(super) fn on_kp_request(&mut self, req: KeyPackageRequest, now: Now) -> Step {
        let id = req.session_id.0;
        let ty = PduType::KeyPackageRequest;
        if let Some(reply) = self.cached_reply(&id, ty) {
            self.transmit(reply);
            return Ok(());
        }
        if self.known_session(&id) {
            return Ok(());
        }
        if req.profile.as_str() != PROFILE_V0 {
            self.refuse(Refusal::Unexpected, "unknown profile", Some(ty), None, now);
            return Ok(());
        }
        // Simultaneous open: both handshakes run, and the twins are settled
        // once both are done (`twins`).
        let Some(peer) = self.check_identity(&req.installation_id, req.identity_key.as_bytes(), ty, now)? else {
            return Ok(());
        };
        let twin_of = self.twin_for(req.prior.map(|p| p.0), now);
        self.make_room_for_theirs();
        let (mls, key_package, last_resort) = self.step_two_key_package(peer, now)?;
        let layers = self.fresh_layers(peer)?;
        let (installation_id, identity_key) = self.own_identity_fields();
        let reply = KeyPackage {
            session_id: FixedBytes(id),
            installation_id,
            identity_key,
            key_package: strata_proto::Blob::new(key_package)
                .map_err(|_| SessionError::Internal("KeyPackage over the field cap".into()))?,
            last_resort,
        };
        let frame = self.transmit_pdu(reply.into());
        let mut attempt = Attempt::new(id, Role::Responder, now.at);
        attempt.set_layers(peer, mls, layers);
        attempt.replies.insert(ty, frame);
        attempt.replacing = self.session.is_some();
        attempt.twin_of = twin_of;
        self.begin(attempt);
        Ok(())
    }

    /// Step 2's KeyPackage, for a new attempt: a package claimed from this
    /// installation's pool (one store transaction; the last resort when no
    /// one-time package is left), or, when there is no pool at all (never
    /// stocked), a fresh one-time package. Returns the MLS layer that holds
    /// its private parts, the package and whether it is the last resort. A
    /// claim that leaves the stock low raises [`Event::LowKeyPackages`].
    fn step_two_key_package(
        &mut self,
        peer: PeerIdentity,
        now: Now,
    ) -> Result<(MlsLayer, Vec<u8>, bool), SessionError> {
        let now_s = now.unix_ms / 1000;
        let threshold = self.config.key_package_pool.refill_below;
        let claim = durable::write(&*self.store, |w| {
            let status = w.key_package_status(now_s)?;
            if status.available == 0 && !status.has_last_resort {
                return Ok(None);
            }
            w.claim_key_package(now_s, threshold).map(Some)
        })?;
        let Some(claim) = claim else {
            let mut mls = MlsLayer::new(&self.local, peer)?;
            let key_package = mls.key_package(KeyPackageKind::OneTime, self.config.key_package_lifetime_secs)?;
            return Ok((mls, key_package, false));
        };
        let secrets = KeyPackageSecrets::from_bytes(claim.secrets.as_bytes())?;
        let mls = MlsLayer::with_key_package_secrets(&self.local, peer, &secrets)?;
        if let Some(low) = claim.low {
            self.emit(Event::LowKeyPackages {
                available: low.available,
                threshold: low.threshold,
            });
        }
        Ok((mls, claim.package.bytes, claim.package.last_resort))
    }

    /// Step 2 received: the initiator pipelines steps 3, 5, 8 and 10.
    pub(super) fn on_key_package(&mut self, kp: KeyPackage, now: Now) -> Step {
        let id = kp.session_id.0;
        let ty = PduType::KeyPackage;
        let waiting = self
            .attempt_mut(&id, Role::Initiator)
            .is_some_and(|a| a.pending.contains_key(&PduType::KeyPackageRequest));
        if !waiting {
            if !self.known_session(&id) {
                self.refuse(Refusal::Unexpected, "unknown session", Some(ty), None, now);
            }
            return Ok(());
        }
        let Some(peer) = self.check_identity(&kp.installation_id, kp.identity_key.as_bytes(), ty, now)? else {
            return Ok(());
        };
        // Checked, and its init_key recorded as used, before anything is
        // built on it: a one-time package the peer served before is refused.
        if let Err(e) = self.accept_key_package(peer, kp.key_package.as_bytes(), Keep::UsedNow, now)? {
            self.refuse(Refusal::BadKeyPackage, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        let mut mls = MlsLayer::new(&self.local, peer)?;
        let welcome = match mls.create_group(kp.key_package.as_bytes()) {
            Ok(w) => w,
            Err(e) => {
                self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
                return Ok(());
            }
        };
        let layers = self.fresh_layers(peer)?;
        let [kem, welcome] = initiator_keys(id, &layers.2, &mls, welcome)?;
        let session_id = FixedBytes(id);
        let pdus: [Pdu; 4] = [
            sync_request(id, None).into(),
            SignalKeyExchangeRequest {
                session_id,
                registration_id: self.local.registration_id(),
                device_id: 1,
            }
            .into(),
            kem,
            welcome,
        ];
        let rto = self.config.handshake_rto;
        let mut pending = Vec::new();
        for pdu in pdus {
            let t = pdu.pdu_type();
            pending.push((t, Retx::new(self.transmit_pdu(pdu), now.at, rto)));
        }
        let Some(a) = self.attempt_mut(&id, Role::Initiator) else {
            return Ok(());
        };
        a.pending.remove(&PduType::KeyPackageRequest);
        a.pending.extend(pending);
        a.set_layers(peer, mls, layers);
        Ok(())
    }

    /// Step 3 received, or a resume probe.
    pub(super) fn on_sync_request(&mut self, req: EncryptionSyncRequest, now: Now) -> Step {
        let id = req.session_id.0;
        let ty = PduType::EncryptionSyncRequest;
        if let Some(probe) = req.resume {
            return self.on_resume_probe(id, &probe, now);
        }
        if let Some(start) = req.bundle.clone()
            && !self.known_session(&id)
        {
            return self.on_bundle_start(req, start, now);
        }
        let local_layers_ok = layers_match(&req.layers) && req.profile.as_str() == PROFILE_V0;
        let Some(a) = self.new_request(&id, ty, now) else {
            return Ok(());
        };
        a.sync_ok = local_layers_ok;
        self.answer(ty, sync_response(id, None).into());
        if !local_layers_ok {
            self.other_layers(id);
            return Ok(());
        }
        self.try_complete(now)
    }

    /// Step 4 received, or a resume answer.
    pub(super) fn on_sync_response(&mut self, resp: EncryptionSyncResponse, now: Now) -> Step {
        let id = resp.session_id.0;
        if let Some(answer) = resp.resume {
            return self.on_resume_answer(id, &answer, now);
        }
        let ok = layers_match(&resp.layers);
        let request = PduType::EncryptionSyncRequest;
        let Some(a) = self.awaited(&id, request, PduType::EncryptionSyncResponse, now) else {
            return Ok(());
        };
        a.pending.remove(&PduType::EncryptionSyncRequest);
        if !ok {
            self.other_layers(id);
            return Ok(());
        }
        a.sync_ok = true;
        self.try_complete(now)
    }

    /// Step 3 or 4 named other cipher layers than ours: attempt `id` fails
    /// for good.
    fn other_layers(&mut self, id: [u8; 16]) {
        self.abandon(id);
        self.emit(Event::HandshakeFailed {
            reason: "peer runs other cipher layers".into(),
        });
    }

    /// Step 5 received.
    pub(super) fn on_signal_request(&mut self, req: SignalKeyExchangeRequest, now: Now) -> Step {
        let id = req.session_id.0;
        let ty = PduType::SignalKeyExchangeRequest;
        let now_ms = now.unix_ms;
        if !self.is_new_request(&id, ty, now) {
            return Ok(());
        }
        let Some(a) = self.attempt.as_mut() else { return Ok(()) };
        let Some(signal) = a.signal.as_mut() else {
            return Err(SessionError::Internal("responder without a Signal layer".into()));
        };
        let bundle = signal.pre_key_bundle(now_ms, &mut self.rng)?;
        let reply = SignalKeyExchangeResponse {
            session_id: FixedBytes(id),
            bundle: bundle.to_pdu()?,
        };
        self.answer(ty, reply.into());
        Ok(())
    }

    /// Step 6 received: PQXDH, then step 7.
    pub(super) fn on_signal_response(&mut self, resp: SignalKeyExchangeResponse, now: Now) -> Step {
        let id = resp.session_id.0;
        let ty = PduType::SignalKeyExchangeResponse;
        let (local, rto) = (self.local_id, self.config.handshake_rto);
        if !self.is_awaited(&id, PduType::SignalKeyExchangeRequest, ty, now) {
            return Ok(());
        }
        let Some(a) = self.attempt.as_mut() else { return Ok(()) };
        let (Some(signal), Some(peer)) = (a.signal.as_mut(), a.peer) else {
            return Err(SessionError::Internal("initiator without a Signal layer".into()));
        };
        let confirmation = SignalBundle::from_pdu(&resp.bundle).and_then(|bundle| {
            signal.process_bundle(&bundle, now.unix_ms, &mut self.rng)?;
            crypto::signal_confirmation(signal, local, peer.installation_id, &id, now.unix_ms, &mut self.rng)
        });
        let message = match confirmation {
            Ok(m) => m,
            Err(e) => {
                self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
                return Ok(());
            }
        };
        let pdu = SignalSessionComplete {
            session_id: FixedBytes(id),
            message: strata_proto::Blob::new(message)
                .map_err(|_| SessionError::Internal("Signal message over the field cap".into()))?,
        };
        let frame = Pdu::from(pdu).encode();
        if let Some(a) = self.attempt_mut(&id, Role::Initiator) {
            a.pending.remove(&PduType::SignalKeyExchangeRequest);
            a.pending
                .insert(PduType::SignalSessionComplete, Retx::new(frame.clone(), now.at, rto));
            a.signal_ok = true;
        }
        self.transmit(frame);
        self.try_complete(now)
    }

    /// Step 7 received: the responder's Signal session.
    pub(super) fn on_signal_complete(&mut self, m: SignalSessionComplete, now: Now) -> Step {
        let id = m.session_id.0;
        let ty = PduType::SignalSessionComplete;
        let local = self.local_id;
        let Some(a) = self
            .attempt
            .as_mut()
            .filter(|a| a.id == id && a.role == Role::Responder)
        else {
            self.stray_answer(&id, ty, now);
            return Ok(());
        };
        if a.signal_ok {
            return Ok(());
        }
        let (Some(signal), Some(peer)) = (a.signal.as_mut(), a.peer) else {
            return Err(SessionError::Internal("responder without a Signal layer".into()));
        };
        let opened = crypto::open_signal_confirmation(
            signal,
            local,
            peer.installation_id,
            &id,
            m.message.as_bytes(),
            &mut self.rng,
        );
        if let Err(e) = opened {
            self.refuse(Refusal::Undecryptable, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        if let Some(a) = self.attempt_mut(&id, Role::Responder) {
            a.signal_ok = true;
        }
        self.try_complete(now)
    }

    /// Step 8 received.
    pub(super) fn on_kem_exchange(&mut self, k: MlKemKeyExchange, now: Now) -> Step {
        let id = k.session_id.0;
        let ty = PduType::MlKemKeyExchange;
        let Some(a) = self.new_request(&id, ty, now) else {
            return Ok(());
        };
        let (Some(kem), Some(peer), Some(own)) = (a.kem.as_mut(), a.peer, a.own_kem.as_ref()) else {
            return Err(SessionError::Internal("responder without an ML-KEM layer".into()));
        };
        let installed = crypto::install_peer_kem(kem, peer, k.key_id, &k.encapsulation_key, &k.signature);
        if let Err(e) = installed {
            self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        let (key_id, encapsulation_key, signature) = crypto::kem_key_fields(own)?;
        a.kem_ok = true;
        let reply = MlKemKeyExchangeResponse {
            session_id: FixedBytes(id),
            key_id,
            encapsulation_key,
            signature,
        };
        self.answer(ty, reply.into());
        self.try_complete(now)
    }

    /// Step 9 received.
    pub(super) fn on_kem_response(&mut self, k: MlKemKeyExchangeResponse, now: Now) -> Step {
        let id = k.session_id.0;
        let ty = PduType::MlKemKeyExchangeResponse;
        let Some(a) = self.awaited(&id, PduType::MlKemKeyExchange, ty, now) else {
            return Ok(());
        };
        if a.kem_ok {
            // Opened from a bundle, the peer's key came with it (and the
            // layers may be assembled already): the answer only confirms
            // that step 8 arrived.
            a.pending.remove(&PduType::MlKemKeyExchange);
            return self.try_complete(now);
        }
        let (Some(kem), Some(peer)) = (a.kem.as_mut(), a.peer) else {
            return Err(SessionError::Internal("initiator without an ML-KEM layer".into()));
        };
        if let Err(e) = crypto::install_peer_kem(kem, peer, k.key_id, &k.encapsulation_key, &k.signature) {
            self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        a.pending.remove(&PduType::MlKemKeyExchange);
        a.kem_ok = true;
        self.try_complete(now)
    }

    /// Step 10 received: the responder joins the group.
    pub(super) fn on_welcome(&mut self, w: MlsWelcome, now: Now) -> Step {
        let ty = PduType::MlsWelcome;
        let Some(id) = w.session_id.map(|s| s.0) else {
            self.refuse(
                Refusal::Unexpected,
                "welcome outside a pair session",
                Some(ty),
                None,
                now,
            );
            return Ok(());
        };
        let Some(a) = self.new_request(&id, ty, now) else {
            return Ok(());
        };
        if a.mls_ok {
            return Ok(());
        }
        let Some(mls) = a.mls.as_mut() else {
            return Err(SessionError::Internal("responder without an MLS layer".into()));
        };
        if let Err(e) = mls.join_group(w.welcome.as_bytes()) {
            self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        a.mls_ok = true;
        self.try_complete(now)
    }

    /// Step 11 received (or the acknowledgement of an MLS commit).
    pub(super) fn on_welcome_ack(&mut self, ack: MlsWelcomeAck, now: Now) -> Step {
        let ty = PduType::MlsWelcomeAck;
        let Some(id) = ack.session_id.map(|s| s.0) else {
            self.refuse(Refusal::Unexpected, "ack outside a pair session", Some(ty), None, now);
            return Ok(());
        };
        if let Some(a) = self
            .attempt
            .as_mut()
            .filter(|a| a.id == id && a.role == Role::Initiator && a.pending.contains_key(&PduType::MlsWelcome))
        {
            let epoch = a.mls.as_ref().and_then(MlsLayer::epoch).or_else(|| {
                // Once assembled, the layers live in the cascade.
                a.cascade.as_mut().and_then(|c| c.mls_mut().epoch())
            });
            if epoch != Some(ack.epoch) {
                self.refuse(
                    Refusal::Unexpected,
                    "welcome-ack for another epoch",
                    Some(ty),
                    None,
                    now,
                );
                return Ok(());
            }
            a.pending.remove(&PduType::MlsWelcome);
            a.pending.remove(&PduType::SignalSessionComplete);
            a.mls_ok = true;
            return self.try_complete(now);
        }
        if let Some(s) = self.session.as_mut().filter(|s| s.id == id) {
            if s.pending_commit.is_some() && s.mls_epoch() == ack.epoch {
                s.pending_commit = None;
                self.save_session()?;
            }
            return Ok(());
        }
        self.stray_answer(&id, ty, now);
        Ok(())
    }

    /// Moves the layers of a finished side into the cascade and, when the
    /// handshake is done, establishes the session.
    pub(super) fn try_complete(&mut self, now: Now) -> Step {
        let local = self.local_id;
        let Some(a) = self.attempt.as_mut() else { return Ok(()) };
        let layers_done = a.sync_ok && a.signal_ok && a.kem_ok && (a.role == Role::Initiator || a.mls_ok);
        if a.cascade.is_none() && layers_done && a.mls.is_some() {
            let (Some(mls), Some(signal), Some(kem), Some(peer)) =
                (a.mls.take(), a.signal.take(), a.kem.take(), a.peer)
            else {
                return Err(SessionError::Internal("handshake layers missing".into()));
            };
            let remote = peer.installation_id;
            a.cascade = Some(PairCascade::new(
                local,
                remote,
                mls,
                signal,
                kem,
                AesGcmLayer::new(local, remote),
            ));
        }
        let done = a.cascade.is_some() && a.mls_ok;
        if !done {
            return Ok(());
        }
        let Some(mut a) = self.attempt.take() else {
            return Ok(());
        };
        let (Some(mut cascade), Some(peer)) = (a.cascade.take(), a.peer) else {
            return Err(SessionError::Internal("handshake done without a cascade".into()));
        };
        if a.role == Role::Responder {
            let epoch = cascade.mls_mut().epoch().unwrap_or(0);
            let ack = MlsWelcomeAck {
                session_id: Some(FixedBytes(a.id)),
                group_id: group_id_blob(cascade.mls()),
                epoch,
            };
            a.replies.insert(PduType::MlsWelcome, Pdu::from(ack).encode());
        }
        self.establish(a, cascade, peer, now)
    }

    fn establish(&mut self, a: Attempt, cascade: PairCascade, peer: PeerIdentity, now: Now) -> Step {
        let value = cascade.mls().tie_break().ok();
        let twin = self.settle_twins(&a, value);
        let next_seq = self
            .session
            .as_ref()
            .map_or(1, |s| s.next_seq)
            .max(self.outbox.iter().map(|t| t.seq + 1).max().unwrap_or(1));
        let session = Session {
            id: a.id,
            initiator: a.role == Role::Initiator,
            peer,
            cascade,
            confirmed: true,
            probe: None,
            replies: a.replies,
            pending_commit: None,
            pending_rotation: None,
            kem_key_acked: 1,
            next_seq,
            last_kem_rotation_ms: now.unix_ms,
            last_mls_update_ms: now.unix_ms,
            sent_since_kem: 0,
            sent_since_mls: 0,
            owe_kem_ack: None,
            peer_kem_key: 1,
            address: self.address.clone(),
            fresh: Some(super::twins::Fresh {
                twin_of: a.twin_of,
                tie_break: value,
                at: now.at,
            }),
        };
        if twin == Some(false) {
            // Its twin, established before, comes first: this one is
            // dropped (see `twins`).
            return self.drop_twin(session, now);
        }
        let old = self.session.take();
        if twin == Some(true) {
            // Its twin comes second: this one replaces it, quietly (nothing
            // was lost); a new encryptionReady names it.
            self.was_ready = false;
            if let Some(o) = &old {
                self.forget(o.id);
            }
        } else if a.replacing && old.is_some() {
            // Ours, from the peer's newer bundle: re-keyed. Theirs: the
            // peer proved its identity in this handshake, so it did
            // restart (or re-keyed). Ready again, under the new session.
            let reason = if a.rekey {
                ResetReason::Rekeyed
            } else {
                ResetReason::PeerRestarted
            };
            self.emit(Event::SessionReset { reason });
            self.was_ready = false;
        }
        let replaced = old.is_some();
        self.spare = old.filter(|_| twin == Some(true));
        let welcome_ack = session.replies.get(&PduType::MlsWelcome).cloned();
        let epoch = session.mls_epoch();
        self.session = Some(session);
        self.pin = Some((crypto::peer_identity_key(&peer), now.unix_ms));
        if let Err(e) = self.save_session() {
            // Unsaved, and a first contact unpinned: no later write may
            // persist this session. The handshake runs again.
            self.session = None;
            self.pin = None;
            return Err(e);
        }
        if self.session.is_none() {
            return Ok(());
        }
        // Frames encrypted under an older session are useless now.
        for t in &mut self.outbox {
            t.frames = None;
            t.stale = false;
            t.mls_epoch = epoch;
        }
        self.retry_backoff = self.config.handshake_retry;
        self.retry_at = None;
        if let Some(f) = welcome_ack {
            self.transmit(f);
        }
        tracing::debug!(peer = %self.peer_hex, replaced, "session established");
        // A parked attempt runs on beside the session: a twin, settled when
        // it completes, or a forged start, which stalls.
        self.promote_rival();
        Ok(())
    }
}
