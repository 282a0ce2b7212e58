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
use strata_transport::{DisconnectReason, EventStream, PeerAddr, Transport, TransportError, TransportEvent};
use tracing::Instrument as _;

use crate::config::Config;
use crate::content::Content;
use crate::crypto;
use crate::durable::{self, Durable, SessionRecord};
use crate::error::SessionError;
use crate::files::Transfers;
use crate::machine::{Command, Event, Footprint, Input, Now, Output, PeerMachine};

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
}

/// A reply to a request.
#[derive(Debug)]
pub struct Reply<T> {
    /// The request's id.
    pub request_id: RequestId,
    /// The outcome.
    pub result: Result<T, SessionError>,
}

// ---- TransportActor -----------------------------------------------------------

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

/// Open a link.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TransportError>")]
pub struct Dial(pub PeerAddr);

/// Owns one transport; turns its events into messages to the [`Node`].
pub struct TransportActor<T: Transport> {
    // Boxed: actors must be `Unpin`, transports need not be.
    transport: Box<T>,
    stream: Option<EventStream>,
    node: Recipient<FromTransport>,
    span: tracing::Span,
}

impl<T: Transport> TransportActor<T> {
    /// Wraps `transport` and its event stream; events go to `node`.
    pub fn new(transport: T, stream: EventStream, node: Recipient<FromTransport>) -> Self {
        Self {
            span: tracing::info_span!("transport", local = %transport.local_addr()),
            transport: Box::new(transport),
            stream: Some(stream),
            node,
        }
    }
}

impl<T: Transport> Actor for TransportActor<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        if let Some(stream) = self.stream.take() {
            ctx.add_stream(stream.ready_chunks(EVENT_BATCH));
        }
    }
}

impl<T: Transport> StreamHandler<Vec<TransportEvent>> for TransportActor<T> {
    fn handle(&mut self, events: Vec<TransportEvent>, ctx: &mut Self::Context) {
        // Back-pressure: the next events are read once the Node took these.
        let send = self.node.send(FromTransport(events));
        ctx.wait(
            async move {
                let _ = send.await;
            }
            .into_actor(self),
        );
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<T: Transport> Handler<Transmit> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Transmit, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(
            async move {
                for frame in msg.frames {
                    transport.send(&msg.to, frame).await?;
                }
                Ok(())
            }
            .instrument(self.span.clone()),
        )
    }
}

impl<T: Transport> Handler<Dial> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Dial, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(async move { transport.connect(&msg.0).await }.instrument(self.span.clone()))
    }
}

// ---- PeerSession --------------------------------------------------------------

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
    /// The safety number with this peer (60 digits, grouped).
    SafetyNumber,
    /// Open the session from the peer's verified bundle (one round trip;
    /// see [`PeerMachine::open_from_bundle`]).
    OpenFromBundle(Box<strata_cascade::bundle::VerifiedBundle>),
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

/// One remote peer's session: its machine, timer and file transfers.
pub struct PeerSession {
    setup: SessionSetup,
    peer: PeerAddr,
    machine: PeerMachine,
    transport: Recipient<Transmit>,
    node: Recipient<FromSession>,
    timer: Option<SpawnHandle>,
    files: Transfers,
    /// The footprint last reported to the node.
    reported: Option<Footprint>,
    /// Every log line of this actor carries the peer.
    span: tracing::Span,
}

impl PeerSession {
    /// A session for `peer`, bound to `installation` when known.
    pub fn new(
        setup: SessionSetup,
        peer: PeerAddr,
        installation: Option<strata_cascade::InstallationId>,
        transport: Recipient<Transmit>,
        node: Recipient<FromSession>,
    ) -> Result<Self, SessionError> {
        let machine = build_machine(&setup, &peer, installation)?;
        let span = tracing::info_span!("session", peer = %peer);
        let setup_downloads = setup.downloads.clone();
        let peer_for_files = peer.clone();
        Ok(Self {
            span,
            setup,
            peer,
            machine,
            transport,
            node,
            timer: None,
            files: Transfers::new(setup_downloads, peer_for_files),
            reported: None,
        })
    }

