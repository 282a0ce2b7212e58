//! The harness Strata's tests and benches share (a dev-dependency only):
//! a session [`Node`] under actix with its events collected
//! ([`TestNode`]), requests matched to their replies, and waits that fail
//! with a message after a deadline instead of hanging; and
//! [`skip_or_fail`], the one rule for a test that may skip when something
//! it needs (Chromium) is missing. Beside it, one module a concern:
//!
//! - [`js`]: the JS interop peers (Node, the npm harness folders, their
//!   JSON-lines protocol);
//! - [`peerjs`]: an embedded PeerJS broker, hermetic PeerJS transports, a
//!   transport that can crash;
//! - [`libp2p`]: libp2p nodes on loopback;
//! - [`cascade`]: two installations with a working cascade, from the layer
//!   APIs;
//! - [`groups`]: group chat requests and waits on a [`TestNode`];
//! - [`devices`]: multi-device accounts and the scenario every transport
//!   runs;
//! - [`tap`]: a transport that records what its node sends and publishes;
//! - [`machines`]: two session machines driven directly, with a session
//!   between them;
//! - [`bench`](mod@bench): knobs, medians and the JS baselines the benches compare
//!   against.
//!
//! Panics are this crate's way to fail a test: every function here is
//! meant to run inside one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::{
    Connect, Node, NodeEvent, NodeEventKind, PeerRequest, SessionRequest, SessionSetup, Shutdown, Subscribe,
};
use strata_session::{Command, Content, Event};
use strata_store::{KeySource, RedbBackend, Store, StoreError};
use strata_transport::{EventStream, PeerAddr, Transport};
use tokio::sync::mpsc;

pub mod bench;
pub mod cascade;
pub mod devices;
pub mod groups;
pub mod js;
pub mod libp2p;
pub mod machines;
pub mod peerjs;
pub mod tap;

/// Runs `f` in an actix system on a paused current-thread runtime: waits
/// cost no wall time.
pub fn run_paused<F: Future>(f: F) -> F::Output {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    });
    system.block_on(f)
}

/// The wall clock, Unix seconds (KeyPackage lifetimes run on it).
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `f` in an actix system whose tokio runtime has worker threads, so
/// transports' tasks run beside the actors (and beside their crypto) as
/// they do in the daemon.
pub fn run_threaded<F: Future>(f: F) -> F::Output {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    });
    system.block_on(f)
}

/// Runs `scenario` once per seed, the seeds spread over `threads`
/// threads (runs are independent and each is deterministic in its seed);
/// returns the failures, by seed, in seed order.
pub fn run_seeds<E: Send>(
    seeds: &[u64],
    threads: usize,
    scenario: impl Fn(u64) -> Result<(), E> + Sync,
) -> Vec<(u64, E)> {
    let threads = threads.max(1);
    let scenario = &scenario;
    let mut failures: Vec<(u64, E)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(k)
                        .step_by(threads)
                        .filter_map(|&seed| scenario(seed).err().map(|e| (seed, e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    failures.sort_by_key(|(seed, _)| *seed);
    failures
}

/// Forwards a node's events to a channel the test reads.
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

/// A running session [`Node`] and the events it published.
pub struct TestNode<T: Transport + Unpin + 'static> {
    /// Names the node in failure messages.
    pub name: &'static str,
    /// The node actor.
    pub addr: Addr<Node<T>>,
    /// Events not yet looked at by a wait.
    pub events: mpsc::Receiver<NodeEvent>,
    /// Every event the waits have looked at, in order.
    pub seen: Vec<NodeEvent>,
    deadline: Duration,
    next_request: u64,
}

impl<T: Transport + Unpin + 'static> TestNode<T> {
    /// Starts a node over `transport` and collects its events. Every wait
    /// fails after `deadline` (on the runtime's clock: virtual under a
    /// paused runtime).
    pub fn start(
        name: &'static str,
        setup: SessionSetup,
        transport: T,
        stream: EventStream,
        deadline: Duration,
    ) -> Self {
        Self::from_node(name, Node::new(setup, transport, stream).unwrap(), deadline)
    }

    /// Starts `node` and collects its events (see [`TestNode::start`]).
    pub fn from_node(name: &'static str, node: Node<T>, deadline: Duration) -> Self {
        let addr = node.start();
        let (tx, events) = mpsc::channel(1 << 16);
        // A fresh mailbox: the subscription is the first message in it.
        addr.try_send(Subscribe(Collector(tx).start().recipient())).unwrap();
        Self {
            name,
            addr,
            events,
            seen: Vec::new(),
            deadline,
            next_request: 0,
        }
    }

    /// Stops the node's actors (its store closes with them).
    pub async fn shutdown(&self) {
        self.addr.send(Shutdown).await.unwrap();
    }

    fn request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Opens a session with `peer` (dials and starts the handshake).
    pub async fn connect(&mut self, peer: impl Into<PeerAddr>) {
        self.try_connect(peer, None).await.unwrap();
    }

    /// Opens a session with `peer`, which must present `expect_identity`
    /// when given; returns the node's answer.
    pub async fn try_connect(
        &mut self,
        peer: impl Into<PeerAddr>,
        expect_identity: Option<Vec<u8>>,
    ) -> Result<(), strata_session::SessionError> {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(Connect {
                request_id,
                peer: peer.into(),
                expect_identity,
            })
            .await
            .unwrap();
        assert_eq!(reply.request_id, request_id);
        reply.result
    }

    /// Sends `request` about `peer`; fails the test on an error reply.
    pub async fn request(&mut self, peer: impl Into<PeerAddr>, request: SessionRequest) -> Option<String> {
        let request_id = self.request_id();
        let reply = self
            .addr
            .send(PeerRequest {
                request_id,
                peer: peer.into(),
                request,
            })
            .await
            .unwrap();
        assert_eq!(reply.request_id, request_id);
        reply.result.unwrap()
    }

    /// Queues a text to `peer`; returns its message id.
    pub async fn send_text(&mut self, peer: impl Into<PeerAddr>, text: &str) -> String {
        self.request(
            peer,
            SessionRequest::Command(Command::Send(Content::Text { text: text.into() })),
        )
        .await
        .unwrap()
    }

    /// Waits for the first event (since the last wait) matching `pred`. A
    /// failed handshake fails the wait at once rather than after the
    /// deadline.
    pub async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&NodeEvent) -> bool) -> NodeEvent {
        let (name, deadline) = (self.name, self.deadline);
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
        tokio::time::timeout(deadline, wait)
            .await
            .unwrap_or_else(|_| panic!("{name}: no {what} within {deadline:?}"))
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

    /// Waits until a text `text` is received.
    pub async fn wait_text(&mut self, text: &str) {
        self.wait_for(text, |e| {
            matches!(&e.kind, NodeEventKind::Session(Event::Received { content: Content::Text { text: t }, .. }) if t == text)
        })
        .await;
    }
}

