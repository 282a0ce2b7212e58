//! The per-peer session machine: sans-I/O, one per remote installation.
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
//! The protocol it runs is specified in the crate docs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use strata_cascade::{
    AesGcmLayer, CascadeError, InstallationId, InstallationIdentity, InstallationPreKeys, KemKeyPair, KeyPackageKind,
    MlKemLayer, MlsLayer, PairCascade, PeerIdentity, SignalBundle, SignalLayer, SignedKemKey, bundle::VerifiedBundle,
};
use strata_proto::{
    BoundedVec, BundleStart, ChunkError, DecodeError, EncryptedMessage, EncryptionSyncRequest, EncryptionSyncResponse,
    ErrorCode, FixedBytes, Id, KeyPackage, KeyPackageRequest, LayerName, Message, MlKemKeyExchange,
    MlKemKeyExchangeResponse, MlsCommit, MlsWelcome, MlsWelcomeAck, PROFILE_V0, Pdu, PduType, ProtocolError,
    Reassembler, ResumeAnswer, ResumeProbe, ResumeStatus, RotationTimestampBroadcast, SignalKeyExchangeRequest,
    SignalKeyExchangeResponse, SignalSessionComplete, Text,
};
use strata_store::{Accepted, IdentityCheck, IncomingMessage, OutgoingMessage, StoreError, Writer};

use crate::config::Config;
use crate::content::{Body, Content, Control, MAX_ACKS, Plaintext};
use crate::crypto;
use crate::durable::{self, Durable, SessionRecord};
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
}

impl ResetReason {
    /// A stable name, for APIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PeerLostState => "peer-lost-state",
            Self::PeerRestarted => "peer-restarted",
            Self::IdentityAccepted => "identity-accepted",
            Self::StateMismatch => "state-mismatch",
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
}

impl Refusal {
    /// A stable name, for APIs and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too-large",
            Self::UnknownType => "unknown-type",
            Self::Unexpected => "unexpected",
            Self::Undecryptable => "undecryptable",
            Self::IdentityBlocked => "identity-blocked",
            Self::UnexpectedIdentity => "unexpected-identity",
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

/// A frame that is retransmitted until answered.
#[derive(Debug)]
struct Retx {
    frame: Vec<u8>,
    next: Instant,
    rto: Duration,
}

impl Retx {
    fn new(frame: Vec<u8>, now: Instant, rto: Duration) -> Self {
        Self {
            frame,
            next: now + rto,
            rto,
        }
    }
}

/// A handshake in progress.
struct Attempt {
    id: [u8; 16],
    role: Role,
    started: Instant,
    peer: Option<PeerIdentity>,
    mls: Option<MlsLayer>,
    signal: Option<SignalLayer>,
    kem: Option<MlKemLayer>,
    own_kem: Option<SignedKemKey>,
    cascade: Option<PairCascade>,
    sync_ok: bool,
    signal_ok: bool,
    kem_ok: bool,
    mls_ok: bool,
    /// Opened from the responder's bundle (one round trip). For the
    /// initiator, a refused step 3 then falls back to the full handshake.
    from_bundle: bool,
    /// Responder: started while a session was established. The session
    /// carries on until this attempt completes: its start is
    /// unauthenticated (anyone can name a known installation in step 1),
    /// so it must not be able to pause a working session.
    replacing: bool,
    /// Initiator: our requests, by type, until answered.
    pending: BTreeMap<PduType, Retx>,
    /// Responder: our encoded answer, by the request's type.
    replies: BTreeMap<PduType, Vec<u8>>,
}

impl Attempt {
    fn set_layers(&mut self, peer: PeerIdentity, mls: MlsLayer, layers: (SignalLayer, MlKemLayer, SignedKemKey)) {
        let (signal, kem, own_kem) = layers;
        self.peer = Some(peer);
        self.mls = Some(mls);
        self.signal = Some(signal);
        self.kem = Some(kem);
        self.own_kem = Some(own_kem);
    }

    fn new(id: [u8; 16], role: Role, started: Instant) -> Self {
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
            pending: BTreeMap::new(),
            replies: BTreeMap::new(),
        }
    }
}

/// An established session.
struct Session {
    id: [u8; 16],
    initiator: bool,
    peer: PeerIdentity,
    cascade: PairCascade,
    /// The peer is in the encrypted set for the current link.
    confirmed: bool,
    /// Our resume probe and its nonce, until answered.
    probe: Option<(Retx, [u8; 32])>,
    replies: BTreeMap<PduType, Vec<u8>>,
    pending_commit: Option<Retx>,
    pending_rotation: Option<(u32, Retx)>,
    kem_key_acked: u32,
    next_seq: u64,
    last_kem_rotation_ms: u64,
    last_mls_update_ms: u64,
    sent_since_kem: u64,
    sent_since_mls: u64,
    owe_kem_ack: Option<u32>,
    peer_kem_key: u32,
    address: Option<String>,
}

impl Session {
    fn record(&self) -> SessionRecord {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        SessionRecord {
            version: SessionRecord::VERSION,
            session_id: hex::encode(self.id),
            initiator: self.initiator,
            peer_identity_key: b64(&crypto::peer_identity_key(&self.peer)),
            address: self.address.clone(),
            replies: self
                .replies
                .iter()
                .map(|(t, f)| (t.as_str().to_owned(), b64(f)))
                .collect(),
            pending_commit: self.pending_commit.as_ref().map(|r| b64(&r.frame)),
            pending_rotation: self.pending_rotation.as_ref().map(|(_, r)| b64(&r.frame)),
            kem_key_acked: self.kem_key_acked,
            next_seq: self.next_seq,
            last_kem_rotation_ms: self.last_kem_rotation_ms,
            last_mls_update_ms: self.last_mls_update_ms,
            peer_kem_key: self.peer_kem_key,
        }
    }

    fn mls_epoch(&self) -> u64 {
        self.cascade.mls().epoch().unwrap_or(0)
    }

    /// The MLS group id, `groupId` on the wire.
    fn group_id(&self) -> strata_proto::GroupId {
        group_id_blob(self.cascade.mls())
    }
}

/// An outgoing message of the outbox, as the machine tracks it.
#[derive(Debug)]
struct Tracked {
    id: String,
    seq: u64,
    frames: Option<Vec<Vec<u8>>>,
    mls_epoch: u64,
    stale: bool,
    next: Instant,
    rto: Duration,
}

/// Token bucket for `protocol-error` replies.
#[derive(Debug)]
struct RateLimit {
    tokens: u32,
    burst: u32,
    per_second: u32,
    last: Option<Instant>,
}

