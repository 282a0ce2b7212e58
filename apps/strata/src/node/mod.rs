//! The daemon's session layer: a `strata_session` [`Node`] over both
//! transports, behind the [`Sessions`] boundary the control API uses.
//!
//! - [`transports`]: PeerJS/WebRTC and libp2p, started from the typed
//!   [`Network`] settings, run side by side as one [`Duo`]: a peer is
//!   addressed by its installation id on both, so it has one session
//!   whichever path its frames take (WebRTC preferred).
//! - [`actors`]: actix on a thread of its own (its system is
//!   single-threaded); the API talks to the `Node` through its `Addr`, with
//!   typed requests and replies (`AwaitReady` says when a session is ready).
//! - [`events`]: the control API's names and JSON for node events. The
//!   daemon's own waits (`send --wait-ack`, the steps `connect` lists) read
//!   the typed events, never that JSON. Message texts go to API clients
//!   only, never to logs.

mod actors;
mod devices;
mod events;
mod groups;
mod kx;
mod transports;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use async_trait::async_trait;
use serde_json::{Value, json};
use strata_cascade::InstallationIdentity;
use strata_session::actors::{
    AccountMessage, AwaitReady, Connect, ListPeers, Node, NodeEventKind, PeerRequest, SessionRequest, SessionSetup,
    SessionState, Shutdown,
};
use strata_session::{Command, Content, Event, SessionError};
use strata_transport::PeerAddr;
use strata_transport::duo::Duo;
use strata_transport_libp2p::Libp2pTransport;
use strata_transport_peerjs::PeerJsTransport;
use tokio::sync::broadcast;

use self::actors::{Observed, spawn_actors};
use self::transports::reachable_addrs;
pub(crate) use self::transports::{start_libp2p, start_peerjs};
use crate::config::Network;
use crate::control::events::EventBus;
use crate::error::{AppError, ErrorKind, Result};
use crate::identity::{Local, PeerRef};
use crate::json::set;
use crate::paths::DataDir;
use crate::sessions::{SendBody, SessionCall, Sessions};
use crate::storage::NodeStore;

pub(crate) use self::events::describe;

/// Typed node events kept for a daemon wait that falls behind.
const OBSERVED_LAG: usize = 4096;

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
    /// The periodic upkeep of the KeyPackage pool.
    pool_upkeep: tokio::task::AbortHandle,
    /// Tells the bundle of changes to this account's device list.
    devices_follower: tokio::task::AbortHandle,
    store: Arc<NodeStore>,
    /// This installation.
    local: strata_cascade::InstallationId,
    /// This account's identity key (serialized).
    account: Vec<u8>,
    /// Where a new device reaches this one: the PeerJS broker and the
    /// libp2p addresses (for pairing URIs).
    reach: (Option<url::Url>, Vec<libp2p::Multiaddr>),
    events: Arc<EventBus>,
    /// Node events, typed, for the daemon's own waits.
    observed: broadcast::Sender<Arc<Observed>>,
    requests: AtomicU64,
}

/// Waits until message `id` (or file `id`) is acknowledged by `peer`.
async fn acknowledged(
    live: &mut broadcast::Receiver<Arc<Observed>>,
    id: &str,
    is_file: bool,
    peer: &(dyn std::fmt::Display + Sync),
) -> Result<()> {
    let acked = wait_for(live, WAIT, |o| match &o.event.kind {
        NodeEventKind::FileSent { file_id } => is_file && file_id == id,
        NodeEventKind::Session(Event::Delivered { message_id }) => !is_file && message_id == id,
        _ => false,
    })
    .await;
    if acked { Ok(()) } else { Err(not_acknowledged(id, peer)) }
}

/// The file to send cannot be read.
fn unreadable(path: &std::path::Path, e: &std::io::Error) -> AppError {
    AppError::new(ErrorKind::NotFound, format!("cannot read {}: {e}", path.display()))
        .hint("the daemon reads the file: give a path it can open")
}

/// `send --wait-ack` gave up waiting for `peer` to acknowledge `id`.
fn not_acknowledged(id: &str, peer: &dyn std::fmt::Display) -> AppError {
    AppError::new(
        ErrorKind::Network,
        format!(
            "message {id} is queued but {peer} did not acknowledge it within {}s",
            WAIT.as_secs()
        ),
    )
    .hint("it stays in the outbox and is retransmitted; watch `strata inbox --follow` for `delivered`")
}

/// The URL of the PeerJS broker this node registers with.
fn broker_url(network: &Network) -> Option<url::Url> {
    match &network.broker {
        Some(crate::config::BrokerChoice::External(url)) => Some(url.clone()),
        Some(crate::config::BrokerChoice::Embedded(socket)) => {
            let host = if socket.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                socket.ip().to_string()
            };
            format!("ws://{host}:{}/", socket.port()).parse().ok()
        }
        None => None,
    }
}

