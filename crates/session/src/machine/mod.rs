//! The pair machine: the sans-I/O session machine, one per remote
//! installation.
//!
//! ```text
//! handle(Input, Now)  ──►  poll_output() → Transmit(frame) | Event(..)
//!                     ──►  poll_timeout() → when to call handle(Timeout)
//! ```
//!
//! Time comes in with every call ([`Now`]); randomness from the machine's
//! own ChaCha20 generator, seeded by the caller; storage through
//! [`Durable`], synchronously, so the atomicity rules hold inside one step.
//! The machine never reads a clock, never touches a socket and never
//! panics on peer input: a bad PDU is answered with a rate-limited
//! `protocol-error` and dropped, with no state change and nothing stored.
//!
//! The protocol it runs is specified in the crate docs. This file holds
//! the public face ([`Input`], [`Output`], [`Event`], [`Command`], ...),
//! the machine's state and its entry points; the rest of [`PeerMachine`] is
//! one `impl` block per concern:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `handshake.rs` | the P3 handshake, steps 1–11, full or from a bundle, up to the session it establishes |
//! | `attempt.rs` | a handshake in progress (`Attempt`): which PDU belongs to it, duplicates, strays |
//! | `peer.rs` | the peer installation: binding and loading it, saving its session, TOFU and identity checks |
//! | `resume.rs` | resuming a stored session: probes and answers |
//! | `outgoing.rs` | traffic out: the outbox (`Tracked`), encrypted bursts, acknowledgements |
//! | `incoming.rs` | traffic in: frames dispatched, chunks, decryption, the commit, the peer's errors |
//! | `rotation.rs` | ML-KEM key rotation and MLS self-updates, ours and the peer's |
//! | `retransmission.rs` | timers and the link: retransmission (`Retx`), stalls, retries |
//! | `claims.rs` | KeyPackage claims over the session: ours, and the peer's served from the pool |
//! | `ratelimit.rs` | token buckets: `protocol-error` replies, the peer's claims (`RateLimit`) |
//!
//! How a session is persisted (its record, restoring it, pinning a first
//! contact's key in the same transaction) is [`crate::durable`].

mod attempt;
mod claims;
mod durable;
mod handshake;
mod incoming;
mod outgoing;
mod peer;
mod ratelimit;
mod resume;
mod retransmission;
mod rotation;
mod twins;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use strata_cascade::{
    InstallationId, InstallationIdentity, MlsLayer, PairCascade, PeerIdentity, bundle::VerifiedBundle,
};
use strata_proto::{ErrorCode, Id, Pdu, PduType, ProtocolError, Reassembler, Text};

use self::attempt::Attempt;
use self::claims::Claims;
pub use self::claims::{ANSWERS_KEPT, ClaimedKeyPackage, MAX_PENDING_CLAIMS};
pub(crate) use self::durable::SessionRecord;
use self::incoming::Decrypted;
use self::outgoing::Tracked;
use self::ratelimit::RateLimit;
pub(crate) use self::retransmission::Retx;
use self::retransmission::RoundTrip;
pub use self::twins::TieBreak;
use crate::config::Config;
use crate::content::Content;
use crate::durable::Durable;
use crate::error::SessionError;

/// The cipher layers Strata runs, in encrypt order (P1.3 `cipherLayers`).
pub const CIPHER_LAYERS: [&str; 4] = ["MLS", "Signal", "ML-KEM", "AES"];

/// The current time, passed into every step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for timers.
    pub at: Instant,
    /// Wall-clock time, Unix milliseconds, for timestamps in PDUs and the
    /// cascade.
    pub unix_ms: u64,
}

/// Which side opened a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent step 1.
    Initiator,
    /// Answered step 1.
    Responder,
}

impl Role {
    /// A stable name, for APIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Initiator => "initiator",
            Self::Responder => "responder",
        }
    }
}

/// What happens to a machine.
#[derive(Debug)]
pub enum Input<'a> {
    /// The transport link to the peer is open.
    Connected,
    /// The transport link to the peer closed.
    Disconnected,
    /// A frame from the peer.
    Frame(&'a [u8]),
    /// A request of the local user.
    Command(Command),
    /// The time from [`PeerMachine::poll_timeout`] has come.
    Timeout,
}

