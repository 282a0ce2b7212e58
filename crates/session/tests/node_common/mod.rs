//! Two-or-more [`Node`]s over a [`MemoryNetwork`], under actix on a paused
//! tokio clock: waits cost no wall time and every wait has a deadline. The
//! driving itself is `strata-test-support`'s; this adds the in-memory store
//! that survives a restart.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::InstallationIdentity;
use strata_cascade::at_rest::StorageKey;
use strata_session::Config;
use strata_session::actors::{Node, NodeLimits, SessionSetup};
use strata_store::{KeySource, MemoryBackend, Store};
pub use strata_test_support::{file_transferred, identity};
use strata_transport::PeerAddr;
use strata_transport::memory::{MemoryNetwork, MemoryTransport};

/// Longest any awaited event may take (virtual time).
pub const DEADLINE: Duration = Duration::from_secs(900);

/// Runs `f` in an actix system on a paused current-thread runtime.
pub use strata_test_support::run_paused as run;

pub use strata_test_support::now_s;

/// `a` opens a session with `b`; both wait until it is ready.
pub async fn handshake(a: &mut TestNode, b: &mut TestNode) {
    a.connect(b.node.name).await;
    a.wait_ready().await;
    b.wait_ready().await;
}

/// Alice and Bob on `net` (seeds `seed` and `seed + 1`, downloads in
/// `dir`'s `a` and `b`), with a session open between them.
pub async fn ready_pair(net: &MemoryNetwork, seed: u64, dir: &Path) -> (TestNode, TestNode) {
    let mut alice = TestNode::start("alice", net, seed, dir.join("a"));
    let mut bob = TestNode::start("bob", net, seed + 1, dir.join("b"));
    handshake(&mut alice, &mut bob).await;
    (alice, bob)
}

/// [`ready_pair`] with Bob's KeyPackage pool stocked first (claims and
/// group adds take from it).
pub async fn stocked_pair(net: &MemoryNetwork, seed: u64, dir: &Path) -> (TestNode, TestNode) {
    let mut alice = TestNode::start("alice", net, seed, dir.join("a"));
    let mut bob = TestNode::start("bob", net, seed + 1, dir.join("b"));
    let pool = Config::default().key_package_pool;
    strata_session::keep_stocked(&bob.store(), &bob.identity, &pool, now_s()).unwrap();
    handshake(&mut alice, &mut bob).await;
    (alice, bob)
}

/// A node on the memory network, with the store and keys a restart keeps.
pub struct TestNode {
    pub node: strata_test_support::TestNode<MemoryTransport>,
    pub identity: Arc<InstallationIdentity>,
    pub backend: MemoryBackend,
    pub key: StorageKey,
    pub downloads: PathBuf,
}

impl std::ops::Deref for TestNode {
    type Target = strata_test_support::TestNode<MemoryTransport>;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl std::ops::DerefMut for TestNode {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.node
    }
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

    /// Starts a node at `name` on `net` with a fresh store and `limits`.
    pub fn start_limited(
        name: &'static str,
        net: &MemoryNetwork,
        seed: u64,
        downloads: PathBuf,
        limits: NodeLimits,
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xabc);
        let (transport, stream) = net.join(name).unwrap();
        let store = MemoryBackend::new();
        let key = StorageKey::generate(&mut rng);
        Self::boot_limited(
            name,
            (transport, stream),
            identity(seed),
            (store, key),
            downloads,
            limits,
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
        Self::boot_limited(
            name,
            (transport, stream),
            identity,
            (backend, key),
            downloads,
            NodeLimits::default(),
        )
    }

    fn boot_limited(
        name: &'static str,
        (transport, stream): (MemoryTransport, strata_transport::EventStream),
        identity: Arc<InstallationIdentity>,
        (backend, key): (MemoryBackend, StorageKey),
        downloads: PathBuf,
        limits: NodeLimits,
    ) -> Self {
        let store = Store::open(backend.clone(), KeySource::Key(key.clone())).unwrap();
        let setup = SessionSetup {
            config: Config::default(),
            local: Arc::clone(&identity),
            store: Arc::new(store),
            downloads: downloads.clone(),
        };
        let node = Node::new(setup, transport, stream).unwrap().with_limits(limits);
        Self {
            node: strata_test_support::TestNode::from_node(name, node, DEADLINE),
            identity,
            backend,
            key,
            downloads,
        }
    }

    /// Shuts the node down and starts it again on the same store, as after
    /// a process restart.
    pub async fn restart(self, net: &MemoryNetwork) -> Self {
        self.node.shutdown().await;
        let (transport, stream) = net.restart(&PeerAddr::new(self.node.name)).unwrap();
        Self::boot(
            self.node.name,
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
}
