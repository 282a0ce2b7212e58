//! The [`Transport`] trait: how a Strata node moves opaque frames between
//! addresses, plus the events a transport reports.
//!
//! A transport is a pipe. It connects to peers, sends and receives frames
//! (`Bytes`), and on broadcast-capable networks publishes on topics. It must
//! never see plaintext and never know a PDU: everything it carries has already
//! been encrypted and framed by the session layer, which relies only on
//! [`Capabilities`] and never downcasts to a concrete transport.
//!
//! This crate also holds:
//! - [`memory`]: a real in-memory transport with seeded, deterministic
//!   drop/duplicate/reorder/delay faults, partitions and restarts, for
//!   simulations and tests;
//! - [`duo`]: two transports as one, for a node reachable both ways;
//! - [`conformance`]: the generic test suite every transport runs, usually
//!   through [`transport_conformance!`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

pub mod conformance;
pub mod duo;
pub mod memory;

/// Opaque routing address: a PeerJS id, a libp2p installation address, a
/// memory node name. Transports interpret it; nothing above them does.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PeerAddr(String);

impl PeerAddr {
    /// Wraps an address string.
    pub fn new(addr: impl Into<String>) -> Self {
        Self(addr.into())
    }

    /// The address as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerAddr {
    fn from(addr: &str) -> Self {
        Self::new(addr)
    }
}

impl From<&PeerAddr> for PeerAddr {
    fn from(addr: &PeerAddr) -> Self {
        addr.clone()
    }
}

impl From<String> for PeerAddr {
    fn from(addr: String) -> Self {
        Self(addr)
    }
}

/// A broadcast topic (a gossipsub content topic, a memory topic name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Topic(String);

impl Topic {
    /// Wraps a topic name.
    pub fn new(topic: impl Into<String>) -> Self {
        Self(topic.into())
    }

    /// The topic as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Topic {
    fn from(topic: &str) -> Self {
        Self::new(topic)
    }
}

impl From<String> for Topic {
    fn from(topic: String) -> Self {
        Self(topic)
    }
}

/// What a transport reports on its [`EventStream`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TransportEvent {
    /// A point-to-point link to `peer` is open, whichever side opened it.
    Connected {
        /// The remote end.
        peer: PeerAddr,
    },
    /// The link to `peer` is closed; frames in flight on it may be lost.
    Disconnected {
        /// The remote end.
        peer: PeerAddr,
        /// Who or what closed it.
        reason: DisconnectReason,
    },
    /// A frame sent point-to-point by `from`.
    Frame {
        /// The sender.
        from: PeerAddr,
        /// The frame, exactly as sent.
        bytes: Bytes,
    },
    /// A frame published on a topic this node subscribed to.
    Published {
        /// The topic it was published on.
        topic: Topic,
        /// The publisher, where the transport knows it (gossip may not).
        from: Option<PeerAddr>,
        /// The frame, exactly as published.
        bytes: Bytes,
    },
}

/// Why a link closed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DisconnectReason {
    /// This node called [`Transport::disconnect`].
    Local,
    /// The peer closed the link.
    Remote,
    /// The link failed: network error, partition, or the peer crashed or
    /// restarted.
    ConnectionLost,
}

/// What the session layer may rely on. It adapts to these; it never downcasts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Capabilities {
    /// [`Transport::connect`] and [`Transport::send`] work.
    pub point_to_point: bool,
    /// [`Transport::subscribe`] and [`Transport::publish`] work.
    pub broadcast: bool,
    /// Frames to an offline peer are held and delivered when it returns.
    pub store_and_forward: bool,
    /// A frame sent on an open link is delivered exactly once unless the link
    /// drops.
    pub reliable: bool,
    /// Frames between one pair arrive in send order.
    pub ordered: bool,
    /// The largest frame [`Transport::send`] and [`Transport::publish`] accept.
    pub max_frame_len: usize,
}