    fn step(&mut self, input: Input<'_>, ctx: &mut Context<Self>) {
        self.run(ctx, |machine, now| machine.handle(input, now));
    }

    /// Runs one machine step, then sends and publishes what it produced.
    fn run(&mut self, ctx: &mut Context<Self>, step: impl FnOnce(&mut PeerMachine, Now) -> Result<(), SessionError>) {
        let span = self.span.clone();
        let _entered = span.enter();
        if let Err(e) = step(&mut self.machine, now()) {
            self.fail(&e, ctx);
        }
        self.flush(ctx);
    }

    /// A local failure: rebuild the machine from the store, tell the user.
    fn fail(&mut self, e: &SessionError, ctx: &mut Context<Self>) {
        tracing::warn!(peer = %self.peer, error = %e, "session failed; reloading from the store");
        self.publish(NodeEventKind::Failed { reason: e.to_string() }, ctx);
        match build_machine(&self.setup, &self.peer, self.machine.peer()) {
            Ok(m) => self.machine = m,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "session cannot be rebuilt");
                ctx.stop();
            }
        }
    }

    fn publish(&mut self, kind: NodeEventKind, ctx: &mut Context<Self>) {
        let send = self.node.send(FromSession::Event(NodeEvent {
            peer: self.peer.clone(),
            kind,
        }));
        ctx.wait(
            async move {
                let _ = send.await;
            }
            .into_actor(self),
        );
    }

    /// Sends the machine's frames, publishes its events, re-arms the timer.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let mut frames = Vec::new();
        let mut events = Vec::new();
        while let Some(out) = self.machine.poll_output() {
            match out {
                Output::Transmit(f) => frames.push(Bytes::from(f)),
                Output::Event(e) => events.push(e),
            }
        }
        if !frames.is_empty() {
            let send = self.transport.send(Transmit {
                to: self.peer.clone(),
                frames,
            });
            ctx.wait(
                async move {
                    // Lost frames are retransmitted by the protocol.
                    let _ = send.await;
                }
                .into_actor(self),
            );
        }
        for e in events {
            self.on_event(&e, ctx);
            self.publish(NodeEventKind::Session(e), ctx);
        }
        self.pump_files(ctx);
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = self.machine.poll_timeout() {
            let delay = at.saturating_duration_since(now().at);
            self.timer = Some(ctx.run_later(delay, |act, ctx| {
                act.timer = None;
                act.step(Input::Timeout, ctx);
            }));
        }
        self.report_footprint(ctx);
    }

    /// Tells the node what dropping this session would lose, when that
    /// changed.
    fn report_footprint(&mut self, ctx: &mut Context<Self>) {
        let footprint = if self.files.is_idle() {
            self.machine.footprint()
        } else {
            Footprint::Busy
        };
        if self.reported == Some(footprint) {
            return;
        }
        self.reported = Some(footprint);
        let send = self.node.send(FromSession::Footprint {
            peer: self.peer.clone(),
            footprint,
            stored: self.machine.session_id().and(self.machine.peer()),
        });
        ctx.wait(
            async move {
                let _ = send.await;
            }
            .into_actor(self),
        );
    }

    fn on_event(&mut self, e: &Event, ctx: &mut Context<Self>) {
        match e {
            Event::Delivered { message_id } => {
                if let Some(p) = self.files.delivered(message_id) {
                    let file_id = p.file_id.clone();
                    self.publish(
                        NodeEventKind::FileProgress {
                            file_id: p.file_id,
                            acked: p.acked,
                            total: p.total,
                            size: p.size,
                        },
                        ctx,
                    );
                    if p.finished {
                        self.publish(NodeEventKind::FileSent { file_id }, ctx);
                    }
                }
            }
            Event::Received {
                message_id,
                content: chunk @ Content::FileChunk { file_id, .. },
                ..
            } => {
                let installation = self.machine.peer().map(|i| hex::encode(i.as_bytes()));
                let store = Arc::clone(&self.setup.store);
                match self.files.received(&*store, installation.as_deref(), message_id, chunk) {
                    Ok(Some(path)) => self.publish(
                        NodeEventKind::FileReceived {
                            file_id: file_id.clone(),
                            path,
                        },
                        ctx,
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(peer = %self.peer, error = %e, "cannot write a received file"),
                }
            }
            _ => {}
        }
    }

    /// Queues the next chunks of outgoing files while their windows allow,
    /// all in one burst (one outbox transaction, one encryption commit).
    /// Reads from disk a window at a time: a file is never in memory whole.
    fn pump_files(&mut self, ctx: &mut Context<Self>) {
        if !self.machine.is_ready() {
            return;
        }
        let chunks = match self.files.next_chunks() {
            Ok(chunks) if chunks.is_empty() => return,
            Ok(chunks) => chunks,
            Err(e) => return self.fail(&e, ctx),
        };
        let keys = Transfers::keys(&chunks);
        match self.machine.send_all(chunks, now()) {
            Ok(ids) => {
                self.files.queued(&keys, ids);
                self.flush(ctx);
            }
            Err(e) => self.fail(&e, ctx),
        }
    }

    /// Transfers a restart interrupted, once the peer's installation is known.
    fn recover_files(&mut self, ctx: &mut Context<Self>) {
        let Some(installation) = self.machine.peer().map(|i| hex::encode(i.as_bytes())) else {
            return;
        };
        let store = Arc::clone(&self.setup.store);
        for (file_id, path) in self.files.recover(&*store, &installation) {
            self.publish(NodeEventKind::FileReceived { file_id, path }, ctx);
        }
    }
}

