//! Strata's gossip transport: libp2p gossipsub speaking Waku relay, behind
//! [`strata_transport::Transport`].
//!
//! A [`Libp2pTransport`] is one node of a Waku-relay-style network. It moves
//! opaque frames — it never sees a plaintext, a key or a PDU, and must never
//! depend on the cascade, the session layer, the app or another transport.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_transport::Transport;
//! use strata_transport_libp2p::{Config, Libp2pTransport};
//!
//! let mut config = Config::new("my-installation-id");
//! config.bootstrap.push("/ip4/192.0.2.7/tcp/60000/p2p/12D3KooWExample".parse()?);
//! let (node, mut events) = Libp2pTransport::start(config).await?;
//! node.connect(&"their-installation-id".into()).await?; // then wait for Connected
//! # let _ = events.next().await;
//! # Ok(()) }
//! ```
//!
//! # The network (Waku relay, 11/14/23/64)
//!
//! | setting | value | why |
//! |---|---|---|
//! | transports | TCP (nodelay) + noise + yamux, and QUIC v1 | Waku: TCP with noise; rust-libp2p has no mplex |
//! | behaviours | gossipsub, identify, ping, mDNS (off by default) | js-libp2p needs identify to open its gossipsub topology; its connection monitor pings |
//! | protocol id | [`RELAY_PROTOCOL`] `/vac/waku/relay/2.0.0`, gossipsub v1.1 | not `/meshsub/*` |
//! | signatures | `MessageAuthenticity::Anonymous` + `ValidationMode::Anonymous` (StrictNoSign) | signed messages are silently dropped by Waku peers |
//! | message id | SHA-256 of the message data | the default id makes every anonymous message the same |
//! | validation | `validate_messages()`; each message is decoded and checked ([`strata_proto::waku::WakuMessage::decode_bounded`]) and reported `Accept` (then relayed) or `Reject` | unreported messages are neither delivered nor forwarded |
//! | `max_transmit_size` | 256 KiB | Waku messages go up to 150 KiB; one oversized frame kills a connection's later deliveries |
//! | mesh | D 6, D_low 4, D_high 8, D_out 3, D_lazy 6, heartbeat 1 s, history 6/3, seen TTL 2 min, prune backoff 1 min, flood publish | 29/WAKU2-CONFIG, nwaku |
//! | control messages | at most 400 IHAVE/IWANT ids sent per RPC; control parts up to 256 KiB accepted | gossipsub 0.50 refuses control parts over 16 KiB by default and, after 5 refused streams, stops talking to the sender: a relay with more than D_high subscribers (its IHAVEs list every recent id) went silent towards the peers outside its mesh |
//! | idle timeout | 5 min | the swarm's 10 s drops relays outside the mesh |
//! | pubsub topic | one, [`topic::DEFAULT_PUBSUB_TOPIC`] `/waku/2/rs/42/0` (configurable) | content topics are filtered locally, see [`topic`] |
//!
//! Every message is a `WakuMessage` with `version` 0 (the session layer
//! already sealed the payload), a strictly increasing non-zero nanosecond
//! `timestamp` (so equal payloads get distinct gossip ids), `meta` carrying
//! the link header on link frames, and `ephemeral` set on control traffic
//! (acks, opens, store queries and replays).
//!
//! # What `Transport` means here
//!
//! | capability | value | because |
//! |---|---|---|
//! | `broadcast` | yes | `subscribe`/`publish` map a [`Topic`](strata_transport::Topic) to a content topic ([`topic::content_topic`]); publications carry no sender (`from: None`) |
//! | `point_to_point` | yes | over *links*, see below |
//! | `reliable`, `ordered` | yes, per link | sequence numbers, cumulative acks, retransmission and a reorder window |
//! | `store_and_forward` | no | only relays configured with [`StoreConfig::serving`] hold messages for nodes that come back, and only publications and same-incarnation link frames benefit ([`store`]); a node cannot promise that such a relay exists |
//! | `max_frame_len` | [`MAX_FRAME_LEN`] (148 KiB) | Waku's 150 KiB message cap less the envelope; the session layer chunks larger PDUs |
//!
//! A **link** is a conversation between two installation addresses over the
//! relay network, not a libp2p connection: the two may sit behind any
//! number of relays, and a libp2p connection can come and go under a link.
//! `connect(peer)` publishes `OPEN` on the peer's installation topic (held
//! by the publish queue until the mesh has a peer, then repeated with
//! backoff); both sides report `Connected` once the handshake completes, so
//! the session layer runs the same handshake as over PeerJS. Frames on a
//! link arrive exactly once and in order. An open link sends a presence
//! beacon (an `ACK`) after 5 s of silence and is reported
//! `Disconnected { ConnectionLost }` after 30 s without hearing anything
//! (both [`LinkConfig`]); `disconnect` sends `CLOSE`, seen as
//! `Disconnected { Remote }`. A peer that restarts opens a new link, which
//! replaces the old one (reported lost first). `send` to a peer without an
//! open link is `NotConnected`. The frame format is frozen in the `frame`
//! module's docs and tests.
//!
//! # Delivery
//!
//! - **Publish queue** (bounded, [`QueueConfig`]): everything leaving the
//!   node waits there until gossipsub has a subscribed peer — for 20–70 ms
//!   after a dial gossipsub refuses to publish — and is retried when a peer
//!   subscribes; a link frame still waiting is not queued twice.
//! - **Catch-up** ([`store`]): gossipsub forwards a message only to the
//!   mesh of the moment, so a neighbour that subscribes a few milliseconds
//!   later misses it for good — the other half of cold-start loss. Every
//!   node keeps its recent messages (bounded by count, bytes and age) and,
//!   when a peer subscribes, asks that peer for what it saw in the last
//!   3 s; what it gets and lacked it handles and re-publishes under the
//!   original gossip id, so its own neighbours catch up too. Measured: no
//!   loss when ten nodes publish while still dialling (see the bench).
//! - **Store-and-forward** ([`store`]): relays with
//!   [`StoreConfig::serving`] answer a returning node's query for its
//!   topics with everything they hold; replays are deduplicated by gossip
//!   id.
//! - End-to-end acknowledgement of messages is the session layer's job: a
//!   link is lost with its unacknowledged frames when it times out.
//!
//! # Bundles
//!
//! With [`Config::bundles`] set, the node publishes its signed bundle on
//! [`topic::bundle_topic`]`(identity key)` at start, periodically with a
//! fresh timestamp and on [`Libp2pTransport::refresh_bundle`]; bundles
//! received on followed bundle topics are checked through a verifier hook
//! (signature and keys: the cascade, called by the app, never by this
//! crate), then for size, topic and freshness; the newest per installation
//! is held ([`Libp2pTransport::bundles`]) and delivered as a publication.
//! The format is [`strata_proto::bundle`]; the rules, and which handshake
//! steps a held bundle saves, are in [`bundle`].
//!
//! # Measured
//!
//! `cargo bench -p strata-transport-libp2p --bench gossip_mesh -j 2` runs
//! `shared/tools/gossip-baseline.mjs` (js-libp2p 2.8 + gossipsub 14, Waku
//! settings) and the same seeded 10-node loopback topology, payload (256 B)
//! and schedule (200 messages, 20 ms apart) over this crate, in one run.
//! Seven runs on the shared 2-core development machine (load average
//! about 2.5), each comparing both in the same invocation:
//!
//! | | JS baseline | Strata |
//! |---|---|---|
//! | warm delivery p50 | 2.2–3.5 ms | 0.6–1.1 ms |
//! | warm delivery p99 | 7.8–16.1 ms | 1.6–10.3 ms (≤ the JS p99 of the same run in 6 of 7) |
//! | publishing while still dialling | 1654–1740 of 1800 delivered | 1800 of 1800, every run |
//! | through one relay, 256 B, one sender | | 23 000–47 000 publications/s, 15 000–38 000 link frames/s |
//!
//! # Bounds on what peers can make us hold
//!
//! Every received message is size-checked before it is parsed (150 KiB) and
//! validated; a malformed one is a typed error ([`InboundError`]), logged
//! and counted, never a panic. Links are capped ([`LinkConfig::max_links`]),
//! each link's out-of-order buffer by frames and bytes (`window`,
//! `window_bytes`), the event backlog, the publish queue ([`QueueConfig`]),
//! the message store ([`StoreConfig`]), the bundles held
//! ([`BundleConfig::max_held`], each at most
//! [`MAX_BUNDLE_BYTES`](strata_proto::bundle::MAX_BUNDLE_BYTES), checked
//! before the verifier runs), the set of seen message ids, the
//! topics of a store query (64) and the messages one query replays
//! ([`store::MAX_REPLAY`]). Gossip is anonymous, so there is no per-sender
//! rate limit here; the session layer limits per peer.
//!
//! # Tasks and queues
//!
//! The swarm runs in its own Tokio task (`node` module); handles send it
//! commands over a bounded channel and get oneshot replies; events come back
//! on the bounded [`EventStream`](strata_transport::EventStream). The task
//! never blocks on a slow consumer: events wait in a bounded backlog, past
//! which incoming data is shed unacknowledged (its sender retransmits).
#![forbid(unsafe_code)]

pub mod bundle;
mod config;
pub mod error;
mod frame;
mod link;
mod node;
mod queue;
pub mod store;
pub mod topic;
mod transport;

pub use bundle::{BundleBook, BundleConfig, BundleSource, BundleVerifier, HeldBundle};
pub use config::{Config, QueueConfig};
pub use error::{Error, FrameError, InboundError};
pub use frame::MAX_ADDR_LEN;
pub use link::LinkConfig;
pub use node::{RELAY_PROTOCOL, Status};
pub use store::StoreConfig;
pub use transport::{Libp2pTransport, MAX_FRAME_LEN};
