//! The daemon's session layer: a `strata_session` [`Node`] over both
//! transports, behind the [`Sessions`] boundary the control API uses.
//!
//! - **Transports.** PeerJS/WebRTC and libp2p run side by side as one
//!   [`Duo`]: a peer is addressed by its installation id on both, so it has
//!   one session whichever path its frames take (WebRTC preferred).
//! - **Actors.** actix runs on a thread of its own (its system is
//!   single-threaded); the API talks to the `Node` through its `Addr`.
//! - **Events.** A bridge actor subscribed to the node turns every
//!   [`NodeEvent`](strata_session::actors::NodeEvent) into a control-API
//!   event (`GET /events`), which is also how `connect` and `send
//!   --wait-ack` wait. Message texts go to API clients only, never to logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::json::{at, set};
use strata_cascade::InstallationIdentity;
use strata_session::actors::{
    Connect, ListPeers, Node, NodeEvent as SessionNodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup,
    SessionState, Shutdown, Subscribe,
};
use strata_session::{Command, Content, Event, SessionError};
use strata_transport::duo::Duo;
use strata_transport::{EventStream, PeerAddr};
use strata_transport_libp2p::Libp2pTransport;
use strata_transport_peerjs::{IceServer, PeerJsConfig, PeerJsTransport, RtcConfig, SignalingConfig};
use tokio::sync::{broadcast, oneshot};

use crate::config::{BrokerChoice, Config};
use crate::control::events::{EventBus, NodeEvent};
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{Local, PeerRef};
use crate::paths::{DataDir, write_atomic};
use crate::sessions::{SendBody, SessionCall, Sessions};
use crate::storage::NodeStore;

/// Both transports as one.
pub(crate) type Wire = Duo<PeerJsTransport, Libp2pTransport>;

/// How long `connect` waits for `encryptionReady`, and `send --wait-ack`
/// for the acknowledgement: under the control client's 30 s request limit.
const WAIT: Duration = Duration::from_secs(25);

/// The running session layer.
pub(crate) struct NodeSessions {
    node: Addr<Node<Wire>>,
    /// The joined transports, for the links each peer has.
    wire: Wire,
    system: actix::System,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    peerjs: Option<PeerJsTransport>,
    libp2p: Option<Libp2pTransport>,
    /// The periodic renewal of the bundle pre-keys (with libp2p).
    renewal: Option<tokio::task::AbortHandle>,
    store: Arc<NodeStore>,
    events: Arc<EventBus>,
    requests: AtomicU64,
}

/// Where the started node can be reached.
pub(crate) struct Reachable {
    /// The libp2p addresses it listens on (with `/p2p/<id>`).
    pub(crate) libp2p: Vec<libp2p::Multiaddr>,
}

