//! The swarm task: owns the libp2p `Swarm`, the link machine and the publish
//! queue, and talks to handles through bounded channels only.
//!
//! One `select!` loop, in the style of rust-libp2p's file-sharing example:
//! commands from handles (each with a oneshot reply), swarm events, the next
//! timer of the link machine or the queue, and room in the event channel.
//! The swarm must be polled continuously, so the loop never waits on the
//! user: events wait in a bounded backlog while the event channel is full,
//! and past the backlog's bound incoming `DATA` frames are dropped
//! unacknowledged (their sender retransmits) and publications are dropped
//! (gossip promises nothing for them).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, PublishError, TopicHash};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, multiaddr::Protocol, noise, ping, tcp, yamux};
use sha2::{Digest, Sha256};
use strata_proto::bundle::MAX_BUNDLE_BYTES;
use strata_proto::waku::{MAX_WAKU_MESSAGE_BYTES, VERSION_APP_ENCRYPTED, WakuMessage};
use strata_transport::{PeerAddr, Topic, TransportError, TransportEvent};
use tokio::sync::{mpsc, oneshot};

use crate::bundle::{BundleBook, BundleSource, HeldBundle, is_bundle_topic};
use crate::config::Config;
use crate::error::{Error, InboundError};
use crate::frame::{Kind, LinkFrame};
use crate::link::{Links, Output};
use crate::queue::{Attempt, Outgoing, PublishQueue, QueueStats};
use crate::store::{CATCH_UP, MessageStore, QUERY_TOPIC, REPLAY_TOPIC, StoreQuery};
use crate::topic::{bundle_topic, content_topic, installation_topic};

/// gossipsub's `max_transmit_size`: a whole RPC frame. Above Waku's 150 KiB
/// message cap with room for the RPC envelope; the spike found that one
/// frame over the limit silently kills a connection's later deliveries.
pub(crate) const MAX_TRANSMIT_SIZE: usize = 256 * 1024;

/// The Waku relay protocol id (11/WAKU2-RELAY): gossipsub v1.1 under it.
pub const RELAY_PROTOCOL: &str = "/vac/waku/relay/2.0.0";

/// Retry a non-empty publish queue at least this often (covers
/// `AllQueuesFull` and expiry; new subscribers trigger a flush at once).
const QUEUE_RETRY: Duration = Duration::from_millis(200);

/// Events held while the user's channel is full, beyond which inbound data
/// is shed. Above one link window, so one in-order burst always fits.
const BACKLOG: usize = 4096;

/// Message ids remembered as handled, so a replay of one is not handled
/// twice.
const SEEN: usize = 16 * 1024;

/// A stored message must fit, with the replay envelope, under Waku's cap.
const MAX_STORED: usize = MAX_WAKU_MESSAGE_BYTES - 512;

/// A replayed message is re-published under its own gossip id only while
/// relays still remember that id (their duplicate cache keeps it 2 min), so
/// that nodes that already have it drop it.
const REINJECT_WINDOW: Duration = Duration::from_secs(60);

type Reply<T> = oneshot::Sender<Result<T, TransportError>>;

/// A request from a handle.
pub(crate) enum Command {
    Connect(PeerAddr, Reply<()>),
    Disconnect(PeerAddr, Reply<()>),
    Send(PeerAddr, Bytes, Reply<()>),
    Subscribe(Topic, Reply<()>),
    Unsubscribe(Topic, Reply<()>),
    Publish(Topic, Bytes, Reply<()>),
    Dial(Multiaddr, Reply<()>),
    Status(Reply<Status>),
    /// The held bundles of one identity key, or all of them.
    Bundles(Option<Vec<u8>>, Reply<Vec<HeldBundle>>),
    /// Sign and publish this node's bundle now.
    RefreshBundle(Reply<()>),
    Shutdown(Reply<()>),
}

