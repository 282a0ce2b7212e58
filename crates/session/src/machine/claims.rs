//! KeyPackage claims over an established session (polyproto-mls "claim",
//! peer to peer): ours, sent until answered or given up, and the peer's,
//! served from this installation's pool.
//!
//! A claim is a `key-package-claim` control plaintext inside the session's
//! cascade (see [`crate::content`]), so only the session's peer can claim
//! and its allowance is per authenticated installation. The owner hands a
//! package out of its pool in one store transaction
//! ([`strata_store::Writer::hand_out_key_package`]): a one-time package
//! while the peer has allowance left ([`PoolConfig::claim_burst`], then one
//! per [`PoolConfig::claim_interval`]), else the last resort, whose private
//! parts stay held for the claimer until its Welcome. The claimer checks
//! the package ([`strata_store::Writer::receive_peer_key_package`]:
//! signature, credential bound to the session's peer, ciphersuite,
//! lifetime, extensions, an `init_key` never seen from that installation)
//! before storing it; a package that fails is refused with a
//! `protocol-error` and [`Event::KeyPackageClaimFailed`].
//!
//! Claims are sent again (with a fresh encryption: the peer's replay
//! protection drops a copy) every [`Config::message_rto`], doubling, while
//! the session is ready, and given up after [`Config::claim_timeout`]. A
//! claim the owner already answered is answered again with the same
//! package (the last [`ANSWERS_KEPT`] answers are kept, in memory).
//!
//! [`PoolConfig::claim_burst`]: crate::PoolConfig::claim_burst
//! [`PoolConfig::claim_interval`]: crate::PoolConfig::claim_interval
//! [`Config::message_rto`]: crate::Config::message_rto
//! [`Config::claim_timeout`]: crate::Config::claim_timeout

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use strata_cascade::PeerIdentity;
use strata_proto::PduType;
use strata_store::{PeerKeyPackage, StoreError};

use super::ratelimit::RateLimit;
use super::{Event, Now, PeerMachine, Refusal, Step};
use crate::content::Control;
use crate::durable;
use crate::error::SessionError;
use crate::pool::{self, PoolConfig};

/// Most claims of ours waiting for an answer from one peer.
pub const MAX_PENDING_CLAIMS: usize = 64;
/// Answers to the peer's claims kept for claims sent again.
pub const ANSWERS_KEPT: usize = 16;

/// A package claimed from the peer, checked and stored
/// ([`Event::KeyPackageClaimed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    /// The peer installation it belongs to, hex.
    pub installation: String,
    /// Its RFC 9420 `KeyPackageRef`.
    pub key_ref: Vec<u8>,
    /// Whether it is the peer's last-resort package.
    pub last_resort: bool,
    /// End of its lifetime, Unix seconds.
    pub not_after_s: u64,
}

/// What becomes of a peer's KeyPackage that passed its checks
/// ([`PeerMachine::accept_key_package`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keep {
    /// Used at once (step 2's, a bundle's): only its `init_key` is kept.
    UsedNow,
    /// Stored until used or expired (a claimed one).
    Stored,
}

/// A claim of ours in flight.
#[derive(Debug)]
struct Pending {
    next: Instant,
    rto: Duration,
    deadline: Instant,
}

/// Both directions of claiming with one peer.
#[derive(Debug)]
pub(super) struct Claims {
    pending: BTreeMap<String, Pending>,
    answered: VecDeque<(String, Vec<u8>)>,
    allowance: RateLimit,
}

impl Claims {
    pub(super) fn new(pool: &PoolConfig) -> Self {
        Self {
            pending: BTreeMap::new(),
            answered: VecDeque::new(),
            allowance: RateLimit::every(pool.claim_burst, Some(pool.claim_interval)),
        }
    }

    /// The next time a claim goes again (when `ready`) or is given up.
    pub(super) fn next_timer(&self, ready: bool) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| if ready { p.next.min(p.deadline) } else { p.deadline })
            .min()
    }

    /// Whether claims of ours are in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

impl PeerMachine {
    /// Claims one KeyPackage of the peer: `claim` names it in the answer
    /// ([`Event::KeyPackageClaimed`] or [`Event::KeyPackageClaimFailed`]).
    /// Needs an established session; the claim goes when it is ready.
    pub(super) fn claim_key_package(&mut self, claim: String, now: Now) -> Step {
        if self.session.is_none() {
            return Err(SessionError::Misuse("no session with this peer yet"));
        }
        if claim.is_empty() || claim.len() > strata_proto::limits::MAX_ID {
            return Err(SessionError::Misuse("a claim id is 1 to 64 bytes"));
        }
        if self.claims.pending.len() >= MAX_PENDING_CLAIMS {
            return Err(SessionError::Misuse("too many KeyPackage claims in flight"));
        }
        if self.claims.pending.contains_key(&claim) {
            return Err(SessionError::Misuse("a claim with this id is in flight"));
        }
        let pending = Pending {
            next: now.at,
            rto: self.config.message_rto,
            deadline: now.at + self.config.claim_timeout,
        };
        self.claims.pending.insert(claim, pending);
        Ok(())
    }

