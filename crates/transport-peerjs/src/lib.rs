//! Strata's PeerJS transport (Enkrypted Chat P2).
//!
//! This crate will hold the PeerJS broker client (WebSocket signaling,
//! heartbeats, reconnection), one WebRTC data channel per remote peer
//! (webrtc-rs), PeerJS DataConnection compatibility (`raw`, `json`,
//! `binary`), and an embedded PeerJS-compatible broker — all behind
//! `strata_transport::Transport`.
//!
//! Only SDP and ICE may ever cross the broker; application frames travel on
//! the data channel alone.
//!
//! Status: the crate exists so the workspace graph is complete; its contents
//! arrive with the PeerJS transport issue.
#![forbid(unsafe_code)]