impl RateLimit {
    fn allow(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let gained = now.saturating_duration_since(last).as_millis() * u128::from(self.per_second) / 1000;
            if gained > 0 {
                self.tokens = self
                    .tokens
                    .saturating_add(u32::try_from(gained).unwrap_or(u32::MAX))
                    .min(self.burst);
                self.last = Some(now);
            }
        } else {
            self.last = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
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
    /// A first contact's identity key and the time, pinned in the
    /// transaction that saves the session it completed: an attempt that
    /// never proves anything leaves nothing in the store.
    pin: Option<(Vec<u8>, u64)>,
    /// The identity key the user expects the peer to present
    /// ([`Command::OpenExpecting`]); any other is refused.
    expected_identity: Option<Vec<u8>>,
    attempt: Option<Attempt>,
    session: Option<Session>,
    abandoned: VecDeque<[u8; 16]>,
    retry_at: Option<Instant>,
    retry_backoff: Duration,
    outbox: Vec<Tracked>,
    pending_acks: Vec<String>,
    ack_at: Option<Instant>,
    /// Messages decrypted in this step whose effects are not on disk yet
    /// (see [`PeerMachine::handle_frames`]).
    decrypted: Vec<Decrypted>,
    reassembler: Reassembler,
    errors: RateLimit,
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

/// Most abandoned session ids remembered, so late copies of their PDUs are
/// not mistaken for new handshakes.
const MAX_ABANDONED: usize = 16;
/// Most received message ids waiting to be acknowledged.
const MAX_PENDING_ACKS: usize = 4 * MAX_ACKS;

type Step<T = ()> = Result<T, SessionError>;

/// A message decrypted and not yet committed.
struct Decrypted {
    id: String,
    /// The plaintext, or why it did not parse (refused after the commit:
    /// the ratchet moved all the same).
    parsed: Result<Plaintext, &'static str>,
    now: Now,
}

fn layer_names() -> BoundedVec<LayerName, 8> {
    BoundedVec::new(
        CIPHER_LAYERS
            .iter()
            .filter_map(|n| Text::new(*n).ok())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default()
}

fn layers_match(layers: &BoundedVec<LayerName, 8>) -> bool {
    layers.len() == CIPHER_LAYERS.len() && layers.iter().zip(CIPHER_LAYERS).all(|(a, b)| a.as_str() == b)
}

/// `mls-encryption-sync-request` for session `id`: step 3, or a resume probe.
fn sync_request(id: [u8; 16], resume: Option<ResumeProbe>) -> EncryptionSyncRequest {
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
fn sync_response(id: [u8; 16], resume: Option<ResumeAnswer>) -> EncryptionSyncResponse {
    EncryptionSyncResponse {
        session_id: FixedBytes(id),
        profile: Text::new(PROFILE_V0).unwrap_or_default(),
        layers: layer_names(),
        resume,
    }
}

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
        let errors = RateLimit {
            tokens: config.error_burst,
            burst: config.error_burst,
            per_second: config.error_rate,
            last: None,
        };
        let retry_backoff = config.handshake_retry;
        let mut m = Self {
            config,
            local_hex: crypto::installation_hex(local_id),
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
            pin: None,
            expected_identity: None,
            attempt: None,
            session: None,
            abandoned: VecDeque::new(),
            retry_at: None,
            retry_backoff,
            outbox: Vec::new(),
            pending_acks: Vec::new(),
            ack_at: None,
            decrypted: Vec::new(),
            reassembler: Reassembler::new(),
            errors,
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
        if let Some(a) = &self.attempt {
            at(a.started + self.config.handshake_stall);
            a.pending.values().for_each(|r| at(r.next));
        }
        if let Some(r) = self.retry_at {
            at(r);
        }
        if let Some(s) = &self.session {
            for r in s
                .probe
                .iter()
                .map(|(r, _)| r)
                .chain(&s.pending_commit)
                .chain(s.pending_rotation.iter().map(|(_, r)| r))
            {
                at(r.next);
            }
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

    fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }

    fn transmit(&mut self, frame: Vec<u8>) {
        if self.link_up {
            self.out.push_back(Output::Transmit(frame));
        }
    }

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
        let code = match why {
            Refusal::Malformed => ErrorCode::Malformed,
            Refusal::TooLarge => ErrorCode::TooLarge,
            Refusal::UnknownType => ErrorCode::UnknownType,
            Refusal::Unexpected => ErrorCode::Unexpected,
            Refusal::Undecryptable => ErrorCode::DecryptFailed,
            Refusal::IdentityBlocked => ErrorCode::IdentityChanged,
            Refusal::UnexpectedIdentity => ErrorCode::Unexpected,
        };
        let reason: String = reason.chars().take(200).collect();
        let pdu = ProtocolError {
            code,
            reason: Text::new(reason).unwrap_or_default(),
            ref_type: ref_type.and_then(|t| id_text(t.as_str())),
            ref_id: ref_id.and_then(id_text),
        };
        self.transmit_pdu(pdu.into());
    }

    fn random_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        id
    }

    /// After every step: readiness transitions, then sending what may go.
    fn after_step(&mut self, now: Now) -> Step {
        let ready = self.is_ready();
        if ready && !self.was_ready {
            if let Some(s) = &self.session {
                let (installation, session_id) = (self.peer_hex.clone(), s.id);
                let resumed = std::mem::take(&mut self.resumed);
                self.emit(Event::EncryptionReady {
                    installation,
                    session_id,
                    resumed,
                });
            }
            // Everything in flight goes again now.
            for t in &mut self.outbox {
                t.next = now.at;
            }
        } else if !ready && self.was_ready {
            self.emit(Event::NotReady);
        }
        self.was_ready = ready;
        if ready {
            self.pump(now)?;
            // Counted in messages sent: due as soon as a burst went out.
            self.rotate_if_due(now)?;
            if self.ack_at.is_some_and(|a| a <= now.at) {
                self.flush_acks(now)?;
            }
        }
        Ok(())
    }

    // ---- binding to a peer installation ------------------------------------

    /// Binds the machine to `peer`, loading its stored state. A different
    /// installation at the same address replaces the old binding.
    fn bind(&mut self, peer: InstallationId, now: Now) -> Step {
        if self.peer == Some(peer) {
            return Ok(());
        }
        if let Some(old) = self.peer {
            self.emit(Event::InstallationChanged {
                old: crypto::installation_hex(old),
                new: crypto::installation_hex(peer),
            });
            self.session = None;
            self.outbox.clear();
            self.pending_acks.clear();
            self.reassembler = Reassembler::new();
            if self.attempt.as_ref().is_some_and(|a| a.peer.is_some()) {
                self.attempt = None;
            }
        }
        self.peer = Some(peer);
        self.peer_hex = crypto::installation_hex(peer);
        self.load(now)
    }

    fn load(&mut self, now: Now) -> Step {
        let hex = self.peer_hex.clone();
        let (contact, record, layers, outbox) = durable::read(&*self.store, |r| {
            Ok((
                r.contact(&hex)?,
                r.handshake(&hex)?.map(|b| b.to_vec()),
                r.layer_state(&hex)?.map(|b| b.to_vec()),
                r.outbox(&hex)?,
            ))
        })?;
        self.blocked = contact.as_ref().is_some_and(strata_store::Contact::is_blocked);
        let mut next_seq = 1;
        if let (Some(record), Some(layers), Some(contact)) = (record, layers, contact) {
            match self.restore_session(&record, &layers, &contact.identity_key, now) {
                Ok(s) => {
                    next_seq = s.next_seq;
                    if self.address.is_none() {
                        self.address.clone_from(&s.address);
                    }
                    self.session = Some(s);
                }
                Err(e) => {
                    tracing::warn!(peer = %hex, error = %e, "stored session unusable; a full handshake follows");
                }
            }
        }
        let rto = self.config.message_rto;
        for m in outbox {
            let Ok(p) = Plaintext::from_bytes(&m.body) else {
                continue;
            };
            let seq = p.seq.unwrap_or(0);
            next_seq = next_seq.max(seq + 1);
            self.outbox.push(Tracked {
                id: m.message_id,
                seq,
                frames: (!m.frames.is_empty()).then_some(m.frames),
                mls_epoch: 0,
                stale: false,
                next: now.at,
                rto,
            });
        }
        self.outbox.sort_by_key(|t| t.seq);
        if let Some(s) = &mut self.session {
            s.next_seq = s.next_seq.max(next_seq);
            let epoch = s.mls_epoch();
            for t in &mut self.outbox {
                t.mls_epoch = epoch;
            }
        } else {
            // No session: nothing encrypted so far can be decrypted by the
            // next one.
            self.outbox.iter_mut().for_each(|t| t.frames = None);
        }
        if !self.outbox.is_empty() {
            self.wants_session = true;
        }
        Ok(())
    }

    fn restore_session(
        &self,
        record: &[u8],
        layers: &[u8],
        pinned_key: &[u8],
        now: Now,
    ) -> Result<Session, SessionError> {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.as_bytes()).ok();
        let bad = || SessionError::Internal("corrupt session record".into());
        let record = SessionRecord::from_bytes(record)?;
        let peer_id = self.peer.ok_or_else(bad)?;
        let key = b64(&record.peer_identity_key).ok_or_else(bad)?;
        if key != pinned_key {
            return Err(SessionError::Misuse(
                "session made with an identity key no longer pinned",
            ));
        }
        let peer = crypto::peer_identity(&key, peer_id).ok_or_else(bad)?;
        let id: [u8; 16] = hex::decode(&record.session_id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        let cascade = PairCascade::import(layers)?;
        let replies = record
            .replies
            .iter()
            .filter_map(|(t, f)| Some((PduType::from_name(t)?, b64(f)?)))
            .collect();
        // Unanswered control PDUs go again as soon as the link is up.
        let due = now.at;
        let retx = |f: &Option<String>| -> Option<Retx> {
            f.as_deref().and_then(b64).map(|frame| Retx {
                frame,
                next: due,
                rto: self.config.handshake_rto,
            })
        };
        let pending_rotation = retx(&record.pending_rotation).and_then(|r| match Pdu::decode(&r.frame) {
            Ok(Pdu::RotationTimestampBroadcast(b)) => Some((b.key_id, r)),
            _ => None,
        });
        Ok(Session {
            id,
            initiator: record.initiator,
            peer,
            cascade,
            confirmed: false,
            probe: None,
            replies,
            pending_commit: retx(&record.pending_commit),
            pending_rotation,
            kem_key_acked: record.kem_key_acked,
            next_seq: record.next_seq,
            last_kem_rotation_ms: record.last_kem_rotation_ms,
            last_mls_update_ms: record.last_mls_update_ms,
            sent_since_kem: 0,
            sent_since_mls: 0,
            owe_kem_ack: None,
            peer_kem_key: record.peer_kem_key,
            address: record.address,
        })
    }

    /// Persists the session record, and the cascade state with it.
    fn save_session(&mut self) -> Step {
        if !self.decrypted.is_empty() {
            // The state to save decrypted these: they commit with it.
            return self.commit_decrypted();
        }
        let Some(s) = &self.session else { return Ok(()) };
        let record = s.record().to_bytes()?;
        let state = s.cascade.export()?;
        let hex = self.peer_hex.clone();
        let pin = self.pin.clone();
        let pinned = durable::write(&*self.store, |w| {
            if !pin_in(w, &hex, pin.as_ref())? {
                return Ok(false);
            }
            w.set_layer_state(&hex, state.as_bytes())?;
            w.set_handshake(&hex, &record)?;
            Ok(true)
        })?;
        self.pin = None;
        if !pinned {
            self.pin_refused();
        }
        Ok(())
    }

    /// The pin of a session just completed met another key, pinned
    /// meanwhile (the user added the contact): the session is dropped
    /// unsaved and the contact blocked, as a changed key is.
    fn pin_refused(&mut self) {
        self.session = None;
        self.decrypted.clear();
        self.blocked = true;
        self.emit(Event::IdentityChanged {
            installation: self.peer_hex.clone(),
        });
    }

    // ---- commands -----------------------------------------------------------

    fn on_command(&mut self, command: Command, now: Now) -> Result<Option<String>, SessionError> {
        match command {
            Command::Open => {
                self.wants_session = true;
                if self.link_up && self.session.is_none() && self.attempt.is_none() && !self.blocked {
                    self.start_attempt(now)?;
                }
                Ok(None)
            }
            Command::OpenExpecting { identity_key } => {
                self.expect_identity(identity_key)?;
                self.on_command(Command::Open, now)
            }
            Command::Send(content) => Ok(self.queue(vec![content], now)?.pop()),
            Command::AcceptIdentity => {
                if !self.blocked {
                    return Err(SessionError::Misuse("no identity change pending"));
                }
                let hex = self.peer_hex.clone();
                durable::write(&*self.store, |w| {
                    w.accept_identity_change(&hex, now.unix_ms)?;
                    w.clear_handshake(&hex)?;
                    w.clear_layer_state(&hex)
                })?;
                self.blocked = false;
                // The user chose the new key over any earlier expectation.
                self.expected_identity = None;
                if self.session.take().is_some() {
                    self.emit(Event::SessionReset {
                        reason: ResetReason::IdentityAccepted,
                    });
                }
                self.outbox.iter_mut().for_each(|t| t.frames = None);
                self.wants_session = true;
                if self.link_up && self.attempt.is_none() {
                    self.start_attempt(now)?;
                }
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
        }
    }

    /// Records the identity key the user expects at this address. A session
    /// or a contact already pinned to another key refuses it at once.
    fn expect_identity(&mut self, identity_key: Vec<u8>) -> Step {
        let pinned = match (&self.session, self.peer) {
            (Some(s), _) => Some(crypto::peer_identity_key(&s.peer)),
            (None, Some(_)) => {
                let hex = self.peer_hex.clone();
                durable::read(&*self.store, |r| r.contact(&hex))?.map(|c| c.identity_key)
            }
            (None, None) => None,
        };
        if pinned.is_some_and(|k| k != identity_key) {
            self.emit(Event::IdentityMismatch {
                installation: self.peer_hex.clone(),
            });
            return Err(SessionError::IdentityMismatch);
        }
        self.expected_identity = Some(identity_key);
        Ok(())
    }

    /// Queues `contents`, in order, in one store transaction; returns their
    /// message ids.
    fn queue(&mut self, contents: Vec<Content>, now: Now) -> Result<Vec<String>, SessionError> {
        for content in &contents {
            content.check().map_err(SessionError::Misuse)?;
        }
        let peer = self.peer_hex.clone();
        if self.peer.is_none() {
            return Err(SessionError::Misuse(
                "peer installation not known yet: open the session first",
            ));
        }
        let mut next_seq = match &self.session {
            Some(s) => s.next_seq,
            None => self.outbox.iter().map(|t| t.seq).max().unwrap_or(0) + 1,
        };
        let mut messages = Vec::with_capacity(contents.len());
        for content in contents {
            let seq = next_seq;
            next_seq += 1;
            let id = hex::encode(self.random_id());
            let body = Plaintext {
                body: Body::Content(content),
                seq: Some(seq),
                sent_ms: Some(now.unix_ms),
                acks: Vec::new(),
                kem_key_ack: None,
            }
            .to_bytes();
            let message = OutgoingMessage {
                message_id: id,
                peer: peer.clone(),
                created_ms: now.unix_ms,
                body,
                frames: Vec::new(),
                attempts: 0,
            };
            messages.push((seq, message));
        }
        if let Some(s) = &mut self.session {
            s.next_seq = next_seq;
        }
        // While the window has room and nothing older waits, the burst is
        // encrypted now and commits with its frames and the cascade state
        // in the same transaction as the queueing: one commit, no read-back.
        let room = if self.is_ready() && self.outbox.iter().all(|t| t.frames.is_some()) {
            self.config.window.saturating_sub(self.outbox.len())
        } else {
            0
        };
        let mut burst = Vec::new();
        for (_, m) in messages.iter_mut().take(room) {
            let frames = self.encrypt_body(&m.message_id, &m.body, now)?;
            m.frames.clone_from(&frames);
            burst.push((m.message_id.clone(), frames));
        }
        let state = if burst.is_empty() { None } else { Some(self.state()?) };
        let record = self.session.as_ref().map(|s| s.record().to_bytes()).transpose()?;
        durable::write(&*self.store, |w| {
            for (_, m) in &messages {
                w.queue_outgoing(m)?;
            }
            if let Some(state) = &state {
                w.set_layer_state(&peer, state.as_bytes())?;
            }
            if let Some(r) = &record {
                w.set_handshake(&peer, r)?;
            }
            Ok(())
        })?;
        let mut ids = Vec::with_capacity(messages.len());
        for (seq, m) in messages {
            self.outbox.push(Tracked {
                id: m.message_id.clone(),
                seq,
                frames: None,
                mls_epoch: 0,
                stale: false,
                next: now.at,
                rto: self.config.message_rto,
            });
            self.emit(Event::Queued {
                message_id: m.message_id.clone(),
            });
            ids.push(m.message_id);
        }
        self.sent_burst(burst, now);
        self.wants_session = true;
        if self.link_up && self.session.is_none() && self.attempt.is_none() && !self.blocked {
            self.start_attempt(now)?;
        }
        Ok(ids)
    }

    // ---- link and timers ----------------------------------------------------

    fn on_connected(&mut self, now: Now) -> Step {
        self.link_up = true;
        if let Some(a) = &mut self.attempt {
            a.pending.values_mut().for_each(|r| r.next = now.at);
            return Ok(());
        }
        if self.blocked {
            return Ok(());
        }
        if self.session.is_some() {
            self.send_probe(now)?;
        } else if self.wants_session {
            self.start_attempt(now)?;
        }
        Ok(())
    }

    fn send_probe(&mut self, now: Now) -> Step {
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

    fn on_timeout(&mut self, now: Now) -> Step {
        let max = self.config.handshake_rto_max;
        // Handshake retransmissions and stall.
        let mut stalled = None;
        let mut resend = Vec::new();
        if let Some(a) = &mut self.attempt {
            if now.at >= a.started + self.config.handshake_stall {
                stalled = Some((a.id, a.role));
            } else {
                for r in a.pending.values_mut().filter(|r| r.next <= now.at) {
                    resend.push(r.frame.clone());
                    r.rto = (r.rto * 2).min(max);
                    r.next = now.at + r.rto;
                }
            }
        }
        if let Some((id, role)) = stalled {
            self.abandon(id);
            self.emit(Event::HandshakeStalled { session_id: id });
            if role == Role::Initiator || self.wants_session {
                self.retry_at = Some(now.at + self.retry_backoff);
                self.retry_backoff = (self.retry_backoff * 2).min(self.config.handshake_stall);
            }
        }
        if self.retry_at.is_some_and(|r| r <= now.at) {
            self.retry_at = None;
            if self.link_up && self.attempt.is_none() && !self.blocked {
                self.start_attempt(now)?;
            }
        }
        if let Some(s) = &mut self.session {
            for r in s
                .probe
                .iter_mut()
                .map(|(r, _)| r)
                .chain(s.pending_commit.iter_mut())
                .chain(s.pending_rotation.iter_mut().map(|(_, r)| r))
                .filter(|r| r.next <= now.at)
            {
                resend.push(r.frame.clone());
                r.rto = (r.rto * 2).min(max);
                r.next = now.at + r.rto;
            }
        }
        for f in resend {
            self.transmit(f);
        }
        for id in self.reassembler.expire(now.at) {
            tracing::debug!(message = %id, "chunked message timed out");
        }
        if self.is_ready() {
            self.retransmit_due(now)?;
            if self.ack_at.is_some_and(|a| a <= now.at) {
                self.flush_acks(now)?;
            }
            self.rotate_if_due(now)?;
        }
        Ok(())
    }

    fn abandon(&mut self, id: [u8; 16]) {
        if self.attempt.as_ref().is_some_and(|a| a.id == id) {
            self.attempt = None;
        }
        self.abandoned.push_back(id);
        while self.abandoned.len() > MAX_ABANDONED {
            self.abandoned.pop_front();
        }
    }

    // ---- frames -------------------------------------------------------------

    fn on_frame(&mut self, bytes: &[u8], now: Now) -> Step {
        let pdu = match Pdu::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                let why = match e {
                    DecodeError::TooLarge { .. } | DecodeError::TooDeep { .. } | DecodeError::LimitExceeded { .. } => {
                        Refusal::TooLarge
                    }
                    DecodeError::UnknownType(_) => Refusal::UnknownType,
                    _ => Refusal::Malformed,
                };
                self.refuse(why, &e.to_string(), None, None, now);
                return Ok(());
            }
        };
        let ty = pdu.pdu_type();
        if self.blocked
            && !matches!(
                pdu,
                Pdu::ProtocolError(_) | Pdu::KeyPackageRequest(_) | Pdu::KeyPackage(_)
            )
        {
            self.refuse(Refusal::IdentityBlocked, "identity change pending", Some(ty), None, now);
            return Ok(());
        }
        if !matches!(pdu, Pdu::Message(_) | Pdu::Chunk(_)) {
            // Everything else may change or persist the cascade state: the
            // messages decrypted before it reach the disk first.
            self.commit_decrypted()?;
        }
        match pdu {
            Pdu::KeyPackageRequest(p) => self.on_kp_request(p, now),
            Pdu::KeyPackage(p) => self.on_key_package(p, now),
            Pdu::EncryptionSyncRequest(p) => self.on_sync_request(p, now),
            Pdu::EncryptionSyncResponse(p) => self.on_sync_response(p, now),
            Pdu::SignalKeyExchangeRequest(p) => self.on_signal_request(p, now),
            Pdu::SignalKeyExchangeResponse(p) => self.on_signal_response(p, now),
            Pdu::SignalSessionComplete(p) => self.on_signal_complete(p, now),
            Pdu::MlKemKeyExchange(p) => self.on_kem_exchange(p, now),
            Pdu::MlKemKeyExchangeResponse(p) => self.on_kem_response(p, now),
            Pdu::MlsWelcome(p) => self.on_welcome(p, now),
            Pdu::MlsWelcomeAck(p) => self.on_welcome_ack(p, now),
            Pdu::MlsCommit(p) => self.on_commit(p, now),
            Pdu::Message(m) => self.on_message(m, now),
            Pdu::Chunk(c) => self.on_chunk(c, now),
            Pdu::ProtocolError(e) => self.on_peer_error(e, now),
            Pdu::RotationTimestampBroadcast(b) => self.on_rotation(b, now),
            Pdu::GroupMemberJoined(_) | Pdu::GroupMemberLeft(_) | Pdu::GroupMessage(_) => {
                self.refuse(Refusal::Unexpected, "no groups in a pair session", Some(ty), None, now);
                Ok(())
            }
        }
    }

    /// The attempt with `id` in `role`, if it is the current one.
    fn attempt_mut(&mut self, id: &[u8; 16], role: Role) -> Option<&mut Attempt> {
        self.attempt.as_mut().filter(|a| &a.id == id && a.role == role)
    }

    /// A reply we already gave to request `ty` of session `id`, for a
    /// duplicate request.
    fn cached_reply(&self, id: &[u8; 16], ty: PduType) -> Option<Vec<u8>> {
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
    fn known_session(&self, id: &[u8; 16]) -> bool {
        self.attempt.as_ref().is_some_and(|a| &a.id == id)
            || self.session.as_ref().is_some_and(|s| &s.id == id)
            || self.abandoned.contains(id)
    }

    /// Answers a request we cannot place: a duplicate of a known session is
    /// resent or ignored; anything else is refused.
    fn stray_request(&mut self, id: &[u8; 16], ty: PduType, now: Now) {
        if let Some(reply) = self.cached_reply(id, ty) {
            self.transmit(reply);
        } else if !self.known_session(id) {
            self.refuse(
                Refusal::Unexpected,
                "unknown session",
                Some(ty),
                Some(&hex::encode(id)),
                now,
            );
        }
    }

    /// The responder's current attempt `id`, for a request of type `ty` it
    /// has not answered yet. A request answered before gets the same answer
    /// again; one of no current attempt is a stray ([`Self::stray_request`]).
    fn new_request(&mut self, id: &[u8; 16], ty: PduType, now: Now) -> Option<&mut Attempt> {
        if self.is_new_request(id, ty, now) {
            self.attempt.as_mut()
        } else {
            None
        }
    }

    /// [`Self::new_request`], for handlers that need other fields of the
    /// machine beside the attempt.
    fn is_new_request(&mut self, id: &[u8; 16], ty: PduType, now: Now) -> bool {
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
    fn answer(&mut self, ty: PduType, pdu: Pdu) {
        let frame = pdu.encode();
        if let Some(a) = &mut self.attempt {
            a.replies.insert(ty, frame.clone());
        }
        self.transmit(frame);
    }

    /// The initiator's current attempt `id` while its `request` is
    /// unanswered; an `answer` that fits none is a stray
    /// ([`Self::stray_answer`]).
    fn awaited(&mut self, id: &[u8; 16], request: PduType, answer: PduType, now: Now) -> Option<&mut Attempt> {
        if self.is_awaited(id, request, answer, now) {
            self.attempt.as_mut()
        } else {
            None
        }
    }

    /// [`Self::awaited`], for handlers that need other fields of the
    /// machine beside the attempt.
    fn is_awaited(&mut self, id: &[u8; 16], request: PduType, answer: PduType, now: Now) -> bool {
        let awaited = self
            .attempt
            .as_ref()
            .is_some_and(|a| &a.id == id && a.role == Role::Initiator && a.pending.contains_key(&request));
        if !awaited {
            self.stray_answer(id, answer, now);
        }
        awaited
    }

    /// Binds and checks the identity a peer presents in step 1 or 2.
    /// Returns the peer identity, or `None` when refused (already answered).
    fn check_identity(
        &mut self,
        installation: &Id,
        identity_key: &[u8],
        ty: PduType,
        now: Now,
    ) -> Result<Option<PeerIdentity>, SessionError> {
        let Some(inst) = crypto::parse_installation(installation.as_str()) else {
            self.refuse(Refusal::Malformed, "installation id", Some(ty), None, now);
            return Ok(None);
        };
        if inst == self.local_id {
            self.refuse(Refusal::Unexpected, "own installation id", Some(ty), None, now);
            return Ok(None);
        }
        if self.expected_identity.as_deref().is_some_and(|k| k != identity_key) {
            // Refused before binding: nothing of this installation is
            // loaded, pinned or stored. Our own attempt, answered by the
            // wrong key, is given up rather than retried against it.
            if ty == PduType::KeyPackage
                && let Some(id) = self
                    .attempt
                    .as_ref()
                    .filter(|a| a.role == Role::Initiator)
                    .map(|a| a.id)
            {
                self.abandon(id);
                self.wants_session = false;
            }
            self.emit(Event::IdentityMismatch {
                installation: installation.as_str().to_owned(),
            });
            self.refuse(
                Refusal::UnexpectedIdentity,
                "unexpected identity key",
                Some(ty),
                None,
                now,
            );
            return Ok(None);
        }
        let Some(peer) = crypto::peer_identity(identity_key, inst) else {
            self.refuse(Refusal::Malformed, "identity key", Some(ty), None, now);
            return Ok(None);
        };
        self.bind(inst, now)?;
        let hex = self.peer_hex.clone();
        // Read first: the known key needs no write (and no fsync), and a
        // first contact is pinned only once its handshake completes
        // (`establish`). Only a changed key is recorded now.
        let known = durable::read(&*self.store, |r| r.contact(&hex))?;
        let check = match known {
            None => IdentityCheck::Pinned,
            Some(c) if c.identity_key == identity_key => IdentityCheck::Same,
            Some(_) => durable::write(&*self.store, |w| w.observe_identity(&hex, identity_key, now.unix_ms))?,
        };
        match check {
            IdentityCheck::Pinned | IdentityCheck::Same if !self.blocked => Ok(Some(peer)),
            IdentityCheck::Same => Ok(None),
            IdentityCheck::Pinned | IdentityCheck::Changed => {
                if !self.blocked {
                    self.blocked = true;
                    self.attempt = None;
                    self.emit(Event::IdentityChanged { installation: hex });
                }
                self.refuse(Refusal::IdentityBlocked, "identity key changed", Some(ty), None, now);
                Ok(None)
            }
        }
    }

    // ---- the handshake ------------------------------------------------------

    fn start_attempt(&mut self, now: Now) -> Step {
        let id = self.random_id();
        let (installation_id, identity_key) = self.own_identity_fields();
        let pdu = KeyPackageRequest {
            session_id: FixedBytes(id),
            installation_id,
            identity_key,
            profile: Text::new(PROFILE_V0).unwrap_or_default(),
            timestamp: now.unix_ms,
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

    fn begin(&mut self, attempt: Attempt) {
        let (session_id, role, from_bundle) = (attempt.id, attempt.role, attempt.from_bundle);
        self.attempt = Some(attempt);
        self.emit(Event::HandshakeStarted {
            session_id,
            role,
            from_bundle,
        });
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
    fn start_from_bundle(&mut self, bundle: &VerifiedBundle, now: Now) -> Step {
        if self.session.is_some() || self.attempt.is_some() || self.blocked {
            return Ok(());
        }
        let ty = PduType::KeyPackage;
        let announced = bundle.peer();
        let installation = Text::new(crypto::installation_hex(announced.installation_id)).unwrap_or_default();
        let identity_key = crypto::peer_identity_key(&announced);
        let Some(peer) = self.check_identity(&installation, &identity_key, ty, now)? else {
            return Ok(());
        };
        self.wants_session = true;
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
        start.bundle = Some(BundleStart {
            installation_id,
            identity_key,
            version: bundle.header().version,
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
        // Simultaneous open: the handshake with the lower session id wins.
        if let Some(a) = &self.attempt
            && a.role == Role::Initiator
            && a.id < id
        {
            return Ok(());
        }
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
        if let Some(old) = self.attempt.as_ref().map(|a| a.id) {
            self.abandon(old);
        }
        let mls = pre_keys.mls_layer(&self.local, peer)?;
        let signal = pre_keys.signal_layer(&self.local, peer)?;
        let kem = pre_keys.kem_layer(&self.local, peer)?;
        let mut attempt = Attempt::new(id, Role::Responder, now.at);
        attempt.set_layers(peer, mls, (signal, kem, pre_keys.kem_public().clone()));
        attempt.sync_ok = true;
        attempt.from_bundle = true;
        attempt.replacing = self.session.is_some();
        self.begin(attempt);
        self.answer(ty, sync_response(id, None).into());
        self.try_complete(now)
    }

    /// Step 1 received.
    fn on_kp_request(&mut self, req: KeyPackageRequest, now: Now) -> Step {
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
        // Simultaneous open: the handshake with the lower session id wins.
        if let Some(a) = &self.attempt
            && a.role == Role::Initiator
            && a.id < id
        {
            return Ok(());
        }
        let Some(peer) = self.check_identity(&req.installation_id, req.identity_key.as_bytes(), ty, now)? else {
            return Ok(());
        };
        if let Some(old) = self.attempt.as_ref().map(|a| a.id) {
            self.abandon(old);
        }
        let mut mls = MlsLayer::new(&self.local, peer)?;
        let key_package = mls.key_package(KeyPackageKind::OneTime, self.config.key_package_lifetime_secs)?;
        let layers = self.fresh_layers(peer)?;
        let (installation_id, identity_key) = self.own_identity_fields();
        let reply = KeyPackage {
            session_id: FixedBytes(id),
            installation_id,
            identity_key,
            key_package: strata_proto::Blob::new(key_package)
                .map_err(|_| SessionError::Internal("KeyPackage over the field cap".into()))?,
            last_resort: false,
        };
        let frame = self.transmit_pdu(reply.into());
        let mut attempt = Attempt::new(id, Role::Responder, now.at);
        attempt.set_layers(peer, mls, layers);
        attempt.replies.insert(ty, frame);
        attempt.replacing = self.session.is_some();
        self.begin(attempt);
        Ok(())
    }

    /// Step 2 received: the initiator pipelines steps 3, 5, 8 and 10.
    fn on_key_package(&mut self, kp: KeyPackage, now: Now) -> Step {
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
    fn on_sync_request(&mut self, req: EncryptionSyncRequest, now: Now) -> Step {
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
            self.emit(Event::HandshakeFailed {
                reason: "peer runs other cipher layers".into(),
            });
            self.abandon(id);
            return Ok(());
        }
        self.try_complete(now)
    }

    /// Step 4 received, or a resume answer.
    fn on_sync_response(&mut self, resp: EncryptionSyncResponse, now: Now) -> Step {
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
            self.abandon(id);
            self.emit(Event::HandshakeFailed {
                reason: "peer runs other cipher layers".into(),
            });
            return Ok(());
        }
        a.sync_ok = true;
        self.try_complete(now)
    }

    /// An answer for which no request is pending: a late duplicate of a
    /// known session is ignored, anything else refused.
    fn stray_answer(&mut self, id: &[u8; 16], ty: PduType, now: Now) {
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

    /// Step 5 received.
    fn on_signal_request(&mut self, req: SignalKeyExchangeRequest, now: Now) -> Step {
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
    fn on_signal_response(&mut self, resp: SignalKeyExchangeResponse, now: Now) -> Step {
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
    fn on_signal_complete(&mut self, m: SignalSessionComplete, now: Now) -> Step {
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
    fn on_kem_exchange(&mut self, k: MlKemKeyExchange, now: Now) -> Step {
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
    fn on_kem_response(&mut self, k: MlKemKeyExchangeResponse, now: Now) -> Step {
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
    fn on_welcome(&mut self, w: MlsWelcome, now: Now) -> Step {
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
    fn on_welcome_ack(&mut self, ack: MlsWelcomeAck, now: Now) -> Step {
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
    fn try_complete(&mut self, now: Now) -> Step {
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
        let old = self.session.take();
        if a.replacing && old.is_some() {
            // The peer proved its identity in this handshake: it did
            // restart. Ready again, under the new session.
            self.emit(Event::SessionReset {
                reason: ResetReason::PeerRestarted,
            });
            self.was_ready = false;
        }
        let next_seq = old
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
        };
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
        tracing::debug!(peer = %self.peer_hex, replaced = old.is_some(), "session established");
        Ok(())
    }

    // ---- resume -------------------------------------------------------------

    /// A peer's resume probe: `resumed`, with our own proof over its
    /// nonce, only when we hold the same session at the same MLS epoch and
    /// its proof checks out; `unknown` otherwise. A probe that does not
    /// check out changes nothing here (it may be forged: the session id
    /// travels in the clear); a peer that really holds another state starts
    /// a handshake on our `unknown`, and that resets the session.
    fn on_resume_probe(&mut self, id: [u8; 16], probe: &ResumeProbe, now: Now) -> Step {
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
    fn on_resume_answer(&mut self, id: [u8; 16], answer: &ResumeAnswer, now: Now) -> Step {
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

    // ---- traffic out ----------------------------------------------------------

    /// Encrypts and sends queued messages while the window allows.
    fn pump(&mut self, now: Now) -> Step {
        let in_flight = self.outbox.iter().filter(|t| t.frames.is_some()).count();
        let burst: Vec<String> = self
            .outbox
            .iter()
            .filter(|t| t.frames.is_none())
            .take(self.config.window.saturating_sub(in_flight))
            .map(|t| t.id.clone())
            .collect();
        self.encrypt_burst(&burst, now)?;
        if self.session.as_ref().is_some_and(|s| s.owe_kem_ack.is_some()) && self.ack_at.is_none() {
            self.ack_at = Some(now.at);
        }
        Ok(())
    }

    /// Encrypts the tracked messages `ids`, in order, and sends them. The
    /// burst commits in one transaction with the cascade state after its
    /// last message (`record_encrypted_batch`), so the pair state is sealed
    /// once per burst, not once per message; no frame leaves before that.
    fn encrypt_burst(&mut self, ids: &[String], now: Now) -> Step {
        if ids.is_empty() {
            return Ok(());
        }
        let hex = self.peer_hex.clone();
        let stored = durable::read(&*self.store, |r| {
            ids.iter().map(|id| r.outgoing(&hex, id)).collect::<Result<Vec<_>, _>>()
        })?;
        let mut burst = Vec::with_capacity(ids.len());
        for (id, stored) in ids.iter().zip(stored) {
            let Some(stored) = stored else {
                // Acknowledged meanwhile.
                self.outbox.retain(|t| &t.id != id);
                continue;
            };
            let frames = self.encrypt_body(id, &stored.body, now)?;
            burst.push((id.clone(), frames));
        }
        if burst.is_empty() {
            return Ok(());
        }
        let state = self.state()?;
        let record = self.session.as_ref().map(|s| s.record().to_bytes()).transpose()?;
        durable::write(&*self.store, |w| {
            w.record_encrypted_batch(&hex, burst.clone(), state.as_bytes())?;
            if let Some(r) = &record {
                w.set_handshake(&hex, r)?;
            }
            Ok(())
        })?;
        self.sent_burst(burst, now);
        Ok(())
    }

    /// Encrypts a stored message body as message `id`, with the acks (and
    /// ML-KEM key ack) owed to the peer riding along.
    fn encrypt_body(&mut self, id: &str, body: &[u8], now: Now) -> Result<Vec<Vec<u8>>, SessionError> {
        let mut plaintext =
            Plaintext::from_bytes(body).map_err(|e| SessionError::Internal(format!("stored message {id}: {e}")))?;
        plaintext.acks = self.take_acks();
        plaintext.kem_key_ack = self.session.as_mut().and_then(|s| s.owe_kem_ack.take());
        self.seal(&plaintext.to_bytes(), id, now)
    }

    /// A burst of tracked messages committed with its frames: arm their
    /// retransmission timers and send them.
    fn sent_burst(&mut self, burst: Vec<(String, Vec<Vec<u8>>)>, now: Now) {
        if burst.is_empty() {
            return;
        }
        if self.ack_at.is_some() && self.pending_acks.is_empty() {
            self.ack_at = None;
        }
        let epoch = self.session.as_ref().map_or(0, Session::mls_epoch);
        let rto = self.config.message_rto;
        let sent = u64::try_from(burst.len()).unwrap_or(u64::MAX);
        if let Some(s) = &mut self.session {
            s.sent_since_kem += sent;
            s.sent_since_mls += sent;
        }
        for (id, frames) in burst {
            if let Some(t) = self.outbox.iter_mut().find(|t| t.id == id) {
                t.frames = Some(frames.clone());
                t.mls_epoch = epoch;
                t.stale = false;
                t.rto = rto;
                t.next = now.at + rto;
            }
            for f in frames {
                self.transmit(f);
            }
        }
    }

    fn take_acks(&mut self) -> Vec<String> {
        let n = self.pending_acks.len().min(MAX_ACKS);
        self.pending_acks.drain(..n).collect()
    }

    fn state(&self) -> Result<strata_cascade::SecretBytes, SessionError> {
        let s = self
            .session
            .as_ref()
            .ok_or_else(|| SessionError::Internal("no session".into()))?;
        Ok(s.cascade.export()?)
    }

    /// Cascade-encrypts `plaintext` as message `id` and splits it into frames.
    fn seal(&mut self, plaintext: &[u8], id: &str, now: Now) -> Result<Vec<Vec<u8>>, SessionError> {
        let s = self
            .session
            .as_mut()
            .ok_or_else(|| SessionError::Internal("no session".into()))?;
        let payload = s.cascade.encrypt(plaintext, now.unix_ms, &mut self.rng)?;
        let message = Message {
            message_id: Text::new(id).map_err(|_| SessionError::Internal("message id".into()))?,
            encrypted_message: EncryptedMessage {
                encrypted: true,
                cascaded: true,
                chunked: false,
                total_chunks: None,
                cascaded_payload: payload,
            },
        };
        let pdus = strata_proto::split(message).map_err(|e| SessionError::Internal(e.to_string()))?;
        Ok(pdus.iter().map(Pdu::encode).collect())
    }

    /// Sends an `ack` plaintext (not stored, not acknowledged).
    fn flush_acks(&mut self, now: Now) -> Step {
        self.ack_at = None;
        let kem_key_ack = self.session.as_mut().and_then(|s| s.owe_kem_ack.take());
        while !self.pending_acks.is_empty() || kem_key_ack.is_some() {
            let acks = self.take_acks();
            let plaintext = Plaintext {
                body: Body::Control(Control::Ack),
                seq: None,
                sent_ms: None,
                acks,
                kem_key_ack,
            };
            let id = hex::encode(self.random_id());
            let frames = self.seal(&plaintext.to_bytes(), &id, now)?;
            let state = self.state()?;
            let hex = self.peer_hex.clone();
            durable::write(&*self.store, |w| w.set_layer_state(&hex, state.as_bytes()))?;
            for f in frames {
                self.transmit(f);
            }
            if self.pending_acks.is_empty() {
                break;
            }
        }
        Ok(())
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
            if t.stale || t.mls_epoch < epoch {
                t.frames = None;
                again.push(t.id.clone());
                continue;
            }
            t.rto = (t.rto * 2).min(max);
            t.next = now.at + t.rto;
            resend.extend(t.frames.iter().flatten().cloned());
        }
        for f in resend {
            self.transmit(f);
        }
        self.encrypt_burst(&again, now)
    }

    // ---- traffic in -----------------------------------------------------------

    fn is_processed(&self, id: &str) -> Result<bool, SessionError> {
        if self.peer.is_none() {
            return Ok(false);
        }
        let hex = self.peer_hex.clone();
        Ok(durable::read(&*self.store, |r| r.is_processed(&hex, id))?)
    }

    fn queue_ack(&mut self, id: &str, now: Now) {
        if !self.pending_acks.iter().any(|a| a == id) && self.pending_acks.len() < MAX_PENDING_ACKS {
            self.pending_acks.push(id.to_owned());
        }
        if self.pending_acks.len() >= self.config.ack_every {
            self.ack_at = Some(now.at);
        } else if self.ack_at.is_none() {
            self.ack_at = Some(now.at + self.config.ack_delay);
        }
    }

    fn on_message(&mut self, m: Message, now: Now) -> Step {
        let ty = PduType::Message;
        if self.session.is_none() && self.attempt.as_ref().is_none_or(|a| a.cascade.is_none()) {
            if self.attempt.is_none() {
                let id = m.message_id.as_str().to_owned();
                self.refuse(Refusal::Unexpected, "no session", Some(ty), Some(&id), now);
            }
            return Ok(());
        }
        if self.is_processed(m.message_id.as_str())? {
            self.queue_ack(m.message_id.as_str(), now);
            return Ok(());
        }
        if !m.encrypted_message.chunked {
            return self.on_complete(m, now);
        }
        let id = m.message_id.as_str().to_owned();
        match self.reassembler.push_header(m, now.at) {
            Ok(Some(whole)) => self.on_complete(whole, now),
            Ok(None) | Err(ChunkError::DuplicateHeader) => Ok(()),
            Err(e) => {
                self.refuse(chunk_refusal(&e), &e.to_string(), Some(ty), Some(&id), now);
                Ok(())
            }
        }
    }

    fn on_chunk(&mut self, c: strata_proto::Chunk, now: Now) -> Step {
        let ty = PduType::Chunk;
        if self.session.is_none() && self.attempt.as_ref().is_none_or(|a| a.cascade.is_none()) {
            return Ok(());
        }
        if self.is_processed(c.message_id.as_str())? {
            return Ok(());
        }
        let id = c.message_id.as_str().to_owned();
        match self.reassembler.push_chunk(c, now.at) {
            Ok(Some(whole)) => self.on_complete(whole, now),
            Ok(None) | Err(ChunkError::DuplicateChunk(_)) => Ok(()),
            Err(e) => {
                self.refuse(chunk_refusal(&e), &e.to_string(), Some(ty), Some(&id), now);
                Ok(())
            }
        }
    }

    /// A whole `message`: decrypt, commit, acknowledge.
    fn on_complete(&mut self, m: Message, now: Now) -> Step {
        let ty = PduType::Message;
        let id = m.message_id.as_str().to_owned();
        if !m.encrypted_message.encrypted || !m.encrypted_message.cascaded {
            self.refuse(
                Refusal::Malformed,
                "only cascaded messages are accepted",
                Some(ty),
                Some(&id),
                now,
            );
            return Ok(());
        }
        let payload = &m.encrypted_message.cascaded_payload;
        // A message can confirm a handshake that only awaits the peer's ack.
        let via_attempt = self.session.is_none()
            || self
                .attempt
                .as_ref()
                .is_some_and(|a| a.cascade.is_some() && a.role == Role::Initiator);
        let result = if via_attempt {
            match self.attempt.as_mut().and_then(|a| a.cascade.as_mut()) {
                Some(c) => c.decrypt(payload, &mut self.rng),
                None => return Ok(()),
            }
        } else {
            match self.session.as_mut() {
                Some(s) => s.cascade.decrypt(payload, &mut self.rng),
                None => return Ok(()),
            }
        };
        let plaintext = match result {
            Ok(p) => p,
            Err(e) => {
                self.on_undecryptable(&e, &id, via_attempt, now);
                return Ok(());
            }
        };
        // Queued before anything below saves the state that decrypted it:
        // `save_session` commits it in the same transaction.
        self.on_decrypted(&id, &plaintext, now);
        if via_attempt {
            // The peer could only encrypt this with the finished session:
            // it is the implicit step 11.
            if let Some(a) = &mut self.attempt {
                a.mls_ok = true;
                a.pending.clear();
            }
            self.try_complete(now)?;
        }
        if let Some(s) = &mut self.session {
            s.confirmed = true;
            if !s.replies.is_empty() {
                s.replies.clear();
                self.save_session()?;
            }
        }
        Ok(())
    }

    fn on_undecryptable(&mut self, e: &CascadeError, id: &str, during_handshake: bool, now: Now) {
        let future_mls = match e {
            CascadeError::UnknownEpoch { layer: "MLS", epoch } => {
                let ours = self.session.as_ref().map_or(0, Session::mls_epoch);
                *epoch > ours
            }
            _ => false,
        };
        if matches!(e, CascadeError::Replay { .. }) || future_mls || during_handshake {
            // A duplicate, a message of an MLS epoch whose commit has not
            // arrived yet, or a race with the end of the handshake: the
            // sender's retransmission will do.
            tracing::debug!(peer = %self.peer_hex, message = id, error = %e, "message not decrypted (yet)");
            return;
        }
        self.refuse(
            Refusal::Undecryptable,
            &e.to_string(),
            Some(PduType::Message),
            Some(id),
            now,
        );
    }

    /// A message decrypted: its effects wait, in memory, for the commit at
    /// the end of the input ([`PeerMachine::commit_decrypted`]).
    fn on_decrypted(&mut self, id: &str, plaintext: &[u8], now: Now) {
        self.decrypted.push(Decrypted {
            id: id.to_owned(),
            parsed: Plaintext::from_bytes(plaintext),
            now,
        });
    }

    /// Commits the messages decrypted since the last commit, in one
    /// transaction: each content message to the inbox (marked processed),
    /// the outgoing messages they acknowledge out of the outbox, and the
    /// cascade state after the last of them, with the session record. Only
    /// then are their acks queued and their events emitted.
    fn commit_decrypted(&mut self) -> Step {
        if self.decrypted.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.decrypted);
        let hex = self.peer_hex.clone();
        let state = self.state()?;
        let record = self.session.as_ref().map(|s| s.record().to_bytes()).transpose()?;
        let incoming: Vec<IncomingMessage> = batch
            .iter()
            .filter_map(|d| match &d.parsed {
                Ok(
                    p @ Plaintext {
                        body: Body::Content(_), ..
                    },
                ) => Some(IncomingMessage {
                    peer: hex.clone(),
                    message_id: d.id.clone(),
                    received_ms: d.now.unix_ms,
                    // Acks are transport of the moment, not part of the message.
                    body: Plaintext {
                        acks: Vec::new(),
                        kem_key_ack: None,
                        ..p.clone()
                    }
                    .to_bytes(),
                }),
                _ => None,
            })
            .collect();
        let acks: Vec<&String> = batch
            .iter()
            .filter_map(|d| d.parsed.as_ref().ok())
            .flat_map(|p| &p.acks)
            .collect();
        let pin = self.pin.clone();
        let committed = durable::write(&*self.store, |w| {
            if !pin_in(w, &hex, pin.as_ref())? {
                return Ok(None);
            }
            let accepted = w.accept_incoming_batch(&hex, &incoming, state.as_bytes())?;
            if let Some(r) = &record {
                w.set_handshake(&hex, r)?;
            }
            let mut delivered = BTreeSet::new();
            for a in &acks {
                if w.ack_outgoing(&hex, a)? {
                    delivered.insert((*a).clone());
                }
            }
            Ok(Some((accepted, delivered)))
        })?;
        self.pin = None;
        let Some((accepted, delivered)) = committed else {
            self.pin_refused();
            return Ok(());
        };
        let mut accepted = accepted.into_iter();
        for d in batch {
            let now = d.now;
            let parsed = match d.parsed {
                Ok(p) => p,
                Err(e) => {
                    self.refuse(Refusal::Malformed, e, Some(PduType::Message), Some(&d.id), now);
                    continue;
                }
            };
            if let Body::Content(content) = parsed.body {
                self.queue_ack(&d.id, now);
                if accepted.next() == Some(Accepted::New) {
                    self.emit(Event::Received {
                        message_id: d.id,
                        seq: parsed.seq.unwrap_or(0),
                        content,
                    });
                }
            }
            for a in parsed.acks {
                if let Some(pos) = self.outbox.iter().position(|t| t.id == a) {
                    self.outbox.remove(pos);
                    if delivered.contains(&a) {
                        self.emit(Event::Delivered { message_id: a });
                    }
                }
            }
            if let Some(key_id) = parsed.kem_key_ack {
                self.on_kem_key_ack(key_id)?;
            }
        }
        Ok(())
    }

    fn on_peer_error(&mut self, e: ProtocolError, now: Now) -> Step {
        tracing::debug!(peer = %self.peer_hex, code = ?e.code, reason = %e.reason, "protocol-error from peer");
        let refused_bundle = self.attempt.as_ref().is_some_and(|a| {
            a.from_bundle
                && a.role == Role::Initiator
                && e.ref_type
                    .as_ref()
                    .is_some_and(|t| t.as_str() == PduType::EncryptionSyncRequest.as_str())
                && e.ref_id.as_ref().is_some_and(|r| r.as_str() == hex::encode(a.id))
        });
        if refused_bundle && let Some(id) = self.attempt.as_ref().map(|a| a.id) {
            // The peer no longer holds that bundle (it re-keyed) or cannot
            // use it: the full handshake needs nothing from it.
            tracing::debug!(peer = %self.peer_hex, "bundle refused; full handshake");
            self.abandon(id);
            self.start_attempt(now)?;
        }
        let forgotten = e.code == ErrorCode::Unexpected
            && self.attempt.as_ref().is_some_and(|a| {
                a.role == Role::Initiator
                    && !a.from_bundle
                    && !a.pending.contains_key(&PduType::KeyPackageRequest)
                    && e.ref_id.as_ref().is_some_and(|r| r.as_str() == hex::encode(a.id))
            });
        if forgotten && let Some(id) = self.attempt.as_ref().map(|a| a.id) {
            // The responder answered step 1 but no longer knows the session
            // (it restarted, or could not save it): retransmitting until
            // the stall would only collect the same refusal for minutes.
            tracing::debug!(peer = %self.peer_hex, "the peer forgot our handshake; starting again");
            self.abandon(id);
            self.emit(Event::HandshakeStalled { session_id: id });
            self.retry_at = Some(now.at + self.retry_backoff);
            self.retry_backoff = (self.retry_backoff * 2).min(self.config.handshake_stall);
        }
        if e.code == ErrorCode::DecryptFailed
            && let Some(id) = &e.ref_id
            && let Some(t) = self
                .outbox
                .iter_mut()
                .find(|t| t.id == id.as_str() && t.frames.is_some())
        {
            // The peer cannot decrypt these frames (e.g. an MLS epoch it has
            // left): encrypt the message again.
            t.stale = true;
            t.next = now.at;
        }
        if e.code == ErrorCode::Unexpected
            && e.ref_type
                .as_ref()
                .is_some_and(|t| t.as_str() == PduType::Message.as_str())
            && self.session.is_some()
            && self.attempt.is_none()
            && self.retry_at.is_none()
        {
            // The peer has no session for our messages: it lost its state.
            self.emit(Event::SessionReset {
                reason: ResetReason::PeerLostState,
            });
            self.wants_session = true;
            self.retry_at = Some(now.at);
        }
        self.emit(Event::PeerError {
            code: e.code,
            reason: e.reason.into_string(),
        });
        Ok(())
    }

    // ---- rotation -------------------------------------------------------------

    fn rotate_if_due(&mut self, now: Now) -> Step {
        let (kem_due, mls_due) = match &self.session {
            Some(s) => (
                s.pending_rotation.is_none()
                    && (s.sent_since_kem >= self.config.kem_rotation_messages
                        || now.unix_ms.saturating_sub(s.last_kem_rotation_ms)
                            >= duration_ms(self.config.kem_rotation_interval)),
                s.pending_commit.is_none()
                    && self.local_id < s.peer.installation_id
                    && (s.sent_since_mls >= self.config.mls_update_messages
                        || now.unix_ms.saturating_sub(s.last_mls_update_ms)
                            >= duration_ms(self.config.mls_update_interval)),
            ),
            None => (false, false),
        };
        if kem_due {
            self.rotate_kem(now)?;
        }
        if mls_due {
            self.update_mls(now)?;
        }
        Ok(())
    }

    /// A new ML-KEM receive key, announced by `rotation-timestamp-broadcast`.
    fn rotate_kem(&mut self, now: Now) -> Step {
        let rto = self.config.handshake_rto;
        let Some(s) = self.session.as_mut() else {
            return Err(SessionError::Misuse("no session to rotate"));
        };
        if s.pending_rotation.is_some() {
            return Ok(());
        }
        let key = s.cascade.kem_mut().rotate_receive_key(&self.local, &mut self.rng)?;
        let (key_id, encapsulation_key, signature) = crypto::kem_key_fields(&key)?;
        let pdu = RotationTimestampBroadcast {
            session_id: FixedBytes(s.id),
            timestamp: now.unix_ms,
            key_id,
            encapsulation_key,
            signature,
        };
        let frame = Pdu::from(pdu).encode();
        s.pending_rotation = Some((key_id, Retx::new(frame.clone(), now.at, rto)));
        s.last_kem_rotation_ms = now.unix_ms;
        s.sent_since_kem = 0;
        // Our next messages open a new epoch too.
        s.cascade.kem_mut().rotate_send_epoch();
        self.save_session()?;
        self.transmit(frame);
        self.emit(Event::Rotated { what: Rotation::KemKey });
        Ok(())
    }

    fn on_rotation(&mut self, b: RotationTimestampBroadcast, now: Now) -> Step {
        let ty = PduType::RotationTimestampBroadcast;
        let id = b.session_id.0;
        let Some(s) = self.session.as_mut().filter(|s| s.id == id) else {
            self.stray_answer(&id, ty, now);
            return Ok(());
        };
        if b.key_id <= s.kem_key_acked_peer() {
            s.owe_kem_ack = Some(b.key_id);
            self.ack_at.get_or_insert(now.at);
            return Ok(());
        }
        let installed = crypto::install_peer_kem(
            s.cascade.kem_mut(),
            s.peer,
            b.key_id,
            &b.encapsulation_key,
            &b.signature,
        );
        if let Err(e) = installed {
            self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
            return Ok(());
        }
        s.set_peer_kem_key(b.key_id);
        s.owe_kem_ack = Some(b.key_id);
        self.save_session()?;
        self.ack_at.get_or_insert(now.at);
        self.emit(Event::Rotated {
            what: Rotation::PeerKemKey,
        });
        Ok(())
    }

    fn on_kem_key_ack(&mut self, key_id: u32) -> Step {
        let Some(s) = self.session.as_mut() else { return Ok(()) };
        if s.pending_rotation.as_ref().is_some_and(|(k, _)| *k <= key_id) {
            s.pending_rotation = None;
            s.kem_key_acked = key_id;
            self.save_session()?;
        }
        Ok(())
    }

    /// An MLS self-update; only the side with the lower installation id
    /// commits on schedule, so two commits never race.
    fn update_mls(&mut self, now: Now) -> Step {
        let rto = self.config.handshake_rto;
        let Some(s) = self.session.as_mut() else {
            return Err(SessionError::Misuse("no session to update"));
        };
        if s.pending_commit.is_some() {
            return Ok(());
        }
        let epoch = s.mls_epoch();
        let commit = s.cascade.mls_mut().self_update()?;
        let pdu = MlsCommit {
            session_id: Some(FixedBytes(s.id)),
            group_id: s.group_id(),
            epoch,
            commit: strata_proto::Blob::new(commit)
                .map_err(|_| SessionError::Internal("commit over the field cap".into()))?,
        };
        let frame = Pdu::from(pdu).encode();
        s.pending_commit = Some(Retx::new(frame.clone(), now.at, rto));
        s.last_mls_update_ms = now.unix_ms;
        s.sent_since_mls = 0;
        self.save_session()?;
        self.transmit(frame);
        self.emit(Event::Rotated {
            what: Rotation::MlsUpdate,
        });
        Ok(())
    }

    fn on_commit(&mut self, c: MlsCommit, now: Now) -> Step {
        let ty = PduType::MlsCommit;
        let Some(id) = c.session_id.map(|s| s.0) else {
            self.refuse(
                Refusal::Unexpected,
                "commit outside a pair session",
                Some(ty),
                None,
                now,
            );
            return Ok(());
        };
        let Some(s) = self.session.as_mut().filter(|s| s.id == id) else {
            self.stray_answer(&id, ty, now);
            return Ok(());
        };
        if c.group_id != s.group_id() {
            self.refuse(Refusal::Unexpected, "commit for another group", Some(ty), None, now);
            return Ok(());
        }
        let ours = s.mls_epoch();
        let new_epoch = if c.epoch + 1 == ours {
            // Already processed: the ack was lost.
            ours
        } else if c.epoch == ours {
            match s.cascade.mls_mut().process_commit(c.commit.as_bytes()) {
                Ok(e) => e,
                Err(e) => {
                    self.refuse(Refusal::Malformed, &e.to_string(), Some(ty), None, now);
                    return Ok(());
                }
            }
        } else {
            self.refuse(Refusal::Unexpected, "commit for another epoch", Some(ty), None, now);
            return Ok(());
        };
        let ack = MlsWelcomeAck {
            session_id: Some(FixedBytes(id)),
            group_id: c.group_id,
            epoch: new_epoch,
        };
        if new_epoch != ours {
            self.save_session()?;
            self.emit(Event::Rotated {
                what: Rotation::PeerMlsUpdate,
            });
        }
        self.transmit_pdu(ack.into());
        Ok(())
    }
}

impl Session {
    /// The highest peer ML-KEM key id installed (1 from the handshake).
    fn kem_key_acked_peer(&self) -> u32 {
        self.peer_kem_key.max(1)
    }

    fn set_peer_kem_key(&mut self, id: u32) {
        self.peer_kem_key = id;
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn chunk_refusal(e: &ChunkError) -> Refusal {
    match e {
        ChunkError::MessageTooLarge(_)
        | ChunkError::TooManyReassemblies(_)
        | ChunkError::BudgetExhausted(_)
        | ChunkError::TotalOutOfRange(_) => Refusal::TooLarge,
        _ => Refusal::Malformed,
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

/// Pins a first contact's key inside a transaction: false (with the key
/// recorded as offered) when another key is pinned already.
fn pin_in(w: &mut Writer<'_>, peer: &str, pin: Option<&(Vec<u8>, u64)>) -> Result<bool, StoreError> {
    match pin {
        Some((key, at_ms)) => Ok(w.observe_identity(peer, key, *at_ms)? != IdentityCheck::Changed),
        None => Ok(true),
    }
}
