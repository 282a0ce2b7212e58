//! The actors: thin shells that do the I/O around [`PeerMachine`].
//!
//! ```text
//!  app / custom actor ──(request)──► Node ──► PeerSession(peer) ──(Transmit)──► TransportActor<T> ──► wire
//!                          ▲                       │  machine.handle(...)
//!                          └──── NodeEvent ◄───────┘
//!  wire ──► TransportActor ──(FromTransport)──► Node ──(Deliver, try_send)──► PeerSession
//! ```
//!
//! - [`Node`]: the facade. Routes transport events to the session of the
//!   sending address, creates sessions on demand (and, at start, for every
//!   stored session, so they resume), drops idle and strangers' sessions
//!   within [`NodeLimits`], reconnects lost links with backoff,
//!   and publishes [`NodeEvent`]s to every subscribed `Recipient<NodeEvent>`
//!   through a bounded queue per subscriber.
//! - [`TransportActor`]: owns one [`Transport`] and its event stream; never
//!   sees plaintext.
//! - [`PeerSession`]: one per remote peer; owns its machine, its timer, and
//!   the file transfers to and from that peer.
//! - [`GroupActor`]: one per group chat; owns its
//!   [`GroupMachine`](crate::group::GroupMachine) and stores its record
//!   after every step; the node routes group PDUs (out of pair sessions'
//!   messages) and `group-message` frames to it, and carries its outputs
//!   (see `groups.rs`).
//! - Storage is a provider inside the machine ([`crate::durable`]); there is
//!   no separate store actor (see the crate docs).
//!
//! Every mailbox is bounded. Waits point one way only — PeerSession →
//! TransportActor → Node — and the Node never waits on anyone: it hands
//! frames to sessions with `try_send` and drops them when a session's
//! mailbox is full (the protocol retransmits), so no cycle can deadlock.
//! Every request carries a [`RequestId`] that its reply echoes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use futures::StreamExt as _;
use rand::RngCore as _;
use strata_cascade::{InstallationIdentity, SafetyNumber};
use strata_transport::{DisconnectReason, EventStream, PeerAddr, Topic, Transport, TransportError, TransportEvent};
use tracing::Instrument as _;

use crate::config::Config;
use crate::durable::{self, Durable};
use crate::error::SessionError;
use crate::files::Transfers;
use crate::machine::SessionRecord;
use crate::machine::{ClaimedKeyPackage, Command, Event, Footprint, Input, Now, Output, PeerMachine};

/// Correlates a request with its reply.
pub type RequestId = u64;

/// Mailbox capacity of every actor here.
pub const MAILBOX: usize = 1024;
/// Events kept for a slow subscriber before the oldest are dropped.
pub const SUBSCRIBER_QUEUE: usize = 4096;
/// Most peer sessions one node runs by default ([`NodeLimits`]).
pub const MAX_SESSIONS: usize = 4096;

/// How many sessions a [`Node`] keeps in memory, and for how long an empty
/// one may sit idle.
///
/// A session is made for any address that sends a frame, so strangers
/// could otherwise fill the node. Sessions that hold nothing
/// ([`Footprint::Empty`]) are dropped after `idle`; at `max_sessions`, the
/// least recently used of the droppable ones makes room for a new one:
/// empty first, then strangers' handshakes ([`Footprint::Stranger`]), then
/// stored sessions whose link is down ([`Footprint::Resting`], loaded again
/// from the store when their peer is back). A node whose sessions are all
/// busy refuses new addresses until one frees up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeLimits {
    /// Most sessions in memory at once.
    pub max_sessions: usize,
    /// An empty session unused this long is dropped.
    pub idle: Duration,
}

impl Default for NodeLimits {
    fn default() -> Self {
        Self {
            max_sessions: MAX_SESSIONS,
            idle: Duration::from_secs(60),
        }
    }
}

/// How often a [`Node`] looks for idle sessions to drop.
const SWEEP: Duration = Duration::from_secs(15);
pub use crate::files::FILE_WINDOW;

fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now {
        at: tokio::time::Instant::now().into_std(),
        unix_ms,
    }
}

/// What a [`Node`] publishes.
#[derive(Clone, Debug, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct NodeEvent {
    /// The peer's transport address.
    pub peer: PeerAddr,
    /// What happened.
    pub kind: NodeEventKind,
}

