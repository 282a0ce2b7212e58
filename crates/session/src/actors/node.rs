//! [`Node`]: the facade. Routes transport events to sessions, bounds them
//! ([`NodeLimits`]), publishes events to subscribers.

use super::*;

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
    pub(super) setup: SessionSetup,
    limits: NodeLimits,
    transport: Option<(Box<T>, EventStream)>,
    pub(super) transport_actor: Option<Addr<TransportActor<T>>>,
    /// The transport publishes to topics (gossip): group messages go as
    /// one publish on the group's topic.
    pub(super) broadcast: bool,
    sessions: BTreeMap<PeerAddr, Slot>,
    /// Peers whose dropped session has not stopped yet: no second session
    /// runs beside it, so their frames wait for the retransmission.
    stopping: BTreeSet<PeerAddr>,
    /// Peers the transport has a link to.
    links: BTreeSet<PeerAddr>,
    pub(super) stored: BTreeMap<PeerAddr, strata_cascade::InstallationId>,
    wanted: BTreeMap<PeerAddr, Duration>,
    subscribers: Vec<Subscriber>,
    pub(super) status: BTreeMap<PeerAddr, PeerStatus>,
    /// [`AwaitReady`] requests, per peer, until their session settles.
    waiters: BTreeMap<PeerAddr, Vec<Waiter>>,
    /// [`ClaimKeyPackage`] requests, by peer and claim id, until answered.
    claims: BTreeMap<(PeerAddr, String), ClaimWaiter>,
    /// The group chats, each an actor.
    pub(super) groups: super::groups::Groups,
    /// Device lists, fan-out, sent copies.
    pub(super) devices: super::devices::Devices,
    /// Out-of-band key exchanges.
    pub(super) exchanges: super::kx::Exchanges,
    /// A refill of the KeyPackage pool is running (one at a time).
    refilling: bool,
    span: tracing::Span,
}