/// Requests of the local user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Establish (or resume) a session as soon as the link is up.
    Open,
    /// [`Command::Open`], with the account identity key the peer must
    /// present (from a contact URI, which names the account: no TOFU
    /// window). A handshake presenting another key is refused before
    /// anything is pinned or stored ([`Event::IdentityMismatch`]); a
    /// session or contact already pinned to another key fails the command
    /// with [`SessionError::IdentityMismatch`].
    OpenExpecting {
        /// The serialized identity key (as steps 1 and 2 carry it).
        identity_key: Vec<u8>,
    },
    /// Send `content`; answered by [`Event::Queued`] with its message id.
    Send(Content),
    /// Accept the peer's changed identity key (after [`Event::IdentityChanged`]).
    AcceptIdentity,
    /// Start a new ML-KEM/AES epoch now.
    RotateKeys,
    /// Commit an MLS self-update now.
    UpdateMls,
    /// Claim one KeyPackage of the peer over the established session;
    /// answered by [`Event::KeyPackageClaimed`] or
    /// [`Event::KeyPackageClaimFailed`] naming `claim`. Fails at once
    /// without a session (see `claims.rs` for the rules).
    ClaimKeyPackage {
        /// Names the claim in its answer: 1 to 64 bytes, unique among the
        /// claims in flight to this peer.
        claim: String,
    },
}

/// Why a session was replaced by a new handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetReason {
    /// The peer no longer holds the session (it lost its state).
    PeerLostState,
    /// The peer opened a new handshake while a session existed.
    PeerRestarted,
    /// The user accepted a new identity key; the old session is void.
    IdentityAccepted,
    /// The peer answered our resume probe with a proof that does not match
    /// our state: it holds another state for this session.
    StateMismatch,
    /// The peer published a newer bundle; we opened a new session from it
    /// (54/WAKU2-X3DH-SESSIONS re-keying).
    Rekeyed,
}

impl ResetReason {
    /// A stable name, for APIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PeerLostState => "peer-lost-state",
            Self::PeerRestarted => "peer-restarted",
            Self::IdentityAccepted => "identity-accepted",
            Self::StateMismatch => "state-mismatch",
            Self::Rekeyed => "rekeyed",
        }
    }
}

/// A failure class of input refused by the machine, for observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a PDU, or a field was wrong.
    Malformed,
    /// Over a size or count cap.
    TooLarge,
    /// An unknown `type`.
    UnknownType,
    /// Valid, but not in this state.
    Unexpected,
    /// A layer failed to decrypt or authenticate.
    Undecryptable,
    /// From an installation whose identity key changed.
    IdentityBlocked,
    /// An identity key other than the one the user expects at this address
    /// (see [`Command::OpenExpecting`]).
    UnexpectedIdentity,
    /// A KeyPackage that failed its check, or repeats an `init_key` the
    /// peer used before.
    BadKeyPackage,
}

impl Refusal {
    /// A stable name, for APIs and logs: the wire's own name where the
    /// class is a `protocol-error` code of its own.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed | Self::TooLarge | Self::UnknownType | Self::Unexpected => self.code().as_str(),
            Self::Undecryptable => "undecryptable",
            Self::IdentityBlocked => "identity-blocked",
            Self::UnexpectedIdentity => "unexpected-identity",
            Self::BadKeyPackage => "bad-key-package",
        }
    }

    /// The `protocol-error` code the peer is told.
    pub const fn code(self) -> ErrorCode {
        match self {
            Self::Malformed | Self::BadKeyPackage => ErrorCode::Malformed,
            Self::TooLarge => ErrorCode::TooLarge,
            Self::UnknownType => ErrorCode::UnknownType,
            Self::Unexpected | Self::UnexpectedIdentity => ErrorCode::Unexpected,
            Self::Undecryptable => ErrorCode::DecryptFailed,
            Self::IdentityBlocked => ErrorCode::IdentityChanged,
        }
    }
}