fn build_machine(
    setup: &SessionSetup,
    peer: &PeerAddr,
    installation: Option<strata_cascade::InstallationId>,
) -> Result<PeerMachine, SessionError> {
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let store: Arc<dyn Durable> = setup.store.clone();
    PeerMachine::new(
        setup.config.clone(),
        Arc::clone(&setup.local),
        store,
        installation,
        Some(peer.as_str().to_owned()),
        seed,
        now(),
    )
}

impl Actor for PeerSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        self.recover_files(ctx);
        self.flush(ctx);
    }
}

impl Handler<Deliver> for PeerSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg {
            Deliver::Connected => self.step(Input::Connected, ctx),
            Deliver::Disconnected => self.step(Input::Disconnected, ctx),
            Deliver::Frames(frames) => self.run(ctx, |machine, now| {
                machine.handle_frames(frames.iter().map(|f| f.as_ref()), now)
            }),
        }
    }
}

impl Handler<SessionRequest> for PeerSession {
    type Result = Result<Option<String>, SessionError>;

    fn handle(&mut self, msg: SessionRequest, ctx: &mut Self::Context) -> Self::Result {
        let span = self.span.clone();
        let _entered = span.enter();
        let result = match msg {
            SessionRequest::Command(Command::Send(content)) => self.machine.send(content, now()).map(Some),
            SessionRequest::Command(c) => self.machine.handle(Input::Command(c), now()).map(|()| None),
            SessionRequest::SendFile(path) => self.files.start(&path).map(Some),
            SessionRequest::OpenFromBundle(bundle) => self.machine.open_from_bundle(&bundle, now()).map(|()| None),
            SessionRequest::SafetyNumber => {
                let peer = self
                    .machine
                    .peer_identity()
                    .ok_or(SessionError::Misuse("no session with this peer yet"))?;
                let local = self.setup.local.peer_identity();
                let number = SafetyNumber::new(
                    local.installation_id.as_bytes(),
                    &local.identity_key,
                    peer.installation_id.as_bytes(),
                    &peer.identity_key,
                )
                .and_then(|n| n.grouped())?;
                Ok(Some(number))
            }
        };
        if let Err(e) = &result
            && matches!(e, SessionError::Storage(_) | SessionError::Internal(_))
        {
            self.fail(e, ctx);
        }
        self.flush(ctx);
        result
    }
}

