//! Introductions (BisonRelay's transitive auto-KX, §2.6), the book's side:
//!
//! ```text
//!  member A                     mediator M (an admin)                 member C
//!  ask_introduction(C, via M)
//!    ── mediate-identity {C, A's identity} ──►
//!                                 ── invite {A, A's identity} ──►
//!                                                                     invite_for(A): an invite only
//!                                                                     A's account may answer, sealed
//!                                                                     to A's KEM key
//!                                 ◄── transitive {A, sealed} ──
//!    ◄── forward {C, sealed} ──
//!  on_introduction: asked for C through M? then accepts; the KX runs on
//!  C's rendezvous points and A opens the Strata handshake to C
//! ```
//!
//! The steps travel as `introduction` messages of the pair sessions
//! ([`crate::IntroStep`]), so each hop is authenticated by its session;
//! the mediator learns both identities and sees the sealed invite, which it
//! cannot open. An invite forwarded without a request from this side
//! through that mediator is refused ([`KxRefusal::Unrequested`]), and an
//! introduction's invite answers only the account it is for.
//!
//! **Crossed introductions** (both sides asked at once, each got the
//! other's invite): BisonRelay's rule — the side whose received invite's
//! initial rendezvous point is lower than its own open invite's aborts
//! ([`KxRefusal::Crossed`]), so exactly one exchange runs.

use std::time::Duration;

use strata_cascade::InstallationId;
use strata_cascade::kx::{public_identity, seal, verify_identity, verify_invite};
use strata_proto::kx::{PublicIdentity, Rmo};

use super::records::{Asked, peer_at};
use super::{ASKED, AcceptedInvite, Accepting, KxBook, KxRefusal, to_json};
use crate::content::MAX_INTRO_IDENTITY_BYTES;
use crate::durable;
use crate::error::SessionError;

/// How long a request for an introduction waits for its invite.
pub const MEDIATION_TTL: Duration = Duration::from_secs(3600);
/// How long an introduction's invite holds.
pub const INTRODUCTION_TTL: Duration = Duration::from_secs(3600);
/// Most introductions asked for and awaited at once.
pub const MAX_ASKED: usize = 256;

impl KxBook {
    /// This account's public identity showing `name`, as JSON: what a
    /// request for an introduction carries.
    pub fn public_identity(&mut self, name: &str) -> Result<Vec<u8>, SessionError> {
        let identity = public_identity(self.local.account(), &self.kem, name, &mut self.rng)?;
        to_json(&identity)
    }

    /// Records a request for an introduction to the installation `target`
    /// through the mediator `via`. False (nothing recorded) when one is
    /// awaited already, or `target` was met.
    pub fn ask_introduction(
        &mut self,
        target: InstallationId,
        via: InstallationId,
        now_ms: u64,
    ) -> Result<bool, SessionError> {
        self.tick(now_ms)?;
        let key = format!("{ASKED}{}", target.to_hex());
        let (asked, met) = durable::read(&*self.store, |r| {
            Ok((r.kx(&key)?.is_some(), r.kx_entries(ASKED)?.len()))
        })?;
        if asked || peer_at(&*self.store, &target.to_hex())?.is_some() || target == self.local.installation_id() {
            return Ok(false);
        }
        if met >= MAX_ASKED {
            return Err(KxRefusal::TooMany.into());
        }
        let bytes = to_json(&Asked {
            via: via.to_hex(),
            at_ms: now_ms,
        })?;
        durable::write(&*self.store, |w| w.set_kx(&key, &bytes))?;
        Ok(true)
    }

    /// The mediator asks this side to invite the installation
    /// `installation`, whose account's public identity is `identity`
    /// (JSON): an invite only that account may answer, sealed to its KEM
    /// key, to send back through the mediator.
    pub fn invite_for(
        &mut self,
        identity: &[u8],
        installation: InstallationId,
        now_ms: u64,
    ) -> Result<Vec<u8>, SessionError> {
        self.tick(now_ms)?;
        if identity.len() > MAX_INTRO_IDENTITY_BYTES {
            return Err(KxRefusal::Oversized(identity.len()).into());
        }
        let public: PublicIdentity = serde_json::from_slice(identity)
            .map_err(|e| KxRefusal::Format(strata_proto::kx::KxFormatError::Json(e.to_string())))?;
        let invitee = verify_identity(&public).map_err(KxRefusal::from)?;
        let account = invitee.identity_key.serialize().to_vec();
        if account == self.account_key() {
            return Err(KxRefusal::SelfAddressed.into());
        }
        if peer_at(&*self.store, &installation.to_hex())?.is_some() {
            return Err(KxRefusal::Met.into());
        }
        let expires = now_ms / 1000 + INTRODUCTION_TTL.as_secs();
        let invite = self.new_invite("", expires, None, Some(account))?;
        let rmo = Rmo::Invite(Box::new(invite)).compose(now_ms / 1000);
        Ok(seal(&invitee.kem_key, &rmo, &mut self.rng)?)
    }

    /// An invite the installation `from` sealed for this side, forwarded
    /// by the mediator `via`: accepted (as [`KxBook::accept`]) if this side
    /// asked to meet `from` through `via`, and the invite is `from`'s.
    pub fn on_introduction(
        &mut self,
        from: InstallationId,
        via: InstallationId,
        sealed: &[u8],
        now_ms: u64,
    ) -> Result<AcceptedInvite, SessionError> {
        self.tick(now_ms)?;
        if sealed.len() > strata_cascade::kx::MAX_SEALED_BYTES {
            return Err(KxRefusal::Oversized(sealed.len()).into());
        }
        let key = format!("{ASKED}{}", from.to_hex());
        let asked = durable::read(&*self.store, |r| r.kx(&key))?
            .and_then(|b| serde_json::from_slice::<Asked>(&b).ok())
            .filter(|a| a.via == via.to_hex());
        if asked.is_none() {
            return Err(KxRefusal::Unrequested.into());
        }
        let Rmo::Invite(invite) = self.open(sealed)? else {
            return Err(KxRefusal::Unexpected.into());
        };
        let verified = verify_invite(&invite, now_ms / 1000).map_err(KxRefusal::from)?;
        if verified.installation != from {
            return Err(KxRefusal::NotThePeer.into());
        }
        let inviter = verified.inviter.identity_key.serialize().to_vec();
        // Crossed: this side invited the same account too; the lower
        // received point aborts, so one of the two exchanges runs.
        let crossed = self.invites.iter().any(|(rv, i)| {
            i.used.is_none() && i.for_account.as_ref() == Some(&inviter) && verified.initial_rendezvous < *rv
        });
        durable::write(&*self.store, |w| w.delete_kx(&key).map(drop))?;
        if crossed {
            return Err(KxRefusal::Crossed.into());
        }
        self.accept_verified(&verified, "", Accepting::Introduction, now_ms)
    }

    /// Forgets requests for introductions older than [`MEDIATION_TTL`].
    pub(super) fn forget_stale_asks(&mut self, now_ms: u64) -> Result<(), SessionError> {
        let asked = durable::read(&*self.store, |r| r.kx_entries(ASKED))?;
        let ttl = u64::try_from(MEDIATION_TTL.as_millis()).unwrap_or(u64::MAX);
        let stale: Vec<String> = asked
            .into_iter()
            .filter(|(_, b)| serde_json::from_slice::<Asked>(b).map_or(true, |a| now_ms.saturating_sub(a.at_ms) > ttl))
            .map(|(k, _)| k)
            .collect();
        if !stale.is_empty() {
            durable::write(&*self.store, |w| {
                for k in &stale {
                    w.delete_kx(k)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}
