//! [`PeerJsTransport`]: `strata_transport::Transport` over PeerJS signaling
//! and WebRTC data channels.
//!
//! One actor task owns the per-peer state (which link is negotiating, open or
//! closing, who waits on it) and routes broker messages; each link runs its
//! own task ([`crate::link`]). Sending bypasses the actor: open links are
//! published in a route table that `send` reads directly, so frames flow from
//! the caller to the data channel with back-pressure and no extra hop.
//!
//! Per peer there is at most one link. When both sides connect at once (two
//! OFFERs cross), the OFFER from the peer with the lower id wins on both
//! sides. An OFFER from a peer we already have a link with replaces that link
//! (the peer restarted): the old one is reported `Disconnected
//! { ConnectionLost }` before the new one's `Connected`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use strata_transport::{Capabilities, EventStream, PeerAddr, Topic, Transport, TransportError};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::binarypack::CHUNK_MTU;
use crate::link::{self, CloseReason, Limits, LinkCtx, LinkInput, LinkSpec, Report, Role, Routes};
use crate::protocol::{CONNECTION_TYPE_DATA, CandidatePayload, IceCandidate, Message, MessageType, OfferPayload};
use crate::rtc::RtcConfig;
use crate::serialization::Serialization;
use crate::signaling::{SignalEvent, Signaling, SignalingConfig, SignalingError};

/// Largest frame: the 16 MiB PDU cap plus framing headroom.
pub const MAX_FRAME_LEN: usize = strata_proto::limits::MAX_PDU_BYTES + (1 << 20);

/// Largest single data-channel message sent or accepted: webrtc-rs reads
/// messages into a 65 535-byte buffer and closes the channel on a larger one.
pub const MAX_MESSAGE_LEN: usize = 65_535;

/// Configuration of a [`PeerJsTransport`].
#[derive(Clone, Debug)]
pub struct PeerJsConfig {
    /// This node's PeerJS id (its [`PeerAddr`]).
    pub id: String,
    /// The broker.
    pub signaling: SignalingConfig,
    /// WebRTC settings.
    pub rtc: RtcConfig,
    /// The serialization of connections this node opens. `binary` (PeerJS's
    /// default) is the only one that carries frames above one SCTP message.
    pub serialization: Serialization,
    /// `metadata` sent in our OFFERs.
    pub metadata: Option<serde_json::Value>,
    /// How long `connect` may take before failing with `Unreachable`.
    pub connect_timeout: Duration,
    /// Capacity of the event stream.
    pub event_capacity: usize,
    /// Stop writing to a channel while this many bytes are buffered (P8: 8 MiB).
    pub high_water: usize,
    /// Most links (open or negotiating) at once. Past it, `connect` fails
    /// with `QueueFull` and OFFERs from new peers are ignored: each link
    /// holds sockets and tasks, and anyone on the broker can send OFFERs.
    pub max_links: usize,
    /// Size of the BinaryPack chunks this node sends (`binary` mode).
    /// PeerJS uses 16 300; receivers reassemble any size, so up to
    /// [`MAX_MESSAGE_LEN`] minus the 40-byte chunk header works with every
    /// known peer (browsers accept 256 KiB messages, webrtc-rs 64 KiB).
    pub chunk_size: usize,
}

impl PeerJsConfig {
    /// A node with id `id` on the broker `signaling`, with the default
    /// (non-hermetic) WebRTC settings.
    pub fn new(id: impl Into<String>, signaling: SignalingConfig) -> Self {
        Self {
            id: id.into(),
            signaling,
            rtc: RtcConfig::default(),
            serialization: Serialization::Binary,
            metadata: None,
            connect_timeout: Duration::from_secs(20),
            event_capacity: 1024,
            high_water: 8 << 20,
            max_links: 256,
            chunk_size: CHUNK_MTU,
        }
    }
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The broker refused or could not be reached.
    #[error(transparent)]
    Signaling(#[from] SignalingError),
}

impl From<StartError> for TransportError {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Signaling(SignalingError::IdTaken(id)) => TransportError::AddrInUse(PeerAddr::new(id)),
            StartError::Signaling(other) => TransportError::Io(other.to_string()),
        }
    }
}

/// A Strata node on a PeerJS broker. Cheap to clone; the transport stops
/// when the last clone is dropped (or on [`PeerJsTransport::shutdown`]).
#[derive(Clone)]
pub struct PeerJsTransport {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for PeerJsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerJsTransport")
            .field("id", &self.inner.local)
            .finish()
    }
}

