//! Strata session [`Node`]s over [`PeerJsTransport`] through an embedded
//! PeerJS broker on loopback, with real WebRTC, real redb stores and fresh
//! identities: shared by `tests/peerjs_sessions.rs` and the
//! `peerjs_sessions` bench.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::{
    Connect, Node, NodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup, Shutdown, Subscribe,
};
use strata_session::{Command, Config, Content, Event};
use strata_store::{KeySource, RedbBackend, Store, StoreError, load_or_create_key_file};
use strata_transport::{Capabilities, EventStream, PeerAddr, Topic, Transport, TransportError};
use strata_transport_peerjs::{Broker, BrokerConfig, PeerJsConfig, PeerJsTransport, RtcConfig, SignalingConfig};
use tokio::sync::mpsc;

/// Longest any awaited event may take (wall time; a shared 2-core machine
/// with parallel builds needs the headroom).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `f` in an actix system whose tokio runtime has worker threads, so the
/// transports' WebRTC tasks run beside the actors as they do in the daemon.
pub fn run<F: Future>(f: F) -> F::Output {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    system.block_on(f)
}

/// An embedded broker on an ephemeral loopback port.
pub async fn broker() -> Broker {
    strata_transport_peerjs::install_crypto_provider();
    Broker::bind(SocketAddr::from(([127, 0, 0, 1], 0)), BrokerConfig::default())
        .await
        .unwrap()
}

/// A hermetic transport config for `id` on the broker at `port`; signaling
/// reconnects quickly so broker restarts are short.
pub fn transport_config(id: &str, port: u16) -> PeerJsConfig {
    let mut signaling = SignalingConfig::new("127.0.0.1", port);
    signaling.reconnect_initial = Duration::from_millis(50);
    signaling.reconnect_max = Duration::from_millis(500);
    let mut config = PeerJsConfig::new(id, signaling);
    config.rtc = RtcConfig::loopback();
    config
}

/// A fresh installation (new account, new device keys).
pub fn fresh_identity() -> Arc<InstallationIdentity> {
    let mut rng = rand::rng();
    Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap())
}

/// The PeerJS id a node registers: its installation id in hex, as the
/// daemon and the demo do.
pub fn peer_id(identity: &InstallationIdentity) -> String {
    hex::encode(identity.installation_id().as_bytes())
}

/// Opens the sealed redb store in `dir`, waiting (with a deadline) while a
/// node that just stopped still holds the file.
pub async fn open_store(dir: &Path) -> Store<RedbBackend> {
    std::fs::create_dir_all(dir).unwrap();
    let key = load_or_create_key_file(&dir.join("storage.key")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RedbBackend::open(&dir.join("strata.redb")) {
            Ok(backend) => return Store::open(backend, KeySource::Key(key)).unwrap(),
            Err(StoreError::InUse { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open the store in {}: {e}", dir.display()),
        }
    }
}

/// A transport that records every frame it sends: the test compares them
/// with what crossed the broker. Everything else is the wrapped transport.
#[derive(Clone)]
pub struct Tap<T> {
    inner: T,
    sent: Arc<Mutex<Vec<Bytes>>>,
}

impl<T> Tap<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            sent: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every frame sent so far.
    pub fn sent(&self) -> Vec<Bytes> {
        self.sent.lock().unwrap().clone()
    }
}

impl<T: Transport> Transport for Tap<T> {
    fn local_addr(&self) -> PeerAddr {
        self.inner.local_addr()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn connect(&self, peer: &PeerAddr) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.connect(peer)
    }

    fn disconnect(&self, peer: &PeerAddr) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.disconnect(peer)
    }

    fn send(&self, to: &PeerAddr, frame: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.sent.lock().unwrap().push(frame.clone());
        self.inner.send(to, frame)
    }

    fn subscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.subscribe(topic)
    }

    fn publish(&self, topic: &Topic, frame: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.publish(topic, frame)
    }
}

struct Collector(mpsc::Sender<NodeEvent>);

impl Actor for Collector {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

impl Handler<NodeEvent> for Collector {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, event: NodeEvent, _ctx: &mut Self::Context) -> Self::Result {
        let tx = self.0.clone();
        Box::pin(async move {
            let _ = tx.send(event).await;
        })
    }
}

/// One Strata node: a session [`Node`] over a transport, with its store in
/// `dir` and its events collected.
pub struct PeerNode<T: Transport> {
    pub name: &'static str,
    pub id: PeerAddr,
    pub identity: Arc<InstallationIdentity>,
    pub dir: PathBuf,
    pub addr: Addr<Node<T>>,
    pub events: mpsc::Receiver<NodeEvent>,
    pub seen: Vec<NodeEvent>,
    next_request: u64,
}