/// The kinds of [`NodeEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEventKind {
    /// A session event (ready, message received, delivered, …).
    Session(Event),
    /// A whole file arrived and was written to `path`.
    FileReceived {
        /// The transfer id.
        file_id: String,
        /// Where it is.
        path: PathBuf,
        /// A copy of a file this account sent from another of its devices:
        /// the identity key of the account it went to.
        sent_to: Option<Vec<u8>>,
    },
    /// The peer acknowledged one more chunk of a file we send.
    FileProgress {
        /// The transfer id.
        file_id: String,
        /// Chunks acknowledged so far.
        acked: u32,
        /// Chunks in all.
        total: u32,
        /// The file's size in bytes.
        size: u64,
    },
    /// A file we sent was acknowledged in full.
    FileSent {
        /// The transfer id.
        file_id: String,
    },
    /// The link to the peer opened.
    Connected,
    /// The link to the peer closed.
    Disconnected,
    /// The session failed locally (storage); it was rebuilt from the store.
    Failed {
        /// Why.
        reason: String,
    },
    /// Events were dropped for this subscriber because it fell behind.
    Lagged {
        /// How many.
        dropped: u64,
    },
    /// An event of a group chat (the event's `peer` is `group/<id>`).
    Group {
        /// The group id, hex.
        group: String,
        /// What happened.
        event: crate::group::GroupEvent,
    },
    /// An account's device list changed (this account's own, or a
    /// contact's): the event's `peer` is the installation it came from
    /// (this one's address when this node changed its own).
    DevicesChanged {
        /// The account's identity key (serialized).
        account: Vec<u8>,
        /// The list's version.
        version: u64,
        /// Its installations.
        installations: Vec<strata_cascade::InstallationId>,
    },
    /// An out-of-band key exchange completed with the installation the
    /// event's `peer` names: its account key is pinned, verified by
    /// invite. On the side that accepted the invite, the Strata handshake
    /// to it follows.
    KeyExchanged {
        /// The peer's account identity key (serialized).
        account: Vec<u8>,
        /// The name it gave.
        name: String,
        /// This side accepted the invite (and opens the handshake).
        accepted: bool,
        /// It replaced an earlier exchange with the installation (a reset).
        reset: bool,
    },
    /// A whole file sent to a group chat arrived and was written to `path`
    /// (its chunks were [`crate::group::GroupEvent::Received`] events).
    GroupFile {
        /// The group id, hex.
        group: String,
        /// Who sent it.
        sender: strata_cascade::InstallationId,
        /// The transfer id.
        file_id: String,
        /// The file's name, as sent.
        name: String,
        /// Where it is.
        path: PathBuf,
    },
}

/// A reply to a request.
#[derive(Debug)]
pub struct Reply<T> {
    /// The request's id.
    pub request_id: RequestId,
    /// The outcome.
    pub result: Result<T, SessionError>,
}

/// Transport events, in order, on their way to the [`Node`]: all that were
/// ready at once (up to [`EVENT_BATCH`]), so that a session under load gets
/// its frames in bursts and commits each burst once.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromTransport(pub Vec<TransportEvent>);

/// Most transport events handed to the [`Node`] at once.
pub const EVENT_BATCH: usize = 64;

/// Frames for one peer, sent in order.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TransportError>")]
pub struct Transmit {
    /// The peer.
    pub to: PeerAddr,
    /// The frames.
    pub frames: Vec<Bytes>,
}

/// Receive what is published on a topic.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TransportError>")]
pub struct SubscribeTopic(pub Topic);

/// Stop receiving what is published on a topic.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TransportError>")]
pub struct UnsubscribeTopic(pub Topic);

/// Publish one frame on a topic.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TransportError>")]
pub struct Publish {
    /// The topic.
    pub topic: Topic,
    /// The frame.
    pub frame: Bytes,
}

/// Open a link.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TransportError>")]
pub struct Dial(pub PeerAddr);

/// Input for a [`PeerSession`] from the [`Node`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum Deliver {
    /// The link opened.
    Connected,
    /// The link closed.
    Disconnected,
    /// Frames from the peer, in order (one burst: see
    /// [`PeerMachine::handle_frames`]).
    Frames(Vec<Bytes>),
}

/// A request to a [`PeerSession`]; replies with the message id for sends.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<String>, SessionError>")]
pub enum SessionRequest {
    /// A machine command.
    Command(Command),
    /// Stream a file to the peer.
    SendFile(PathBuf),
    /// Stream a copy of a file this account sends to account `to` (an
    /// identity key) to the peer, a device of this account.
    SendFileCopy {
        /// The file.
        path: PathBuf,
        /// The account it is sent to.
        to: Vec<u8>,
    },
    /// The safety number with this peer (60 digits, grouped).
    SafetyNumber,
    /// Open the session from the peer's verified bundle (one round trip;
    /// see [`PeerMachine::open_from_bundle`]).
    OpenFromBundle(Box<strata_cascade::bundle::VerifiedBundle>),
    /// The peer published a newer bundle: the session expires and the next
    /// send opens a new one from it ([`PeerMachine::expire`]).
    Expire(Box<strata_cascade::bundle::VerifiedBundle>),
}

/// What a [`PeerSession`] tells the [`Node`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub enum FromSession {
    /// A session event, for subscribers.
    Event(NodeEvent),
    /// What the session holds changed (see [`NodeLimits`]).
    Footprint {
        /// The peer.
        peer: PeerAddr,
        /// What dropping the session would lose.
        footprint: Footprint,
        /// The installation of its established session, if any: a session
        /// made for the peer later loads it from the store.
        stored: Option<strata_cascade::InstallationId>,
    },
}

/// Everything a [`PeerSession`] needs to (re)build its machine.
#[derive(Clone)]
pub struct SessionSetup {
    /// Session timers and schedules.
    pub config: Config,
    /// This installation.
    pub local: Arc<InstallationIdentity>,
    /// The store.
    pub store: Arc<dyn Durable + Send + Sync>,
    /// Where received files are written.
    pub downloads: PathBuf,
}

