//! Strata's PeerJS transport (Enkrypted Chat P2): PeerJS signaling, WebRTC
//! data channels, and an embedded PeerJS-compatible broker.
//!
//! - [`PeerJsTransport`] implements `strata_transport::Transport`: it
//!   registers with a PeerJS broker ([`signaling`]), opens one reliable,
//!   ordered WebRTC data channel per remote peer (webrtc-rs, trickle ICE),
//!   and moves opaque frames over it. It speaks PeerJS 1.5.5's
//!   DataConnection protocol, so an unmodified browser `peerjs` app can be a
//!   peer ([`serialization`], [`binarypack`]).
//! - [`broker::Broker`] is a PeerJS-compatible broker (`peer` 1.0.2
//!   behaviour, every resource bounded) over `ws://` or `wss://`, to run
//!   standalone (`examples/broker.rs`) or inside a node.
//!
//! Links: one peer connection with one reliable, ordered data channel per
//! remote peer; trickle ICE; `Connected` once the channel is open;
//! `Disconnected` at once on a local or remote close (PeerJS's close message
//! or the channel closing) and within seconds when ICE loses the peer;
//! `send` waits while more than [`PeerJsConfig::high_water`] bytes are
//! buffered. [`RtcConfig::loopback`] is the hermetic test network.
//!
//! Only SDP and ICE ever cross the broker; application frames travel on the
//! data channel alone. This crate never sees plaintext or PDUs: frames are
//! opaque bytes that the session layer has already encrypted.
//!
//! # Start-up requirement
//!
//! webrtc-rs's DTLS needs rustls' process-wide crypto provider. In a binary
//! that also links libp2p's QUIC (aws-lc-rs) rustls cannot pick one, and the
//! DTLS handshake then panics inside a task while the channel silently never
//! opens. [`PeerJsTransport::start`] and [`signaling::Signaling::connect`]
//! call [`install_crypto_provider`] for you.
#![forbid(unsafe_code)]

pub mod binarypack;
pub mod broker;
mod link;
pub mod protocol;
pub mod rtc;
pub mod serialization;
pub mod signaling;
mod transport;

pub use broker::{Broker, BrokerConfig};
pub use rtc::{IceNetwork, IceServer, RtcConfig};
pub use serialization::Serialization;
pub use signaling::{SignalingConfig, TlsRoots};
pub use transport::{MAX_FRAME_LEN, MAX_MESSAGE_LEN, PeerJsConfig, PeerJsTransport, StartError};

/// Installs rustls' `ring` provider as the process default, unless one is
/// installed already. Idempotent and cheap.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
