//! BisonRelay's out-of-band key exchange (issue #19), sans-I/O: invites,
//! the half and full KX over rendezvous points, and what a completed
//! exchange leaves behind. Its cryptography is `strata_cascade::kx`, its
//! messages `strata_proto::kx`.
//!
//! ```text
//!  inviter                                                    invitee
//!  KxBook::invite ── invite, out of band (URI, QR) ─────────► KxBook::accept
//!  waits on the invite's initial RV     ◄── half KX, sealed to the inviter's KEM key, on that RV
//!  checks it, completes, pins the invitee ── full KX, sealed to the invitee's KEM key, on its RV ──►
//!                                                             completes, pins the inviter, opens
//!                                                             the Strata handshake to it
//! ```
//!
//! - **Rendezvous points** travel as gossip content topics,
//!   `/strata/1/rv-<hex>/proto` ([`rendezvous_topic`]): the book asks for a
//!   subscription while something waits at a point and drops it when
//!   nothing does ([`KxOutput`]). A relay sees random-looking topics and
//!   sealed bytes; it learns neither who talks nor that they are Strata
//!   accounts, beyond timing and sizes.
//! - **Single use.** An invite is answered once: the first half KX that
//!   checks out uses it. The same half again (its answer was lost) gets the
//!   same full KX again; any other half is refused ([`KxRefusal::Used`]).
//!   A used invite stays for those repeats until its expiry, at most
//!   [`REPEATS_ANSWERED`], then goes.
//! - **Retries.** The invitee publishes its half again, sealed anew, until
//!   the full KX arrives: after [`HALF_RETRY`], doubling up to
//!   [`MAX_HALF_RETRY`], until the invite expires.
//! - **Trust.** A completed exchange pins the peer's account key for its
//!   installation, *verified by invite* (`Writer::pin_invited`), in the
//!   same transaction that records the exchange: the Strata handshake that
//!   follows meets an expected key, with no first-use window. An
//!   installation already pinned to another key refuses the exchange
//!   ([`KxRefusal::InstallationClaimed`]).
//! - **What the KX's secret is for.** Strata's handshake derives the
//!   session's keys; the KX proves that each side holds the KEM key its
//!   signed identity names and carries the addresses and reset points.
//! - **Reset** (BisonRelay's ratchet reset). Each side of a completed
//!   exchange waits on its own reset point for as long as it knows the
//!   peer. [`KxBook::reset`] makes a fresh invite, seals it to the peer's
//!   KEM key and publishes it on the peer's reset point; the peer checks
//!   that the invite is signed by the account it met and accepts it as any
//!   invite, and the exchange runs again with new points
//!   ([`KxCompleted::reset`]). The node resets on its own at start for
//!   every peer met this way whose session it no longer holds
//!   ([`KxBook::reset_lost`]): the Strata handshake then runs again with
//!   the key pinned by the exchange, not on first use.
//! - **Introductions** (BisonRelay's transitive auto-KX): a mediator
//!   passes a request to meet someone, and that someone's invite — sealed
//!   to the asker, answerable only by its account — back; see
//!   `introductions.rs` for the flow, the checks and the rule that settles
//!   crossed introductions.
//! - **Bounds.** At most [`MAX_OPEN_INVITES`] open invites and
//!   [`MAX_PENDING`] answers awaiting a full KX, of which introductions
//!   (which contacts start) take at most [`MAX_INTRODUCTIONS`] each; an
//!   answer waits at most [`MAX_INVITE_TTL`] (an introduction's an hour)
//!   whatever expiry its invite claims; a frame over
//!   [`MAX_SEALED_BYTES`] is refused before it is opened, and an `RMO` over
//!   16 KiB before it is parsed. Refused input changes nothing.
//! - **Persistence.** Every step writes its records before its outputs
//!   leave, in the store's `kx` table: `keypair`, `invite/<rv>`,
//!   `accept/<rv>`, `peer/<installation>` and `asked/<installation>`
//!   (introductions asked for).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use strata_cascade::kx::{
    KxKeyPair, KxSelf, MAX_SEALED_BYTES, VerifiedInvite, make_half_kx, make_invite, open, seal, verify_invite,
};
use strata_cascade::{InstallationId, InstallationIdentity};
use strata_proto::kx::{ID_BYTES, Invite, KEM_PUBLIC_KEY_BYTES, Rmo};
use strata_transport::Topic;

use crate::durable::{self, Durable};
use crate::error::SessionError;

mod exchange;
mod introductions;
mod records;
mod reset;

pub use introductions::{INTRODUCTION_TTL, MAX_ASKED, MEDIATION_TTL};

