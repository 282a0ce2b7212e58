//! Configuration of a [`Libp2pTransport`](crate::Libp2pTransport).

use std::time::Duration;

use libp2p::{Multiaddr, identity::Keypair};
use strata_transport::{PeerAddr, Topic};

use crate::bundle::BundleConfig;
use crate::error::Error;
use crate::frame::MAX_ADDR_LEN;
use crate::link::LinkConfig;
use crate::store::StoreConfig;
use crate::topic::DEFAULT_PUBSUB_TOPIC;

/// How a node joins the relay network and how its queues are bounded.
///
/// Start from [`Config::new`] (all interfaces) or [`Config::loopback`]
/// (tests) and change the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// This installation's address: what peers pass to `connect` and what
    /// names its installation topic. Non-empty, at most
    /// [`MAX_ADDR_LEN`] bytes.
    pub addr: PeerAddr,
    /// The libp2p identity (noise static key, peer id); a fresh Ed25519 key
    /// when `None`. Not Strata's identity key: the libp2p key only secures
    /// hops between relays.
    pub keypair: Option<Keypair>,
    /// Listen addresses (TCP and/or `/udp/…/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start, and again (every `redial_interval`) while
    /// not connected to them.
    pub bootstrap: Vec<Multiaddr>,
    /// How often unreachable bootstrap peers are redialled. Default 5 s.
    pub redial_interval: Duration,
    /// The one gossipsub topic relayed. Default [`DEFAULT_PUBSUB_TOPIC`].
    pub pubsub_topic: String,
    /// Discover peers on the LAN with mDNS (it skips loopback interfaces,
    /// so tests dial explicitly). Default off.
    pub mdns: bool,
    /// Idle connections are closed after this long. Default 5 min (the
    /// swarm's 10 s default drops relays that are not in the mesh).
    pub idle_timeout: Duration,
    /// Topics subscribed from the start, before any peer is dialled (so
    /// nothing published on them can arrive before the subscription).
    pub topics: Vec<Topic>,
    /// Link protocol timers and windows.
    pub link: LinkConfig,
    /// Bounds of the outgoing publish queue.
    pub queue: QueueConfig,
    /// The message store behind catch-up and store-and-forward (see
    /// [`store`](crate::store)). Default: a small, non-serving store.
    pub store: StoreConfig,
    /// Bundle publishing and checking (see [`bundle`](crate::bundle)).
    /// Default `None`: bundle topics are plain topics.
    pub bundles: Option<BundleConfig>,
    /// Capacity of the event channel handed to the user. Default 1024.
    pub event_capacity: usize,
    /// Capacity of the command channel from handles to the swarm task.
    /// Default 256.
    pub command_capacity: usize,
}

/// Bounds of the publish queue: messages wait there until the relay mesh
/// has a peer for them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Most messages waiting. Default 4096.
    pub max_messages: usize,
    /// Most bytes waiting. Default 32 MiB.
    pub max_bytes: usize,
    /// A message not published within this long is dropped. Default 60 s.
    pub ttl: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_messages: 4096,
            max_bytes: 32 << 20,
            ttl: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// Listens on every interface (TCP and QUIC, ports chosen by the OS).
    pub fn new(addr: impl Into<PeerAddr>) -> Self {
        Self::listening(addr, "0.0.0.0")
    }

    /// Listens on 127.0.0.1 only (TCP and QUIC): for tests and local nodes.
    pub fn loopback(addr: impl Into<PeerAddr>) -> Self {
        Self::listening(addr, "127.0.0.1")
    }

    fn listening(addr: impl Into<PeerAddr>, ip: &str) -> Self {
        let listen = [format!("/ip4/{ip}/tcp/0"), format!("/ip4/{ip}/udp/0/quic-v1")]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Self {
            addr: addr.into(),
            keypair: None,
            listen,
            bootstrap: Vec::new(),
            redial_interval: Duration::from_secs(5),
            pubsub_topic: DEFAULT_PUBSUB_TOPIC.to_owned(),
            mdns: false,
            idle_timeout: Duration::from_secs(300),
            topics: Vec::new(),
            link: LinkConfig::default(),
            queue: QueueConfig::default(),
            store: StoreConfig::default(),
            bundles: None,
            event_capacity: 1024,
            command_capacity: 256,
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        let addr_len = self.addr.as_str().len();
        if addr_len == 0 || addr_len > MAX_ADDR_LEN {
            return bad("addr must be 1 to 128 bytes");
        }
        if self.pubsub_topic.is_empty() {
            return bad("pubsub_topic is empty");
        }
        if self.event_capacity == 0 || self.command_capacity == 0 {
            return bad("channel capacities must be positive");
        }
        if self.queue.max_messages == 0 || self.queue.max_bytes == 0 {
            return bad("queue bounds must be positive");
        }
        let store = &self.store;
        if store.max_messages == 0 || store.max_bytes == 0 || store.max_age.is_zero() {
            return bad("store bounds must be positive");
        }
        let link = &self.link;
        if link.window == 0 || link.window_bytes == 0 || link.max_links == 0 {
            return bad("link window and max_links must be positive");
        }
        if link.rto.is_zero() || link.rto > link.rto_max {
            return bad("link rto must be positive and at most rto_max");
        }
        if link.keepalive.is_zero() || link.timeout <= link.keepalive {
            return bad("link timeout must exceed a positive keepalive");
        }
        if self.idle_timeout < Duration::from_secs(1) || self.redial_interval.is_zero() {
            return bad("idle_timeout and redial_interval must be positive");
        }
        if let Some(bundles) = &self.bundles
            && (bundles.max_held == 0 || bundles.rebroadcast < Duration::from_secs(1))
        {
            return bad("bundles: max_held must be positive and rebroadcast at least 1 s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        assert!(Config::new("a").validate().is_ok());
        assert!(Config::loopback("a").validate().is_ok());
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 6] = [
            ("addr", |c| c.addr = PeerAddr::from("")),
            ("addr", |c| c.addr = PeerAddr::new("x".repeat(MAX_ADDR_LEN + 1))),
            ("pubsub_topic", |c| c.pubsub_topic.clear()),
            ("window", |c| c.link.window = 0),
            ("rto", |c| c.link.rto = c.link.rto_max * 2),
            ("timeout", |c| c.link.timeout = c.link.keepalive),
        ];
        for (field, break_it) in cases {
            let mut config = Config::loopback("a");
            break_it(&mut config);
            match config.validate() {
                Err(Error::Config(why)) => assert!(why.contains(field), "{why} should name {field}"),
                other => panic!("{field}: expected a config error, got {other:?}"),
            }
        }
    }
}
