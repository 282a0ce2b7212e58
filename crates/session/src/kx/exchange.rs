//! The exchange itself: a half KX on one of our invites, the full KX on
//! an invite we accepted, and the peer they leave pinned.

use strata_cascade::InstallationId;
use strata_cascade::kx::{complete_key_exchange, fill_key_exchange, seal, verify_half_kx};
use strata_proto::kx::{FullKx, ID_BYTES, Rmo};
use strata_store::IdentityCheck;

use super::records::{Answered, KxPeer, OpenInvite, peer_at};
use super::{
    ACCEPT, INVITE, KxBook, KxCompleted, KxOutput, KxRefusal, PEER, REPEATS_ANSWERED, kem_key, rendezvous_topic,
    rv_key, to_json,
};
use crate::durable;
use crate::error::SessionError;
use strata_cascade::kx::KxHalf;

impl KxBook {
    /// A half KX on the initial point of an invite of ours.
    pub(super) fn on_half(&mut self, rv: &[u8; ID_BYTES], frame: &[u8], now_ms: u64) -> Result<(), SessionError> {
        let Some(invite) = self.invites.get(rv).cloned() else {
            return Err(KxRefusal::Unknown.into());
        };
        if now_ms / 1000 > invite.expires {
            self.forget_invite(rv)?;
            return Err(KxRefusal::Expired.into());
        }
        let Rmo::HalfKx(half) = self.open(frame)? else {
            return Err(KxRefusal::Unexpected.into());
        };
        let invitee = verify_half_kx(&half, rv).map_err(KxRefusal::from)?;
        let identity_key = invitee.identity_key.serialize().to_vec();
        if identity_key == self.account_key() {
            return Err(KxRefusal::SelfAddressed.into());
        }
        if let Some(hex) = &invite.for_peer {
            let met = peer_at(&*self.store, hex)?;
            if met.is_none_or(|p| p.identity_key != identity_key) {
                return Err(KxRefusal::NotThePeer.into());
            }
        }
        if invite.for_account.as_ref().is_some_and(|a| *a != identity_key) {
            return Err(KxRefusal::NotThePeer.into());
        }
        if let Some(used) = &invite.used {
            if used.cipher[..] != half.half_kx.cipher[..] || used.their_kem[..] != invitee.kem_key[..] {
                return Err(KxRefusal::Used.into());
            }
            // The same half again: its answer was lost.
            let their_kem = kem_key(&used.their_kem)?;
            let sealed = seal(&their_kem, &used.full, &mut self.rng)?;
            self.publish(&used.their_rv, sealed);
            return Ok(());
        }
        let (full_kx, mine) = fill_key_exchange(&invitee.kem_key, &mut self.rng)?;
        // Completing checks the invitee's half (its sealed key opens).
        complete_key_exchange(&self.kem, &mine, &half.half_kx, false).map_err(KxRefusal::from)?;
        let full = Rmo::FullKx(Box::new(FullKx { full_kx })).compose(now_ms / 1000);
        let installation = InstallationId::from_bytes(half.installation);
        let used = OpenInvite {
            used: Some(Answered {
                cipher: half.half_kx.cipher.to_vec(),
                their_kem: invitee.kem_key.to_vec(),
                their_rv: half.initial_rendezvous,
                full: full.clone(),
            }),
            // Kept to answer repeats of the half, not for the invite's
            // whole life.
            expires: invite.expires.min(now_ms / 1000 + REPEATS_ANSWERED.as_secs()),
            ..invite.clone()
        };
        let peer = KxPeer {
            identity_key: identity_key.clone(),
            name: invitee.name.clone(),
            kem_key: invitee.kem_key.to_vec(),
            their_reset: half.reset_rendezvous,
            my_reset: invite.reset,
            invite_rv: *rv,
            completed_ms: now_ms,
        };
        let invite_key = rv_key(INVITE, rv);
        let invite_bytes = to_json(&used)?;
        let reset = self.record_peer(installation, &peer, now_ms, |w| w.set_kx(&invite_key, &invite_bytes))?;
        self.invites.insert(*rv, used);
        let sealed = seal(&invitee.kem_key, &full, &mut self.rng)?;
        self.publish(&half.initial_rendezvous, sealed);
        self.outputs.push_back(KxOutput::Completed(KxCompleted {
            identity_key,
            installation,
            name: invitee.name,
            accepted: false,
            reset,
        }));
        Ok(())
    }

