//! One DataConnection to one remote peer: a peer connection with a single
//! data channel, driven by its own task.
//!
//! The task negotiates (offer or answer, trickle ICE through the broker),
//! announces the link once the channel opens, and ends it on the first sign
//! of closure: a local `disconnect`, PeerJS's graceful close message, the
//! channel closing, or ICE reporting `disconnected`/`failed`. webrtc-rs
//! callbacks only forward events to the task over a bounded channel; they
//! never hold the peer connection, so nothing leaks through a cycle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use strata_transport::{DisconnectReason, PeerAddr, TransportError, TransportEvent};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use webrtc::api::API;
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;

use crate::protocol::{
    AnswerPayload, CONNECTION_TYPE_DATA, CandidatePayload, IceCandidate, Message, MessageType, OfferPayload,
    SessionDescription,
};
use crate::rtc::{RtcConfig, advertise_max_message_size, sdp_attribute};
use crate::serialization::{ChannelMessage, Codec, CodecError, Inbound, Serialization};
use crate::signaling::Signaling;

/// Open links by peer: what `send` uses, without going through the actor.
pub(crate) type Routes = Arc<Mutex<HashMap<PeerAddr, Arc<OpenLink>>>>;

/// Remote candidates buffered before the remote description is set.
const MAX_PENDING_CANDIDATES: usize = 64;

/// Size and timing limits shared by every link of a transport.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_frame: usize,
    pub(crate) max_message: usize,
    pub(crate) chunk_mtu: usize,
    pub(crate) connect_timeout: Duration,
    /// Stop writing while this much is buffered (P8: 8 MiB).
    pub(crate) high_water: usize,
    /// Resume once the buffer drains below this.
    pub(crate) low_water: usize,
}

/// What every link of one transport shares.
pub(crate) struct LinkCtx {
    pub(crate) local: PeerAddr,
    pub(crate) api: API,
    pub(crate) rtc: RtcConfig,
    pub(crate) signaling: Signaling,
    pub(crate) events: mpsc::Sender<TransportEvent>,
    pub(crate) routes: Routes,
    pub(crate) reports: mpsc::Sender<Report>,
    pub(crate) limits: Limits,
    pub(crate) metadata: Option<serde_json::Value>,
}

/// Which side of the negotiation this link is.
pub(crate) enum Role {
    /// We send the OFFER.
    Offerer { serialization: Serialization },
    /// We answer the peer's OFFER.
    Answerer { offer: Box<OfferPayload> },
}

/// A link to start.
pub(crate) struct LinkSpec {
    pub(crate) peer: PeerAddr,
    pub(crate) link_id: u64,
    pub(crate) connection_id: String,
    pub(crate) role: Role,
    /// Candidates that arrived before the link existed.
    pub(crate) early_candidates: Vec<IceCandidate>,
}

/// From the transport actor to a link.
#[derive(Debug)]
pub(crate) enum LinkInput {
    Answer(SessionDescription),
    Candidate(IceCandidate),
    Close(CloseReason),
}

/// Why the actor closes a link.
#[derive(Debug)]
pub(crate) enum CloseReason {
    /// `Transport::disconnect`.
    Local,
    /// A newer connection with the same peer replaces it.
    Superseded,
    /// Negotiation cannot succeed (e.g. the broker says the peer is unknown).
    Failed(TransportError),
}

/// From a link to the transport actor.
#[derive(Debug)]
pub(crate) enum Report {
    Opened {
        peer: PeerAddr,
        link_id: u64,
    },
    Ended {
        peer: PeerAddr,
        link_id: u64,
        /// Why it never opened, for pending `connect` calls.
        error: Option<TransportError>,
    },
}

/// Events from webrtc-rs callbacks.
enum Internal {
    LocalCandidate(RTCIceCandidate),
    State(RTCPeerConnectionState),
    Channel(Arc<RTCDataChannel>),
    Open,
    ChannelClosed,
    RemoteClose,
}

/// How a link ended.
enum End {
    Disconnected(DisconnectReason),
    Failed(TransportError),
}