pub use records::KxPeer;
use records::{OpenInvite, Pending};

/// How long an invite holds unless told otherwise.
pub const INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest an invite may hold.
pub const MAX_INVITE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a reset invite holds.
pub const RESET_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most invites open at once.
pub const MAX_OPEN_INVITES: usize = 64;
/// Most accepted invites awaiting their full KX at once.
pub const MAX_PENDING: usize = 64;
/// Most of [`MAX_OPEN_INVITES`] and of [`MAX_PENDING`] that introductions
/// may take: contacts start those, and must not crowd out the user's own.
pub const MAX_INTRODUCTIONS: usize = 16;
/// How long a used invite stays to answer repeats of the half that used
/// it (its full KX was lost).
pub const REPEATS_ANSWERED: Duration = Duration::from_secs(24 * 3600);
/// When an unanswered half KX is first published again.
pub const HALF_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two publications of a half KX.
pub const MAX_HALF_RETRY: Duration = Duration::from_secs(120);

const KEY_PAIR: &str = "keypair";
const INVITE: &str = "invite/";
const ACCEPT: &str = "accept/";
const PEER: &str = "peer/";
const ASKED: &str = "asked/";
const TOPIC_PREFIX: &str = "/strata/1/rv-";
const TOPIC_SUFFIX: &str = "/proto";

/// The content topic of rendezvous point `rv`.
pub fn rendezvous_topic(rv: &[u8; ID_BYTES]) -> Topic {
    Topic::new(format!("{TOPIC_PREFIX}{}{TOPIC_SUFFIX}", hex::encode(rv)))
}

/// The rendezvous point a topic names, if it is one.
pub fn topic_rendezvous(topic: &Topic) -> Option<[u8; ID_BYTES]> {
    let hex = topic.as_str().strip_prefix(TOPIC_PREFIX)?.strip_suffix(TOPIC_SUFFIX)?;
    let mut rv = [0u8; ID_BYTES];
    hex::decode_to_slice(hex, &mut rv).ok()?;
    Some(rv)
}

pub use crate::error::KxRefusal;

/// What the book asks of its owner, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KxOutput {
    /// Receive what is published on this topic.
    Subscribe(Topic),
    /// Stop receiving it.
    Unsubscribe(Topic),
    /// Publish `frame` on `topic`.
    Publish {
        /// A rendezvous topic.
        topic: Topic,
        /// A sealed `RMO`.
        frame: Bytes,
    },
    /// An exchange completed: the peer is pinned, verified by invite.
    Completed(KxCompleted),
}

/// A completed exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KxCompleted {
    /// The peer's account identity key (serialized).
    pub identity_key: Vec<u8>,
    /// The peer's installation, where the Strata handshake runs.
    pub installation: InstallationId,
    /// The name it gave.
    pub name: String,
    /// This side accepted the invite: it opens the Strata handshake (the
    /// inviter learns the exchange completed only from that).
    pub accepted: bool,
    /// It replaced an earlier exchange with this installation (a reset).
    pub reset: bool,
}

/// The inviter and where it is reached, once an invite checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedInvite {
    /// The inviter's account identity key (serialized).
    pub identity_key: Vec<u8>,
    /// Its installation.
    pub installation: InstallationId,
    /// The name it gave.
    pub name: String,
}

/// This account's key exchanges: its KX key pair, its open invites, the
/// invites it accepted, and the peers it met that way.
pub struct KxBook {
    store: Arc<dyn Durable + Send + Sync>,
    local: Arc<InstallationIdentity>,
    kem: KxKeyPair,
    invites: BTreeMap<[u8; ID_BYTES], OpenInvite>,
    pending: BTreeMap<[u8; ID_BYTES], Pending>,
    /// This side's reset points, by the peer each is for.
    resets: BTreeMap<[u8; ID_BYTES], InstallationId>,
    rng: ChaCha20Rng,
    outputs: VecDeque<KxOutput>,
}