    /// The full KX on the point an accepted invite waits on.
    pub(super) fn on_full(&mut self, rv: &[u8; ID_BYTES], frame: &[u8], now_ms: u64) -> Result<(), SessionError> {
        let Some(pending) = self.pending.get(rv).cloned() else {
            return Err(KxRefusal::Unknown.into());
        };
        let Rmo::FullKx(full) = self.open(frame)? else {
            return Err(KxRefusal::Unexpected.into());
        };
        let mine = KxHalf::import(&pending.secret)?;
        complete_key_exchange(&self.kem, &mine, &full.full_kx, true).map_err(KxRefusal::from)?;
        let installation: InstallationId = pending
            .installation
            .parse()
            .map_err(|_| SessionError::Internal("a stored exchange names no installation".into()))?;
        let peer = KxPeer {
            identity_key: pending.identity_key.clone(),
            name: pending.name.clone(),
            kem_key: pending.their_kem.clone(),
            their_reset: pending.their_reset,
            my_reset: pending.my_reset,
            invite_rv: pending.invite_rv,
            completed_ms: now_ms,
        };
        let key = rv_key(ACCEPT, rv);
        let result = self.record_peer(installation, &peer, now_ms, |w| w.delete_kx(&key).map(drop));
        if matches!(result, Err(SessionError::Kx(KxRefusal::InstallationClaimed))) {
            // Final: the inviter's installation belongs to another key here.
            self.forget_pending(rv)?;
        }
        let replaced = result?;
        self.pending.remove(rv);
        self.outputs.push_back(KxOutput::Unsubscribe(rendezvous_topic(rv)));
        self.outputs.push_back(KxOutput::Completed(KxCompleted {
            identity_key: pending.identity_key,
            installation,
            name: pending.name,
            accepted: true,
            reset: replaced || pending.reset,
        }));
        Ok(())
    }

    /// Pins the peer's key for `installation` (verified by invite) and
    /// stores `peer`, with `also`, in one transaction, then waits on the
    /// peer's reset point instead of the one it replaces; refused when the
    /// installation is pinned to another key. True when it replaced an
    /// earlier exchange.
    pub(super) fn record_peer(
        &mut self,
        installation: InstallationId,
        peer: &KxPeer,
        now_ms: u64,
        mut also: impl FnMut(&mut strata_store::Writer<'_>) -> Result<(), strata_store::StoreError>,
    ) -> Result<bool, SessionError> {
        let hex = installation.to_hex();
        let key = format!("{PEER}{hex}");
        let bytes = to_json(peer)?;
        let pinned = durable::write(&*self.store, |w| {
            if w.pin_invited(&hex, &peer.identity_key, now_ms)? == IdentityCheck::Changed {
                return Ok(None);
            }
            let before = w.kx(&key)?.and_then(|b| serde_json::from_slice::<KxPeer>(&b).ok());
            w.set_kx(&key, &bytes)?;
            also(w)?;
            Ok(Some(before))
        })?;
        let Some(before) = pinned else {
            return Err(KxRefusal::InstallationClaimed.into());
        };
        if let Some(old) = &before {
            self.resets.remove(&old.my_reset);
            self.outputs
                .push_back(KxOutput::Unsubscribe(rendezvous_topic(&old.my_reset)));
        }
        self.resets.insert(peer.my_reset, installation);
        self.outputs
            .push_back(KxOutput::Subscribe(rendezvous_topic(&peer.my_reset)));
        Ok(before.is_some())
    }
}