impl NodeSessions {
    /// Starts the transports the config enables, the actors, and the event
    /// bridge. `broker` is the PeerJS broker to register with.
    pub(crate) async fn start(
        config: &Config,
        dir: &DataDir,
        local: &Local,
        store: Arc<NodeStore>,
        events: Arc<EventBus>,
        broker: Option<BrokerChoice>,
    ) -> Result<(Self, Reachable)> {
        let addr = hex::encode(local.installation_id().as_bytes());
        if broker.is_none() && !config.libp2p.enabled {
            return Err(AppError::new(
                ErrorKind::NotAvailable,
                "sessions need a transport, and both are turned off",
            )
            .hint("set peerjs.enabled or libp2p.enabled to true in the config"));
        }
        let exported = local
            .installation()
            .export()
            .map_err(|e| AppError::internal(format!("cannot load the identity: {e}")))?;
        let identity = Arc::new(
            InstallationIdentity::import(exported.as_bytes())
                .map_err(|e| AppError::internal(format!("cannot load the identity: {e}")))?,
        );
        let session_config = strata_session::Config::default();
        let peerjs = match broker {
            Some(choice) => Some(start_peerjs(config, dir, &addr, &choice).await?),
            None => None,
        };
        let mut renewal = None;
        let libp2p = if config.libp2p.enabled {
            let (bundles, follow, published) =
                crate::bundles::config(&store, &identity, &session_config, crate::ops::now_ms())?;
            let (transport, stream) = start_libp2p(config, dir, &addr, (bundles, follow)).await?;
            renewal = Some(
                tokio::spawn(crate::bundles::renew_periodically(
                    published,
                    Arc::clone(&store),
                    session_config.clone(),
                    transport.clone(),
                    crate::bundles::RENEWAL_CHECK,
                ))
                .abort_handle(),
            );
            Some((transport, stream))
        } else {
            None
        };
        let mut reachable = Reachable { libp2p: Vec::new() };
        if let Some((t, _)) = &libp2p {
            let id = t.peer_id();
            // Listeners come up asynchronously; a moment is enough on start.
            for _ in 0..20 {
                let addrs = t.listen_addrs().await.unwrap_or_default();
                if !addrs.is_empty() {
                    reachable.libp2p = addrs
                        .into_iter()
                        .map(|a| match a.iter().last() {
                            Some(libp2p::multiaddr::Protocol::P2p(_)) => a,
                            _ => a.with(libp2p::multiaddr::Protocol::P2p(id)),
                        })
                        .collect();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let peerjs_handle = peerjs.as_ref().map(|(t, _)| t.clone());
        let libp2p_handle = libp2p.as_ref().map(|(t, _)| t.clone());
        let (wire, stream) = Duo::new(peerjs, libp2p, 1024)
            .map_err(|e| AppError::internal(format!("cannot join the transports: {e}")))?;

        let setup = SessionSetup {
            config: session_config,
            local: identity,
            store: store.clone(),
            downloads: dir.root().join("downloads"),
        };
        let (node, system, thread) = spawn_actors(setup, wire.clone(), stream, Arc::clone(&events)).await?;
        Ok((
            Self {
                node,
                wire,
                system,
                thread: std::sync::Mutex::new(Some(thread)),
                peerjs: peerjs_handle,
                libp2p: libp2p_handle,
                renewal,
                store,
                events,
                requests: AtomicU64::new(1),
            },
            reachable,
        ))
    }

    /// Stops the actors (sessions persist in the store) and the transports.
    pub(crate) async fn shutdown(&self) {
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.node.send(Shutdown)).await;
        self.system.stop();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(t) = &self.peerjs {
            t.shutdown().await;
        }
        if let Some(t) = &self.libp2p {
            t.shutdown().await;
        }
    }

    fn request_id(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    /// The session address of a `<peer>` argument; dials libp2p addresses
    /// it carries first.
    async fn resolve(&self, text: &str) -> Result<PeerAddr> {
        match PeerRef::parse(text)? {
            PeerRef::Contact(uri) => {
                if let Some(libp2p) = &self.libp2p {
                    for addr in uri.addrs {
                        if let Err(e) = libp2p.dial(addr.clone()).await {
                            tracing::info!(%addr, error = %e, "cannot dial a contact's libp2p address");
                        }
                    }
                }
                Ok(PeerAddr::new(hex::encode(uri.installation.as_bytes())))
            }
            PeerRef::Installation(id) => Ok(PeerAddr::new(hex::encode(id.as_bytes()))),
            PeerRef::PeerJsId(id) => Ok(PeerAddr::new(id)),
            PeerRef::PeerId(peer) => {
                let contacts = self
                    .store
                    .read(|r| r.contacts())
                    .map_err(|e| AppError::internal(format!("cannot read the contacts: {e}")))?;
                let mut matching = contacts
                    .into_iter()
                    .filter(|c| crate::identity::PeerId::from_key_bytes(&c.identity_key).is_ok_and(|p| p == peer));
                match (matching.next(), matching.next()) {
                    (Some(c), None) => Ok(PeerAddr::new(c.installation_id)),
                    (None, _) => Err(AppError::new(
                        ErrorKind::NotFound,
                        format!("no installation of {peer} is known here"),
                    )
                    .hint("give the peer's contact URI (strata id prints it) or installation id")),
                    (Some(_), Some(_)) => Err(AppError::new(
                        ErrorKind::Usage,
                        format!("{peer} has several installations here"),
                    )
                    .hint("name one by its installation id (strata peers lists them)")),
                }
            }
            PeerRef::Multiaddr(addr) => Err(AppError::new(
                ErrorKind::Usage,
                format!("{addr} is a network address, not an installation"),
            )
            .hint("give the peer's contact URI: it names the installation and carries its addresses")),
        }
    }

    /// The verified bundle the libp2p transport holds for the installation
    /// at `peer`, whose account is known from the contacts or from the
    /// contact URI `text`.
    async fn held_bundle(&self, text: &str, peer: &PeerAddr) -> Option<strata_cascade::bundle::VerifiedBundle> {
        let libp2p = self.libp2p.as_ref()?;
        let installation: [u8; 16] = hex::decode(peer.as_str()).ok()?.try_into().ok()?;
        let contact = self.store.read(|r| r.contact(peer.as_str())).ok().flatten();
        let identity_key = match (contact, PeerRef::parse(text)) {
            (Some(c), _) => c.identity_key,
            (None, Ok(PeerRef::Contact(uri))) => uri.peer_id.identity_key().serialize().to_vec(),
            (None, Ok(PeerRef::PeerId(id))) => id.identity_key().serialize().to_vec(),
            _ => return None,
        };
        crate::bundles::held(
            libp2p,
            &identity_key,
            strata_cascade::InstallationId::from_bytes(installation),
        )
        .await
    }

    /// The account key a contact URI names, which the installation at
    /// `peer` must hold (no TOFU window for a URI); `None` for other kinds
    /// of `<peer>`. A contact already pinned to another key is refused.
    fn uri_identity(&self, text: &str, peer: &PeerAddr) -> Result<Option<Vec<u8>>> {
        let Ok(PeerRef::Contact(uri)) = PeerRef::parse(text) else {
            return Ok(None);
        };
        let expected = uri.peer_id.identity_key().serialize().to_vec();
        let contact = self
            .store
            .read(|r| r.contact(peer.as_str()))
            .map_err(|e| AppError::new(ErrorKind::Storage, format!("cannot read the contacts: {e}")))?;
        match contact {
            Some(c) if c.identity_key != expected => Err(uri_mismatch(&uri.peer_id, peer)),
            _ => Ok(Some(expected)),
        }
    }

    async fn peer_request(&self, peer: PeerAddr, request: SessionRequest) -> Result<Option<String>> {
        let reply = self
            .node
            .send(PeerRequest {
                request_id: self.request_id(),
                peer,
                request,
            })
            .await
            .map_err(|_| stopped())?;
        reply.result.map_err(session_error)
    }

    async fn connect(&self, text: &str) -> Result<Value> {
        let peer = self.resolve(text).await?;
        let expect_identity = self.uri_identity(text, &peer)?;
        let (_, mut live) = self.events.subscribe(None);
        // A stored session may have resumed on its own before we asked.
        let peers = self.node.send(ListPeers).await.map_err(|_| stopped())?;
        if let Some((_, status)) = peers.iter().find(|(p, s)| *p == peer && s.state == SessionState::Ready) {
            return Ok(json!({
                "peer": peer.as_str(),
                "state": "ready",
                "resumed": status.resumed,
                "installation": status.installation,
                "steps": [],
            }));
        }
        if let Some(bundle) = self.held_bundle(text, &peer).await {
            // The attempt starts from the bundle; `Connect` below brings the
            // link up and finds it under way.
            if let Err(e) = self
                .peer_request(peer.clone(), SessionRequest::OpenFromBundle(Box::new(bundle)))
                .await
            {
                tracing::debug!(%peer, error = %e, "connect: cannot open from the held bundle");
            }
        }
        let reply = self
            .node
            .send(Connect {
                request_id: self.request_id(),
                peer: peer.clone(),
                expect_identity: expect_identity.clone(),
            })
            .await
            .map_err(|_| stopped())?;
        match reply.result {
            Err(SessionError::IdentityMismatch) => return Err(self.mismatch(text, &peer)),
            // A link that is not up yet is retried by the node; the wait
            // below decides.
            Err(e) => tracing::debug!(%peer, error = %e, "connect: first attempt"),
            Ok(()) => {}
        }
        let mut steps = Vec::new();
        let outcome = wait_for(&mut live, WAIT, |event| {
            if at(&event.data, "peer") != peer.as_str() {
                return None;
            }
            steps.push(json!({"event": event.kind, "id": event.id}));
            match event.kind.as_str() {
                "encryption-ready" => Some(Ok(event.data.clone())),
                "identity-mismatch" => Some(Err(())),
                _ => None,
            }
        })
        .await;
        match outcome {
            Some(Err(())) => Err(self.mismatch(text, &peer)),
            Some(Ok(ready)) => Ok(json!({
                "peer": peer.as_str(),
                "state": "ready",
                "resumed": at(&ready, "resumed"),
                "installation": at(&ready, "installation"),
                "steps": steps,
            })),
            None => Err(AppError::new(
                ErrorKind::Network,
                format!("no session with {peer} within {}s", WAIT.as_secs()),
            )
            .hint("the node keeps trying; check that the peer runs and shares a broker or relay with you (strata peers, strata inbox --follow)")),
        }
    }

    /// The error of a contact URI whose account another key answered for.
    fn mismatch(&self, text: &str, peer: &PeerAddr) -> AppError {
        match PeerRef::parse(text) {
            Ok(PeerRef::Contact(uri)) => uri_mismatch(&uri.peer_id, peer),
            _ => AppError::new(
                ErrorKind::VerificationFailed,
                format!("{peer} answered with another identity key than expected"),
            ),
        }
    }

    async fn send(&self, text: &str, body: SendBody, wait_ack: bool) -> Result<Value> {
        let peer = self.resolve(text).await?;
        // A URI's account key must be the one pinned for the installation.
        self.uri_identity(text, &peer)?;
        let (_, mut live) = self.events.subscribe(None);
        let (request, file) = match body {
            SendBody::Text(text) => (SessionRequest::Command(Command::Send(Content::Text { text })), None),
            SendBody::File(path) => {
                let size = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| {
                    AppError::new(ErrorKind::NotFound, format!("cannot read {}: {e}", path.display()))
                        .hint("the daemon reads the file: give a path it can open")
                })?;
                (SessionRequest::SendFile(path.clone()), Some((path, size)))
            }
        };
        let id = self
            .peer_request(peer.clone(), request)
            .await?
            .ok_or_else(|| AppError::internal("the session gave no message id"))?;
        let (done_kind, id_field) = if file.is_some() {
            ("file-sent", "fileId")
        } else {
            ("delivered", "messageId")
        };
        let mut result = json!({"peer": peer.as_str(), "messageId": id, "acknowledged": false});
        if let Some((path, size)) = &file {
            set(&mut result, "file", json!({"path": path, "size": size}));
        }
        if wait_ack {
            let acked = wait_for(&mut live, WAIT, |event| {
                (event.kind == done_kind && at(&event.data, id_field) == id.as_str()).then_some(())
            })
            .await;
            if acked.is_none() {
                return Err(AppError::new(
                    ErrorKind::Network,
                    format!(
                        "message {id} is queued but {peer} did not acknowledge it within {}s",
                        WAIT.as_secs()
                    ),
                )
                .hint("it stays in the outbox and is retransmitted; watch `strata inbox --follow` for `delivered`"));
            }
            set(&mut result, "acknowledged", json!(true));
        }
        Ok(result)
    }

    async fn peers(&self) -> Result<Value> {
        let list = self.node.send(ListPeers).await.map_err(|_| stopped())?;
        let contacts = self
            .store
            .read(|r| r.contacts())
            .map_err(|e| AppError::internal(format!("cannot read the contacts: {e}")))?;
        let peers: Vec<Value> = list
            .into_iter()
            .map(|(peer, status)| {
                let installation = status.installation.clone().unwrap_or_else(|| peer.to_string());
                let contact = contacts.iter().find(|c| c.installation_id == installation);
                // The account key the installation is pinned to.
                let peer_id = contact
                    .and_then(|c| crate::identity::PeerId::from_key_bytes(&c.identity_key).ok())
                    .map(|p| p.to_string());
                json!({
                    "peer": peer.as_str(),
                    "peerId": peer_id,
                    "installation": installation,
                    "state": match status.state {
                        SessionState::Idle => "idle",
                        SessionState::Handshaking => "handshaking",
                        SessionState::Ready => "ready",
                        SessionState::Blocked => "blocked",
                    },
                    "connected": status.connected,
                    "transport": self.transport_of(&peer),
                    "lastActivityMs": status.last_activity_ms,
                    "verified": contact.is_some_and(|c| c.verified),
                    "identityChangePending": contact.is_some_and(|c| c.offered_key.is_some()),
                })
            })
            .collect();
        Ok(json!({ "peers": peers }))
    }

    /// The paths the duo holds a link to `peer` on now.
    fn transport_of(&self, peer: &PeerAddr) -> &'static str {
        match self.wire.links_to(peer) {
            (true, true) => "webrtc+libp2p",
            (true, false) => "webrtc",
            (false, true) => "libp2p",
            (false, false) => "none",
        }
    }
}

#[async_trait]
impl Sessions for NodeSessions {
    async fn call(&self, call: SessionCall) -> Result<Value> {
        match call {
            SessionCall::Connect { peer } => self.connect(&peer).await,
            SessionCall::Send { peer, body, wait_ack } => self.send(&peer, body, wait_ack).await,
            SessionCall::Inbox { .. } => {
                let mut inbox = crate::inbox::stored(&self.store)?;
                // Where a follower picks up the live stream.
                set(&mut inbox, "lastEventId", json!(self.events.last_id()));
                Ok(inbox)
            }
            SessionCall::Peers => self.peers().await,
        }
    }
}

/// Waits for the first event `pick` maps to `Some`, for up to `limit`.
async fn wait_for<R>(
    live: &mut broadcast::Receiver<Arc<NodeEvent>>,
    limit: Duration,
    mut pick: impl FnMut(&NodeEvent) -> Option<R>,
) -> Option<R> {
    let wait = async {
        loop {
            match live.recv().await {
                Ok(event) => {
                    if let Some(r) = pick(&event) {
                        return Some(r);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

fn stopped() -> AppError {
    AppError::internal("the session actors stopped").hint("restart `strata run`; its log says why")
}

/// A contact URI's account key is not the one that answered for (or is
/// pinned to) its installation.
fn uri_mismatch(expected: &crate::identity::PeerId, peer: &PeerAddr) -> AppError {
    AppError::new(
        ErrorKind::VerificationFailed,
        format!("installation {peer} does not belong to {expected}, the peer the contact URI names"),
    )
    .hint("the address may be taken by someone else: check the URI with its owner over a channel you trust; nothing was recorded")
}

fn session_error(e: SessionError) -> AppError {
    match e {
        SessionError::UnknownPeer(p) => AppError::new(ErrorKind::NotFound, format!("unknown peer {p}"))
            .hint("connect to it first: strata connect <peer>"),
        SessionError::Misuse(what) => AppError::new(ErrorKind::Usage, format!("cannot do that now: {what}"))
            .hint("`strata connect <peer>` opens a session; `strata peers` shows where each stands"),
        SessionError::Unavailable(what) => {
            AppError::new(ErrorKind::Busy, format!("the node is busy: {what}")).hint("try again in a moment")
        }
        other => match other.kind() {
            strata_session::ErrorKind::Storage => AppError::new(ErrorKind::Storage, other.to_string())
                .hint("the store may be damaged or the disk full; see `strata run -v`"),
            strata_session::ErrorKind::Verification => AppError::new(ErrorKind::VerificationFailed, other.to_string()),
            _ => AppError::internal(other.to_string()),
        },
    }
}

async fn start_peerjs(
    config: &Config,
    dir: &DataDir,
    addr: &str,
    choice: &BrokerChoice,
) -> Result<(PeerJsTransport, EventStream)> {
    let (mut signaling, loopback) = match choice {
        BrokerChoice::Embedded(socket) => {
            let host = if socket.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                socket.ip().to_string()
            };
            let mut s = SignalingConfig::new(host, socket.port());
            s.secure = false;
            (s, socket.ip().is_loopback())
        }
        BrokerChoice::External(url) => {
            if let Some(warning) = crate::config::broker_warning(url) {
                tracing::warn!("{warning}");
            }
            let host = url.host_str().unwrap_or_default().to_owned();
            let secure = url.scheme() == "wss";
            let port = url.port().unwrap_or(if secure { 443 } else { 80 });
            let mut s = SignalingConfig::new(host.clone(), port);
            s.secure = secure;
            s.path = url.path().to_owned();
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            (s, loopback)
        }
    };
    signaling.key = config.peerjs.key.clone();
    // The same token across restarts reclaims our id at once, even while
    // the broker still holds a crashed process's socket.
    signaling.token = Some(peerjs_token(&dir.root().join("peerjs.token"))?);
    let mut peerjs = PeerJsConfig::new(addr, signaling);
    // A broker on loopback only serves this machine, so its peers are
    // here too: loopback candidates (webrtc-rs leaves them out otherwise).
    peerjs.rtc = if loopback {
        RtcConfig::loopback()
    } else {
        RtcConfig::default()
    };
    peerjs.rtc.ice_servers = config
        .ice_servers()?
        .into_iter()
        .map(|s| IceServer {
            urls: vec![s.url],
            username: s.username,
            credential: s.credential,
        })
        .collect();
    PeerJsTransport::start(peerjs).await.map_err(|e| {
        AppError::new(
            ErrorKind::Network,
            format!("cannot register with the PeerJS broker: {e}"),
        )
        .hint("check peerjs.broker in the config, or set peerjs.enabled = false")
    })
}

/// The PeerJS registration token, made once.
fn peerjs_token(path: &Path) -> Result<String> {
    if let Ok(token) = std::fs::read_to_string(path)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token = hex::encode(bytes);
    write_atomic(path, token.as_bytes(), 0o600)?;
    Ok(token)
}

async fn start_libp2p(
    config: &Config,
    dir: &DataDir,
    addr: &str,
    (bundles, follow): (strata_transport_libp2p::BundleConfig, Vec<strata_transport::Topic>),
) -> Result<(Libp2pTransport, EventStream)> {
    let mut lp = strata_transport_libp2p::Config::new(PeerAddr::new(addr));
    lp.bundles = Some(bundles);
    lp.topics = follow;
    let parse = |list: &[String]| -> Vec<libp2p::Multiaddr> { list.iter().filter_map(|a| a.parse().ok()).collect() };
    lp.listen = parse(&config.libp2p.listen);
    lp.bootstrap = parse(&config.libp2p.bootstrap);
    lp.mdns = config.libp2p.mdns;
    lp.keypair = Some(libp2p_keypair(&dir.root().join("libp2p.key"))?);
    // Keep recent messages for the peers we relay for, so one that was
    // offline gets them when it is back.
    lp.store = strata_transport_libp2p::StoreConfig::serving();
    Libp2pTransport::start(lp).await.map_err(|e| {
        AppError::new(ErrorKind::Network, format!("cannot start the libp2p transport: {e}"))
            .hint("check libp2p.listen in the config, or set libp2p.enabled = false")
    })
}

/// The libp2p host key, made once: it only secures hops between relays
/// (Strata's identity is in the store), but a stable one keeps the node's
/// `/p2p/…` address valid across restarts.
fn libp2p_keypair(path: &PathBuf) -> Result<libp2p::identity::Keypair> {
    if let Ok(bytes) = std::fs::read(path) {
        return libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            AppError::new(
                ErrorKind::Storage,
                format!("{} is not a libp2p key: {e}", path.display()),
            )
            .hint("remove it to get a new libp2p address")
        });
    }
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| AppError::internal(format!("cannot encode the libp2p key: {e}")))?;
    write_atomic(path, &bytes, 0o600)?;
    Ok(keypair)
}

/// Starts actix on its own thread with the node and the event bridge.
async fn spawn_actors(
    setup: SessionSetup,
    wire: Wire,
    stream: EventStream,
    events: Arc<EventBus>,
) -> Result<(Addr<Node<Wire>>, actix::System, std::thread::JoinHandle<()>)> {
    let (tx, rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("strata-actors".to_owned())
        .spawn(move || {
            let system = actix::System::new();
            let handle = actix::System::current();
            system.block_on(async move {
                let started = match Node::new(setup, wire, stream) {
                    Ok(node) => {
                        let node = node.start();
                        let bridge = Bridge { events }.start();
                        let _ = node.send(Subscribe(bridge.recipient())).await;
                        Ok((node, handle))
                    }
                    Err(e) => Err(e),
                };
                let _ = tx.send(started);
            });
            let _ = system.run();
        })
        .map_err(|e| AppError::internal(format!("cannot start the actor thread: {e}")))?;
    match rx.await {
        Ok(Ok((node, system))) => Ok((node, system, thread)),
        Ok(Err(e)) => Err(
            AppError::new(ErrorKind::Storage, format!("cannot restore the sessions: {e}"))
                .hint("the store may be damaged; see `strata run -v`"),
        ),
        Err(_) => Err(AppError::internal("the actor thread stopped during start-up")),
    }
}

/// Forwards node events to the control API's event bus.
struct Bridge {
    events: Arc<EventBus>,
}

impl Actor for Bridge {
    type Context = Context<Self>;
}

impl Handler<SessionNodeEvent> for Bridge {
    type Result = ();

    fn handle(&mut self, event: SessionNodeEvent, _ctx: &mut Self::Context) {
        let (kind, mut data) = describe(&event.kind);
        set(&mut data, "peer", json!(event.peer.as_str()));
        self.events.publish(kind, data);
    }
}

/// The API event name and data of a node event. Keys and ciphertexts never
/// appear; message texts do (the API is the user's own).
fn describe(kind: &NodeEventKind) -> (&'static str, Value) {
    match kind {
        NodeEventKind::Connected => ("connected", json!({})),
        NodeEventKind::Disconnected => ("disconnected", json!({})),
        NodeEventKind::FileReceived { file_id, path } => ("file-received", json!({"fileId": file_id, "path": path})),
        NodeEventKind::FileProgress {
            file_id,
            acked,
            total,
            size,
        } => (
            "file-progress",
            json!({"fileId": file_id, "acked": acked, "total": total, "size": size}),
        ),
        NodeEventKind::FileSent { file_id } => ("file-sent", json!({"fileId": file_id})),
        NodeEventKind::Failed { reason } => ("session-failed", json!({"reason": reason})),
        NodeEventKind::Lagged { dropped } => ("lagged", json!({"dropped": dropped})),
        NodeEventKind::Session(event) => match event {
            Event::HandshakeStarted { role, from_bundle, .. } => (
                "handshake-started",
                json!({"role": role.as_str(), "fromBundle": from_bundle}),
            ),
            Event::EncryptionReady {
                installation, resumed, ..
            } => (
                "encryption-ready",
                json!({"installation": installation, "resumed": resumed}),
            ),
            Event::NotReady => ("not-ready", json!({})),
            Event::HandshakeStalled { .. } => ("handshake-stalled", json!({})),
            Event::HandshakeFailed { reason } => ("handshake-failed", json!({"reason": reason})),
            Event::SessionReset { reason } => ("session-reset", json!({"reason": reason.as_str()})),
            Event::IdentityChanged { installation } => ("identity-changed", json!({"installation": installation})),
            Event::IdentityMismatch { installation } => ("identity-mismatch", json!({"installation": installation})),
            Event::InstallationChanged { old, new } => ("installation-changed", json!({"old": old, "new": new})),
            Event::Queued { message_id } => ("queued", json!({"messageId": message_id})),
            Event::Delivered { message_id } => ("delivered", json!({"messageId": message_id})),
            Event::Received {
                message_id,
                seq,
                content,
            } => match content {
                Content::Text { text } => ("message", json!({"messageId": message_id, "seq": seq, "text": text})),
                Content::FileChunk {
                    file_id,
                    name,
                    size,
                    index,
                    total,
                    ..
                } => (
                    "file-chunk",
                    json!({"fileId": file_id, "name": name, "size": size, "index": index, "total": total}),
                ),
            },
            Event::Rotated { what } => ("rotated", json!({"what": what.as_str()})),
            Event::PeerError { code, reason } => ("peer-error", json!({"code": code.as_str(), "reason": reason})),
            Event::Refused { why } => ("refused", json!({"why": why.as_str()})),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::ErrorCode;
    use strata_session::{Refusal, ResetReason, Role, Rotation};

    /// One of every event kind, with every value of the enums they carry.
    fn every_event() -> Vec<NodeEventKind> {
        let session = |e: Event| NodeEventKind::Session(e);
        let mut all = vec![
            NodeEventKind::Connected,
            NodeEventKind::Disconnected,
            NodeEventKind::FileReceived {
                file_id: "f".into(),
                path: "downloads/f-n".into(),
            },
            NodeEventKind::FileProgress {
                file_id: "f".into(),
                acked: 1,
                total: 2,
                size: 3,
            },
            NodeEventKind::FileSent { file_id: "f".into() },
            NodeEventKind::Failed { reason: "r".into() },
            NodeEventKind::Lagged { dropped: 4 },
        ];
        for role in [Role::Initiator, Role::Responder] {
            all.push(session(Event::HandshakeStarted {
                session_id: [1; 16],
                role,
                from_bundle: role == Role::Responder,
            }));
        }
        all.extend([
            session(Event::EncryptionReady {
                installation: "i".into(),
                session_id: [1; 16],
                resumed: true,
            }),
            session(Event::NotReady),
            session(Event::HandshakeStalled { session_id: [1; 16] }),
            session(Event::HandshakeFailed { reason: "r".into() }),
        ]);
        for reason in [
            ResetReason::PeerLostState,
            ResetReason::PeerRestarted,
            ResetReason::IdentityAccepted,
            ResetReason::StateMismatch,
        ] {
            all.push(session(Event::SessionReset { reason }));
        }
        all.extend([
            session(Event::IdentityChanged {
                installation: "i".into(),
            }),
            session(Event::IdentityMismatch {
                installation: "i".into(),
            }),
            session(Event::InstallationChanged {
                old: "o".into(),
                new: "n".into(),
            }),
            session(Event::Queued { message_id: "m".into() }),
            session(Event::Delivered { message_id: "m".into() }),
            session(Event::Received {
                message_id: "m".into(),
                seq: 5,
                content: Content::Text { text: "t".into() },
            }),
            session(Event::Received {
                message_id: "m".into(),
                seq: 6,
                content: Content::FileChunk {
                    file_id: "f".into(),
                    name: "n".into(),
                    size: 3,
                    index: 0,
                    total: 1,
                    data: vec![1, 2, 3],
                },
            }),
        ]);
        for what in [
            Rotation::KemKey,
            Rotation::PeerKemKey,
            Rotation::MlsUpdate,
            Rotation::PeerMlsUpdate,
        ] {
            all.push(session(Event::Rotated { what }));
        }
        for code in [
            ErrorCode::Malformed,
            ErrorCode::TooLarge,
            ErrorCode::UnknownType,
            ErrorCode::Unexpected,
            ErrorCode::DecryptFailed,
            ErrorCode::Replay,
            ErrorCode::RateLimited,
            ErrorCode::IdentityChanged,
            ErrorCode::UnknownSession,
            ErrorCode::Internal,
            ErrorCode::Other,
        ] {
            all.push(session(Event::PeerError {
                code,
                reason: "r".into(),
            }));
        }
        for why in [
            Refusal::Malformed,
            Refusal::TooLarge,
            Refusal::UnknownType,
            Refusal::Unexpected,
            Refusal::Undecryptable,
            Refusal::IdentityBlocked,
            Refusal::UnexpectedIdentity,
        ] {
            all.push(session(Event::Refused { why }));
        }
        all
    }

    /// Fails to compile when an event kind is added without a sample in
    /// [`every_event`] (no wildcard arm).
    fn sampled(kind: &NodeEventKind) -> bool {
        match kind {
            NodeEventKind::Connected
            | NodeEventKind::Disconnected
            | NodeEventKind::FileReceived { .. }
            | NodeEventKind::FileProgress { .. }
            | NodeEventKind::FileSent { .. }
            | NodeEventKind::Failed { .. }
            | NodeEventKind::Lagged { .. } => true,
            NodeEventKind::Session(e) => match e {
                Event::HandshakeStarted { .. }
                | Event::EncryptionReady { .. }
                | Event::NotReady
                | Event::HandshakeStalled { .. }
                | Event::HandshakeFailed { .. }
                | Event::SessionReset { .. }
                | Event::IdentityChanged { .. }
                | Event::IdentityMismatch { .. }
                | Event::InstallationChanged { .. }
                | Event::Queued { .. }
                | Event::Delivered { .. }
                | Event::Received { .. }
                | Event::Rotated { .. }
                | Event::PeerError { .. }
                | Event::Refused { .. } => true,
            },
        }
    }

    /// The control API's event names and data are a format clients rely
    /// on: every kind is pinned in `test_vectors/events.golden`. A diff is
    /// a decision; `STRATA_BLESS=1` rewrites the file.
    #[test]
    fn event_names_and_data_match_the_golden_file() {
        let lines: Vec<String> = every_event()
            .iter()
            .map(|kind| {
                assert!(sampled(kind));
                let (name, data) = describe(kind);
                format!("{name} {data}")
            })
            .collect();
        let text = lines.join("\n") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_vectors/events.golden");
        if std::env::var_os("STRATA_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text, golden, "event names or data changed (STRATA_BLESS=1 to accept)");
    }

    #[test]
    fn file_chunks_are_described_without_their_bytes() {
        let (kind, data) = describe(&NodeEventKind::Session(Event::Received {
            message_id: "m".into(),
            seq: 1,
            content: Content::FileChunk {
                file_id: "f".into(),
                name: "n".into(),
                size: 3,
                index: 0,
                total: 1,
                data: b"secret-bytes".to_vec(),
            },
        }));
        assert_eq!(kind, "file-chunk");
        assert!(!data.to_string().contains("secret"), "{data}");
    }
}