impl std::fmt::Debug for KxBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KxBook")
            .field("invites", &self.invites.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl KxBook {
    /// The book of `local`'s account, from the store (its KX key pair made
    /// and stored on first use). Asks for a
    /// subscription to every point something waits on, and forgets what
    /// expired while the node was down.
    pub fn load(
        store: Arc<dyn Durable + Send + Sync>,
        local: Arc<InstallationIdentity>,
        seed: [u8; 32],
        now_ms: u64,
    ) -> Result<Self, SessionError> {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let stored = durable::read(&*store, |r| r.kx(KEY_PAIR))?;
        let kem = match stored {
            Some(bytes) => KxKeyPair::import(&bytes)?,
            None => {
                let kem = KxKeyPair::generate(&mut rng);
                let bytes = kem.export();
                durable::write(&*store, |w| w.set_kx(KEY_PAIR, bytes.as_bytes()))?;
                kem
            }
        };
        let (invites, pending) = durable::read(&*store, |r| Ok((r.kx_entries(INVITE)?, r.kx_entries(ACCEPT)?)))?;
        let mut book = Self {
            store,
            local,
            kem,
            invites: BTreeMap::new(),
            pending: BTreeMap::new(),
            resets: BTreeMap::new(),
            rng,
            outputs: VecDeque::new(),
        };
        for (key, bytes) in invites {
            match (rv_of(&key, INVITE), serde_json::from_slice::<OpenInvite>(&bytes)) {
                (Some(rv), Ok(invite)) => {
                    book.invites.insert(rv, invite);
                }
                _ => tracing::warn!(%key, "an unreadable stored invite ignored"),
            }
        }
        for (key, bytes) in pending {
            match (rv_of(&key, ACCEPT), serde_json::from_slice::<Pending>(&bytes)) {
                (Some(rv), Ok(mut p)) => {
                    p.retry_at_ms = now_ms;
                    p.backoff_ms = duration_ms(HALF_RETRY);
                    book.pending.insert(rv, p);
                }
                _ => tracing::warn!(%key, "an unreadable stored exchange ignored"),
            }
        }
        for (installation, peer) in book.peers()? {
            book.resets.insert(peer.my_reset, installation);
        }
        for rv in book.invites.keys().chain(book.pending.keys()).chain(book.resets.keys()) {
            book.outputs.push_back(KxOutput::Subscribe(rendezvous_topic(rv)));
        }
        book.tick(now_ms)?;
        Ok(book)
    }

    /// A new invite showing `name`, valid for `ttl` (at most
    /// [`MAX_INVITE_TTL`]); its initial rendezvous point is subscribed.
    pub fn invite(&mut self, name: &str, ttl: Duration, now_ms: u64) -> Result<Invite, SessionError> {
        self.tick(now_ms)?;
        let expires = now_ms / 1000 + ttl.min(MAX_INVITE_TTL).as_secs();
        self.new_invite(name, expires, None, None)
    }

    /// Makes an invite of this account valid until `expires` (Unix
    /// seconds), for anyone or only for the peer or account named, stores
    /// it and waits on its initial point.
    fn new_invite(
        &mut self,
        name: &str,
        expires: u64,
        for_peer: Option<String>,
        for_account: Option<Vec<u8>>,
    ) -> Result<Invite, SessionError> {
        // Used invites stay a day for repeats; only unused ones count.
        let open = self.invites.values().filter(|i| i.used.is_none());
        let (all, introductions) = open.fold((0, 0), |(n, i), o| (n + 1, i + usize::from(o.for_account.is_some())));
        if all >= MAX_OPEN_INVITES || (for_account.is_some() && introductions >= MAX_INTRODUCTIONS) {
            return Err(KxRefusal::TooMany.into());
        }
        let invite = make_invite(me(&self.local, &self.kem, name), expires, &mut self.rng)?;
        let open = OpenInvite {
            reset: invite.reset_rendezvous,
            expires,
            for_peer,
            for_account,
            used: None,
        };
        let key = rv_key(INVITE, &invite.initial_rendezvous);
        let bytes = to_json(&open)?;
        durable::write(&*self.store, |w| w.set_kx(&key, &bytes))?;
        self.invites.insert(invite.initial_rendezvous, open);
        self.outputs
            .push_back(KxOutput::Subscribe(rendezvous_topic(&invite.initial_rendezvous)));
        Ok(invite)
    }

    /// Accepts `invite`, showing `name`: checks it, then publishes the half
    /// KX to its initial rendezvous point (and again until answered) and
    /// waits for the full KX. Accepting an invite already under way changes
    /// nothing.
    pub fn accept(&mut self, invite: &Invite, name: &str, now_ms: u64) -> Result<AcceptedInvite, SessionError> {
        self.tick(now_ms)?;
        let verified = verify_invite(invite, now_ms / 1000).map_err(KxRefusal::from)?;
        self.accept_verified(&verified, name, Accepting::Invite, now_ms)
    }

    /// Accepts an invite that checked out, come as `how` says. Waits for
    /// its full KX until its expiry, at most [`MAX_INVITE_TTL`] (an
    /// introduction's [`INTRODUCTION_TTL`]) from now.
    fn accept_verified(
        &mut self,
        verified: &VerifiedInvite,
        name: &str,
        how: Accepting,
        now_ms: u64,
    ) -> Result<AcceptedInvite, SessionError> {
        let identity_key = verified.inviter.identity_key.serialize().to_vec();
        let accepted = AcceptedInvite {
            identity_key: identity_key.clone(),
            installation: verified.installation,
            name: verified.inviter.name.clone(),
        };
        if identity_key == self.account_key() {
            return Err(KxRefusal::SelfAddressed.into());
        }
        if self
            .pending
            .values()
            .any(|p| p.invite_rv == verified.initial_rendezvous)
        {
            return Ok(accepted);
        }
        if self
            .peers()?
            .iter()
            .any(|(_, p)| p.invite_rv == verified.initial_rendezvous)
        {
            return Err(KxRefusal::AlreadyAccepted.into());
        }
        let introductions = self.pending.values().filter(|p| p.introduction).count();
        if self.pending.len() >= MAX_PENDING || (how == Accepting::Introduction && introductions >= MAX_INTRODUCTIONS) {
            return Err(KxRefusal::TooMany.into());
        }
        let longest = match how {
            Accepting::Introduction => INTRODUCTION_TTL,
            Accepting::Invite | Accepting::Reset => MAX_INVITE_TTL,
        };
        let (half, secret) = make_half_kx(me(&self.local, &self.kem, name), verified, &mut self.rng)?;
        let rmo = Rmo::HalfKx(Box::new(half.clone())).compose(now_ms / 1000);
        let pending = Pending {
            invite_rv: verified.initial_rendezvous,
            identity_key,
            installation: verified.installation.to_hex(),
            name: verified.inviter.name.clone(),
            their_kem: verified.inviter.kem_key.to_vec(),
            their_reset: verified.reset_rendezvous,
            my_reset: half.reset_rendezvous,
            secret: secret.export().as_bytes().to_vec(),
            half: rmo,
            expires: verified.expires.min(now_ms / 1000 + longest.as_secs()),
            reset: how == Accepting::Reset,
            introduction: how == Accepting::Introduction,
            retry_at_ms: now_ms,
            backoff_ms: duration_ms(HALF_RETRY),
        };
        let key = rv_key(ACCEPT, &half.initial_rendezvous);
        let bytes = to_json(&pending)?;
        durable::write(&*self.store, |w| w.set_kx(&key, &bytes))?;
        self.pending.insert(half.initial_rendezvous, pending);
        self.outputs
            .push_back(KxOutput::Subscribe(rendezvous_topic(&half.initial_rendezvous)));
        // `tick` publishes the half now, and again until answered.
        self.tick(now_ms)?;
        Ok(accepted)
    }

    /// A frame published on rendezvous point `rv`. A refusal changes
    /// nothing (a storage failure is a [`SessionError::Storage`]).
    pub fn on_frame(&mut self, rv: &[u8; ID_BYTES], frame: &[u8], now_ms: u64) -> Result<(), SessionError> {
        if frame.len() > MAX_SEALED_BYTES {
            return Err(KxRefusal::Oversized(frame.len()).into());
        }
        if self.invites.contains_key(rv) {
            self.on_half(rv, frame, now_ms)
        } else if self.pending.contains_key(rv) {
            self.on_full(rv, frame, now_ms)
        } else if let Some(installation) = self.resets.get(rv).copied() {
            self.on_reset(installation, frame, now_ms)
        } else {
            Err(KxRefusal::Unknown.into())
        }
    }

    /// Publishes unanswered halves again and forgets what expired. Call it
    /// at [`KxBook::next_deadline`].
    pub fn tick(&mut self, now_ms: u64) -> Result<(), SessionError> {
        self.forget_stale_asks(now_ms)?;
        let now_s = now_ms / 1000;
        let lapsed: Vec<[u8; ID_BYTES]> = self
            .invites
            .iter()
            .filter(|(_, i)| now_s > i.expires)
            .map(|(rv, _)| *rv)
            .collect();
        for rv in lapsed {
            self.forget_invite(&rv)?;
        }
        let lapsed: Vec<[u8; ID_BYTES]> = self
            .pending
            .iter()
            .filter(|(_, p)| now_s > p.expires)
            .map(|(rv, _)| *rv)
            .collect();
        for rv in lapsed {
            tracing::info!("an accepted invite expired before the inviter answered");
            self.forget_pending(&rv)?;
        }
        let due: Vec<[u8; ID_BYTES]> = self
            .pending
            .iter()
            .filter(|(_, p)| p.retry_at_ms <= now_ms)
            .map(|(rv, _)| *rv)
            .collect();
        for rv in due {
            let Some(p) = self.pending.get_mut(&rv) else { continue };
            let their_kem = kem_key(&p.their_kem)?;
            let target = p.invite_rv;
            p.retry_at_ms = now_ms.saturating_add(p.backoff_ms);
            p.backoff_ms = p.backoff_ms.saturating_mul(2).min(duration_ms(MAX_HALF_RETRY));
            let half = p.half.clone();
            let sealed = seal(&their_kem, &half, &mut self.rng)?;
            self.publish(&target, sealed);
        }
        Ok(())
    }

    /// When [`KxBook::tick`] has something to do, Unix milliseconds.
    pub fn next_deadline(&self) -> Option<u64> {
        let retries = self.pending.values().map(|p| p.retry_at_ms);
        let expiries = self
            .invites
            .values()
            .map(|i| i.expires)
            .chain(self.pending.values().map(|p| p.expires))
            .map(|s| s.saturating_add(1).saturating_mul(1000));
        retries.chain(expiries).min()
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<KxOutput> {
        self.outputs.pop_front()
    }

    /// Open invites and exchanges under way.
    pub fn open_counts(&self) -> (usize, usize) {
        (self.invites.len(), self.pending.len())
    }

    /// The peers met through a completed exchange, by installation.
    pub fn peers(&self) -> Result<Vec<(InstallationId, KxPeer)>, SessionError> {
        let entries = durable::read(&*self.store, |r| r.kx_entries(PEER))?;
        Ok(entries
            .into_iter()
            .filter_map(|(key, bytes)| {
                let id = key.strip_prefix(PEER)?.parse().ok()?;
                Some((id, serde_json::from_slice(&bytes).ok()?))
            })
            .collect())
    }

    fn account_key(&self) -> Vec<u8> {
        self.local.account().identity_key().serialize().to_vec()
    }

    fn open(&self, frame: &[u8]) -> Result<Rmo, SessionError> {
        let rmo = open(&self.kem, frame).map_err(KxRefusal::from)?;
        let (_, rmo) = Rmo::decompose(&rmo).map_err(KxRefusal::from)?;
        Ok(rmo)
    }

    fn publish(&mut self, rv: &[u8; ID_BYTES], sealed: Vec<u8>) {
        self.outputs.push_back(KxOutput::Publish {
            topic: rendezvous_topic(rv),
            frame: Bytes::from(sealed),
        });
    }

    fn forget_invite(&mut self, rv: &[u8; ID_BYTES]) -> Result<(), SessionError> {
        let key = rv_key(INVITE, rv);
        durable::write(&*self.store, |w| w.delete_kx(&key))?;
        self.invites.remove(rv);
        self.outputs.push_back(KxOutput::Unsubscribe(rendezvous_topic(rv)));
        Ok(())
    }

    fn forget_pending(&mut self, rv: &[u8; ID_BYTES]) -> Result<(), SessionError> {
        let key = rv_key(ACCEPT, rv);
        durable::write(&*self.store, |w| w.delete_kx(&key))?;
        self.pending.remove(rv);
        self.outputs.push_back(KxOutput::Unsubscribe(rendezvous_topic(rv)));
        Ok(())
    }
}

/// How an invite came to be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accepting {
    /// Handed over out of band (`strata accept`).
    Invite,
    /// On a reset point, from a peer met before.
    Reset,
    /// Forwarded by a mediator, asked for.
    Introduction,
}

/// This side as the cryptography names it, showing `name`.
fn me<'a>(local: &'a InstallationIdentity, kem: &'a KxKeyPair, name: &'a str) -> KxSelf<'a> {
    KxSelf {
        account: local.account(),
        kem,
        name,
        installation: local.installation_id(),
    }
}

/// The store key of a row under `prefix` named by rendezvous point `rv`.
fn rv_key(prefix: &str, rv: &[u8; ID_BYTES]) -> String {
    format!("{prefix}{}", hex::encode(rv))
}

fn rv_of(key: &str, prefix: &str) -> Option<[u8; ID_BYTES]> {
    let mut rv = [0u8; ID_BYTES];
    hex::decode_to_slice(key.strip_prefix(prefix)?, &mut rv).ok()?;
    Some(rv)
}

fn kem_key(bytes: &[u8]) -> Result<[u8; KEM_PUBLIC_KEY_BYTES], SessionError> {
    bytes
        .try_into()
        .map_err(|_| SessionError::Internal("a stored KEM key of the wrong size".into()))
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, SessionError> {
    serde_json::to_vec(value).map_err(|e| SessionError::Internal(format!("KX record: {e}")))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
