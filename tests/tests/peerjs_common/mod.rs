//! Strata session [`Node`]s over [`PeerJsTransport`] through an embedded
//! PeerJS broker on loopback, with real WebRTC, real redb stores and fresh
//! identities: shared by `tests/peerjs_sessions.rs` and the
//! `peerjs_sessions` bench.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata_cascade::InstallationIdentity;
use strata_session::Config;
use strata_session::actors::{SessionRequest, SessionSetup};
use strata_store::{KeySource, RedbBackend, Store, load_or_create_key_file};
use strata_test_support::peerjs;
pub use strata_test_support::tap::Tap;
pub use strata_test_support::{TestNode, fresh_identity};
use strata_transport::{EventStream, PeerAddr, Transport};
use strata_transport_peerjs::PeerJsTransport;

/// Longest any awaited event may take (wall time; a shared 2-core machine
/// with parallel builds needs the headroom).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `f` in an actix system whose tokio runtime has worker threads, so the
/// transports' WebRTC tasks run beside the actors as they do in the daemon.
pub use strata_test_support::run_threaded as run;

/// The PeerJS id a node registers: its installation id in hex, as the
/// daemon and the demo do.
pub fn peer_id(identity: &InstallationIdentity) -> String {
    hex::encode(identity.installation_id().as_bytes())
}

/// Opens the sealed redb store in `dir` (key file beside it), waiting
/// while a node that just stopped still holds the file.
pub async fn open_store(dir: &Path) -> Store<RedbBackend> {
    std::fs::create_dir_all(dir).unwrap();
    let key = load_or_create_key_file(&dir.join("storage.key")).unwrap();
    strata_test_support::open_store(&dir.join("strata.redb"), KeySource::Key(key), Duration::from_secs(10)).await
}

/// One Strata node: a session [`Node`] over a transport, with its store in
/// `dir`; driven through [`TestNode`].
pub struct PeerNode<T: Transport + Unpin + 'static> {
    pub node: TestNode<T>,
    pub id: PeerAddr,
    pub identity: Arc<InstallationIdentity>,
    pub dir: PathBuf,
}

impl<T: Transport + Unpin + 'static> std::ops::Deref for PeerNode<T> {
    type Target = TestNode<T>;
    fn deref(&self) -> &Self::Target {
        &self.node
    }
}

impl<T: Transport + Unpin + 'static> std::ops::DerefMut for PeerNode<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.node
    }
}

impl<T: Transport + Unpin + 'static> PeerNode<T> {
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
        Self {
            node: TestNode::start(name, setup, transport, stream, DEADLINE),
            id,
            identity,
            dir,
        }
    }

    /// Stops the node's actors (its store closes with them).
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }

    /// Streams the file at `path` to `peer`; returns once the peer wrote it
    /// whole (`receiver` sees `FileReceived`) and acknowledged every chunk.
    pub async fn send_file(&mut self, receiver: &mut Self, path: &Path) -> PathBuf {
        let file_id = self
            .request(&receiver.id, SessionRequest::SendFile(path.to_owned()))
            .await
            .unwrap();
        strata_test_support::file_transferred(&mut self.node, &mut receiver.node, &file_id).await
    }
}

impl PeerNode<PeerJsTransport> {
    /// A node with a fresh identity and store, registered on the broker.
    pub async fn start(name: &'static str, port: u16, dir: PathBuf) -> Self {
        let identity = fresh_identity();
        let (transport, stream) = PeerJsTransport::start(peerjs::config(&peer_id(&identity), port))
            .await
            .unwrap();
        Self::boot(name, identity, dir, transport, stream).await
    }
}

impl PeerNode<PeerJsTransport> {
    /// A node of `identity` registered on the broker at `port` under its
    /// installation id, its store in `dir` prepared by `prepare` first.
    pub async fn start_as(
        identity: Arc<InstallationIdentity>,
        port: u16,
        dir: PathBuf,
        prepare: impl FnOnce(&Store<RedbBackend>),
    ) -> Self {
        prepare(&open_store(&dir).await);
        let name = strata_test_support::devices::name_of(&identity);
        let (transport, stream) = PeerJsTransport::start(peerjs::config(name, port)).await.unwrap();
        Self::boot(name, identity, dir, transport, stream).await
    }
}

impl PeerNode<Tap<PeerJsTransport>> {
    /// As [`PeerNode::start`], recording the frames the node sends.
    pub async fn start_tapped(name: &'static str, port: u16, dir: PathBuf) -> (Self, Tap<PeerJsTransport>) {
        let identity = fresh_identity();
        let (transport, stream) = PeerJsTransport::start(peerjs::config(&peer_id(&identity), port))
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