/// The sending half of an open link.
pub(crate) struct OpenLink {
    link_id: u64,
    peer: PeerAddr,
    dc: Arc<RTCDataChannel>,
    codec: tokio::sync::Mutex<Codec>,
    drained: Arc<Notify>,
    closed: Arc<AtomicBool>,
    /// Becomes true when the link ends: wakes writers blocked in webrtc-rs,
    /// whose SCTP queue only drains when the peer reads.
    closing: watch::Receiver<bool>,
    high_water: usize,
}

impl OpenLink {
    /// The link this is the sending half of.
    pub(crate) fn link_id(&self) -> u64 {
        self.link_id
    }

    /// Sends one frame, waiting while more than the high-water mark is
    /// buffered. Frames of one link go out whole and in order.
    pub(crate) async fn send(&self, frame: &Bytes) -> Result<(), TransportError> {
        let mut codec = self.codec.lock().await;
        let messages = codec.encode(frame).map_err(|e| match e {
            CodecError::TooLarge { len, max, .. } => TransportError::FrameTooLarge { len, max },
            CodecError::NotJson => TransportError::Unsupported("the peer's json serialization carries only JSON"),
            other => TransportError::Internal(other.to_string()),
        })?;
        for message in messages {
            self.write(&message).await?;
        }
        Ok(())
    }

    async fn write(&self, message: &ChannelMessage) -> Result<(), TransportError> {
        let mut closing = self.closing.clone();
        let gone = || TransportError::NotConnected(self.peer.clone());
        while self.dc.buffered_amount().await > self.high_water {
            tokio::select! {
                _ = self.drained.notified() => {}
                _ = closing.wait_for(|closing| *closing) => return Err(gone()),
            }
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(gone());
        }
        let send = async {
            if message.is_text {
                let text = String::from_utf8_lossy(&message.data).into_owned();
                self.dc.send_text(text).await
            } else {
                self.dc.send(&message.data).await
            }
        };
        // webrtc-rs itself blocks a send while its SCTP queue is full; a send
        // cancelled there has queued nothing.
        let sent = tokio::select! {
            sent = send => sent,
            _ = closing.wait_for(|closing| *closing) => return Err(gone()),
        };
        sent.map(drop).map_err(|e| {
            if self.closed.load(Ordering::Acquire) {
                gone()
            } else {
                TransportError::Io(format!("data channel send: {e}"))
            }
        })
    }

    /// Sends the serialization's close message so the peer learns of a
    /// local disconnect at once. Writers were already told to stop (a frame
    /// in progress is cut short: its sender may be blocked on a peer that
    /// stopped reading, and a disconnect must not wait for that).
    async fn send_close_message(&self) {
        let Ok(codec) = tokio::time::timeout(Duration::from_secs(1), self.codec.lock()).await else {
            tracing::debug!("a blocked sender held the link; closing without the close message");
            return;
        };
        if let Some(message) = codec.close_message() {
            let send = self.dc.send(&message.data);
            if tokio::time::timeout(Duration::from_millis(500), send).await.is_err() {
                tracing::debug!("close message not sent in time");
            }
        }
    }
}

/// Runs one link to its end, then reports it.
pub(crate) async fn run(ctx: Arc<LinkCtx>, spec: LinkSpec, inputs: mpsc::Receiver<LinkInput>) {
    let (peer, link_id) = (spec.peer.clone(), spec.link_id);
    let (internal_tx, internal_rx) = mpsc::channel(128);
    let (announced, _) = watch::channel(false);
    let serialization = match &spec.role {
        Role::Offerer { serialization } => *serialization,
        Role::Answerer { offer } => offer
            .serialization
            .as_deref()
            .and_then(Serialization::from_offer)
            .unwrap_or_default(),
    };
    let mut link = Link {
        ctx: Arc::clone(&ctx),
        spec,
        serialization,
        pc: None,
        dc: None,
        remote_set: false,
        pending: Vec::new(),
        mid: "0".to_owned(),
        ufrag: None,
        internal_tx,
        announced,
        gone: Arc::new(AtomicBool::new(false)),
        closing: watch::channel(false).0,
        drained: Arc::new(Notify::new()),
        open: None,
    };
    let end = link.drive(inputs, internal_rx).await;
    let error = link.finish(end).await;
    let _ = ctx.reports.send(Report::Ended { peer, link_id, error }).await;
}