struct Handle {
    local: PeerAddr,
    commands: mpsc::Sender<Command>,
    routes: Routes,
}

type Reply = oneshot::Sender<Result<(), TransportError>>;

enum Command {
    Connect { peer: PeerAddr, reply: Reply },
    Disconnect { peer: PeerAddr, reply: Reply },
    Shutdown { reply: oneshot::Sender<()> },
}

impl PeerJsTransport {
    /// Registers `config.id` with the broker and starts the transport.
    pub async fn start(config: PeerJsConfig) -> Result<(Self, EventStream), StartError> {
        crate::install_crypto_provider();
        let (signaling, signal_events) = Signaling::connect(config.signaling.clone(), config.id.clone()).await?;
        let local = PeerAddr::new(config.id.clone());
        let (events_tx, events_rx) = mpsc::channel(config.event_capacity.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(64);
        let (reports_tx, reports_rx) = mpsc::channel(256);
        let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
        let ctx = Arc::new(LinkCtx {
            local: local.clone(),
            api: config.rtc.api(),
            rtc: config.rtc.clone(),
            signaling,
            events: events_tx,
            routes: Arc::clone(&routes),
            reports: reports_tx,
            limits: Limits {
                max_frame: MAX_FRAME_LEN,
                max_message: MAX_MESSAGE_LEN,
                chunk_mtu: config.chunk_size,
                connect_timeout: config.connect_timeout,
                high_water: config.high_water,
                low_water: config.high_water / 4,
            },
            metadata: config.metadata.clone(),
        });
        let actor = Actor {
            ctx,
            max_links: config.max_links.max(1),
            serialization: config.serialization,
            peers: HashMap::new(),
            early: HashMap::new(),
            next_link: 0,
        };
        let span = tracing::info_span!("peerjs-transport", id = %local);
        tokio::spawn(actor.run(commands_rx, signal_events, reports_rx).instrument(span));
        let handle = Handle {
            local,
            commands: commands_tx,
            routes,
        };
        Ok((
            Self {
                inner: Arc::new(handle),
            },
            EventStream::new(events_rx),
        ))
    }

    /// Closes every link (peers see `Disconnected { Remote }`) and leaves the
    /// broker. The event stream ends once the last link has reported.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.inner.commands.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    async fn request(&self, make: impl FnOnce(Reply) -> Command) -> Result<(), TransportError> {
        let (reply, outcome) = oneshot::channel();
        self.inner
            .commands
            .send(make(reply))
            .await
            .map_err(|_| TransportError::Closed)?;
        outcome.await.map_err(|_| TransportError::Closed)?
    }
}

impl Transport for PeerJsTransport {
    fn local_addr(&self) -> PeerAddr {
        self.inner.local.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            point_to_point: true,
            broadcast: false,
            store_and_forward: false,
            reliable: true,
            // Links this node opens are ordered; a PeerJS peer that opens an
            // unordered one (its default) gets unordered delivery.
            ordered: true,
            max_frame_len: MAX_FRAME_LEN,
        }
    }

    /// Resolves once the data channel is open (both sides then see
    /// `Connected`), or fails: `UnknownPeer` when the broker expires the
    /// offer, `Unreachable` when ICE fails or the timeout passes.
    async fn connect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        let peer = peer.clone();
        self.request(|reply| Command::Connect { peer, reply }).await
    }

    /// Resolves once the link is closed and `Disconnected { Local }` emitted.
    async fn disconnect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        let peer = peer.clone();
        self.request(|reply| Command::Disconnect { peer, reply }).await
    }

    async fn send(&self, to: &PeerAddr, frame: Bytes) -> Result<(), TransportError> {
        if frame.len() > MAX_FRAME_LEN {
            return Err(TransportError::FrameTooLarge {
                len: frame.len(),
                max: MAX_FRAME_LEN,
            });
        }
        if self.inner.commands.is_closed() {
            return Err(TransportError::Closed);
        }
        let link = self
            .inner
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(to)
            .cloned();
        match link {
            Some(link) => link.send(&frame).await,
            None => Err(TransportError::NotConnected(to.clone())),
        }
    }

    async fn subscribe(&self, _topic: &Topic) -> Result<(), TransportError> {
        Err(TransportError::Unsupported("PeerJS is point-to-point: no topics"))
    }

    async fn publish(&self, _topic: &Topic, _frame: Bytes) -> Result<(), TransportError> {
        Err(TransportError::Unsupported("PeerJS is point-to-point: no topics"))
    }

    async fn unsubscribe(&self, _topic: &Topic) -> Result<(), TransportError> {
        Err(TransportError::Unsupported("PeerJS is point-to-point: no topics"))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Connecting,
    Open,
    Closing,
}

