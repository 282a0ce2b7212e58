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
//!   stored session, so they resume), reconnects lost links with backoff,
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
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use rand::RngCore as _;
use strata_cascade::{InstallationIdentity, SafetyNumber};
use strata_transport::{DisconnectReason, EventStream, PeerAddr, Transport, TransportError, TransportEvent};

use crate::config::Config;
use crate::content::{Content, FILE_CHUNK_BYTES};
use crate::crypto;
use crate::durable::{self, Durable, SessionRecord};
use crate::error::SessionError;
use crate::machine::{Command, Event, Input, Now, Output, PeerMachine};

/// Correlates a request with its reply.
pub type RequestId = u64;

/// Mailbox capacity of every actor here.
pub const MAILBOX: usize = 1024;
/// Events kept for a slow subscriber before the oldest are dropped.
pub const SUBSCRIBER_QUEUE: usize = 4096;
/// Most peer sessions one node runs; frames from further addresses are
/// dropped (a flood of new addresses cannot grow the node without bound).
pub const MAX_SESSIONS: usize = 4096;
/// File chunks of one transfer in flight at once.
pub const FILE_WINDOW: usize = 8;

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

/// A transport event, on its way to the [`Node`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromTransport(pub TransportEvent);

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
}

impl<T: Transport> TransportActor<T> {
    /// Wraps `transport` and its event stream; events go to `node`.
    pub fn new(transport: T, stream: EventStream, node: Recipient<FromTransport>) -> Self {
        Self {
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
            ctx.add_stream(stream);
        }
    }
}

impl<T: Transport> StreamHandler<TransportEvent> for TransportActor<T> {
    fn handle(&mut self, event: TransportEvent, ctx: &mut Self::Context) {
        // Back-pressure: the next event is read once the Node took this one.
        let send = self.node.send(FromTransport(event));
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
        Box::pin(async move {
            for frame in msg.frames {
                transport.send(&msg.to, frame).await?;
            }
            Ok(())
        })
    }
}

impl<T: Transport> Handler<Dial> for TransportActor<T> {
    type Result = ResponseFuture<Result<(), TransportError>>;

    fn handle(&mut self, msg: Dial, _ctx: &mut Self::Context) -> Self::Result {
        let transport = T::clone(&self.transport);
        Box::pin(async move { transport.connect(&msg.0).await })
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
    /// A frame from the peer.
    Frame(Bytes),
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
}

/// A session event on its way to the [`Node`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FromSession(pub NodeEvent);

struct OutgoingFile {
    file: std::fs::File,
    file_id: String,
    name: String,
    size: u64,
    next: u32,
    total: u32,
    in_flight: BTreeSet<String>,
}

struct IncomingFile {
    file: std::fs::File,
    part: PathBuf,
    name: String,
    received: BTreeSet<u32>,
    total: u32,
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
    sending: VecDeque<OutgoingFile>,
    receiving: BTreeMap<String, IncomingFile>,
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
        Ok(Self {
            setup,
            peer,
            machine,
            transport,
            node,
            timer: None,
            sending: VecDeque::new(),
            receiving: BTreeMap::new(),
        })
    }