// ---- Node ---------------------------------------------------------------------

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

struct Subscriber {
    recipient: Recipient<NodeEvent>,
    queue: VecDeque<NodeEvent>,
    busy: bool,
    dropped: u64,
}

/// A running session, as the node keeps it.
struct Slot {
    addr: Addr<PeerSession>,
    /// What dropping it would lose, as it last reported.
    footprint: Footprint,
    /// When the node last handed it anything.
    used: tokio::time::Instant,
}

/// The facade apps use: sessions by peer, events to subscribers.
pub struct Node<T: Transport> {
    setup: SessionSetup,
    limits: NodeLimits,
    transport: Option<(Box<T>, EventStream)>,
    transport_actor: Option<Addr<TransportActor<T>>>,
    sessions: BTreeMap<PeerAddr, Slot>,
    /// Peers whose dropped session has not stopped yet: no second session
    /// runs beside it, so their frames wait for the retransmission.
    stopping: BTreeSet<PeerAddr>,
    /// Peers the transport has a link to.
    links: BTreeSet<PeerAddr>,
    stored: BTreeMap<PeerAddr, strata_cascade::InstallationId>,
    wanted: BTreeMap<PeerAddr, Duration>,
    subscribers: Vec<Subscriber>,
    status: BTreeMap<PeerAddr, PeerStatus>,
    span: tracing::Span,
}

impl<T: Transport> Node<T> {
    /// A node over `transport`, with its stored sessions (they resume when
    /// their peers connect).
    pub fn new(setup: SessionSetup, transport: T, stream: EventStream) -> Result<Self, SessionError> {
        let stored = stored_sessions(&*setup.store)?;
        let span = tracing::info_span!("node", local = %transport.local_addr());
        Ok(Self {
            setup,
            limits: NodeLimits::default(),
            transport: Some((Box::new(transport), stream)),
            transport_actor: None,
            sessions: BTreeMap::new(),
            stopping: BTreeSet::new(),
            links: BTreeSet::new(),
            stored,
            wanted: BTreeMap::new(),
            subscribers: Vec::new(),
            status: BTreeMap::new(),
            span,
        })
    }