/// A snapshot of a node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The libp2p peer id.
    pub peer_id: PeerId,
    /// Where it listens, each ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers subscribed to our pubsub topic (those a publish reaches).
    pub relay_peers: usize,
    /// Our gossipsub mesh size on the pubsub topic.
    pub mesh_peers: usize,
    /// Messages waiting in the publish queue.
    pub queued: usize,
    /// Messages the queue handed to gossipsub.
    pub published: u64,
    /// Messages dropped unsent after the queue's TTL.
    pub expired: u64,
    /// Received messages refused as invalid Waku messages.
    pub rejected: u64,
    /// Events shed because the user did not drain the event stream.
    pub shed: u64,
    /// Messages held in this node's store.
    pub stored: usize,
    /// Replayed messages handled (they had not arrived by gossip).
    pub replayed: u64,
    /// Bundles held (see [`crate::bundle`]).
    pub bundles_held: usize,
    /// Received bundles refused (bad signature or keys, stale, oversized,
    /// wrong topic).
    pub bundles_rejected: u64,
    /// Times this node's bundle was queued for publication.
    pub bundles_published: u64,
}

/// The bundle side of a node (see [`crate::bundle`]).
struct Bundles {
    book: BundleBook,
    source: Option<Arc<dyn BundleSource>>,
    /// The content topic of our own bundle, if we publish one.
    own_topic: String,
    rebroadcast: Duration,
    next_rebroadcast: Instant,
    /// When a query for our bundle topic last had it published again.
    last_answer: Option<Instant>,
    rejected: u64,
    published: u64,
}

/// A node that follows a bundle topic late asks for what was published
/// there (a store query); the bundle's owner answers by publishing it
/// again, at most this often.
pub(crate) const BUNDLE_ANSWER_INTERVAL: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay: gossipsub::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// The gossipsub configuration of a Waku relay (see the crate docs).
pub(crate) fn relay_config() -> Result<gossipsub::Config, Error> {
    gossipsub::ConfigBuilder::default()
        .protocol_id(RELAY_PROTOCOL, gossipsub::Version::V1_1)
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|m| gossipsub::MessageId::from(Sha256::digest(&m.data).to_vec()))
        .validate_messages()
        .max_transmit_size(MAX_TRANSMIT_SIZE)
        .mesh_n(6)
        .mesh_n_low(4)
        .mesh_n_high(8)
        .mesh_outbound_min(3)
        .gossip_lazy(6)
        .heartbeat_interval(Duration::from_secs(1))
        .history_length(6)
        .history_gossip(3)
        .fanout_ttl(Duration::from_secs(60))
        .duplicate_cache_time(Duration::from_secs(120))
        .prune_backoff(Duration::from_secs(60))
        .unsubscribe_backoff(Duration::from_secs(5))
        .flood_publish(true)
        // A relay with more subscribers than D_high gossips IHAVEs to the
        // rest, listing every id of the last 3 heartbeats: up to 5,000 ids
        // (≈170 KB), over the 16 KiB that 0.50 accepts in an RPC's control
        // part by default. The receiver then drops the stream, and after 5
        // attempts the relay's handler for it is disabled: that peer hears
        // nothing for minutes. So send at most 400 ids (≈14 KB) a time, and
        // accept control parts up to a whole transmission from peers that
        // send more (nwaku, go-waku).
        .max_control_messages_sent(400)
        .max_control_message_size(MAX_TRANSMIT_SIZE)
        .build()
        .map_err(|e| Error::Config(format!("gossipsub: {e}")))
}

fn build_swarm(config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let startup = |e: &dyn std::fmt::Display| Error::Startup(e.to_string());
    let keypair = config
        .keypair
        .clone()
        .unwrap_or_else(libp2p::identity::Keypair::generate_ed25519);
    let peer_id = keypair.public().to_peer_id();
    let relay = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, relay_config()?)
        .map_err(|e| Error::Config(format!("gossipsub: {e}")))?;
    let identify = identify::Behaviour::new(
        identify::Config::new("/ipfs/id/1.0.0".into(), keypair.public())
            .with_agent_version(format!("strata/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id).map_err(|e| startup(&e))?)
    } else {
        None
    };
    let behaviour = Behaviour {
        relay,
        identify,
        ping: ping::Behaviour::default(),
        mdns: Toggle::from(mdns),
    };
    let idle = config.idle_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| startup(&e))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| startup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}