/// What a machine tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A handshake began.
    HandshakeStarted {
        /// Its session id.
        session_id: [u8; 16],
        /// Our role in it.
        role: Role,
        /// Opened from the responder's bundle (one round trip).
        from_bundle: bool,
    },
    /// P3.3 `encryptionReady`: every layer is initialised and the peer is
    /// in the encrypted set; messages flow.
    EncryptionReady {
        /// The peer installation, hex.
        installation: String,
        /// The session id.
        session_id: [u8; 16],
        /// True when a stored session was resumed without a handshake.
        resumed: bool,
    },
    /// The session stopped being ready (link down, replacement handshake).
    NotReady,
    /// A handshake did not finish within the stall time and was abandoned;
    /// the initiator retries with backoff.
    HandshakeStalled {
        /// The abandoned session id.
        session_id: [u8; 16],
    },
    /// A handshake failed for good (e.g. the peer runs other layers).
    HandshakeFailed {
        /// Why.
        reason: String,
    },
    /// The session was or will be replaced by a full handshake.
    SessionReset {
        /// Why.
        reason: ResetReason,
    },
    /// The peer presented an identity key other than the pinned one. Nothing
    /// is sent to it until [`Command::AcceptIdentity`].
    IdentityChanged {
        /// The peer installation, hex.
        installation: String,
    },
    /// The peer presented an identity key other than the one the user
    /// expects (a contact URI's account key, [`Command::OpenExpecting`]):
    /// the handshake was refused, nothing was pinned or stored, and the
    /// session is not opened again until asked. Someone else may hold the
    /// address.
    IdentityMismatch {
        /// The installation the peer claimed, hex.
        installation: String,
    },
    /// A different installation now answers at this peer's address.
    InstallationChanged {
        /// The previous installation, hex.
        old: String,
        /// The new one, hex.
        new: String,
    },
    /// A message of ours is in the outbox.
    Queued {
        /// Its id.
        message_id: String,
    },
    /// The peer acknowledged a message: it is in its inbox.
    Delivered {
        /// Its id.
        message_id: String,
    },
    /// A message from the peer, committed to the inbox.
    Received {
        /// The sender's message id.
        message_id: String,
        /// The sender's sequence number.
        seq: u64,
        /// The payload.
        content: Content,
    },
    /// Keys were rotated.
    Rotated {
        /// Which.
        what: Rotation,
    },
    /// The peer reported an error.
    PeerError {
        /// Its code.
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// We refused a PDU from the peer (and answered, rate permitting).
    Refused {
        /// Why.
        why: Refusal,
    },
    /// A claim from this installation's KeyPackage pool (the handshake's
    /// step 2) left fewer one-time packages than
    /// [`PoolConfig::refill_below`](crate::PoolConfig::refill_below): the
    /// owner refills it ([`crate::keep_stocked`]; the node does).
    LowKeyPackages {
        /// One-time packages left.
        available: u64,
        /// The threshold that was crossed.
        threshold: u64,
    },
    /// We handed a package of our pool to the peer's claim.
    KeyPackageServed {
        /// The last resort, because the one-time stock was gone or the peer
        /// was over its allowance.
        last_resort: bool,
    },
    /// A KeyPackage of the peer we claimed ([`Command::ClaimKeyPackage`])
    /// passed its checks and is stored until used or expired.
    KeyPackageClaimed {
        /// The claim's id.
        claim: String,
        /// What was stored.
        package: ClaimedKeyPackage,
    },
    /// A claim of ours failed: no answer in time, or the peer's package
    /// failed its checks (then refused with a `protocol-error`).
    KeyPackageClaimFailed {
        /// The claim's id.
        claim: String,
        /// Why.
        reason: String,
    },
}

/// Which keys a rotation renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rotation {
    /// Our ML-KEM receive key (a new ML-KEM/AES epoch), announced by broadcast.
    KemKey,
    /// The peer's ML-KEM key, installed from its broadcast.
    PeerKemKey,
    /// An MLS self-update we committed.
    MlsUpdate,
    /// An MLS commit of the peer we processed.
    PeerMlsUpdate,
}

impl Rotation {
    /// A stable name, for APIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::KemKey => "kem-key",
            Self::PeerKemKey => "peer-kem-key",
            Self::MlsUpdate => "mls-update",
            Self::PeerMlsUpdate => "peer-mls-update",
        }
    }
}

