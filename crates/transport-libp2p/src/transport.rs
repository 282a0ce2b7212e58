//! [`Libp2pTransport`]: the handle, and its `Transport` implementation.

use std::sync::Arc;

use bytes::Bytes;
use libp2p::{Multiaddr, PeerId};
use strata_proto::waku::MAX_WAKU_MESSAGE_BYTES;
use strata_transport::{Capabilities, EventStream, PeerAddr, Topic, Transport, TransportError};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::bundle::HeldBundle;
use crate::config::Config;
use crate::error::Error;
use crate::node::{Command, Node, Status};
use crate::topic::{content_topic, is_reserved};

/// The largest frame `send` and `publish` accept: Waku's 150 KiB message
/// cap less 2 KiB for the envelope (content topic, link header, timestamp).
pub const MAX_FRAME_LEN: usize = MAX_WAKU_MESSAGE_BYTES - 2048;

/// A handle on a running libp2p node. Cheap to clone; the node stops when
/// every handle is dropped or [`shutdown`](Self::shutdown) is called.
#[derive(Clone, Debug)]
pub struct Libp2pTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addr: PeerAddr,
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
}

impl Libp2pTransport {
    /// Starts a node: builds the swarm, listens, spawns its task (which then
    /// dials the bootstrap peers) and returns once it has listen addresses.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub async fn start(config: Config) -> Result<(Self, EventStream), Error> {
        let (commands, command_rx) = mpsc::channel(config.command_capacity.max(1));
        let (events, event_rx) = mpsc::channel(config.event_capacity.max(1));
        let (node, peer_id) = Node::start(&config, command_rx, events).await?;
        let span = tracing::debug_span!("libp2p_node", addr = %config.addr, %peer_id);
        tokio::spawn(node.run().instrument(span));
        let inner = Inner {
            addr: config.addr,
            peer_id,
            commands,
        };
        Ok((Self { inner: Arc::new(inner) }, EventStream::new(event_rx)))
    }

    /// The libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// A snapshot of the node's state.
    pub async fn status(&self) -> Result<Status, TransportError> {
        self.request(Command::Status).await
    }

    /// Where the node listens, each address ending in `/p2p/<peer id>`:
    /// what other nodes put in their bootstrap list.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, TransportError> {
        Ok(self.status().await?.listen_addrs)
    }

    /// Dials a relay peer. Returns once the dial has started.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), TransportError> {
        self.request(|reply| Command::Dial(addr, reply)).await
    }

    /// The bundles held for `identity_key` (one per installation, the
    /// newest that passed; see [`crate::bundle`]). `Unsupported` without
    /// [`Config::bundles`].
    pub async fn bundles_of(&self, identity_key: &[u8]) -> Result<Vec<HeldBundle>, TransportError> {
        self.request(|reply| Command::Bundles(Some(identity_key.to_vec()), reply))
            .await
    }

    /// Every bundle held.
    pub async fn bundles(&self) -> Result<Vec<HeldBundle>, TransportError> {
        self.request(|reply| Command::Bundles(None, reply)).await
    }

    /// Signs and publishes this node's bundle now: call it after the bundle
    /// changed (new version). `Unsupported` without a bundle source.
    pub async fn refresh_bundle(&self) -> Result<(), TransportError> {
        self.request(Command::RefreshBundle).await
    }

    /// Stops the node: its connections close and its event stream ends.
    /// Peers see its links time out.
    pub async fn shutdown(&self) {
        let _ = self.request(Command::Shutdown).await;
    }

    async fn request<R>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<R, TransportError>>) -> Command,
    ) -> Result<R, TransportError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(command(reply))
            .await
            .map_err(|_| TransportError::Closed)?;
        answer.await.map_err(|_| TransportError::Closed)?
    }
}

fn check_topic(topic: &Topic) -> Result<(), TransportError> {
    if is_reserved(&content_topic(topic)) {
        return Err(TransportError::Unsupported("topic reserved for link and store traffic"));
    }
    Ok(())
}

fn check_len(frame: &Bytes) -> Result<(), TransportError> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(TransportError::FrameTooLarge {
            len: frame.len(),
            max: MAX_FRAME_LEN,
        });
    }
    Ok(())
}

impl Transport for Libp2pTransport {
    fn local_addr(&self) -> PeerAddr {
        self.inner.addr.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            point_to_point: true,
            broadcast: true,
            store_and_forward: false,
            reliable: true,
            ordered: true,
            max_frame_len: MAX_FRAME_LEN,
        }
    }

    async fn connect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        self.request(|reply| Command::Connect(peer.clone(), reply)).await
    }

    async fn disconnect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        self.request(|reply| Command::Disconnect(peer.clone(), reply)).await
    }

    async fn send(&self, to: &PeerAddr, frame: Bytes) -> Result<(), TransportError> {
        check_len(&frame)?;
        self.request(|reply| Command::Send(to.clone(), frame, reply)).await
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), TransportError> {
        check_topic(topic)?;
        self.request(|reply| Command::Subscribe(topic.clone(), reply)).await
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), TransportError> {
        check_topic(topic)?;
        self.request(|reply| Command::Unsubscribe(topic.clone(), reply)).await
    }

    async fn publish(&self, topic: &Topic, frame: Bytes) -> Result<(), TransportError> {
        check_len(&frame)?;
        check_topic(topic)?;
        if frame.is_empty() {
            return Err(TransportError::Unsupported("empty publications: Waku relays drop them"));
        }
        self.request(|reply| Command::Publish(topic.clone(), frame, reply))
            .await
    }
}