    /// The same node with other limits.
    #[must_use]
    pub fn with_limits(mut self, limits: NodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The session of `peer`, made (and told of an open link) if there is
    /// none.
    fn session(&mut self, peer: &PeerAddr, ctx: &mut Context<Self>) -> Result<Addr<PeerSession>, SessionError> {
        let now = tokio::time::Instant::now();
        if let Some(slot) = self.sessions.get_mut(peer).filter(|s| s.addr.connected()) {
            slot.used = now;
            return Ok(slot.addr.clone());
        }
        if self.stopping.contains(peer) {
            return Err(SessionError::Unavailable("the peer's previous session is stopping"));
        }
        self.sessions.retain(|_, s| s.addr.connected());
        if self.sessions.len() >= self.limits.max_sessions && !self.reclaim_one(ctx) {
            return Err(SessionError::Unavailable("session limit reached"));
        }
        let transport = self
            .transport_actor
            .clone()
            .ok_or(SessionError::Unavailable("transport"))?
            .recipient();
        let session = PeerSession::new(
            self.setup.clone(),
            peer.clone(),
            self.stored.get(peer).copied(),
            transport,
            ctx.address().recipient(),
        )?;
        let addr = session.start();
        if self.links.contains(peer) {
            // A session made again after it was dropped: the link is up.
            let _ = addr.try_send(Deliver::Connected);
        }
        self.sessions.insert(
            peer.clone(),
            Slot {
                addr: addr.clone(),
                footprint: Footprint::Busy,
                used: now,
            },
        );
        Ok(addr)
    }

    /// Drops the least recently used droppable session (see
    /// [`NodeLimits`]); false when every session is busy.
    fn reclaim_one(&mut self, ctx: &mut Context<Self>) -> bool {
        let victim = self
            .sessions
            .iter()
            .filter(|(_, s)| s.footprint != Footprint::Busy)
            .min_by_key(|(_, s)| (s.footprint, s.used))
            .map(|(p, _)| p.clone());
        match victim {
            Some(peer) => {
                self.drop_session(&peer, ctx);
                true
            }
            None => false,
        }
    }

    /// Drops empty sessions idle for longer than the limit.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let Some(before) = tokio::time::Instant::now().checked_sub(self.limits.idle) else {
            return;
        };
        let idle: Vec<PeerAddr> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.footprint == Footprint::Empty && s.used <= before)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in idle {
            self.drop_session(&peer, ctx);
        }
    }

    /// Stops `peer`'s session and forgets its status; inputs for the peer
    /// are dropped until it has stopped.
    fn drop_session(&mut self, peer: &PeerAddr, ctx: &mut Context<Self>) {
        let Some(slot) = self.sessions.remove(peer) else { return };
        tracing::debug!(%peer, footprint = ?slot.footprint, "dropping a session");
        self.status.remove(peer);
        self.stopping.insert(peer.clone());
        let peer = peer.clone();
        ctx.spawn(slot.addr.send(Shutdown).into_actor(self).map(move |_, act, _| {
            act.stopping.remove(&peer);
        }));
    }

    fn publish(&mut self, event: NodeEvent, ctx: &mut Context<Self>) {
        // Status is kept for peers with a session or a stored one only, so
        // a flood of addresses cannot grow it.
        if self.sessions.contains_key(&event.peer) || self.stored.contains_key(&event.peer) {
            self.status.entry(event.peer.clone()).or_default().observe(&event.kind);
        }
        for i in 0..self.subscribers.len() {
            if let Some(s) = self.subscribers.get_mut(i) {
                if s.queue.len() >= SUBSCRIBER_QUEUE {
                    s.queue.pop_front();
                    s.dropped += 1;
                }
                s.queue.push_back(event.clone());
            }
            self.pump_subscriber(i, ctx);
        }
    }

    /// Sends the next queued event to subscriber `i`, one at a time, in order.
    fn pump_subscriber(&mut self, i: usize, ctx: &mut Context<Self>) {
        let Some(s) = self.subscribers.get_mut(i) else { return };
        if s.busy {
            return;
        }
        let next = if s.dropped > 0 {
            let dropped = std::mem::take(&mut s.dropped);
            s.queue.front().map(|e| NodeEvent {
                peer: e.peer.clone(),
                kind: NodeEventKind::Lagged { dropped },
            })
        } else {
            s.queue.pop_front()
        };
        let Some(event) = next else { return };
        s.busy = true;
        let send = s.recipient.send(event);
        ctx.spawn(send.into_actor(self).map(move |result, act, ctx| {
            if let Some(s) = act.subscribers.get_mut(i) {
                s.busy = false;
                if result.is_err() {
                    // The subscriber is gone.
                    s.queue.clear();
                    return;
                }
            }
            act.pump_subscriber(i, ctx);
        }));
    }

    fn dial(&mut self, peer: PeerAddr, ctx: &mut Context<Self>) {
        let Some(transport) = self.transport_actor.clone() else {
            return;
        };
        let dial = transport.send(Dial(peer.clone()));
        ctx.spawn(dial.into_actor(self).map(move |result, act, ctx| {
            if !matches!(result, Ok(Ok(()))) {
                act.redial(peer, ctx);
            }
        }));
    }

    /// Tries the link again later, with backoff, while the peer is wanted.
    fn redial(&mut self, peer: PeerAddr, ctx: &mut Context<Self>) {
        let Some(backoff) = self.wanted.get_mut(&peer) else {
            return;
        };
        let delay = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(30));
        ctx.run_later(delay, move |act, ctx| act.dial(peer, ctx));
    }
}