struct Link {
    ctx: Arc<LinkCtx>,
    spec: LinkSpec,
    serialization: Serialization,
    pc: Option<Arc<RTCPeerConnection>>,
    dc: Option<Arc<RTCDataChannel>>,
    remote_set: bool,
    pending: Vec<IceCandidate>,
    mid: String,
    ufrag: Option<String>,
    internal_tx: mpsc::Sender<Internal>,
    announced: watch::Sender<bool>,
    /// Set once the link has ended: late frames are dropped.
    gone: Arc<AtomicBool>,
    closing: watch::Sender<bool>,
    drained: Arc<Notify>,
    open: Option<Arc<OpenLink>>,
}

fn io(context: &str, error: impl std::fmt::Display) -> End {
    End::Failed(TransportError::Io(format!("{context}: {error}")))
}

impl Link {
    async fn drive(&mut self, mut inputs: mpsc::Receiver<LinkInput>, mut internal: mpsc::Receiver<Internal>) -> End {
        if let Err(end) = self.negotiate().await {
            return end;
        }
        let deadline = Instant::now() + self.ctx.limits.connect_timeout;
        loop {
            let opened = self.open.is_some();
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(LinkInput::Answer(answer)) => {
                        if let Err(end) = self.on_answer(answer).await {
                            return end;
                        }
                    }
                    Some(LinkInput::Candidate(candidate)) => self.on_remote_candidate(candidate).await,
                    Some(LinkInput::Close(CloseReason::Local)) | None => {
                        return End::Disconnected(DisconnectReason::Local);
                    }
                    Some(LinkInput::Close(CloseReason::Superseded)) => {
                        return End::Disconnected(DisconnectReason::ConnectionLost);
                    }
                    Some(LinkInput::Close(CloseReason::Failed(error))) => return End::Failed(error),
                },
                event = internal.recv() => {
                    // The link holds a sender, so the channel never closes.
                    let Some(event) = event else { return End::Disconnected(DisconnectReason::ConnectionLost) };
                    if let Some(end) = self.on_internal(event).await {
                        return end;
                    }
                }
                _ = tokio::time::sleep_until(deadline), if !opened => {
                    tracing::debug!(peer = %self.spec.peer, "data channel did not open in time");
                    return End::Failed(TransportError::Unreachable(self.spec.peer.clone()));
                }
            }
        }
    }

    /// Creates the peer connection and sends the OFFER or ANSWER.
    async fn negotiate(&mut self) -> Result<(), End> {
        let pc = Arc::new(
            self.ctx
                .api
                .new_peer_connection(self.ctx.rtc.configuration())
                .await
                .map_err(|e| io("new peer connection", e))?,
        );
        self.pc = Some(Arc::clone(&pc));
        let tx = self.internal_tx.clone();
        pc.on_ice_candidate(Box::new(move |candidate| {
            let tx = tx.clone();
            Box::pin(async move {
                if let Some(candidate) = candidate {
                    let _ = tx.send(Internal::LocalCandidate(candidate)).await;
                }
            })
        }));
        let tx = self.internal_tx.clone();
        pc.on_peer_connection_state_change(Box::new(move |state| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(Internal::State(state)).await;
            })
        }));
        match &self.spec.role {
            Role::Offerer { .. } => self.offer(&pc).await,
            Role::Answerer { offer } => {
                let offer = (**offer).clone();
                self.answer(&pc, offer).await
            }
        }
    }

    async fn offer(&mut self, pc: &Arc<RTCPeerConnection>) -> Result<(), End> {
        let init = RTCDataChannelInit {
            ordered: Some(true),
            ..RTCDataChannelInit::default()
        };
        let dc = pc
            .create_data_channel(&self.spec.connection_id, Some(init))
            .await
            .map_err(|e| io("create data channel", e))?;
        self.hooks().install(&dc).await;
        self.dc = Some(dc);
        let offer = pc.create_offer(None).await.map_err(|e| io("create offer", e))?;
        pc.set_local_description(offer.clone())
            .await
            .map_err(|e| io("set local offer", e))?;
        self.learn_local(&offer.sdp);
        let payload = OfferPayload {
            sdp: SessionDescription {
                kind: "offer".to_owned(),
                sdp: advertise_max_message_size(&offer.sdp, self.ctx.limits.max_message),
            },
            connection_type: CONNECTION_TYPE_DATA.to_owned(),
            connection_id: self.spec.connection_id.clone(),
            label: Some(self.spec.connection_id.clone()),
            reliable: true,
            serialization: Some(self.serialization.as_str().to_owned()),
            metadata: self.ctx.metadata.clone(),
        };
        self.signal(MessageType::Offer, &payload).await;
        Ok(())
    }

    async fn answer(&mut self, pc: &Arc<RTCPeerConnection>, offer: OfferPayload) -> Result<(), End> {
        let hooks = self.hooks();
        let tx = self.internal_tx.clone();
        pc.on_data_channel(Box::new(move |dc| {
            let (hooks, tx) = (hooks.clone(), tx.clone());
            Box::pin(async move {
                hooks.install(&dc).await;
                let _ = tx.send(Internal::Channel(dc)).await;
            })
        }));
        let remote = RTCSessionDescription::offer(offer.sdp.sdp).map_err(|e| io("remote offer", e))?;
        pc.set_remote_description(remote)
            .await
            .map_err(|e| io("set remote offer", e))?;
        self.remote_set = true;
        for candidate in std::mem::take(&mut self.spec.early_candidates) {
            self.on_remote_candidate(candidate).await;
        }
        let answer = pc.create_answer(None).await.map_err(|e| io("create answer", e))?;
        pc.set_local_description(answer.clone())
            .await
            .map_err(|e| io("set local answer", e))?;
        self.learn_local(&answer.sdp);
        let payload = AnswerPayload {
            sdp: SessionDescription {
                kind: "answer".to_owned(),
                sdp: advertise_max_message_size(&answer.sdp, self.ctx.limits.max_message),
            },
            connection_type: CONNECTION_TYPE_DATA.to_owned(),
            connection_id: self.spec.connection_id.clone(),
        };
        self.signal(MessageType::Answer, &payload).await;
        Ok(())
    }

    fn learn_local(&mut self, sdp: &str) {
        if let Some(mid) = sdp_attribute(sdp, "mid") {
            self.mid = mid.to_owned();
        }
        self.ufrag = sdp_attribute(sdp, "ice-ufrag").map(str::to_owned);
    }

    async fn on_answer(&mut self, answer: SessionDescription) -> Result<(), End> {
        let Some(pc) = self.pc.clone() else {
            return Ok(());
        };
        if self.remote_set || !matches!(self.spec.role, Role::Offerer { .. }) {
            tracing::debug!(peer = %self.spec.peer, "ignoring an unexpected ANSWER");
            return Ok(());
        }
        let remote = RTCSessionDescription::answer(answer.sdp).map_err(|e| io("remote answer", e))?;
        pc.set_remote_description(remote)
            .await
            .map_err(|e| io("set remote answer", e))?;
        self.remote_set = true;
        for candidate in std::mem::take(&mut self.pending) {
            self.on_remote_candidate(candidate).await;
        }
        Ok(())
    }

    async fn on_remote_candidate(&mut self, candidate: IceCandidate) {
        if !self.remote_set {
            // webrtc-rs refuses candidates before the remote description.
            if self.pending.len() < MAX_PENDING_CANDIDATES {
                self.pending.push(candidate);
            }
            return;
        }
        let Some(pc) = &self.pc else { return };
        let init = RTCIceCandidateInit {
            candidate: candidate.normalized().to_owned(),
            sdp_mid: candidate.sdp_mid.clone(),
            sdp_mline_index: candidate.sdp_m_line_index,
            username_fragment: candidate.username_fragment.clone(),
        };
        if let Err(error) = pc.add_ice_candidate(init).await {
            // A candidate we cannot use (an mDNS name, another family) is not
            // fatal: others may work.
            tracing::debug!(peer = %self.spec.peer, %error, "ignoring a remote candidate");
        }
    }

    async fn on_internal(&mut self, event: Internal) -> Option<End> {
        match event {
            Internal::LocalCandidate(candidate) => {
                self.send_candidate(&candidate).await;
                None
            }
            Internal::State(state) => {
                tracing::debug!(peer = %self.spec.peer, ?state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed => {
                        if self.open.is_some() {
                            Some(End::Disconnected(DisconnectReason::ConnectionLost))
                        } else {
                            Some(End::Failed(TransportError::Unreachable(self.spec.peer.clone())))
                        }
                    }
                    RTCPeerConnectionState::Closed => Some(self.closed_by_peer()),
                    _ => None,
                }
            }
            Internal::Channel(dc) => {
                if self.dc.is_none() {
                    self.dc = Some(dc);
                } else {
                    tracing::debug!(peer = %self.spec.peer, "ignoring an extra data channel");
                }
                None
            }
            Internal::Open => {
                self.announce().await;
                None
            }
            Internal::ChannelClosed | Internal::RemoteClose => Some(self.closed_by_peer()),
        }
    }

    fn closed_by_peer(&self) -> End {
        if self.open.is_some() {
            End::Disconnected(DisconnectReason::Remote)
        } else {
            End::Failed(TransportError::Unreachable(self.spec.peer.clone()))
        }
    }

    async fn send_candidate(&self, candidate: &RTCIceCandidate) {
        let line = match candidate.to_json() {
            Ok(init) => init.candidate,
            Err(error) => {
                tracing::debug!(%error, "cannot serialize a local candidate");
                return;
            }
        };
        let payload = CandidatePayload {
            candidate: IceCandidate {
                candidate: line,
                // to_json() says "": browsers want the real mid.
                sdp_mid: Some(self.mid.clone()),
                sdp_m_line_index: Some(0),
                username_fragment: self.ufrag.clone(),
            },
            connection_type: CONNECTION_TYPE_DATA.to_owned(),
            connection_id: self.spec.connection_id.clone(),
        };
        self.signal(MessageType::Candidate, &payload).await;
    }

    async fn signal(&self, kind: MessageType, payload: &impl serde::Serialize) {
        let payload = match serde_json::to_value(payload) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(%error, "cannot serialize a signaling payload");
                return;
            }
        };
        let message = Message::to(kind, self.spec.peer.as_str(), payload);
        if self.ctx.signaling.send(message).await.is_err() {
            tracing::debug!("signaling client stopped");
        }
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            peer: self.spec.peer.clone(),
            internal: self.internal_tx.clone(),
            events: self.ctx.events.clone(),
            announced: self.announced.subscribe(),
            gone: Arc::clone(&self.gone),
            drained: Arc::clone(&self.drained),
            serialization: self.serialization,
            limits: self.ctx.limits,
        }
    }

    /// The channel is open: publish the route, then tell the application.
    async fn announce(&mut self) {
        if self.open.is_some() {
            return;
        }
        let Some(dc) = self.dc.clone() else {
            tracing::warn!(peer = %self.spec.peer, "data channel opened before it was known");
            return;
        };
        let limits = self.ctx.limits;
        let open = Arc::new(OpenLink {
            link_id: self.spec.link_id,
            peer: self.spec.peer.clone(),
            dc,
            codec: tokio::sync::Mutex::new(Codec::new(
                self.serialization,
                limits.max_frame,
                limits.max_message,
                limits.chunk_mtu,
            )),
            drained: Arc::clone(&self.drained),
            closed: Arc::clone(&self.gone),
            closing: self.closing.subscribe(),
            high_water: limits.high_water,
        });
        self.open = Some(Arc::clone(&open));
        self.ctx
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.spec.peer.clone(), open);
        let connected = TransportEvent::Connected {
            peer: self.spec.peer.clone(),
        };
        let _ = self.ctx.events.send(connected).await;
        self.announced.send_replace(true);
        tracing::debug!(peer = %self.spec.peer, serialization = %self.serialization, "data channel open");
        let opened = Report::Opened {
            peer: self.spec.peer.clone(),
            link_id: self.spec.link_id,
        };
        let _ = self.ctx.reports.send(opened).await;
    }

    /// Withdraws the route, tells the application, and tears the peer
    /// connection down in the background. Returns the error for pending
    /// `connect` calls if the link never opened.
    async fn finish(&mut self, end: End) -> Option<TransportError> {
        self.gone.store(true, Ordering::Release);
        self.closing.send_replace(true);
        if let (Some(open), End::Disconnected(DisconnectReason::Local)) = (&self.open, &end) {
            open.send_close_message().await;
        }
        {
            let mut routes = self.ctx.routes.lock().unwrap_or_else(PoisonError::into_inner);
            if routes
                .get(&self.spec.peer)
                .is_some_and(|r| r.link_id == self.spec.link_id)
            {
                routes.remove(&self.spec.peer);
            }
        }
        let announced = *self.announced.borrow();
        let error = if announced {
            let reason = match end {
                End::Disconnected(reason) => reason,
                End::Failed(_) => DisconnectReason::ConnectionLost,
            };
            let disconnected = TransportEvent::Disconnected {
                peer: self.spec.peer.clone(),
                reason,
            };
            let _ = self.ctx.events.send(disconnected).await;
            None
        } else {
            Some(match end {
                End::Failed(error) => error,
                End::Disconnected(DisconnectReason::Local) => TransportError::NotConnected(self.spec.peer.clone()),
                End::Disconnected(_) => TransportError::Unreachable(self.spec.peer.clone()),
            })
        };
        let (dc, pc) = (self.dc.take(), self.pc.take());
        tokio::spawn(async move {
            let teardown = async {
                if let Some(dc) = dc {
                    let _ = dc.close().await;
                }
                if let Some(pc) = pc {
                    let _ = pc.close().await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), teardown).await.is_err() {
                tracing::debug!("peer connection teardown timed out");
            }
        });
        tracing::debug!(peer = %self.spec.peer, "link ended");
        error
    }
}