/// What to start once the current link has ended.
enum Then {
    Offer,
    Answer(Box<OfferPayload>),
}

struct Entry {
    link_id: u64,
    connection_id: String,
    tx: mpsc::Sender<LinkInput>,
    phase: Phase,
    outgoing: bool,
    /// `connect` calls waiting for this link to open.
    waiters: Vec<Reply>,
    /// `disconnect` calls waiting for it to end.
    closers: Vec<Reply>,
    then: Option<Then>,
    /// `connect` calls waiting for the link that follows.
    next_waiters: Vec<Reply>,
}

impl Entry {
    fn close(&mut self, reason: CloseReason) {
        self.phase = Phase::Closing;
        if let Err(mpsc::error::TrySendError::Full(input)) = self.tx.try_send(LinkInput::Close(reason)) {
            // Never block the actor on a busy link.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(input).await;
            });
        }
    }
}

/// Whether link `link_id` still routes frames to `peer`. A link withdraws
/// its route before it reports `Disconnected`.
fn route_is_live(routes: &Routes, peer: &PeerAddr, link_id: u64) -> bool {
    routes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(peer)
        .is_some_and(|link| link.link_id() == link_id)
}

/// Candidates for connections not started yet, per (peer, connection id).
const EARLY_CONNECTIONS: usize = 128;
const EARLY_CANDIDATES: usize = 32;