/// Address → installation of every stored session, from their records.
fn stored_sessions(store: &dyn Durable) -> Result<BTreeMap<PeerAddr, strata_cascade::InstallationId>, SessionError> {
    let mut out = BTreeMap::new();
    let contacts = durable::read(store, |r| r.contacts())?;
    for c in contacts {
        let record = durable::read(store, |r| r.handshake(&c.installation_id))?;
        let Some(record) = record.and_then(|b| SessionRecord::from_bytes(&b).ok()) else {
            continue;
        };
        if let (Some(address), Some(id)) = (record.address, crypto::parse_installation(&c.installation_id)) {
            out.insert(PeerAddr::new(address), id);
        }
    }
    Ok(out)
}

impl<T: Transport> Actor for Node<T> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        if let Some((transport, stream)) = self.transport.take() {
            let actor = TransportActor::new(*transport, stream, ctx.address().recipient());
            self.transport_actor = Some(actor.start());
        }
        ctx.run_interval(SWEEP, |act, ctx| act.sweep(ctx));
        // Stored sessions come back and resume once their peers connect.
        let stored: Vec<PeerAddr> = self.stored.keys().cloned().collect();
        for peer in stored {
            if let Err(e) = self.session(&peer, ctx) {
                tracing::warn!(%peer, error = %e, "cannot restore a session");
            }
            self.wanted.insert(peer.clone(), Duration::from_secs(1));
            self.dial(peer, ctx);
        }
    }
}

impl<T: Transport> Handler<FromTransport> for Node<T> {
    type Result = ();

    fn handle(&mut self, FromTransport(events): FromTransport, ctx: &mut Self::Context) {
        let span = self.span.clone();
        let _entered = span.enter();
        // Consecutive frames of one peer travel together, in order.
        let mut frames: Option<(PeerAddr, Vec<Bytes>)> = None;
        for event in events {
            let (peer, deliver, kind) = match event {
                TransportEvent::Frame { from, bytes } => {
                    match &mut frames {
                        Some((peer, burst)) if *peer == from => burst.push(bytes),
                        _ => {
                            if let Some((peer, burst)) = frames.replace((from, vec![bytes])) {
                                self.deliver(peer, Deliver::Frames(burst), ctx);
                            }
                        }
                    }
                    continue;
                }
                TransportEvent::Connected { peer } => {
                    if let Some(b) = self.wanted.get_mut(&peer) {
                        *b = Duration::from_secs(1);
                    }
                    (peer, Deliver::Connected, NodeEventKind::Connected)
                }
                TransportEvent::Disconnected { peer, reason } => {
                    self.links.remove(&peer);
                    if reason == DisconnectReason::ConnectionLost {
                        self.redial(peer.clone(), ctx);
                    }
                    (peer, Deliver::Disconnected, NodeEventKind::Disconnected)
                }
                TransportEvent::Published { .. } => continue,
            };
            if let Some((peer, burst)) = frames.take() {
                self.deliver(peer, Deliver::Frames(burst), ctx);
            }
            self.deliver(peer.clone(), deliver, ctx);
            if kind == NodeEventKind::Connected {
                // After the delivery: a session made by it is told once.
                self.links.insert(peer.clone());
            }
            self.publish(NodeEvent { peer, kind }, ctx);
        }
        if let Some((peer, burst)) = frames {
            self.deliver(peer, Deliver::Frames(burst), ctx);
        }
    }
}

impl<T: Transport> Node<T> {
    /// Hands `deliver` to `peer`'s session, made on first contact.
    fn deliver(&mut self, peer: PeerAddr, deliver: Deliver, ctx: &mut Context<Self>) {
        match self.session(&peer, ctx) {
            // Never wait on a session: a full mailbox drops the input and
            // the protocol retransmits it.
            Ok(s) => {
                if s.try_send(deliver).is_err() {
                    tracing::debug!(%peer, "session mailbox full; input dropped");
                }
            }
            Err(e) => tracing::warn!(%peer, error = %e, "no session for the peer"),
        }
    }
}

