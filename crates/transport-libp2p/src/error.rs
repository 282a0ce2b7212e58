//! Errors: start-up misuse and failures ([`Error`]) and bad network input
//! ([`InboundError`]). Request-time errors are
//! [`strata_transport::TransportError`].

use strata_proto::waku::WakuError;

/// Why a [`Libp2pTransport`](crate::Libp2pTransport) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid (misuse): the message says which field.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// libp2p refused to build the swarm or to listen (I/O, address in use).
    #[error("libp2p start-up failed: {0}")]
    Startup(String),
    /// The swarm task ended before it reported its listen addresses.
    #[error("the swarm task stopped during start-up")]
    Stopped,
}

/// Why a received link frame was refused. All variants are bad peer input:
/// the message is dropped and logged, nothing else happens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// `meta` is not the 26-byte link header.
    #[error("link header of {0} bytes, expected 26")]
    HeaderLength(usize),
    /// The header's magic byte is wrong (not a Strata link frame).
    #[error("bad link header magic {0:#04x}")]
    BadMagic(u8),
    /// An unknown frame kind.
    #[error("unknown link frame kind {0}")]
    UnknownKind(u8),
    /// `OPEN`'s hello is not a valid protobuf.
    #[error("malformed hello: {0}")]
    Hello(String),
    /// `OPEN`'s hello is longer than two addresses can be.
    #[error("hello of {0} bytes is too long")]
    HelloTooLong(usize),
    /// An address is empty or over [`MAX_ADDR_LEN`](crate::MAX_ADDR_LEN).
    #[error("installation address of {0} bytes is empty or too long")]
    BadAddr(usize),
}

/// Why a received gossip message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// Not a valid `WakuMessage`: rejected for relaying too (the gossipsub
    /// validator reports `Reject`, which penalises the forwarder).
    #[error(transparent)]
    Waku(#[from] WakuError),
    /// A valid `WakuMessage` on our installation topic whose link frame is
    /// malformed: relayed (other Waku nodes would), but not acted upon.
    #[error(transparent)]
    Frame(#[from] FrameError),
}