struct Actor {
    ctx: Arc<LinkCtx>,
    max_links: usize,
    serialization: Serialization,
    peers: HashMap<PeerAddr, Entry>,
    early: HashMap<(PeerAddr, String), Vec<IceCandidate>>,
    next_link: u64,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut signals: mpsc::Receiver<SignalEvent>,
        mut reports: mpsc::Receiver<Report>,
    ) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            tokio::select! {
                command = commands.recv(), if shutdown.is_none() => match command {
                    Some(Command::Connect { peer, reply }) => self.connect(peer, reply),
                    Some(Command::Disconnect { peer, reply }) => self.disconnect(peer, reply),
                    Some(Command::Shutdown { reply }) => {
                        shutdown = Some(reply);
                        self.close_all();
                    }
                    None => {
                        shutdown = Some(oneshot::channel().0);
                        self.close_all();
                    }
                },
                signal = signals.recv(), if shutdown.is_none() => match signal {
                    Some(SignalEvent::Message(message)) => self.signal(message),
                    Some(SignalEvent::Lost) => tracing::info!("broker connection lost; open links stay up"),
                    Some(SignalEvent::Reconnected { fresh }) => tracing::info!(fresh, "broker connection restored"),
                    None => {
                        tracing::warn!("signaling client stopped");
                        shutdown = Some(oneshot::channel().0);
                        self.close_all();
                    }
                },
                report = reports.recv() => match report {
                    Some(report) => self.report(report),
                    None => break,
                },
            }
            if shutdown.is_some() && self.peers.is_empty() {
                break;
            }
        }
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
        // Dropping the context drops the last event sender held here; the
        // stream ends once link tasks still tearing down let go of theirs.
    }

    fn close_all(&mut self) {
        for entry in self.peers.values_mut() {
            entry.then = None;
            if entry.phase != Phase::Closing {
                entry.close(CloseReason::Local);
            }
        }
    }

    fn connect(&mut self, peer: PeerAddr, reply: Reply) {
        if peer == self.ctx.local {
            let _ = reply.send(Err(TransportError::Unsupported("connecting to itself")));
            return;
        }
        if !crate::protocol::is_valid_peer_id(peer.as_str()) {
            let _ = reply.send(Err(TransportError::UnknownPeer(peer)));
            return;
        }
        let full = self.peers.len() >= self.max_links;
        match self.peers.get_mut(&peer) {
            None if full => {
                let _ = reply.send(Err(TransportError::QueueFull));
            }
            None => self.start(
                peer,
                Role::Offerer {
                    serialization: self.serialization,
                },
                vec![reply],
            ),
            Some(entry) => match entry.phase {
                Phase::Open if route_is_live(&self.ctx.routes, &peer, entry.link_id) => {
                    let _ = reply.send(Ok(()));
                }
                Phase::Open => {
                    // The link withdrew its route and may have told the
                    // application `Disconnected` before its end reaches us:
                    // connect again once it has.
                    entry.phase = Phase::Closing;
                    entry.next_waiters.push(reply);
                    entry.then.get_or_insert(Then::Offer);
                }
                Phase::Connecting => entry.waiters.push(reply),
                Phase::Closing => {
                    entry.next_waiters.push(reply);
                    if entry.then.is_none() {
                        entry.then = Some(Then::Offer);
                    }
                }
            },
        }
    }

    fn disconnect(&mut self, peer: PeerAddr, reply: Reply) {
        match self.peers.get_mut(&peer) {
            None => {
                let _ = reply.send(Err(TransportError::NotConnected(peer)));
            }
            Some(entry) => {
                entry.closers.push(reply);
                // A local disconnect also cancels a queued replacement.
                entry.then = None;
                for waiter in entry.next_waiters.drain(..) {
                    let _ = waiter.send(Err(TransportError::NotConnected(peer.clone())));
                }
                if entry.phase != Phase::Closing {
                    entry.close(CloseReason::Local);
                }
            }
        }
    }

    fn start(&mut self, peer: PeerAddr, role: Role, waiters: Vec<Reply>) {
        self.next_link += 1;
        let link_id = self.next_link;
        let (outgoing, connection_id) = match &role {
            Role::Offerer { .. } => (true, format!("dc_{}", crate::protocol::random_token())),
            Role::Answerer { offer } => (false, offer.connection_id.clone()),
        };
        let early_candidates = self
            .early
            .remove(&(peer.clone(), connection_id.clone()))
            .unwrap_or_default();
        let (tx, rx) = mpsc::channel(64);
        let spec = LinkSpec {
            peer: peer.clone(),
            link_id,
            connection_id: connection_id.clone(),
            role,
            early_candidates,
        };
        let span = tracing::debug_span!("link", %peer, link_id, %connection_id);
        tokio::spawn(link::run(Arc::clone(&self.ctx), spec, rx).instrument(span));
        self.peers.insert(
            peer,
            Entry {
                link_id,
                connection_id,
                tx,
                phase: Phase::Connecting,
                outgoing,
                waiters,
                closers: Vec::new(),
                then: None,
                next_waiters: Vec::new(),
            },
        );
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Opened { peer, link_id } => {
                if let Some(entry) = self.peers.get_mut(&peer).filter(|e| e.link_id == link_id) {
                    if entry.phase == Phase::Connecting {
                        entry.phase = Phase::Open;
                    }
                    for waiter in entry.waiters.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                }
            }
            Report::Ended { peer, link_id, error } => {
                if self.peers.get(&peer).is_none_or(|e| e.link_id != link_id) {
                    return;
                }
                let Some(entry) = self.peers.remove(&peer) else {
                    return;
                };
                let failure = error.unwrap_or_else(|| TransportError::NotConnected(peer.clone()));
                for waiter in entry.waiters {
                    let _ = waiter.send(Err(failure.clone()));
                }
                for closer in entry.closers {
                    let _ = closer.send(Ok(()));
                }
                match entry.then {
                    Some(Then::Offer) => {
                        let role = Role::Offerer {
                            serialization: self.serialization,
                        };
                        self.start(peer, role, entry.next_waiters);
                    }
                    Some(Then::Answer(offer)) => self.start(peer, Role::Answerer { offer }, entry.next_waiters),
                    None => {
                        for waiter in entry.next_waiters {
                            let _ = waiter.send(Err(TransportError::NotConnected(peer.clone())));
                        }
                    }
                }
            }
        }
    }

    fn signal(&mut self, message: Message) {
        let src = message.src.clone().map(PeerAddr::new);
        match (message.kind, src) {
            (MessageType::Offer, Some(src)) => match message.payload_as::<OfferPayload>() {
                Ok(offer) => self.offer(src, Box::new(offer)),
                Err(error) => tracing::warn!(%src, %error, "ignoring a malformed OFFER"),
            },
            (MessageType::Answer, Some(src)) => match message.payload_as::<crate::protocol::AnswerPayload>() {
                Ok(answer) => match self.peers.get(&src) {
                    Some(entry) if entry.connection_id == answer.connection_id => {
                        if entry.tx.try_send(LinkInput::Answer(answer.sdp)).is_err() {
                            tracing::warn!(%src, "link busy; dropped an ANSWER");
                        }
                    }
                    _ => tracing::debug!(%src, "ANSWER for no pending connection"),
                },
                Err(error) => tracing::warn!(%src, %error, "ignoring a malformed ANSWER"),
            },
            (MessageType::Candidate, Some(src)) => match message.payload_as::<CandidatePayload>() {
                Ok(candidate) => self.candidate(src, candidate),
                Err(error) => tracing::debug!(%src, %error, "ignoring a malformed CANDIDATE"),
            },
            (MessageType::Expire, Some(src)) => {
                if let Some(entry) = self
                    .peers
                    .get_mut(&src)
                    .filter(|e| e.phase == Phase::Connecting && e.outgoing)
                {
                    tracing::debug!(%src, "broker expired our offer: peer unknown");
                    entry.close(CloseReason::Failed(TransportError::UnknownPeer(src)));
                }
            }
            (MessageType::Leave, Some(src)) => {
                // An open link may outlive its peer's broker connection; ICE
                // liveness decides. A negotiation cannot finish without it.
                if let Some(entry) = self.peers.get_mut(&src).filter(|e| e.phase == Phase::Connecting) {
                    entry.close(CloseReason::Failed(TransportError::Unreachable(src)));
                }
            }
            (MessageType::Error | MessageType::IdTaken, _) => {
                tracing::warn!(msg = message.error_text(), kind = ?message.kind, "broker error");
            }
            (kind, src) => tracing::debug!(?kind, ?src, "ignoring a broker message"),
        }
    }

    fn offer(&mut self, src: PeerAddr, offer: Box<OfferPayload>) {
        if offer.connection_type != CONNECTION_TYPE_DATA {
            tracing::info!(%src, kind = %offer.connection_type, "ignoring a non-data (media) OFFER");
            return;
        }
        let serialization = offer.serialization.as_deref().unwrap_or("binary");
        if Serialization::from_offer(serialization).is_none() {
            tracing::warn!(%src, serialization, "ignoring an OFFER with a serialization PeerJS Peer cannot speak");
            return;
        }
        let local_wins = self.ctx.local.as_str() < src.as_str();
        let full = self.peers.len() >= self.max_links;
        let Some(entry) = self.peers.get_mut(&src) else {
            if full {
                tracing::warn!(%src, "too many links; ignoring an OFFER");
            } else {
                self.start(src, Role::Answerer { offer }, Vec::new());
            }
            return;
        };
        if entry.connection_id == offer.connection_id {
            tracing::debug!(%src, "ignoring a repeated OFFER");
            return;
        }
        match entry.phase {
            Phase::Connecting if entry.outgoing && local_wins => {
                tracing::debug!(%src, "crossing OFFERs: ours wins");
            }
            Phase::Connecting | Phase::Open => {
                tracing::debug!(%src, phase = ?entry.phase, "new OFFER replaces the current link");
                entry.next_waiters.append(&mut entry.waiters);
                entry.then = Some(Then::Answer(offer));
                entry.close(CloseReason::Superseded);
            }
            Phase::Closing => entry.then = Some(Then::Answer(offer)),
        }
    }

    fn candidate(&mut self, src: PeerAddr, payload: CandidatePayload) {
        if let Some(entry) = self.peers.get(&src)
            && entry.connection_id == payload.connection_id
        {
            if entry.tx.try_send(LinkInput::Candidate(payload.candidate)).is_err() {
                tracing::debug!(%src, "link busy; dropped a CANDIDATE");
            }
            return;
        }
        // A candidate for a connection that is about to start (it replaces
        // the current link, or its OFFER is still queued): keep a few.
        let key = (src, payload.connection_id);
        if !self.early.contains_key(&key) && self.early.len() >= EARLY_CONNECTIONS {
            // Evict an arbitrary stale entry rather than grow.
            if let Some(stale) = self.early.keys().next().cloned() {
                self.early.remove(&stale);
            }
        }
        let list = self.early.entry(key).or_default();
        if list.len() < EARLY_CANDIDATES {
            list.push(payload.candidate);
        }
    }
}