/// Waits until `receiver` has the whole file `file_id` and `sender` knows
/// it was acknowledged in full; returns where the receiver wrote it.
pub async fn file_transferred<S, R>(sender: &mut TestNode<S>, receiver: &mut TestNode<R>, file_id: &str) -> PathBuf
where
    S: Transport + Unpin + 'static,
    R: Transport + Unpin + 'static,
{
    let received = receiver
        .wait_for(
            "the file",
            |e| matches!(&e.kind, NodeEventKind::FileReceived { file_id: f, .. } if f == file_id),
        )
        .await;
    sender
        .wait_for(
            "file sent",
            |e| matches!(&e.kind, NodeEventKind::FileSent { file_id: f } if f == file_id),
        )
        .await;
    match received.kind {
        NodeEventKind::FileReceived { path, .. } => path,
        _ => unreachable!("the wait matched FileReceived"),
    }
}

/// An installation from `seed`: the same keys for the same seed.
pub fn identity(seed: u64) -> Arc<InstallationIdentity> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap())
}

/// A fresh installation (new account, new device keys).
pub fn fresh_identity() -> Arc<InstallationIdentity> {
    let mut rng = rand::rng();
    Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap())
}

/// Opens the sealed redb store at `path`, waiting up to `deadline` while a
/// node that just stopped still holds the file.
pub async fn open_store(path: &Path, key: KeySource<'_>, deadline: Duration) -> Store<RedbBackend> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match RedbBackend::open(path) {
            Ok(backend) => return Store::open(backend, key).unwrap(),
            Err(StoreError::InUse { .. }) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open the store {}: {e}", path.display()),
        }
    }
}

/// Whether this run is CI's: the `CI` environment variable is set to any
/// non-empty value (CI systems set `CI=true`).
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// The rule for a test that cannot run because something it needs outside
/// Cargo is missing (Chromium): **under CI it fails, elsewhere it skips
/// loudly.** A skip would pass green and report as tested what never ran,
/// so with `CI` set (see [`under_ci`]) this panics with `why`: CI's setup
/// (`scripts/setup --tests`) installs everything the tests need, and a
/// missing prerequisite there is a broken setup. Outside CI it prints
/// `SKIPPED: <why>` to the test's stderr and returns; the caller then
/// returns from the test at once:
///
/// ```text
/// if !chromium_installed() {
///     strata_test_support::skip_or_fail("Chromium is missing (apt-get install chromium)");
///     return;
/// }
/// ```
///
/// Every test in the workspace that can skip goes through here; a new one
/// must too. (Tests that need Node or the npm harnesses do not skip at
/// all: they fail wherever those are missing.)
#[track_caller]
#[allow(clippy::print_stderr)]
pub fn skip_or_fail(why: &str) {
    if under_ci() {
        panic!("CI is set but {why}: under CI a missing prerequisite fails the test instead of skipping it");
    }
    eprintln!("SKIPPED: {why} (under CI, with `CI` set, this test fails instead)");
}
