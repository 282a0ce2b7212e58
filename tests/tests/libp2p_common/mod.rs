//! Strata session `Node`s over real `Libp2pTransport`s on loopback that
//! know only a relay: shared by `tests/libp2p_sessions.rs` and
//! `tests/libp2p_groups.rs`.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::SessionSetup;
use strata_store::{KeySource, RedbBackend, Store};
use strata_test_support::{TestNode, open_store};
use strata_transport::EventStream;
use strata_transport_libp2p::{Config, Libp2pTransport, LinkConfig, StoreConfig};

/// Longest any awaited event may take (wall clock, on a loaded 2-core box).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `f` in an actix system (a current-thread Tokio runtime, real time).
pub fn run<F: Future>(f: F) -> F::Output {
    actix::System::new().block_on(f)
}

/// Short link timers, so that a peer that went away is noticed in seconds
/// rather than the default 30 s; everything else is the product default.
pub fn link_config() -> LinkConfig {
    let mut link = LinkConfig::default();
    link.keepalive = Duration::from_secs(1);
    link.timeout = Duration::from_secs(4);
    link
}

/// The relay: a plain libp2p node that serves its message store.
pub async fn start_relay() -> (Libp2pTransport, EventStream) {
    let mut config = Config::loopback("relay");
    config.store = StoreConfig::serving();
    Libp2pTransport::start(config).await.unwrap()
}

/// One installation: its keys, its store file and its libp2p identity
/// survive a restart; its `Node` and transport do not.
pub struct Installation {
    pub name: &'static str,
    pub identity: Arc<InstallationIdentity>,
    pub keypair: Keypair,
    pub store_path: PathBuf,
    pub key: StorageKey,
    pub downloads: PathBuf,
    pub relay: Multiaddr,
    /// The session configuration its node starts with.
    pub session: strata_session::Config,
}

/// A started installation: its session node, driven through
/// [`TestNode`], and its libp2p node.
pub struct Running {
    pub node: TestNode<Libp2pTransport>,
    pub transport: Libp2pTransport,
}

impl std::ops::Deref for Running {
    type Target = TestNode<Libp2pTransport>;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.node
    }
}

impl Installation {
    pub fn new(name: &'static str, seed: u64, dir: &Path, relay: Multiaddr) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
        Self {
            name,
            identity,
            keypair: Keypair::generate_ed25519(),
            store_path: dir.join(format!("{name}.redb")),
            key: StorageKey::generate(&mut rng),
            downloads: dir.join(format!("{name}-downloads")),
            relay,
            session: strata_session::Config::default(),
        }
    }

    /// An installation of `identity`, named (and addressed) by its id.
    pub fn of(identity: Arc<InstallationIdentity>, dir: &Path, relay: Multiaddr) -> Self {
        let name = strata_test_support::devices::name_of(&identity);
        Self {
            name,
            identity,
            keypair: Keypair::generate_ed25519(),
            store_path: dir.join(format!("{name}.redb")),
            key: StorageKey::generate(&mut rand::rng()),
            downloads: dir.join(format!("{name}-downloads")),
            relay,
            session: strata_session::Config::default(),
        }
    }

    /// Starts a transport (bootstrapped to the relay only) and a session
    /// `Node` on this installation's store.
    pub async fn start(&self) -> Running {
        self.start_with(|_, _| {}).await
    }

    /// [`Installation::start`], with the transport's configuration adjusted
    /// by `customize` (which may also use the store) first.
    pub async fn start_with(&self, customize: impl FnOnce(&mut Config, &Store<RedbBackend>)) -> Running {
        let store = open_store(&self.store_path, KeySource::Key(self.key.clone()), DEADLINE).await;
        let mut config = Config::loopback(self.name);
        config.keypair = Some(self.keypair.clone());
        config.bootstrap = vec![self.relay.clone()];
        config.link = link_config();
        customize(&mut config, &store);
        let (transport, stream) = Libp2pTransport::start(config).await.unwrap();
        let setup = SessionSetup {
            config: self.session.clone(),
            local: Arc::clone(&self.identity),
            store: Arc::new(store),
            downloads: self.downloads.clone(),
        };
        Running {
            node: TestNode::start(self.name, setup, transport.clone(), stream, DEADLINE),
            transport,
        }
    }
}

impl Running {
    /// Stops the session node and its libp2p node: the process is gone.
    pub async fn stop(self) {
        self.node.shutdown().await;
        self.transport.shutdown().await;
    }
}