    fn step(&mut self, input: Input<'_>, ctx: &mut Context<Self>) {
        if let Err(e) = self.machine.handle(input, now()) {
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
        let send = self.node.send(FromSession(NodeEvent {
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
    }

    fn on_event(&mut self, e: &Event, ctx: &mut Context<Self>) {
        match e {
            Event::Delivered { message_id } => {
                let mut finished = None;
                for (i, f) in self.sending.iter_mut().enumerate() {
                    if f.in_flight.remove(message_id) && f.in_flight.is_empty() && f.next == f.total {
                        finished = Some(i);
                    }
                }
                if let Some(f) = finished.and_then(|i| self.sending.remove(i)) {
                    self.publish(NodeEventKind::FileSent { file_id: f.file_id }, ctx);
                }
            }
            Event::Received {
                content:
                    Content::FileChunk {
                        file_id,
                        name,
                        index,
                        total,
                        data,
                        ..
                    },
                ..
            } => match self.write_chunk(file_id, name, *index, *total, data) {
                Ok(Some(path)) => self.publish(
                    NodeEventKind::FileReceived {
                        file_id: file_id.clone(),
                        path,
                    },
                    ctx,
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(peer = %self.peer, error = %e, "cannot write a received file"),
            },
            _ => {}
        }
    }

    /// Writes one received chunk at its offset; returns the final path when
    /// the file is whole.
    fn write_chunk(
        &mut self,
        file_id: &str,
        name: &str,
        index: u32,
        total: u32,
        data: &[u8],
    ) -> std::io::Result<Option<PathBuf>> {
        let safe = |s: &str| {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                .collect::<String>()
        };
        if !self.receiving.contains_key(file_id) {
            std::fs::create_dir_all(&self.setup.downloads)?;
            let part = self.setup.downloads.join(format!("{}.part", safe(file_id)));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&part)?;
            self.receiving.insert(
                file_id.to_owned(),
                IncomingFile {
                    file,
                    part,
                    name: safe(name),
                    received: BTreeSet::new(),
                    total,
                },
            );
        }
        let Some(f) = self.receiving.get_mut(file_id) else {
            return Ok(None);
        };
        f.file
            .seek(SeekFrom::Start(u64::from(index) * FILE_CHUNK_BYTES as u64))?;
        f.file.write_all(data)?;
        f.received.insert(index);
        if u32::try_from(f.received.len()).unwrap_or(u32::MAX) < f.total {
            return Ok(None);
        }
        let Some(f) = self.receiving.remove(file_id) else {
            return Ok(None);
        };
        f.file.sync_all()?;
        let name = if f.name.is_empty() { safe(file_id) } else { f.name };
        let path = self.setup.downloads.join(format!("{}-{name}", safe(file_id)));
        std::fs::rename(&f.part, &path)?;
        Ok(Some(path))
    }

    /// Queues the next chunks of outgoing files while their windows allow.
    /// Reads from disk one chunk at a time: a file is never in memory whole.
    fn pump_files(&mut self, ctx: &mut Context<Self>) {
        if !self.machine.is_ready() {
            return;
        }
        let machine = &mut self.machine;
        let mut queued = false;
        let mut failure = None;
        'files: for f in &mut self.sending {
            while f.in_flight.len() < FILE_WINDOW && f.next < f.total {
                let mut data = vec![0u8; FILE_CHUNK_BYTES];
                let read = f
                    .file
                    .seek(SeekFrom::Start(u64::from(f.next) * FILE_CHUNK_BYTES as u64))
                    .and_then(|_| read_full(&mut f.file, &mut data));
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        failure = Some(SessionError::Internal(format!("reading {}: {e}", f.name)));
                        break 'files;
                    }
                };
                data.truncate(n);
                let content = Content::FileChunk {
                    file_id: f.file_id.clone(),
                    name: f.name.clone(),
                    size: f.size,
                    index: f.next,
                    total: f.total,
                    data,
                };
                match machine.send(content, now()) {
                    Ok(id) => {
                        f.in_flight.insert(id);
                        f.next += 1;
                        queued = true;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break 'files;
                    }
                }
            }
        }
        if let Some(e) = failure {
            self.fail(&e, ctx);
        }
        if queued {
            self.flush(ctx);
        }
    }

    fn start_file(&mut self, path: &std::path::Path) -> Result<String, SessionError> {
        let io = |e: std::io::Error| SessionError::Internal(format!("file {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let total = u32::try_from(size.div_ceil(FILE_CHUNK_BYTES as u64).max(1))
            .map_err(|_| SessionError::Misuse("file too large"))?;
        let mut id = [0u8; 12];
        rand::rng().fill_bytes(&mut id);
        let file_id = hex::encode(id);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.sending.push_back(OutgoingFile {
            file,
            file_id: file_id.clone(),
            name,
            size,
            next: 0,
            total,
            in_flight: BTreeSet::new(),
        });
        Ok(file_id)
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match file.read(rest)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
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
        self.flush(ctx);
    }
}

impl Handler<Deliver> for PeerSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        match msg {
            Deliver::Connected => self.step(Input::Connected, ctx),
            Deliver::Disconnected => self.step(Input::Disconnected, ctx),
            Deliver::Frame(bytes) => self.step(Input::Frame(&bytes), ctx),
        }
    }
}

impl Handler<SessionRequest> for PeerSession {
    type Result = Result<Option<String>, SessionError>;