/// What a machine holds that only its memory keeps, for an owner deciding
/// which machines it can drop (see [`PeerMachine::footprint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Footprint {
    /// Nothing: no session, no handshake, no messages in or out, and the
    /// user did not ask for a session. Dropping it loses nothing.
    Empty,
    /// Only a handshake the peer started, with nothing stored and no
    /// messages: dropping it costs that peer a new handshake.
    Stranger,
    /// A stored session with its link down and nothing in flight: a machine
    /// built anew for the installation loads it back from the store.
    Resting,
    /// Anything else: work in progress only this machine holds.
    Busy,
}

/// What a machine asks its owner to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this frame (one encoded PDU) to the peer.
    Transmit(Vec<u8>),
    /// Tell the user.
    Event(Event),
}

/// An established session (persisted as a
/// [`SessionRecord`], see `machine/durable.rs`).
pub(crate) struct Session {
    pub(crate) id: [u8; 16],
    pub(crate) initiator: bool,
    pub(crate) peer: PeerIdentity,
    pub(crate) cascade: PairCascade,
    /// The peer is in the encrypted set for the current link.
    pub(crate) confirmed: bool,
    /// Our resume probe and its nonce, until answered.
    pub(crate) probe: Option<(Retx, [u8; 32])>,
    pub(crate) replies: BTreeMap<PduType, Vec<u8>>,
    pub(crate) pending_commit: Option<Retx>,
    pub(crate) pending_rotation: Option<(u32, Retx)>,
    pub(crate) kem_key_acked: u32,
    pub(crate) next_seq: u64,
    pub(crate) last_kem_rotation_ms: u64,
    pub(crate) last_mls_update_ms: u64,
    pub(crate) sent_since_kem: u64,
    pub(crate) sent_since_mls: u64,
    pub(crate) owe_kem_ack: Option<u32>,
    pub(crate) peer_kem_key: u32,
    pub(crate) address: Option<String>,
    /// Set when this node made the session, to settle a twin.
    pub(crate) fresh: Option<twins::Fresh>,
}

impl Session {
    /// The MLS epoch of the session.
    fn mls_epoch(&self) -> u64 {
        self.cascade.mls().epoch().unwrap_or(0)
    }

    /// The MLS group id, `groupId` on the wire.
    fn group_id(&self) -> strata_proto::GroupId {
        group_id_blob(self.cascade.mls())
    }
}

/// The session machine for one remote installation.
pub struct PeerMachine {
    config: Config,
    local: Arc<InstallationIdentity>,
    local_id: InstallationId,
    local_hex: String,
    store: Arc<dyn Durable>,
    rng: ChaCha20Rng,
    peer: Option<InstallationId>,
    peer_hex: String,
    address: Option<String>,
    link_up: bool,
    wants_session: bool,
    blocked: bool,
    /// The peer published a newer bundle: the current session expired,
    /// and the next send opens a new one from this bundle
    /// ([`PeerMachine::expire`]).
    rekey: Option<Box<VerifiedBundle>>,
    /// A first contact's identity key and the time, pinned in the
    /// transaction that saves the session it completed: an attempt that
    /// never proves anything leaves nothing in the store.
    pin: Option<(Vec<u8>, u64)>,
    /// The identity key the user expects the peer to present
    /// ([`Command::OpenExpecting`]); any other is refused.
    expected_identity: Option<Vec<u8>>,
    attempt: Option<Attempt>,
    /// Our own attempt, parked while we answer a start of the peer's
    /// (`make_room_for_theirs`): each PDU goes to the attempt it names, and
    /// both run to the end. Twins are settled by their tie-break values
    /// (`twins`); a forged start never completes.
    rival: Option<Attempt>,
    /// How the last twins were settled.
    tie_break: Option<TieBreak>,
    /// The twin not kept, for a while (`twins`).
    spare: Option<Session>,
    session: Option<Session>,
    abandoned: VecDeque<[u8; 16]>,
    retry_at: Option<Instant>,
    retry_backoff: Duration,
    /// The round trip to the peer, timing the outbox's retransmissions.
    round_trip: RoundTrip,
    outbox: Vec<Tracked>,
    pending_acks: Vec<String>,
    ack_at: Option<Instant>,
    /// Messages decrypted in this step whose effects are not on disk yet
    /// (see [`PeerMachine::handle_frames`]).
    decrypted: Vec<Decrypted>,
    reassembler: Reassembler,
    errors: RateLimit,
    claims: Claims,
    was_ready: bool,
    resumed: bool,
    out: VecDeque<Output>,
}