/// A pluggable way to move frames between Strata nodes.
///
/// Handles are cheap clones of one transport. Each implementation's
/// constructor returns a handle together with the transport's single
/// [`EventStream`]. Every method returns once the request is accepted, not
/// once the frame is delivered.
pub trait Transport: Clone + Send + Sync + 'static {
    /// This node's own address, as peers reach it.
    fn local_addr(&self) -> PeerAddr;

    /// What this transport guarantees right now.
    fn capabilities(&self) -> Capabilities;

    /// Opens a link to `peer`. Both sides then see
    /// [`TransportEvent::Connected`]; connecting to a connected peer is `Ok`
    /// and reports nothing. [`TransportError::Unsupported`] without
    /// point-to-point.
    fn connect(&self, peer: &PeerAddr) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Closes the link to `peer`: this side sees `Disconnected { Local }`,
    /// the peer `Disconnected { Remote }`.
    fn disconnect(&self, peer: &PeerAddr) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends `frame` to a connected peer; [`TransportError::NotConnected`]
    /// otherwise.
    fn send(&self, to: &PeerAddr, frame: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Starts receiving frames published on `topic`;
    /// [`TransportError::Unsupported`] without broadcast.
    fn subscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Publishes `frame` to every other subscriber of `topic`;
    /// [`TransportError::Unsupported`] without broadcast.
    fn publish(&self, topic: &Topic, frame: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Stops receiving frames published on `topic` (`Ok` when it was not
    /// subscribed); [`TransportError::Unsupported`] without broadcast.
    fn unsubscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The bounded stream of a transport's events, handed out once with the
/// transport handle. It ends when the transport stops.
///
/// A consumer that stops polling exerts back-pressure on the transport, so
/// drain it from one dedicated task.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<TransportEvent>,
}

impl EventStream {
    /// Wraps the receiving end of a transport's bounded event channel.
    pub fn new(rx: mpsc::Receiver<TransportEvent>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the transport has stopped.
    pub async fn next(&mut self) -> Option<TransportEvent> {
        self.rx.recv().await
    }
}

impl futures::Stream for EventStream {
    type Item = TransportEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Why a transport request failed.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// There is no open link to this peer: connect first.
    #[error("not connected to {0}")]
    NotConnected(PeerAddr),
    /// No such peer is known to the network (yet).
    #[error("unknown peer {0}")]
    UnknownPeer(PeerAddr),
    /// The peer exists but cannot be reached, e.g. across a partition.
    #[error("peer {0} is unreachable")]
    Unreachable(PeerAddr),
    /// Another node already holds this address.
    #[error("address {0} is already in use")]
    AddrInUse(PeerAddr),
    /// The frame exceeds [`Capabilities::max_frame_len`].
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The frame's length.
        len: usize,
        /// The transport's maximum.
        max: usize,
    },
    /// The transport lacks the capability this call needs.
    #[error("unsupported by this transport: {0}")]
    Unsupported(&'static str),
    /// This handle belongs to a transport that has stopped or restarted.
    #[error("transport closed")]
    Closed,
    /// Too many frames are in flight; retry once the receivers catch up.
    #[error("transport queue is full")]
    QueueFull,
    /// The underlying network or library failed.
    #[error("transport I/O error: {0}")]
    Io(String),
    /// A bug or broken invariant inside the transport.
    #[error("internal transport error: {0}")]
    Internal(String),
}

/// The class of a [`TransportError`], for callers that decide what to do
/// without matching every variant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorKind {
    /// The request itself is invalid (e.g. too large): retrying cannot help.
    InvalidInput,
    /// The caller used the transport wrongly (missing capability, dead
    /// handle).
    Misuse,
    /// The network's current state refused it; retrying later (after a
    /// reconnect) may succeed.
    Transient,
    /// The transport is broken.
    Internal,
}

impl TransportError {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::FrameTooLarge { .. } => ErrorKind::InvalidInput,
            Self::Unsupported(_) | Self::Closed => ErrorKind::Misuse,
            // An address is "in use" while a broker still remembers a crashed
            // session, so it can clear up like the others.
            Self::NotConnected(_)
            | Self::UnknownPeer(_)
            | Self::Unreachable(_)
            | Self::AddrInUse(_)
            | Self::QueueFull
            | Self::Io(_) => ErrorKind::Transient,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }
}
