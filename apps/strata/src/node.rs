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
        let (node, system, thread) = spawn_actors(setup, wire, stream, Arc::clone(&events)).await?;
        Ok((
            Self {
                node,
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
            })
            .await
            .map_err(|_| stopped())?;
        if let Err(e) = reply.result {
            // A link that is not up yet is retried by the node; the wait
            // below decides.
            tracing::debug!(%peer, error = %e, "connect: first attempt");
        }
        let mut steps = Vec::new();
        let ready = wait_for(&mut live, WAIT, |event| {
            if at(&event.data, "peer") != peer.as_str() {
                return None;
            }
            steps.push(json!({"event": event.kind, "id": event.id}));
            (event.kind == "encryption-ready").then(|| event.data.clone())
        })
        .await;
        match ready {
            Some(ready) => Ok(json!({
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

    async fn send(&self, text: &str, body: SendBody, wait_ack: bool) -> Result<Value> {
        let peer = self.resolve(text).await?;
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
                json!({
                    "peer": peer.as_str(),
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

    fn transport_of(&self, _peer: &PeerAddr) -> &'static str {
        match (&self.peerjs, &self.libp2p) {
            (Some(_), Some(_)) => "peerjs+libp2p",
            (Some(_), None) => "peerjs",
            (None, Some(_)) => "libp2p",
            (None, None) => "none",
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

fn session_error(e: SessionError) -> AppError {
    match e {
        SessionError::UnknownPeer(p) => AppError::new(ErrorKind::NotFound, format!("unknown peer {p}"))
            .hint("connect to it first: strata connect <peer>"),
        SessionError::Misuse(what) => AppError::new(ErrorKind::Usage, format!("cannot do that now: {what}"))
            .hint("`strata connect <peer>` opens a session; `strata peers` shows where each stands"),
        SessionError::Unavailable(what) => {
            AppError::new(ErrorKind::Busy, format!("the node is busy: {what}")).hint("try again in a moment")
        }
        other => AppError::internal(other.to_string()),
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
        .peerjs
        .ice_servers
        .iter()
        .map(|url| IceServer {
            urls: vec![url.clone()],
            username: String::new(),
            credential: String::new(),
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
    let name = |d: &dyn std::fmt::Debug| kebab(&format!("{d:?}"));
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
                json!({"role": name(role), "fromBundle": from_bundle}),
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
            Event::SessionReset { reason } => ("session-reset", json!({"reason": name(reason)})),
            Event::IdentityChanged { installation } => ("identity-changed", json!({"installation": installation})),
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
            Event::Rotated { what } => ("rotated", json!({"what": name(what)})),
            Event::PeerError { code, reason } => ("peer-error", json!({"code": name(code), "reason": reason})),
            Event::Refused { why } => ("refused", json!({"why": name(why)})),
        },
    }
}

/// `PeerLostState` → `peer-lost-state`.
fn kebab(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_kebab_case() {
        assert_eq!(kebab("PeerLostState"), "peer-lost-state");
        assert_eq!(kebab("KemKey"), "kem-key");
        let (kind, data) = describe(&NodeEventKind::Session(Event::SessionReset {
            reason: strata_session::ResetReason::PeerRestarted,
        }));
        assert_eq!(kind, "session-reset");
        assert_eq!(data["reason"], "peer-restarted");
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
