//! Two-or-more [`Node`]s over a [`MemoryNetwork`], under actix on a paused
//! tokio clock: waits cost no wall time and every wait has a deadline.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::Config;
use strata_session::actors::{
    Connect, Node, NodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup, Subscribe,
};
use strata_session::{Command, Content, Event};
use strata_store::{KeySource, MemoryBackend, Store};
use strata_transport::PeerAddr;
use strata_transport::memory::{MemoryNetwork, MemoryTransport};
use tokio::sync::mpsc;

/// Longest any awaited event may take (virtual time).
pub const DEADLINE: Duration = Duration::from_secs(900);

/// Runs `f` in an actix system on a paused current-thread runtime.
pub fn run<F: Future>(f: F) -> F::Output {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(f)
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

pub struct TestNode {
    pub name: &'static str,
    pub addr: Addr<Node<MemoryTransport>>,
    pub events: mpsc::Receiver<NodeEvent>,
    pub identity: Arc<InstallationIdentity>,
    pub backend: MemoryBackend,
    pub key: StorageKey,
    pub downloads: PathBuf,
    pub seen: Vec<NodeEvent>,
    next_request: u64,
}

pub fn identity(seed: u64) -> Arc<InstallationIdentity> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap())
}

impl TestNode {
    /// Starts a node at `name` on `net` with a fresh store.
    pub fn start(name: &'static str, net: &MemoryNetwork, seed: u64, downloads: PathBuf) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xabc);
        let (transport, stream) = net.join(name).unwrap();
        Self::boot(
            name,
            transport,
            stream,
            identity(seed),
            MemoryBackend::new(),
            StorageKey::generate(&mut rng),
            downloads,
        )
    }

    pub fn boot(
        name: &'static str,
        transport: MemoryTransport,
        stream: strata_transport::EventStream,
        identity: Arc<InstallationIdentity>,
        backend: MemoryBackend,
        key: StorageKey,
        downloads: PathBuf,
    ) -> Self {
        let store = Store::open(backend.clone(), KeySource::Key(key.clone())).unwrap();
        let setup = SessionSetup {
            config: Config::default(),
            local: Arc::clone(&identity),
            store: Arc::new(store),
            downloads: downloads.clone(),
        };
        let node = Node::new(setup, transport, stream).unwrap().start();
        let (tx, events) = mpsc::channel(1 << 16);
        let collector = Collector(tx).start();
        node.try_send(Subscribe(collector.recipient())).unwrap();
        Self {
            name,
            addr: node,
            events,
            identity,
            backend,
            key,
            downloads,
            seen: Vec::new(),
            next_request: 1,
        }
    }

    /// Shuts the node down and starts it again on the same store, as after
    /// a process restart.
    pub async fn restart(self, net: &MemoryNetwork) -> Self {
        self.addr.send(strata_session::actors::Shutdown).await.unwrap();
        let (transport, stream) = net.restart(&PeerAddr::new(self.name)).unwrap();
        Self::boot(
            self.name,
            transport,
            stream,
            self.identity,
            self.backend,
            self.key,
            self.downloads,
        )
    }

    pub fn store(&self) -> Store<MemoryBackend> {
        Store::open(self.backend.clone(), KeySource::Key(self.key.clone())).unwrap()
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    pub async fn connect(&mut self, peer: &str) {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(Connect {
                request_id,
                peer: PeerAddr::new(peer),
            })
            .await
            .unwrap();
        assert_eq!(reply.request_id, request_id);
        reply.result.unwrap();
    }

    pub async fn request(&mut self, peer: &str, request: SessionRequest) -> Option<String> {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(PeerRequest {
                request_id,
                peer: PeerAddr::new(peer),
                request,
            })
            .await
            .unwrap();
        assert_eq!(reply.request_id, request_id);
        reply.result.unwrap()
    }

    pub async fn send_text(&mut self, peer: &str, text: &str) -> String {
        self.request(
            peer,
            SessionRequest::Command(Command::Send(Content::Text { text: text.into() })),
        )
        .await
        .unwrap()
    }

    /// Waits for the first event (since the last wait) matching `pred`.
    pub async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&NodeEvent) -> bool) -> NodeEvent {
        let name = self.name;
        let wait = async {
            loop {
                let e = self.events.recv().await.expect("node events end");
                self.seen.push(e.clone());
                if pred(&e) {
                    return e;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("{name}: no {what} within {DEADLINE:?}"))
    }

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
}

/// Waits until `receiver` has the whole file `file_id` and `sender` knows
/// it was acknowledged in full; returns where the receiver wrote it.
pub async fn file_transferred(sender: &mut TestNode, receiver: &mut TestNode, file_id: &str) -> PathBuf {
    let received = receiver
        .wait_for(
            "the file",
            |e| matches!(&e.kind, NodeEventKind::FileReceived { file_id: f, .. } if f == file_id),
        )
        .await;
    let NodeEventKind::FileReceived { path, .. } = received.kind else {
        unreachable!()
    };
    sender
        .wait_for(
            "file sent",
            |e| matches!(&e.kind, NodeEventKind::FileSent { file_id: f } if f == file_id),
        )
        .await;
    path
}
