//! Resets (BisonRelay's ratchet reset): a fresh invite, sealed to a peer
//! met before, on its reset point; the peer's side of it; and the resets
//! the node makes on its own for sessions it lost.

use strata_cascade::InstallationId;
use strata_cascade::kx::{seal, verify_invite};
use strata_proto::kx::Rmo;

use super::records::peer_at;
use super::{Accepting, KxBook, KxRefusal, RESET_TTL, kem_key};
use crate::durable;
use crate::error::SessionError;

impl KxBook {
    /// Resets the exchange with the peer at `installation` (met through
    /// one before): a fresh invite, sealed to its KEM key, goes to its
    /// reset point; the exchange then runs again.
    pub fn reset(&mut self, installation: InstallationId, name: &str, now_ms: u64) -> Result<(), SessionError> {
        self.tick(now_ms)?;
        let hex = installation.to_hex();
        let peer = peer_at(&*self.store, &hex)?.ok_or(KxRefusal::NotMet)?;
        let their_kem = kem_key(&peer.kem_key)?;
        let expires = now_ms / 1000 + RESET_TTL.as_secs();
        let invite = self.new_invite(name, expires, Some(hex), None)?;
        let rmo = Rmo::Invite(Box::new(invite)).compose(now_ms / 1000);
        let sealed = seal(&their_kem, &rmo, &mut self.rng)?;
        self.publish(&peer.their_reset, sealed);
        Ok(())
    }

    /// Resets every peer met through an exchange whose session this node
    /// no longer holds (its state was lost, or the handshake never ran),
    /// unless a reset to it is under way; the peers reset.
    pub fn reset_lost(&mut self, name: &str, now_ms: u64) -> Result<Vec<InstallationId>, SessionError> {
        let mut reset = Vec::new();
        for (installation, _) in self.peers()? {
            let hex = installation.to_hex();
            let held = durable::read(&*self.store, |r| Ok(r.handshake(&hex)?.is_some()))?;
            let under_way = self
                .invites
                .values()
                .any(|i| i.for_peer.as_deref() == Some(hex.as_str()));
            if !held && !under_way {
                self.reset(installation, name, now_ms)?;
                reset.push(installation);
            }
        }
        Ok(reset)
    }

    /// A reset invite on our reset point for the peer at `installation`:
    /// accepted if its account is the one met there.
    pub(super) fn on_reset(
        &mut self,
        installation: InstallationId,
        frame: &[u8],
        now_ms: u64,
    ) -> Result<(), SessionError> {
        let Rmo::Invite(invite) = self.open(frame)? else {
            return Err(KxRefusal::Unexpected.into());
        };
        let verified = verify_invite(&invite, now_ms / 1000).map_err(KxRefusal::from)?;
        let peer = peer_at(&*self.store, &installation.to_hex())?.ok_or(KxRefusal::NotMet)?;
        if verified.inviter.identity_key.serialize()[..] != peer.identity_key[..] {
            return Err(KxRefusal::NotThePeer.into());
        }
        tracing::info!(peer = %installation, "a reset from a peer met by invite: the exchange runs again");
        self.accept_verified(&verified, "", Accepting::Reset, now_ms).map(drop)
    }
}