/// Subscribe to the node's events.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe(pub Recipient<NodeEvent>);

/// Open (or resume) a session with the peer at an address.
#[derive(Debug, Message)]
#[rtype(result = "Reply<()>")]
pub struct Connect {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The peer.
    pub peer: PeerAddr,
    /// The account identity key the peer must present, when the caller
    /// knows it from outside the handshake (a contact URI): see
    /// [`Command::OpenExpecting`]. `None` keeps trust on first use.
    pub expect_identity: Option<Vec<u8>>,
}

/// Wait until the session with `peer` is ready (`encryptionReady`), or
/// refused. Answers at once when it is ready already; otherwise when the
/// node publishes the event that settles it. The caller bounds the wait (a
/// dropped request is forgotten).
#[derive(Debug, Message)]
#[rtype(result = "Reply<Ready>")]
pub struct AwaitReady {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The peer.
    pub peer: PeerAddr,
}

/// A session that reached `encryptionReady`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The peer installation, hex.
    pub installation: String,
    /// True when a stored session resumed without a handshake.
    pub resumed: bool,
}

/// Claim one KeyPackage of the peer at an address over the established
/// session ([`Command::ClaimKeyPackage`]); answered when the package is
/// checked and stored, or the claim failed
/// ([`SessionError::ClaimFailed`]; at most
/// [`Config::claim_timeout`](crate::Config::claim_timeout)).
#[derive(Debug, Message)]
#[rtype(result = "Reply<crate::ClaimedKeyPackage>")]
pub struct ClaimKeyPackage {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The peer.
    pub peer: PeerAddr,
}

/// Most [`AwaitReady`] requests a node holds at once.
pub const MAX_WAITERS: usize = 1024;

/// Something to do with one peer's session.
#[derive(Debug, Message)]
#[rtype(result = "Reply<Option<String>>")]
pub struct PeerRequest {
    /// Correlates the reply.
    pub request_id: RequestId,
    /// The peer.
    pub peer: PeerAddr,
    /// What.
    pub request: SessionRequest,
}

/// Where a peer's session stands, as far as the node has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// No handshake seen yet (a stored session waiting for its link, or a
    /// link without a session).
    #[default]
    Idle,
    /// A handshake (or a resume probe) is under way.
    Handshaking,
    /// `encryptionReady`: messages flow.
    Ready,
    /// The peer's identity key changed; nothing is sent until the user
    /// accepts or verifies it.
    Blocked,
    /// The peer presented another identity key than the caller expects
    /// (a contact URI's): nothing was pinned, and the node does not retry
    /// until asked again.
    Refused,
}

/// One peer as the node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    /// The session's state.
    pub state: SessionState,
    /// Whether a transport link to the peer is up.
    pub connected: bool,
    /// The peer's installation id (hex), once a handshake named it.
    pub installation: Option<String>,
    /// Whether the current session was resumed from the store rather than
    /// made by a new handshake.
    pub resumed: bool,
    /// When anything last happened with this peer, Unix milliseconds.
    pub last_activity_ms: u64,
}

impl PeerStatus {
    fn observe(&mut self, kind: &NodeEventKind) {
        self.last_activity_ms = now().unix_ms;
        match kind {
            NodeEventKind::Connected => self.connected = true,
            NodeEventKind::Disconnected => self.connected = false,
            NodeEventKind::Session(event) => match event {
                Event::HandshakeStarted { .. } | Event::SessionReset { .. } => self.state = SessionState::Handshaking,
                Event::EncryptionReady {
                    installation, resumed, ..
                } => {
                    self.state = SessionState::Ready;
                    self.resumed = *resumed;
                    self.installation = Some(installation.clone());
                }
                Event::NotReady | Event::HandshakeStalled { .. } | Event::HandshakeFailed { .. } => {
                    self.state = SessionState::Idle;
                }
                Event::IdentityMismatch { .. } => self.state = SessionState::Refused,
                Event::IdentityChanged { installation } => {
                    self.state = SessionState::Blocked;
                    self.installation = Some(installation.clone());
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Every peer the node has a session with or has seen, with its status.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(PeerAddr, PeerStatus)>")]
pub struct ListPeers;

/// transport actor, then the node. Replies once they are stopped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

mod device_groups;
mod devices;
mod groups;
mod kx;
mod node;
mod session;
mod transport;

pub use groups::{
    AddToGroup, CreateGroup, DescribeGroup, FromGroup, GroupActor, GroupInfo, GroupRequest, GroupStep, GroupStepInput,
    GroupSummary, ListGroups, SendGroupFile, group_topic,
};

pub use devices::{
    AccountMessage, ChangeDevices, DeviceList, DeviceStatus, FannedOut, ListDevices, OfferPairing, PairingOffer,
    SendToAccount,
};
pub use kx::{AcceptInvite, Introduce, MakeInvite, ResetExchange};
pub use node::Node;
pub use session::PeerSession;
pub use transport::TransportActor;