type Waiter = tokio::sync::oneshot::Sender<Result<Ready, SessionError>>;
type ClaimWaiter = tokio::sync::oneshot::Sender<Result<ClaimedKeyPackage, SessionError>>;

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
            broadcast: false,
            sessions: BTreeMap::new(),
            stopping: BTreeSet::new(),
            links: BTreeSet::new(),
            stored,
            wanted: BTreeMap::new(),
            subscribers: Vec::new(),
            status: BTreeMap::new(),
            waiters: BTreeMap::new(),
            claims: BTreeMap::new(),
            groups: super::groups::Groups::default(),
            devices: super::devices::Devices::default(),
            exchanges: super::kx::Exchanges::default(),
            refilling: false,
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
    pub(super) fn session(
        &mut self,
        peer: &PeerAddr,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<PeerSession>, SessionError> {
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

    /// Answers the [`ClaimKeyPackage`] request `event` settles.
    fn settle_claim(&mut self, event: &NodeEvent) {
        let (claim, result) = match &event.kind {
            NodeEventKind::Session(Event::KeyPackageClaimed { claim, package }) => (claim, Ok(package.clone())),
            NodeEventKind::Session(Event::KeyPackageClaimFailed { claim, reason }) => {
                (claim, Err(SessionError::ClaimFailed(reason.clone())))
            }
            _ => return,
        };
        if let Some(waiter) = self.claims.remove(&(event.peer.clone(), claim.clone())) {
            // A caller that stopped waiting dropped its receiver.
            let _ = waiter.send(result);
        }
    }

    /// Answers the [`AwaitReady`] requests `event` settles.
    fn settle_waiters(&mut self, event: &NodeEvent) {
        // `None`: refused, the peer is not who the caller expects.
        let ready = match &event.kind {
            NodeEventKind::Session(Event::EncryptionReady {
                installation, resumed, ..
            }) => Some(Ready {
                installation: installation.clone(),
                resumed: *resumed,
            }),
            NodeEventKind::Session(Event::IdentityMismatch { .. }) => None,
            _ => return,
        };
        for waiter in self.waiters.remove(&event.peer).unwrap_or_default() {
            // A caller that stopped waiting dropped its receiver.
            let _ = waiter.send(ready.clone().ok_or(SessionError::IdentityMismatch));
        }
    }

    /// A session's claim left the KeyPackage pool low: tops it up
    /// ([`crate::pool::keep_stocked`]) on a blocking thread, KeyPackage
    /// generation being slow. One refill at a time; a signal that arrives
    /// during one is covered by it (it tops up to the full stock).
    fn refill_key_packages(&mut self, ctx: &mut Context<Self>) {
        if self.refilling {
            return;
        }
        self.refilling = true;
        let store = Arc::clone(&self.setup.store);
        let local = Arc::clone(&self.setup.local);
        let pool = self.setup.config.key_package_pool.clone();
        let refill = tokio::task::spawn_blocking(move || {
            crate::pool::keep_stocked(&*store, &local, &pool, now().unix_ms / 1000)
        });
        ctx.spawn(refill.into_actor(self).map(|done, act, _ctx| {
            act.refilling = false;
            match done {
                Ok(Ok(restock)) => tracing::info!(
                    added = restock.added,
                    expired = restock.expired,
                    last_resort = restock.last_resort,
                    "KeyPackage pool refilled"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "KeyPackage pool refill failed"),
                Err(e) => tracing::warn!(error = %e, "KeyPackage pool refill task failed"),
            }
        }));
    }

    pub(super) fn publish(&mut self, event: NodeEvent, ctx: &mut Context<Self>) {
        // Status is kept for peers with a session or a stored one only, so
        // a flood of addresses cannot grow it.
        if self.sessions.contains_key(&event.peer) || self.stored.contains_key(&event.peer) {
            self.status.entry(event.peer.clone()).or_default().observe(&event.kind);
        }
        self.settle_waiters(&event);
        self.settle_claim(&event);
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

    /// Opens (or resumes) the session with `peer`, expecting the account
    /// key `identity_key` (see [`Connect`]); failures are logged.
    pub(super) fn open_expecting(&mut self, peer: PeerAddr, identity_key: Vec<u8>, ctx: &mut Context<Self>) {
        let connect = Connect {
            request_id: 0,
            peer: peer.clone(),
            expect_identity: Some(identity_key),
        };
        ctx.spawn(ctx.address().send(connect).into_actor(self).map(move |reply, _, _| {
            if let Ok(Err(e)) = reply.map(|r| r.result) {
                tracing::debug!(%peer, error = %e, "cannot open the session");
            }
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
        if let (Some(address), Some(id)) = (record.address, c.installation_id.parse().ok()) {
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
            self.broadcast = transport.capabilities().broadcast;
            let actor = TransportActor::new(*transport, stream, ctx.address().recipient());
            self.transport_actor = Some(actor.start());
        }
        ctx.run_interval(SWEEP, |act, ctx| act.sweep(ctx));
        self.restore_groups(ctx);
        self.restore_devices(ctx);
        self.restore_exchanges(ctx);
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
                TransportEvent::Frame { from, bytes } if super::groups::is_group_message(&bytes) => {
                    self.group_message(Some(&from), &bytes);
                    continue;
                }
                TransportEvent::Frame { from, bytes } if crate::pairing::is_pairing(&bytes) => {
                    self.pairing_frame(from, &bytes, ctx);
                    continue;
                }
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
                TransportEvent::Published { topic, from, bytes } => {
                    if self.rendezvous_frame(&topic, &bytes, ctx) {
                        continue;
                    }
                    if super::groups::is_group_message(&bytes) {
                        self.group_message(from.as_ref(), &bytes);
                    } else {
                        self.bundle_published(&bytes, ctx);
                    }
                    continue;
                }
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
            FromSession::Event(event) => {
                if matches!(event.kind, NodeEventKind::Session(Event::LowKeyPackages { .. })) {
                    self.refill_key_packages(ctx);
                }
                // A group's PDU goes to the group, not to subscribers; nor
                // do the queueing and delivery of the ones we send.
                if let Some(pdu) = super::groups::group_pdu(&event) {
                    self.group_pdu(&event.peer, pdu, ctx);
                    return;
                }
                if self.groups.is_internal(&event) || self.kx_event(&event, ctx) || self.device_event(&event, ctx) {
                    return;
                }
                self.publish(event, ctx);
            }
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
        if let Some(status) = self.status.get_mut(&msg.peer)
            && status.state == SessionState::Refused
        {
            // A new attempt: an earlier refusal no longer settles waits.
            status.state = SessionState::Idle;
        }
        self.wanted.insert(msg.peer.clone(), Duration::from_secs(1));
        let transport = self.transport_actor.clone();
        let peer = msg.peer;
        let open = match msg.expect_identity {
            Some(identity_key) => Command::OpenExpecting { identity_key },
            None => Command::Open,
        };
        // Into the session's mailbox now, not when the reply is awaited: a
        // request for the peer that comes after this one finds it opening.
        let opened = session.map(|s| s.send(SessionRequest::Command(open)));
        Box::pin(
            async move {
                opened?.await.map_err(|_| SessionError::Unavailable("session"))??;
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

impl<T: Transport> Handler<ListPeers> for Node<T> {
    type Result = MessageResult<ListPeers>;

    fn handle(&mut self, _: ListPeers, _ctx: &mut Self::Context) -> Self::Result {
        let mut out: BTreeMap<PeerAddr, PeerStatus> = self.status.clone();
        for (peer, installation) in &self.stored {
            let entry = out.entry(peer.clone()).or_default();
            if entry.installation.is_none() {
                entry.installation = Some(installation.to_hex());
            }
        }
        for peer in self.sessions.keys() {
            out.entry(peer.clone()).or_default();
        }
        MessageResult(out.into_iter().collect())
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
        let groups: Vec<Addr<GroupActor>> = std::mem::take(&mut self.groups.actors)
            .into_values()
            .map(|(addr, _)| addr)
            .collect();
        self.wanted.clear();
        Box::pin(
            async move {
                for g in groups {
                    let _ = g.send(Shutdown).await;
                }
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

impl<T: Transport> Handler<AwaitReady> for Node<T> {
    type Result = ResponseFuture<Reply<Ready>>;

    fn handle(&mut self, msg: AwaitReady, _ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        // Settled already: ready, or refused since the last attempt began.
        let settled = self.status.get(&msg.peer).and_then(|s| match s.state {
            SessionState::Ready => Some(Ok(Ready {
                installation: s.installation.clone().unwrap_or_default(),
                resumed: s.resumed,
            })),
            SessionState::Refused => Some(Err(SessionError::IdentityMismatch)),
            _ => None,
        });
        if let Some(result) = settled {
            return Box::pin(async move { Reply { request_id, result } });
        }
        // Callers that gave up are forgotten first, so the bound holds.
        self.waiters.retain(|_, w| {
            w.retain(|s| !s.is_closed());
            !w.is_empty()
        });
        if self.waiters.values().map(Vec::len).sum::<usize>() >= MAX_WAITERS {
            return Box::pin(async move {
                Reply {
                    request_id,
                    result: Err(SessionError::Unavailable("too many waits for a session")),
                }
            });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.entry(msg.peer).or_default().push(tx);
        Box::pin(async move {
            let result = rx.await.unwrap_or(Err(SessionError::Unavailable("node")));
            Reply { request_id, result }
        })
    }
}

impl<T: Transport> Handler<ClaimKeyPackage> for Node<T> {
    type Result = ResponseFuture<Reply<ClaimedKeyPackage>>;

    fn handle(&mut self, msg: ClaimKeyPackage, ctx: &mut Self::Context) -> Self::Result {
        let request_id = msg.request_id;
        // Callers that gave up are forgotten first, so the bound holds.
        self.claims.retain(|_, w| !w.is_closed());
        if self.claims.len() >= MAX_WAITERS {
            let result = Err(SessionError::Unavailable("too many KeyPackage claims in flight"));
            return Box::pin(async move { Reply { request_id, result } });
        }
        // Random, so a claim after a restart never meets the peer's cached
        // answer to one before it.
        let mut id = [0u8; 12];
        rand::rng().fill_bytes(&mut id);
        let claim = hex::encode(id);
        let session = self.session(&msg.peer, ctx);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.claims.insert((msg.peer, claim.clone()), tx);
        Box::pin(async move {
            let result = async {
                session?
                    .send(SessionRequest::Command(Command::ClaimKeyPackage { claim }))
                    .await
                    .map_err(|_| SessionError::Unavailable("session"))??;
                rx.await.unwrap_or(Err(SessionError::Unavailable("node")))
            }
            .await;
            Reply { request_id, result }
        })
    }
}
