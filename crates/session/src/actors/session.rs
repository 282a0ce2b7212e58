//! [`PeerSession`]: one remote peer's machine, timer and file transfers.

use super::*;
use crate::files::FileEvent;

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

    /// Follows the file transfers a machine event concerns.
    fn on_event(&mut self, e: &Event, ctx: &mut Context<Self>) {
        let store = Arc::clone(&self.setup.store);
        let own_device = self.own_device();
        match self.files.on_event(&*store, self.machine.peer(), own_device, e) {
            Some(FileEvent::Progress(p)) => {
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
            Some(FileEvent::Received(file)) => {
                self.publish(received(file), ctx);
            }
            None => {}
        }
    }

    /// Queues the next chunks of outgoing files (see [`Transfers::pump`]).
    fn pump_files(&mut self, ctx: &mut Context<Self>) {
        match self.files.pump(&mut self.machine, now()) {
            Ok(true) => self.flush(ctx),
            Ok(false) => {}
            Err(e) => self.fail(&e, ctx),
        }
    }

    /// Transfers a restart interrupted, once the peer's installation is known.
    fn recover_files(&mut self, ctx: &mut Context<Self>) {
        let Some(installation) = self.machine.peer() else {
            return;
        };
        let store = Arc::clone(&self.setup.store);
        let own_device = self.own_device();
        for file in self.files.recover(&*store, &installation.to_string(), own_device) {
            self.publish(received(file), ctx);
        }
    }

    /// Whether the peer is a device of this account (it may send copies of
    /// what this account sent).
    fn own_device(&self) -> bool {
        self.machine
            .peer_identity()
            .is_some_and(|p| p.identity_key == *self.setup.local.account().identity_key())
    }
}

fn received(file: crate::files::ReceivedFile) -> NodeEventKind {
    NodeEventKind::FileReceived {
        file_id: file.file_id,
        path: file.path,
        sent_to: file.sent_to,
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
            SessionRequest::SendFile(path) => self.files.start(&path, None).map(Some),
            SessionRequest::SendFileCopy { path, to } => self.files.start(&path, Some(to)).map(Some),
            SessionRequest::OpenFromBundle(bundle) => self.machine.open_from_bundle(&bundle, now()).map(|()| None),
            SessionRequest::Expire(bundle) => {
                self.machine.expire(*bundle);
                Ok(None)
            }
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

impl Handler<Shutdown> for PeerSession {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