    fn handle(&mut self, msg: SessionRequest, ctx: &mut Self::Context) -> Self::Result {
        let result = match msg {
            SessionRequest::Command(Command::Send(content)) => self.machine.send(content, now()).map(Some),
            SessionRequest::Command(c) => self.machine.handle(Input::Command(c), now()).map(|()| None),
            SessionRequest::SendFile(path) => self.start_file(&path).map(Some),
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

/// The facade apps use: sessions by peer, events to subscribers.
pub struct Node<T: Transport> {
    setup: SessionSetup,
    transport: Option<(Box<T>, EventStream)>,
    transport_actor: Option<Addr<TransportActor<T>>>,
    sessions: BTreeMap<PeerAddr, Addr<PeerSession>>,
    stored: BTreeMap<PeerAddr, strata_cascade::InstallationId>,
    wanted: BTreeMap<PeerAddr, Duration>,
    subscribers: Vec<Subscriber>,
}

impl<T: Transport> Node<T> {
    /// A node over `transport`, with its stored sessions (they resume when
    /// their peers connect).
    pub fn new(setup: SessionSetup, transport: T, stream: EventStream) -> Result<Self, SessionError> {
        let stored = stored_sessions(&*setup.store)?;
        Ok(Self {
            setup,
            transport: Some((Box::new(transport), stream)),
            transport_actor: None,
            sessions: BTreeMap::new(),
            stored,
            wanted: BTreeMap::new(),
            subscribers: Vec::new(),
        })
    }

    fn session(&mut self, peer: &PeerAddr, ctx: &mut Context<Self>) -> Result<Addr<PeerSession>, SessionError> {
        if let Some(addr) = self.sessions.get(peer).filter(|a| a.connected()) {
            return Ok(addr.clone());
        }
        self.sessions.retain(|_, a| a.connected());
        if self.sessions.len() >= MAX_SESSIONS {
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
        self.sessions.insert(peer.clone(), addr.clone());
        Ok(addr)
    }

    fn publish(&mut self, event: NodeEvent, ctx: &mut Context<Self>) {
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

    fn handle(&mut self, FromTransport(event): FromTransport, ctx: &mut Self::Context) {
        let (peer, deliver, kind) = match event {
            TransportEvent::Connected { peer } => {
                if let Some(b) = self.wanted.get_mut(&peer) {
                    *b = Duration::from_secs(1);
                }
                (peer, Deliver::Connected, Some(NodeEventKind::Connected))
            }
            TransportEvent::Disconnected { peer, reason } => {
                if reason == DisconnectReason::ConnectionLost {
                    self.redial(peer.clone(), ctx);
                }
                (peer, Deliver::Disconnected, Some(NodeEventKind::Disconnected))
            }
            TransportEvent::Frame { from, bytes } => (from, Deliver::Frame(bytes), None),
            TransportEvent::Published { .. } => return,
        };
        match self.session(&peer, ctx) {
            // Never wait on a session: a full mailbox drops the frame and
            // the protocol retransmits it.
            Ok(s) => {
                if s.try_send(deliver).is_err() {
                    tracing::debug!(%peer, "session mailbox full; input dropped");
                }
            }
            Err(e) => tracing::warn!(%peer, error = %e, "no session for the peer"),
        }
        if let Some(kind) = kind {
            self.publish(NodeEvent { peer, kind }, ctx);
        }
    }
}

impl<T: Transport> Handler<FromSession> for Node<T> {
    type Result = ();

    fn handle(&mut self, FromSession(event): FromSession, ctx: &mut Self::Context) {
        self.publish(event, ctx);
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
        Box::pin(
            async move {
                let session = session?;
                session
                    .send(SessionRequest::Command(Command::Open))
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
        let sessions: Vec<Addr<PeerSession>> = std::mem::take(&mut self.sessions).into_values().collect();
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