impl<T: Transport + Unpin> PeerNode<T> {
    /// Starts the actors over `transport` with the store in `dir`.
    pub async fn boot(
        name: &'static str,
        identity: Arc<InstallationIdentity>,
        dir: PathBuf,
        transport: T,
        stream: EventStream,
    ) -> Self {
        let store = open_store(&dir).await;
        let setup = SessionSetup {
            config: Config::default(),
            local: Arc::clone(&identity),
            store: Arc::new(store),
            downloads: dir.join("downloads"),
        };
        let id = transport.local_addr();
        let node = Node::new(setup, transport, stream).unwrap().start();
        let (tx, events) = mpsc::channel(1 << 16);
        let collector = Collector(tx).start();
        node.send(Subscribe(collector.recipient())).await.unwrap();
        Self {
            name,
            id,
            identity,
            dir,
            addr: node,
            events,
            seen: Vec::new(),
            next_request: 1,
        }
    }

    /// Stops the node's actors (its store closes with them).
    pub async fn shutdown(self) {
        self.addr.send(Shutdown).await.unwrap();
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Opens a session with `peer` (dials and starts the handshake).
    pub async fn connect(&mut self, peer: &PeerAddr) {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(Connect {
                request_id,
                peer: peer.clone(),
            })
            .await
            .unwrap();
        assert_eq!(reply.request_id, request_id);
        reply.result.unwrap();
    }

    pub async fn request(&mut self, peer: &PeerAddr, request: SessionRequest) -> Option<String> {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(PeerRequest {
                request_id,
                peer: peer.clone(),
                request,
            })
            .await
            .unwrap();
        assert_eq!(reply.request_id, request_id);
        reply.result.unwrap()
    }

    pub async fn send_text(&mut self, peer: &PeerAddr, text: &str) -> String {
        self.request(
            peer,
            SessionRequest::Command(Command::Send(Content::Text { text: text.into() })),
        )
        .await
        .unwrap()
    }

    /// Waits for the first event (since the last wait) matching `pred`;
    /// fails on a handshake failure instead of waiting it out.
    pub async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&NodeEvent) -> bool) -> NodeEvent {
        let name = self.name;
        let wait = async {
            loop {
                let e = self.events.recv().await.expect("node events end");
                self.seen.push(e.clone());
                if pred(&e) {
                    return e;
                }
                if let NodeEventKind::Session(Event::HandshakeFailed { reason }) = &e.kind {
                    panic!("{name}: handshake failed while waiting for {what}: {reason}");
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("{name}: no {what} within {DEADLINE:?}"))
    }

    /// Waits for `encryptionReady`; true when the session was resumed.
    pub async fn wait_ready(&mut self) -> bool {
        let e = self
            .wait_for("encryptionReady", |e| {
                matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. }))
            })
            .await;
        matches!(
            e.kind,
            NodeEventKind::Session(Event::EncryptionReady { resumed: true, .. })
        )
    }

    pub async fn wait_text(&mut self, text: &str) {
        self.wait_for(text, |e| {
            matches!(&e.kind, NodeEventKind::Session(Event::Received { content: Content::Text { text: t }, .. }) if t == text)
        })
        .await;
    }

    /// Streams the file at `path` to `peer`; returns once the peer wrote it
    /// whole (`receiver` sees `FileReceived`) and acknowledged every chunk.
    pub async fn send_file(&mut self, receiver: &mut Self, path: &Path) -> PathBuf {
        let to = receiver.id.clone();
        let file_id = self
            .request(&to, SessionRequest::SendFile(path.to_owned()))
            .await
            .unwrap();
        let received = receiver
            .wait_for(
                "the file",
                |e| matches!(&e.kind, NodeEventKind::FileReceived { file_id: f, .. } if *f == file_id),
            )
            .await;
        self.wait_for(
            "file sent",
            |e| matches!(&e.kind, NodeEventKind::FileSent { file_id: f } if *f == file_id),
        )
        .await;
        match received.kind {
            NodeEventKind::FileReceived { path, .. } => path,
            _ => unreachable!(),
        }
    }
}

impl PeerNode<PeerJsTransport> {
    /// A node with a fresh identity and store, registered on the broker.
    pub async fn start(name: &'static str, port: u16, dir: PathBuf) -> Self {
        let identity = fresh_identity();
        let (transport, stream) = PeerJsTransport::start(transport_config(&peer_id(&identity), port))
            .await
            .unwrap();
        Self::boot(name, identity, dir, transport, stream).await
    }
}

impl PeerNode<Tap<PeerJsTransport>> {
    /// As [`PeerNode::start`], recording the frames the node sends.
    pub async fn start_tapped(name: &'static str, port: u16, dir: PathBuf) -> (Self, Tap<PeerJsTransport>) {
        let identity = fresh_identity();
        let (transport, stream) = PeerJsTransport::start(transport_config(&peer_id(&identity), port))
            .await
            .unwrap();
        let tap = Tap::new(transport);
        (Self::boot(name, identity, dir, tap.clone(), stream).await, tap)
    }
}

/// Writes `len` random bytes to `path`.
pub fn random_file(path: &Path, len: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(path, &data).unwrap();
    data
}