/// Callback state shared with webrtc-rs.
#[derive(Clone)]
struct Hooks {
    peer: PeerAddr,
    internal: mpsc::Sender<Internal>,
    events: mpsc::Sender<TransportEvent>,
    announced: watch::Receiver<bool>,
    gone: Arc<AtomicBool>,
    drained: Arc<Notify>,
    serialization: Serialization,
    limits: Limits,
}

impl Hooks {
    async fn install(&self, dc: &Arc<RTCDataChannel>) {
        let tx = self.internal.clone();
        dc.on_open(Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(Internal::Open).await;
            })
        }));
        let tx = self.internal.clone();
        dc.on_close(Box::new(move || {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send(Internal::ChannelClosed).await;
            })
        }));
        let hooks = self.clone();
        let mut codec = Codec::new(
            self.serialization,
            self.limits.max_frame,
            self.limits.max_message,
            self.limits.chunk_mtu,
        );
        dc.on_message(Box::new(move |msg| {
            let decoded = codec.decode(ChannelMessage {
                is_text: msg.is_string,
                data: msg.data,
            });
            let hooks = hooks.clone();
            Box::pin(async move { hooks.deliver(decoded).await })
        }));
        dc.set_buffered_amount_low_threshold(self.limits.low_water).await;
        let drained = Arc::clone(&self.drained);
        dc.on_buffered_amount_low(Box::new(move || {
            let drained = Arc::clone(&drained);
            Box::pin(async move { drained.notify_one() })
        }))
        .await;
    }

    async fn deliver(mut self, decoded: Result<Inbound, CodecError>) {
        match decoded {
            Ok(Inbound::Frame(bytes)) => {
                // Frames may arrive before the link task announced the link:
                // `Connected` must come first.
                if self.announced.wait_for(|announced| *announced).await.is_err() {
                    return;
                }
                if self.gone.load(Ordering::Acquire) {
                    return;
                }
                let frame = TransportEvent::Frame {
                    from: self.peer.clone(),
                    bytes,
                };
                // Awaiting here stalls the channel's reader: back-pressure
                // reaches the sender through SCTP.
                let _ = self.events.send(frame).await;
            }
            Ok(Inbound::Partial) => {}
            Ok(Inbound::Close) => {
                let _ = self.internal.send(Internal::RemoteClose).await;
            }
            Err(error) => {
                tracing::warn!(peer = %self.peer, %error, "dropping a malformed data channel message");
            }
        }
    }
}