/// Passes this account's device list, each time the node reports a new
/// one, to the bundle (its other devices are the bundle's paired
/// installations); runs until aborted or the node stops.
async fn follow_devices(
    mut observed: broadcast::Receiver<Arc<Observed>>,
    account: Vec<u8>,
    local: strata_cascade::InstallationId,
    paired: tokio::sync::watch::Sender<Vec<strata_cascade::InstallationId>>,
) {
    loop {
        match observed.recv().await {
            Ok(o) => {
                if let NodeEventKind::DevicesChanged {
                    account: changed,
                    installations,
                    ..
                } = &o.event.kind
                    && *changed == account
                {
                    let others = installations.iter().copied().filter(|i| *i != local).collect();
                    paired.send_replace(others);
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How often a running node tops up its KeyPackage pool and sweeps expired
/// packages (it does so at start too). Pooled packages live 28 days, so a
/// daemon that runs longer still has unexpired ones and a last resort.
const POOL_UPKEEP: Duration = Duration::from_secs(3600);

/// Keeps this installation's KeyPackage pool stocked: expired packages
/// swept, the one-time stock topped up, a last resort made if none or
/// served (`strata_session::pool`). The handshake's step 2 claims from it;
/// a claim that leaves it low is refilled by the session node at once.
async fn stock_key_packages(
    store: &Arc<NodeStore>,
    identity: &Arc<InstallationIdentity>,
    pool: &strata_session::PoolConfig,
) -> Result<()> {
    let (store, identity, pool) = (Arc::clone(store), Arc::clone(identity), pool.clone());
    let restock = tokio::task::spawn_blocking(move || {
        strata_session::keep_stocked(&*store, &identity, &pool, crate::ops::now_ms() / 1000)
    })
    .await
    .map_err(|e| AppError::internal(format!("the KeyPackage pool task failed: {e}")))?
    .map_err(|e| AppError::caused("cannot stock the KeyPackage pool", &e))?;
    if restock != strata_session::Restock::default() {
        tracing::info!(
            expired = restock.expired,
            added = restock.added,
            last_resort = restock.last_resort,
            "KeyPackage pool stocked"
        );
    }
    Ok(())
}

/// [`stock_key_packages`] every `period`; runs until aborted.
async fn stock_key_packages_periodically(
    store: Arc<NodeStore>,
    identity: Arc<InstallationIdentity>,
    pool: strata_session::PoolConfig,
    period: Duration,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        if let Err(e) = stock_key_packages(&store, &identity, &pool).await {
            tracing::warn!(error = %e, "KeyPackage pool upkeep failed; retried at the next check");
        }
    }
}

/// Where the started node can be reached.
pub(crate) struct Reachable {
    /// The libp2p addresses it listens on (with `/p2p/<id>`).
    pub(crate) libp2p: Vec<libp2p::Multiaddr>,
}

impl NodeSessions {
    /// Starts the transports `network` enables, the actors, and the event
    /// bridge.
    pub(crate) async fn start(
        network: &Network,
        dir: &DataDir,
        local: &Local,
        store: Arc<NodeStore>,
        events: Arc<EventBus>,
    ) -> Result<(Self, Reachable)> {
        let addr = local.installation_id().to_string();
        if network.broker.is_none() && network.libp2p.is_none() {
            return Err(AppError::new(
                ErrorKind::NotAvailable,
                "sessions need a transport, and both are turned off",
            )
            .hint("set peerjs.enabled or libp2p.enabled to true in the config"));
        }
        let exported = local
            .installation()
            .export()
            .map_err(|e| AppError::caused("cannot load the identity", &e))?;
        let identity = Arc::new(
            InstallationIdentity::import(exported.as_bytes())
                .map_err(|e| AppError::caused("cannot load the identity", &e))?,
        );
        let session_config = strata_session::Config::default();
        stock_key_packages(&store, &identity, &session_config.key_package_pool).await?;
        let peerjs = match &network.broker {
            Some(choice) => Some(start_peerjs(network, dir, &addr, choice).await?),
            None => None,
        };
        let mut renewal = None;
        // This account's other devices, for the bundle (see `follow_devices`).
        let (paired_tx, paired_rx) = tokio::sync::watch::channel(crate::bundles::paired_devices(&store, &identity));
        let libp2p = if let Some(libp2p_net) = &network.libp2p {
            let (bundles, follow, published) =
                crate::bundles::config(&store, &identity, &session_config, crate::ops::now_ms())?;
            let (transport, stream) = start_libp2p(libp2p_net, dir, &addr, (bundles, follow)).await?;
            renewal = Some(
                tokio::spawn(crate::bundles::renew_periodically(
                    published,
                    Arc::clone(&store),
                    session_config.clone(),
                    transport.clone(),
                    crate::bundles::RENEWAL_CHECK,
                    paired_rx,
                ))
                .abort_handle(),
            );
            Some((transport, stream))
        } else {
            None
        };
        let reachable = Reachable {
            libp2p: match &libp2p {
                Some((t, _)) => reachable_addrs(t).await,
                None => Vec::new(),
            },
        };
        let peerjs_handle = peerjs.as_ref().map(|(t, _)| t.clone());
        let libp2p_handle = libp2p.as_ref().map(|(t, _)| t.clone());
        let (wire, stream) = Duo::new(peerjs, libp2p, 1024)
            .map_err(|e| AppError::internal(format!("cannot join the transports: {e}")))?;

        // Started once nothing else can fail, so no task outlives a failed
        // start.
        let upkeep = stock_key_packages_periodically(
            Arc::clone(&store),
            Arc::clone(&identity),
            session_config.key_package_pool.clone(),
            POOL_UPKEEP,
        );
        let local = identity.installation_id();
        let account = identity.account().identity_key().serialize().to_vec();
        let setup = SessionSetup {
            config: session_config,
            local: identity,
            store: store.clone(),
            downloads: dir.root().join("downloads"),
        };
        let (observed, _) = broadcast::channel(OBSERVED_LAG);
        let (node, system, thread) =
            spawn_actors(setup, wire.clone(), stream, Arc::clone(&events), observed.clone()).await?;
        let pool_upkeep = tokio::spawn(upkeep).abort_handle();
        let devices_follower =
            tokio::spawn(follow_devices(observed.subscribe(), account.clone(), local, paired_tx)).abort_handle();
        Ok((
            Self {
                node,
                wire,
                system,
                thread: std::sync::Mutex::new(Some(thread)),
                peerjs: peerjs_handle,
                libp2p: libp2p_handle,
                renewal,
                pool_upkeep,
                devices_follower,
                store,
                local,
                account,
                reach: (broker_url(network), reachable.libp2p.clone()),
                events,
                observed,
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
        self.pool_upkeep.abort();
        self.devices_follower.abort();
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
                Ok(PeerAddr::new(uri.installation.to_hex()))
            }
            PeerRef::Installation(id) => Ok(PeerAddr::new(id.to_hex())),
            PeerRef::PeerJsId(id) => Ok(PeerAddr::new(id)),
            PeerRef::PeerId(peer) => {
                let contacts = self
                    .store
                    .read(|r| r.contacts())
                    .map_err(|e| AppError::caused("cannot read the contacts", &e))?;
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
            .map_err(|e| AppError::caused("cannot read the contacts", &e))?;
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
        let mut live = self.observed.subscribe();
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
                expect_identity,
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
        // Ready (at once if it resumed on its own before we asked), or
        // refused; the steps on the way are listed as they are seen.
        let ready = self.node.send(AwaitReady {
            request_id: self.request_id(),
            peer: peer.clone(),
        });
        tokio::pin!(ready);
        let mut steps = Vec::new();
        let deadline = tokio::time::sleep(WAIT);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                reply = &mut ready => break Some(reply.map_err(|_| stopped())?.result),
                () = &mut deadline => break None,
                seen = live.recv() => match seen {
                    Ok(o) if o.event.peer == peer => {
                        steps.push(json!({"event": describe(&o.event.kind).0, "id": o.id}));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break None,
                },
            }
        };
        match outcome {
            Some(Ok(ready)) => Ok(json!({
                "peer": peer.as_str(),
                "state": "ready",
                "resumed": ready.resumed,
                "installation": ready.installation,
                "steps": steps,
            })),
            Some(Err(SessionError::IdentityMismatch)) => Err(self.mismatch(text, &peer)),
            Some(Err(e)) => Err(session_error(e)),
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
        if let Some((account, prefer)) = self.account_named(text).await? {
            let message = match &body {
                SendBody::Text(text) => AccountMessage::Text(text.clone()),
                SendBody::File(path) => {
                    std::fs::metadata(path).map_err(|e| unreadable(path, &e))?;
                    AccountMessage::File(path.clone())
                }
            };
            return self.send_to_account(account, prefer, message, wait_ack).await;
        }
        let peer = self.resolve(text).await?;
        // A URI's account key must be the one pinned for the installation.
        self.uri_identity(text, &peer)?;
        let mut live = self.observed.subscribe();
        let (request, file) = match body {
            SendBody::Text(text) => (SessionRequest::Command(Command::Send(Content::Text { text })), None),
            SendBody::File(path) => {
                let size = std::fs::metadata(&path)
                    .map(|m| m.len())
                    .map_err(|e| unreadable(&path, &e))?;
                (SessionRequest::SendFile(path.clone()), Some((path, size)))
            }
        };
        let id = self
            .peer_request(peer.clone(), request)
            .await?
            .ok_or_else(|| AppError::internal("the session gave no message id"))?;
        let mut result = json!({"peer": peer.as_str(), "messageId": id, "acknowledged": false});
        if let Some((path, size)) = &file {
            set(&mut result, "file", json!({"path": path, "size": size}));
        }
        if wait_ack {
            acknowledged(&mut live, &id, file.is_some(), &peer).await?;
            set(&mut result, "acknowledged", json!(true));
        }
        Ok(result)
    }

    /// The account a `<peer>` argument names (a peer id or a contact
    /// URI), and the installation a URI names; `None` for an installation
    /// or a transport address. A URI's libp2p addresses are dialled and its
    /// account key checked against the installation's pin first.
    async fn account_named(&self, text: &str) -> Result<Option<(Vec<u8>, Option<strata_cascade::InstallationId>)>> {
        match PeerRef::parse(text)? {
            PeerRef::PeerId(peer) => Ok(Some((peer.identity_key().serialize().to_vec(), None))),
            PeerRef::Contact(uri) => {
                let peer = self.resolve(text).await?;
                self.uri_identity(text, &peer)?;
                Ok(Some((
                    uri.peer_id.identity_key().serialize().to_vec(),
                    Some(uri.installation),
                )))
            }
            _ => Ok(None),
        }
    }

    /// A text to every device of an account (see `devices.rs`); with
    /// `wait_ack`, returns once the copy named by `messageId` (the one to
    /// the URI's installation when it took it) is acknowledged.
    async fn send_to_account(
        &self,
        account: Vec<u8>,
        prefer: Option<strata_cascade::InstallationId>,
        message: AccountMessage,
        wait_ack: bool,
    ) -> Result<Value> {
        let mut live = self.observed.subscribe();
        let file = match &message {
            AccountMessage::File(path) => Some(path.clone()),
            AccountMessage::Text(_) => None,
        };
        let (copies, id) = self.fan_out(account, message, prefer).await?;
        let peer = copies
            .iter()
            .find(|c| c.outcome.as_ref().is_ok_and(|m| *m == id))
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        let mut result = json!({
            "peer": peer,
            "messageId": id,
            "acknowledged": false,
            "copies": devices::copies_json(&copies),
        });
        if let Some(path) = &file {
            let size = std::fs::metadata(path).map_or(0, |m| m.len());
            set(&mut result, "file", json!({"path": path, "size": size}));
        }
        if wait_ack {
            acknowledged(&mut live, &id, file.is_some(), &peer).await?;
            set(&mut result, "acknowledged", json!(true));
        }
        Ok(result)
    }

    async fn peers(&self) -> Result<Value> {
        let list = self.node.send(ListPeers).await.map_err(|_| stopped())?;
        let contacts = self
            .store
            .read(|r| r.contacts())
            .map_err(|e| AppError::caused("cannot read the contacts", &e))?;
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
                        SessionState::Refused => "refused",
                    },
                    "connected": status.connected,
                    "transport": self.transport_of(&peer),
                    "lastActivityMs": status.last_activity_ms,
                    "verified": contact.is_some_and(|c| c.verified),
                    "verifiedByInvite": contact.is_some_and(|c| c.invited),
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
                let mut inbox = crate::inbox::stored(&self.store, &self.account)?;
                // Where a follower picks up the live stream.
                set(&mut inbox, "lastEventId", json!(self.events.last_id()));
                Ok(inbox)
            }
            SessionCall::Peers => self.peers().await,
            SessionCall::Group { action } => self.group(action).await,
            SessionCall::Devices { action } => self.devices(action).await,
            SessionCall::Invite { expires_s, name } => self.invite(expires_s, name).await,
            SessionCall::Accept { invite, name } => self.accept(&invite, name).await,
            SessionCall::Reset { peer } => self.reset(&peer).await,
            SessionCall::Introduce { to, target } => self.introduce(&to, &target).await,
        }
    }
}

/// Waits up to `limit` for a node event that satisfies `done`.
async fn wait_for(
    live: &mut broadcast::Receiver<Arc<Observed>>,
    limit: Duration,
    mut done: impl FnMut(&Observed) -> bool,
) -> bool {
    let wait = async {
        loop {
            match live.recv().await {
                Ok(o) if done(&o) => return true,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(limit, wait).await.unwrap_or(false)
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
        other => AppError::caused("the session failed", &other),
    }
}