impl<T: Transport> Handler<FromSession> for Node<T> {
    type Result = ();

    fn handle(&mut self, msg: FromSession, ctx: &mut Self::Context) {
        match msg {
            FromSession::Event(event) => self.publish(event, ctx),
            FromSession::Footprint {
                peer,
                footprint,
                stored,
            } => {
                if let Some(slot) = self.sessions.get_mut(&peer) {
                    slot.footprint = footprint;
                }
                if let Some(installation) = stored {
                    self.stored.insert(peer, installation);
                }
            }
        }
    }
}

impl<T: Transport> Handler<Subscribe> for Node<T> {
    type Result = ();

    fn handle(&mut self, Subscribe(recipient): Subscribe, _ctx: &mut Self::Context) {
        self.subscribers.push(Subscriber {
            recipient,
            queue: VecDeque::new(),
            busy: false,
            dropped: 0,
        });
    }
}

impl<T: Transport> Handler<Connect> for Node<T> {
    type Result = ResponseActFuture<Self, Reply<()>>;

    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let session = self.session(&msg.peer, ctx);
        self.wanted.insert(msg.peer.clone(), Duration::from_secs(1));
        let transport = self.transport_actor.clone();
        let peer = msg.peer;
        let open = match msg.expect_identity {
            Some(identity_key) => Command::OpenExpecting { identity_key },
            None => Command::Open,
        };
        Box::pin(
            async move {
                let session = session?;
                session
                    .send(SessionRequest::Command(open))
                    .await
                    .map_err(|_| SessionError::Unavailable("session"))??;
                let transport = transport.ok_or(SessionError::Unavailable("transport"))?;
                transport
                    .send(Dial(peer))
                    .await
                    .map_err(|_| SessionError::Unavailable("transport"))?
                    .map_err(|e| SessionError::Internal(format!("connect: {e}")))
            }
            .into_actor(self)
            .map(move |result, _, _| Reply { request_id, result }),
        )
    }
}

impl<T: Transport> Handler<PeerRequest> for Node<T> {
    type Result = ResponseFuture<Reply<Option<String>>>;

    fn handle(&mut self, msg: PeerRequest, ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        let session = self.session(&msg.peer, ctx);
        Box::pin(async move {
            let result = match session {
                Ok(s) => s
                    .send(msg.request)
                    .await
                    .unwrap_or(Err(SessionError::Unavailable("session"))),
                Err(e) => Err(e),
            };
            Reply { request_id, result }
        })
    }
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

impl<T: Transport> Handler<ListPeers> for Node<T> {
    type Result = MessageResult<ListPeers>;

    fn handle(&mut self, _: ListPeers, _ctx: &mut Self::Context) -> Self::Result {
        let mut out: BTreeMap<PeerAddr, PeerStatus> = self.status.clone();
        for (peer, installation) in &self.stored {
            let entry = out.entry(peer.clone()).or_default();
            if entry.installation.is_none() {
                entry.installation = Some(hex::encode(installation.as_bytes()));
            }
        }
        for peer in self.sessions.keys() {
            out.entry(peer.clone()).or_default();
        }
        MessageResult(out.into_iter().collect())
    }
}

/// Stop a session, or (to a [`Node`]) the whole node: every session, the
/// transport actor, then the node. Replies once they are stopped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for PeerSession {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<T: Transport> Handler<Shutdown> for TransportActor<T> {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl<T: Transport> Handler<Shutdown> for Node<T> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let sessions: Vec<Addr<PeerSession>> = std::mem::take(&mut self.sessions)
            .into_values()
            .map(|s| s.addr)
            .collect();
        let transport = self.transport_actor.take();
        self.wanted.clear();
        Box::pin(
            async move {
                for s in sessions {
                    let _ = s.send(Shutdown).await;
                }
                if let Some(t) = transport {
                    let _ = t.send(Shutdown).await;
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}