/// The swarm task's state.
pub(crate) struct Node {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<TransportEvent>,
    backlog: VecDeque<TransportEvent>,
    links: Links,
    queue: PublishQueue,
    pubsub: TopicHash,
    my_topic: String,
    /// Content topic → the user's topic name.
    subscriptions: BTreeMap<String, Topic>,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    redial_interval: Duration,
    next_redial: Instant,
    last_timestamp: i64,
    rejected: u64,
    shed: u64,
    store: MessageStore,
    seen: Seen,
    replayed: u64,
    bundles: Option<Bundles>,
}

/// A bounded set of recently handled message ids.
struct Seen {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
}

impl Seen {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: [u8; 32]) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

fn message_id(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

impl Node {
    /// Builds the swarm, starts listening and waits until every listener
    /// has an address. Returns the node, ready to [`run`](Self::run).
    pub(crate) async fn start(
        config: &Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<TransportEvent>,
    ) -> Result<(Self, PeerId), Error> {
        config.validate()?;
        let mut swarm = build_swarm(config)?;
        let pubsub = IdentTopic::new(config.pubsub_topic.clone());
        swarm
            .behaviour_mut()
            .relay
            .subscribe(&pubsub)
            .map_err(|e| Error::Startup(format!("subscribe: {e}")))?;
        let mut pending = HashSet::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::Startup(format!("listen on {addr}: {e}")))?;
            pending.insert(id);
        }
        let peer_id = *swarm.local_peer_id();
        let mut listen_addrs = Vec::new();
        let wait = async {
            while !pending.is_empty() {
                match swarm.select_next_some().await {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        pending.remove(&listener_id);
                        listen_addrs.push(address.with_p2p(peer_id).unwrap_or_else(|a| a));
                    }
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        return Err(Error::Startup(format!("listener closed: {reason:?}")));
                    }
                    SwarmEvent::ListenerError { error, .. } => return Err(Error::Startup(error.to_string())),
                    other => tracing::debug!(?other, "swarm event during start-up"),
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| Error::Startup("no listen address within 10 s".into()))??;
        let now = Instant::now();
        let mut node = Self {
            swarm,
            commands,
            events,
            backlog: VecDeque::new(),
            links: Links::new(config.addr.clone(), config.link, rand::random()),
            queue: PublishQueue::new(config.queue),
            pubsub: pubsub.hash(),
            my_topic: installation_topic(&config.addr),
            subscriptions: config.topics.iter().map(|t| (content_topic(t), t.clone())).collect(),
            listen_addrs,
            bootstrap: config.bootstrap.clone(),
            redial_interval: config.redial_interval,
            next_redial: now,
            last_timestamp: 0,
            rejected: 0,
            shed: 0,
            store: MessageStore::new(config.store),
            seen: Seen {
                order: VecDeque::new(),
                set: HashSet::new(),
            },
            replayed: 0,
            bundles: config.bundles.as_ref().map(|b| Bundles {
                book: BundleBook::new(Arc::clone(&b.verifier), b.max_held),
                own_topic: b
                    .source
                    .as_ref()
                    .map(|s| bundle_topic(&s.identity_key()).as_str().to_owned())
                    .unwrap_or_default(),
                source: b.source.clone(),
                rebroadcast: b.rebroadcast,
                next_rebroadcast: now,
                last_answer: None,
                rejected: 0,
                published: 0,
            }),
        };
        // Ask the stores for what was sent to us while we were away; the
        // queue holds it until a relay peer is there.
        let mine = std::iter::once(node.my_topic.clone()).chain(node.subscriptions.keys().cloned());
        node.query_store(mine.collect(), 0, Vec::new());
        // Our bundle goes out at once (the queue holds it until a relay
        // peer is there), then every `rebroadcast`.
        node.publish_own_bundle();
        Ok((node, peer_id))
    }

    /// Runs until every handle is dropped or `shutdown` is called.
    pub(crate) async fn run(mut self) {
        loop {
            self.drain_links();
            let deadline = self.next_deadline();
            // A clone, so the reservation does not borrow `self`.
            let events = self.events.clone();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(Ok(()));
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                permit = events.reserve(), if !self.backlog.is_empty() => match permit {
                    Ok(permit) => {
                        if let Some(event) = self.backlog.pop_front() {
                            permit.send(event);
                        }
                    }
                    // Nobody listens any more: keep relaying, stop reporting.
                    Err(_) => self.backlog.clear(),
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => self.on_timer(),
            }
        }
        tracing::debug!("swarm task stopped");
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut at = self.next_redial.max(now);
        if let Some(link) = self.links.next_deadline() {
            at = at.min(link);
        }
        if !self.queue.is_empty() {
            at = at.min(now + QUEUE_RETRY);
        }
        if let Some(bundles) = self.bundles.as_ref().filter(|b| b.source.is_some()) {
            at = at.min(bundles.next_rebroadcast.max(now));
        }
        at
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        self.links.tick(now);
        self.flush();
        if now >= self.next_redial {
            self.next_redial = now + self.redial_interval;
            self.redial();
        }
        if self.bundles.as_ref().is_some_and(|b| now >= b.next_rebroadcast) {
            self.publish_own_bundle();
        }
    }

    /// Signs and queues this node's bundle, if it has a source; the next
    /// re-broadcast is one period from now.
    fn publish_own_bundle(&mut self) {
        let Some(bundles) = self.bundles.as_mut() else { return };
        let Some(source) = &bundles.source else { return };
        bundles.next_rebroadcast = Instant::now() + bundles.rebroadcast;
        let now_ms = u64::try_from(wall_clock_ns() / 1_000_000).unwrap_or(0);
        let bytes = match source.signed_bundle(now_ms) {
            Ok(bytes) if !bytes.is_empty() && bytes.len() <= MAX_BUNDLE_BYTES => bytes,
            Ok(bytes) => {
                tracing::warn!(
                    len = bytes.len(),
                    "own bundle empty or over the size cap: not published"
                );
                return;
            }
            Err(e) => {
                tracing::warn!("own bundle not signed: {e}");
                return;
            }
        };
        let message = Outgoing {
            content_topic: bundles.own_topic.clone(),
            payload: Bytes::from(bytes),
            meta: None,
            // Kept by serving relays, so nodes that come back get it.
            ephemeral: false,
            dedupe: None,
            raw: false,
        };
        match self.queue.push(message, Instant::now()) {
            Ok(()) => bundles.published += 1,
            Err(e) => tracing::warn!("own bundle not queued: {e}"),
        }
        self.flush();
    }

    /// Dials bootstrap peers we are not connected to.
    fn redial(&mut self) {
        let connected = self.swarm.connected_peers().count();
        for addr in &self.bootstrap {
            let peer = addr.iter().find_map(|p| match p {
                Protocol::P2p(id) => Some(id),
                _ => None,
            });
            let wanted = match peer {
                Some(id) => !self.swarm.is_connected(&id),
                None => connected == 0,
            };
            if wanted && let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, "bootstrap dial failed: {e}");
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Connect(peer, reply) => {
                let _ = reply.send(self.links.connect(&peer, now));
            }
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(self.links.disconnect(&peer));
            }
            Command::Send(peer, frame, reply) => {
                let _ = reply.send(self.links.send(&peer, frame, now));
            }
            Command::Subscribe(topic, reply) => {
                let content = content_topic(&topic);
                if self.subscriptions.insert(content.clone(), topic).is_none() {
                    self.query_store(vec![content], 0, Vec::new());
                }
                let _ = reply.send(Ok(()));
            }
            Command::Unsubscribe(topic, reply) => {
                self.subscriptions.remove(&content_topic(&topic));
                let _ = reply.send(Ok(()));
            }
            Command::Publish(topic, frame, reply) => {
                let message = Outgoing {
                    content_topic: content_topic(&topic),
                    payload: frame,
                    meta: None,
                    ephemeral: false,
                    dedupe: None,
                    raw: false,
                };
                let result = self.queue.push(message, now);
                if result.is_ok() {
                    self.flush();
                }
                let _ = reply.send(result);
            }
            Command::Dial(addr, reply) => {
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| TransportError::Io(format!("dial {addr}: {e}")));
                let _ = reply.send(result);
            }
            Command::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Command::Bundles(identity_key, reply) => {
                let held = match &self.bundles {
                    Some(b) => Ok(b.book.held(identity_key.as_deref())),
                    None => Err(TransportError::Unsupported("bundles are not configured")),
                };
                let _ = reply.send(held);
            }
            Command::RefreshBundle(reply) => {
                if self.bundles.as_ref().is_some_and(|b| b.source.is_some()) {
                    self.publish_own_bundle();
                    let _ = reply.send(Ok(()));
                } else {
                    let _ = reply.send(Err(TransportError::Unsupported("no bundle source configured")));
                }
            }
            // Handled by `run`.
            Command::Shutdown(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    fn status(&self) -> Status {
        let relay = &self.swarm.behaviour().relay;
        let QueueStats { sent, expired, .. } = self.queue.stats();
        Status {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.listen_addrs.clone(),
            connected_peers: self.swarm.connected_peers().count(),
            relay_peers: relay
                .all_peers()
                .filter(|(_, topics)| topics.contains(&&self.pubsub))
                .count(),
            mesh_peers: relay.mesh_peers(&self.pubsub).count(),
            queued: self.queue.len(),
            published: sent,
            expired,
            rejected: self.rejected,
            shed: self.shed,
            stored: self.store.len(),
            replayed: self.replayed,
            bundles_held: self.bundles.as_ref().map_or(0, |b| b.book.len()),
            bundles_rejected: self.bundles.as_ref().map_or(0, |b| b.rejected),
            bundles_published: self.bundles.as_ref().map_or(0, |b| b.published),
        }
    }

    /// Publishes a store query (see [`crate::store`]).
    fn query_store(&mut self, content_topics: Vec<String>, since_ns: i64, responder: Vec<u8>) {
        let query = StoreQuery {
            content_topics,
            since_ns,
            responder,
        };
        let message = Outgoing {
            content_topic: QUERY_TOPIC.to_owned(),
            payload: Bytes::from(prost::Message::encode_to_vec(&query)),
            meta: None,
            ephemeral: true,
            dedupe: None,
            raw: false,
        };
        if let Err(e) = self.queue.push(message, Instant::now()) {
            tracing::warn!("store query not queued: {e}");
        }
        self.flush();
    }

    /// Answers a store query addressed to us (or to every serving store,
    /// if we serve) with every matching message we hold.
    fn answer_query(&mut self, payload: &[u8]) {
        let Some(query) = StoreQuery::decode_bounded(payload) else {
            tracing::debug!("malformed store query ignored");
            return;
        };
        self.answer_bundle_query(&query.content_topics);
        let for_us = if query.responder.is_empty() {
            self.store.serves()
        } else {
            query.responder == self.swarm.local_peer_id().to_bytes()
        };
        if !for_us {
            return;
        }
        let now = Instant::now();
        let topics = query.content_topics.into_iter().collect();
        for data in self.store.matching(&topics, query.since_ns, now) {
            let message = Outgoing {
                content_topic: REPLAY_TOPIC.to_owned(),
                payload: data,
                meta: None,
                ephemeral: true,
                dedupe: None,
                raw: false,
            };
            if let Err(e) = self.queue.push(message, now) {
                tracing::debug!("replay not queued: {e}");
                break;
            }
        }
        self.flush();
    }

    /// A late follower of our bundle topic asked for it: publish the
    /// bundle again, unless that was done in the last
    /// [`BUNDLE_ANSWER_INTERVAL`] (so queries cannot make us flood).
    fn answer_bundle_query(&mut self, topics: &[String]) {
        let now = Instant::now();
        let due = self.bundles.as_ref().is_some_and(|b| {
            b.source.is_some()
                && topics.contains(&b.own_topic)
                && b.last_answer
                    .is_none_or(|at| now.saturating_duration_since(at) >= BUNDLE_ANSWER_INTERVAL)
        });
        if due {
            if let Some(b) = self.bundles.as_mut() {
                b.last_answer = Some(now);
            }
            tracing::debug!("a late follower asked for our bundle: published again");
            self.publish_own_bundle();
        }
    }

    /// Moves the link machine's outputs to the queue and the backlog.
    fn drain_links(&mut self) {
        let now = Instant::now();
        let mut queued = false;
        while let Some(output) = self.links.poll_output() {
            match output {
                Output::Event(event) => self.backlog.push_back(event),
                Output::Transmit { to, frame } => {
                    let content_topic = installation_topic(&to);
                    let dedupe = (frame.header.kind == Kind::Data).then(|| {
                        let mut key = Sha256::new();
                        key.update(content_topic.as_bytes());
                        key.update(frame.header.link.to_be_bytes());
                        key.update(frame.header.seq.to_be_bytes());
                        key.finalize().into()
                    });
                    let (meta, payload) = frame.encode();
                    let message = Outgoing {
                        content_topic,
                        payload,
                        meta: Some(meta.to_vec()),
                        // Only data is worth replaying to a returning peer; a
                        // replayed OPEN could only confuse a restarted one.
                        ephemeral: frame.header.kind != Kind::Data,
                        dedupe,
                        raw: false,
                    };
                    if let Err(e) = self.queue.push(message, now) {
                        // The link retransmits unacknowledged data.
                        tracing::warn!(%to, "link frame not queued: {e}");
                    }
                    queued = true;
                }
            }
        }
        if queued {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let now = Instant::now();
        let relay = &mut self.swarm.behaviour_mut().relay;
        let pubsub = &self.pubsub;
        let last = &mut self.last_timestamp;
        let seen = &mut self.seen;
        let store = &mut self.store;
        self.queue.flush(now, |message| {
            let data = if message.raw {
                message.payload.to_vec()
            } else {
                WakuMessage {
                    payload: message.payload.to_vec(),
                    content_topic: message.content_topic.clone(),
                    version: Some(VERSION_APP_ENCRYPTED),
                    timestamp: Some(next_timestamp(last)),
                    meta: message.meta.clone(),
                    rate_limit_proof: None,
                    ephemeral: Some(message.ephemeral),
                }
                .to_bytes()
            };
            let id = message_id(&data);
            let keep = !message.raw && !message.ephemeral && data.len() <= MAX_STORED;
            let kept = keep.then(|| Bytes::copy_from_slice(&data));
            match relay.publish(pubsub.clone(), data) {
                Ok(_) => {
                    // A replay of our own message must not come back to us,
                    // and neighbours that join late may ask us for it.
                    seen.insert(id);
                    if let Some(data) = kept {
                        store.insert(&message.content_topic, data, now, wall_clock_ns());
                    }
                    Attempt::Sent
                }
                Err(PublishError::NoPeersSubscribedToTopic | PublishError::AllQueuesFull(_)) => Attempt::Later,
                Err(e) => {
                    tracing::warn!(topic = %message.content_topic, "publish failed: {e}");
                    Attempt::Drop
                }
            }
        });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Relay(event)) => self.on_relay_event(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer)
                        && let Err(e) = self.swarm.dial(addr.clone())
                    {
                        tracing::debug!(%peer, %addr, "mDNS dial failed: {e}");
                    }
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                let peer_id = *self.swarm.local_peer_id();
                self.listen_addrs.push(address.with_p2p(peer_id).unwrap_or_else(|a| a));
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                tracing::debug!(%peer_id, addr = %endpoint.get_remote_address(), "connected");
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, .. } => {
                tracing::debug!(%peer_id, ?cause, "connection closed");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, "dial failed: {error}");
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_relay_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let acceptance = if message.topic == self.pubsub {
                    match self.on_message(&message.data) {
                        Ok(()) => MessageAcceptance::Accept,
                        // A valid Waku message with a bad link frame is
                        // still relayed: other nodes see a valid message.
                        Err(InboundError::Frame(e)) => {
                            tracing::debug!(%propagation_source, "bad link frame: {e}");
                            MessageAcceptance::Accept
                        }
                        Err(e) => {
                            tracing::debug!(%propagation_source, "invalid Waku message rejected: {e}");
                            self.rejected += 1;
                            MessageAcceptance::Reject
                        }
                    }
                } else {
                    MessageAcceptance::Ignore
                };
                self.swarm.behaviour_mut().relay.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    acceptance,
                );
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                tracing::debug!(%peer_id, %topic, "peer subscribed");
                if topic == self.pubsub {
                    // Catch up on what it relayed before we were in its
                    // mesh (the cold-start race, see `store`); this also
                    // flushes the queue.
                    let since = wall_clock_ns().saturating_sub(duration_ns(CATCH_UP));
                    self.query_store(Vec::new(), since, peer_id.to_bytes());
                }
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::debug!(%peer_id, "peer does not speak Waku relay");
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                tracing::debug!(%peer_id, ?failed_messages, "slow relay peer");
            }
            other => tracing::trace!(?other, "gossipsub event"),
        }
    }

    /// Validates a received relay message and acts on it locally.
    fn on_message(&mut self, data: &[u8]) -> Result<(), InboundError> {
        let message = WakuMessage::decode_bounded(data)?;
        match message.content_topic.as_str() {
            QUERY_TOPIC => {
                self.answer_query(&message.payload);
                return Ok(());
            }
            REPLAY_TOPIC => {
                self.on_replay(&message.payload);
                return Ok(());
            }
            _ => {}
        }
        self.seen.insert(message_id(data));
        if message.ephemeral != Some(true) && data.len() <= MAX_STORED {
            let now = Instant::now();
            self.store.insert(
                &message.content_topic,
                Bytes::copy_from_slice(data),
                now,
                wall_clock_ns(),
            );
        }
        self.deliver(message)
    }

    /// Handles a replayed message we have not seen: keep it, re-publish it
    /// under its own gossip id while relays still remember that id (so our
    /// neighbours that missed it get it too), and act on it if we want it.
    fn on_replay(&mut self, inner: &[u8]) {
        let Ok(message) = WakuMessage::decode_bounded(inner) else {
            tracing::debug!("invalid replayed message ignored");
            return;
        };
        if !self.seen.insert(message_id(inner)) {
            return;
        }
        let now = Instant::now();
        let data = Bytes::copy_from_slice(inner);
        if message.ephemeral != Some(true) && data.len() <= MAX_STORED {
            self.store
                .insert(&message.content_topic, data.clone(), now, wall_clock_ns());
        }
        let age = wall_clock_ns().saturating_sub(message.timestamp.unwrap_or(0));
        if age.unsigned_abs() < duration_ns(REINJECT_WINDOW).unsigned_abs() {
            let republish = Outgoing {
                content_topic: message.content_topic.clone(),
                payload: data,
                meta: None,
                ephemeral: true,
                dedupe: None,
                raw: true,
            };
            if let Err(e) = self.queue.push(republish, now) {
                tracing::debug!("replayed message not re-published: {e}");
            }
        }
        let wanted = message.content_topic == self.my_topic || self.subscriptions.contains_key(&message.content_topic);
        if wanted {
            self.replayed += 1;
            if let Err(e) = self.deliver(message) {
                tracing::debug!("replayed message ignored: {e}");
            }
        }
    }

    /// Acts on a valid message: a link frame for us, or a publication on a
    /// topic we subscribed to.
    fn deliver(&mut self, message: WakuMessage) -> Result<(), InboundError> {
        if message.content_topic == self.my_topic {
            let meta = message.meta.unwrap_or_default();
            let frame = LinkFrame::decode(&meta, Bytes::from(message.payload))?;
            // Past the backlog's bound, shed data: it is not acknowledged,
            // so its sender retransmits it.
            if frame.header.kind == Kind::Data && self.backlog.len() >= BACKLOG {
                self.shed += 1;
                return Ok(());
            }
            self.links.handle(frame, Instant::now());
        } else if let Some(topic) = self.subscriptions.get(&message.content_topic) {
            if let Some(bundles) = self.bundles.as_mut()
                && is_bundle_topic(&message.content_topic)
            {
                let now_ms = u64::try_from(wall_clock_ns() / 1_000_000).unwrap_or(0);
                match bundles.book.admit(&message.content_topic, &message.payload, now_ms) {
                    Ok(held) => tracing::debug!(
                        version = held.header.version,
                        admission = ?held.admission,
                        "bundle accepted"
                    ),
                    Err(e) => {
                        bundles.rejected += 1;
                        tracing::debug!(%topic, "bundle refused: {e}");
                        return Ok(());
                    }
                }
            }
            if self.backlog.len() >= BACKLOG {
                self.shed += 1;
                tracing::warn!(%topic, "event stream full: publication dropped");
                return Ok(());
            }
            self.backlog.push_back(TransportEvent::Published {
                topic: topic.clone(),
                from: None,
                bytes: Bytes::from(message.payload),
            });
        }
        Ok(())
    }
}

fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A fresh, strictly increasing, non-zero timestamp in nanoseconds: the
/// message id is the SHA-256 of the message, so two equal payloads must
/// differ here.
fn next_timestamp(last: &mut i64) -> i64 {
    *last = wall_clock_ns().max(last.saturating_add(1)).max(1);
    *last
}