impl std::fmt::Debug for PeerMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerMachine")
            .field("local", &self.local_hex)
            .field("peer", &self.peer_hex)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

/// The result of a step: `Err` is local (storage, a bug), never the peer's.
type Step<T = ()> = Result<T, SessionError>;

/// `s` as an id field of a PDU, if it fits.
fn id_text(s: &str) -> Option<Id> {
    Text::new(s).ok()
}

impl PeerMachine {
    /// A machine for the peer at `address` (a transport address, kept for
    /// routing after a restart), bound to `peer` if it is known (then its
    /// stored session, outbox and trust state are loaded). `seed` seeds the
    /// machine's random generator: 32 bytes from the OS in production, from
    /// the test's seed in simulations.
    pub fn new(
        config: Config,
        local: Arc<InstallationIdentity>,
        store: Arc<dyn Durable>,
        peer: Option<InstallationId>,
        address: Option<String>,
        seed: [u8; 32],
        now: Now,
    ) -> Result<Self, SessionError> {
        let local_id = local.installation_id();
        let errors = RateLimit::new(config.error_burst, config.error_rate);
        let claims = Claims::new(&config.key_package_pool);
        let retry_backoff = config.handshake_retry;
        let round_trip = RoundTrip::new(config.message_rto);
        let mut m = Self {
            config,
            local_hex: local_id.to_hex(),
            local,
            local_id,
            store,
            rng: ChaCha20Rng::from_seed(seed),
            peer: None,
            peer_hex: String::new(),
            address,
            link_up: false,
            wants_session: false,
            blocked: false,
            rekey: None,
            pin: None,
            expected_identity: None,
            attempt: None,
            rival: None,
            tie_break: None,
            spare: None,
            session: None,
            abandoned: VecDeque::new(),
            retry_at: None,
            retry_backoff,
            round_trip,
            outbox: Vec::new(),
            pending_acks: Vec::new(),
            ack_at: None,
            decrypted: Vec::new(),
            reassembler: Reassembler::new(),
            errors,
            claims,
            was_ready: false,
            resumed: false,
            out: VecDeque::new(),
        };
        if let Some(peer) = peer {
            m.bind(peer, now)?;
        }
        Ok(m)
    }

    /// The peer installation, once known.
    pub fn peer(&self) -> Option<InstallationId> {
        self.peer
    }

    /// Whether P3.3 holds: every layer initialised and the peer in the
    /// encrypted set, on an open link, with no identity change pending.
    pub fn is_ready(&self) -> bool {
        self.link_up
            && !self.blocked
            && self.attempt.as_ref().is_none_or(|a| a.replacing)
            && self.session.as_ref().is_some_and(|s| s.confirmed)
    }

    /// What dropping this machine now would lose (see [`Footprint`]).
    /// Acknowledgements owed, messages decrypted but not yet committed and
    /// an identity change pending keep it [`Footprint::Busy`].
    pub fn footprint(&self) -> Footprint {
        let quiet = self.outbox.is_empty()
            && self.pending_acks.is_empty()
            && self.decrypted.is_empty()
            && self.out.is_empty()
            && self.claims.is_empty()
            && !self.blocked;
        if !quiet {
            return Footprint::Busy;
        }
        match (&self.session, &self.attempt) {
            (None, None) if !self.wants_session => Footprint::Empty,
            (None, Some(a)) if a.role == Role::Responder && !self.wants_session => Footprint::Stranger,
            (Some(_), None) if !self.link_up => Footprint::Resting,
            _ => Footprint::Busy,
        }
    }