    /// Sends the claims that are due (the session is ready) and gives up
    /// those past their deadline.
    pub(super) fn claims_due(&mut self, now: Now) -> Step {
        let expired: Vec<String> = self
            .claims
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now.at)
            .map(|(c, _)| c.clone())
            .collect();
        for claim in expired {
            self.claims.pending.remove(&claim);
            self.emit(Event::KeyPackageClaimFailed {
                claim,
                reason: "no answer from the peer".into(),
            });
        }
        if !self.is_ready() {
            return Ok(());
        }
        let max = self.config.message_rto_max;
        let mut due = Vec::new();
        for (claim, p) in &mut self.claims.pending {
            if p.next <= now.at {
                p.next = now.at + p.rto;
                p.rto = (p.rto * 2).min(max);
                due.push(claim.clone());
            }
        }
        for claim in due {
            self.send_control(Control::KeyPackageClaim { claim }, now)?;
        }
        Ok(())
    }

    /// The peer's claim: a package of our pool, the same one again for a
    /// claim answered already.
    pub(super) fn on_claim(&mut self, claim: String, now: Now) -> Step {
        if let Some((_, key_package)) = self.claims.answered.iter().find(|(c, _)| *c == claim) {
            let key_package = key_package.clone();
            return self.send_control(Control::KeyPackageGrant { claim, key_package }, now);
        }
        let now_s = now.unix_ms / 1000;
        let one_time = self.claims.allowance.allow(now.at);
        let claimer = self.peer_hex.clone();
        let threshold = self.config.key_package_pool.refill_below;
        let hand_out = |w: &mut strata_store::Writer<'_>| {
            let status = w.key_package_status(now_s)?;
            if status.available == 0 && !status.has_last_resort {
                return Ok(None);
            }
            w.hand_out_key_package(&claimer, one_time, now_s, threshold).map(Some)
        };
        let out = match durable::write(&*self.store, hand_out)? {
            Some(out) => out,
            None => {
                // Never stocked: a last resort at least (the node stocks
                // the rest on the low-stock signal below).
                let last_resort_only = PoolConfig {
                    stock: 0,
                    ..self.config.key_package_pool.clone()
                };
                pool::keep_stocked(&*self.store, &self.local, &last_resort_only, now_s)?;
                durable::write(&*self.store, |w| {
                    w.hand_out_key_package(&claimer, one_time, now_s, threshold)
                })?
            }
        };
        let last_resort = out.package.last_resort;
        let key_package = out.package.bytes;
        if self.claims.answered.len() >= ANSWERS_KEPT {
            self.claims.answered.pop_front();
        }
        self.claims.answered.push_back((claim.clone(), key_package.clone()));
        self.send_control(Control::KeyPackageGrant { claim, key_package }, now)?;
        self.emit(Event::KeyPackageServed { last_resort });
        if let Some(low) = out.low {
            self.emit(Event::LowKeyPackages {
                available: low.available,
                threshold: low.threshold,
            });
        }
        Ok(())
    }

    /// The peer's answer to a claim of ours: checked, then stored.
    pub(super) fn on_grant(&mut self, claim: String, key_package: &[u8], now: Now) -> Step {
        if self.claims.pending.remove(&claim).is_none() {
            // Late, or sent again after we had the answer.
            tracing::debug!(peer = %self.peer_hex, claim, "KeyPackage grant for no claim in flight");
            return Ok(());
        }
        let Some(peer) = self.session.as_ref().map(|s| s.peer) else {
            return Ok(());
        };
        let received = self.accept_key_package(peer, key_package, Keep::Stored, now)?;
        match received {
            Ok(p) => self.emit(Event::KeyPackageClaimed {
                claim,
                package: ClaimedKeyPackage {
                    installation: p.installation_id,
                    key_ref: p.key_package.key_ref,
                    last_resort: p.key_package.last_resort,
                    not_after_s: p.key_package.not_after_s,
                },
            }),
            Err(e) => {
                let reason = e.to_string();
                self.refuse(Refusal::BadKeyPackage, &reason, Some(PduType::Message), None, now);
                self.emit(Event::KeyPackageClaimFailed { claim, reason });
            }
        }
        Ok(())
    }

    /// Checks a KeyPackage of `peer` in one transaction (signature,
    /// credential bound to `peer`, ciphersuite, lifetime, extensions, an
    /// `init_key` the peer never used before, unless it is the same last
    /// resort) and keeps it as `keep` says. The inner `Err` is the peer's
    /// fault ([`StoreError::KeyPackageRejected`] or
    /// [`StoreError::KeyPackageReused`]) and wrote nothing; the outer one
    /// is local.
    pub(super) fn accept_key_package(
        &mut self,
        peer: PeerIdentity,
        bytes: &[u8],
        keep: Keep,
        now: Now,
    ) -> Step<Result<PeerKeyPackage, StoreError>> {
        let now_s = now.unix_ms / 1000;
        Ok(durable::write(&*self.store, |w| {
            let checked = match keep {
                Keep::UsedNow => w.use_peer_key_package(&peer, bytes, now_s),
                Keep::Stored => w.receive_peer_key_package(&peer, bytes, now_s),
            };
            Ok(match checked {
                Ok(p) => Ok(p),
                Err(e @ (StoreError::KeyPackageRejected { .. } | StoreError::KeyPackageReused)) => Err(e),
                Err(e) => return Err(e),
            })
        })?)
    }
}