    /// Whether an identity change blocks this peer.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The established session's id.
    pub fn session_id(&self) -> Option<[u8; 16]> {
        self.session.as_ref().map(|s| s.id)
    }

    /// Whether a handshake runs (ours, the peer's, or both).
    pub fn handshaking(&self) -> bool {
        self.attempt.is_some() || self.rival.is_some()
    }

    /// Messages in the outbox, acknowledged or not yet.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// The pinned identity of the peer of the established session.
    pub fn peer_identity(&self) -> Option<PeerIdentity> {
        self.session.as_ref().map(|s| s.peer)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Input::Timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        for a in self.attempt.iter().chain(&self.rival) {
            at(a.started + self.config.handshake_stall);
            a.pending.values().for_each(|r| at(r.next));
        }
        if let Some(r) = self.retry_at {
            at(r);
        }
        if let Some(s) = &self.session {
            s.retransmitted().for_each(|r| at(r.next));
        }
        if self.is_ready() {
            self.outbox
                .iter()
                .filter(|t| t.frames.is_some())
                .for_each(|t| at(t.next));
            if let Some(a) = self.ack_at {
                at(a);
            }
        }
        if let Some(d) = self.reassembler.next_deadline() {
            at(d);
        }
        if let Some(c) = self.claims.next_timer(self.is_ready()) {
            at(c);
        }
        t
    }

    /// Runs one step.
    ///
    /// An `Err` is local (storage, a bug): the owner should drop the
    /// machine and rebuild it from the store. Peer input never makes it fail.
    pub fn handle(&mut self, input: Input<'_>, now: Now) -> Step {
        let result = match input {
            Input::Connected => self.on_connected(now),
            Input::Disconnected => {
                self.link_up = false;
                if let Some(s) = &mut self.session {
                    s.confirmed = false;
                }
                Ok(())
            }
            Input::Frame(bytes) => self.on_frame(bytes, now),
            Input::Command(c) => self.on_command(c, now).map(|_| ()),
            Input::Timeout => self.on_timeout(now),
        };
        let result = self.end_of_input(result);
        self.after_step(now)?;
        result
    }

    /// Runs one step over a burst of frames from the peer, in order: as many
    /// [`Input::Frame`] steps, except that the messages of the burst commit
    /// in one transaction, with the cascade state sealed once after the
    /// last of them (group commit). Their acknowledgements, events and
    /// piggybacked acks take effect after that commit, so the rule "no ack
    /// before the inbox write" holds for the whole burst.
    pub fn handle_frames<'f>(&mut self, frames: impl IntoIterator<Item = &'f [u8]>, now: Now) -> Step {
        let mut result = Ok(());
        for frame in frames {
            result = self.on_frame(frame, now);
            if result.is_err() {
                break;
            }
        }
        let result = self.end_of_input(result);
        self.after_step(now)?;
        result
    }

    /// Commits what the input decrypted; on a failed input, forgets it
    /// instead (the owner rebuilds the machine from the store, and the
    /// peer retransmits what was not acknowledged).
    fn end_of_input(&mut self, result: Step) -> Step {
        match result {
            Ok(()) => self.commit_decrypted(),
            Err(e) => {
                self.decrypted.clear();
                Err(e)
            }
        }
    }

    /// Opens a session from the peer's verified broadcast bundle, without
    /// waiting for steps 1–2 and 5–6: the first flight (3 naming the
    /// bundle, 7, 8 and 10) goes at once and the peer's answers (4, 9, 11)
    /// finish the handshake, one round trip instead of three. The bundle's
    /// identity key is pinned (or checked) exactly as step 2's would be.
    /// Does nothing while a session or a handshake exists; a peer that
    /// refuses the bundle (re-keyed since) gets the full handshake.
    pub fn open_from_bundle(&mut self, bundle: &VerifiedBundle, now: Now) -> Step {
        let result = self.start_from_bundle(bundle, now);
        let result = self.end_of_input(result);
        self.after_step(now)?;
        result
    }

    /// Queues `content` for the peer; returns its message id. Equivalent to
    /// `handle(Input::Command(Command::Send(content)))`.
    pub fn send(&mut self, content: Content, now: Now) -> Result<String, SessionError> {
        let id = self.queue(vec![content], now)?.pop();
        self.after_step(now)?;
        id.ok_or_else(|| SessionError::Internal("queued nothing".into()))
    }

    /// Queues a burst of messages for the peer, in order; returns their ids.
    /// The burst is written to the outbox in one transaction and, while
    /// ready, encrypted and committed in one more (the pair state sealed
    /// once for the whole burst rather than once per message), up to
    /// [`Config::window`] at a time.
    pub fn send_all(&mut self, contents: Vec<Content>, now: Now) -> Result<Vec<String>, SessionError> {
        let ids = self.queue(contents, now)?;
        self.after_step(now)?;
        Ok(ids)
    }

    // ---- plumbing ---------------------------------------------------------

    /// Tells the user.
    fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    /// Sends `frame`, if the link is up (what must survive a link down is
    /// retransmitted).
    fn transmit(&mut self, frame: Vec<u8>) {
        if self.link_up {
            self.out.push_back(Output::Transmit(frame));
        }
    }

    /// Sends `pdu`; returns its frame, to keep for retransmission.
    fn transmit_pdu(&mut self, pdu: Pdu) -> Vec<u8> {
        let frame = pdu.encode();
        self.transmit(frame.clone());
        frame
    }

    /// Answers bad input with a rate-limited `protocol-error`.
    fn refuse(&mut self, why: Refusal, reason: &str, ref_type: Option<PduType>, ref_id: Option<&str>, now: Now) {
        tracing::debug!(peer = %self.peer_hex, ?why, reason, "refused a PDU");
        self.emit(Event::Refused { why });
        if !self.errors.allow(now.at) {
            return;
        }
        let code = why.code();
        let reason: String = reason.chars().take(200).collect();
        let pdu = ProtocolError {
            code,
            reason: Text::new(reason).unwrap_or_default(),
            ref_type: ref_type.and_then(|t| id_text(t.as_str())),
            ref_id: ref_id.and_then(id_text),
        };
        self.transmit_pdu(pdu.into());
    }

    /// 16 random bytes: a session or message id.
    fn random_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        id
    }

    /// After every step: readiness transitions, then sending what may go.
    fn after_step(&mut self, now: Now) -> Step {
        let ready = self.is_ready();
        if ready {
            self.announce_ready(now);
        } else if self.was_ready {
            self.was_ready = false;
            self.emit(Event::NotReady);
        }
        if ready {
            self.pump(now)?;
            // Counted in messages sent: due as soon as a burst went out.
            self.rotate_if_due(now)?;
            if self.ack_at.is_some_and(|a| a <= now.at) {
                self.flush_acks(now)?;
            }
            self.claims_due(now)?;
        }
        Ok(())
    }

    // ---- commands -----------------------------------------------------------

    /// A request of the local user; `Some` message id for a
    /// [`Command::Send`].
    fn on_command(&mut self, command: Command, now: Now) -> Result<Option<String>, SessionError> {
        match command {
            Command::Open => {
                self.wants_session = true;
                self.open_if_idle(now)?;
                Ok(None)
            }
            Command::OpenExpecting { identity_key } => {
                self.expect_identity(identity_key)?;
                self.on_command(Command::Open, now)
            }
            Command::Send(content) => Ok(self.queue(vec![content], now)?.pop()),
            Command::AcceptIdentity => {
                self.accept_identity(now)?;
                Ok(None)
            }
            Command::RotateKeys => {
                self.rotate_kem(now)?;
                Ok(None)
            }
            Command::UpdateMls => {
                self.update_mls(now)?;
                Ok(None)
            }
            Command::ClaimKeyPackage { claim } => {
                self.claim_key_package(claim, now)?;
                Ok(None)
            }
        }
    }
}

/// The PDU form of an MLS group id.
fn group_id_blob(mls: &MlsLayer) -> strata_proto::GroupId {
    mls.group_id()
        .and_then(|g| strata_proto::Blob::new(g).ok())
        .unwrap_or_default()
}

/// Draws a seed for [`PeerMachine::new`] from `rng`.
pub fn seed_from<R: Rng>(rng: &mut R) -> [u8; 32] {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    seed
}
