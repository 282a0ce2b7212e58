//! An in-memory [`Transport`] with seeded, deterministic faults.
//!
//! A [`MemoryNetwork`] is a simulated network; each [`MemoryNetwork::join`]
//! adds a node and returns its [`MemoryTransport`] handle and
//! [`EventStream`]. Links can drop, duplicate, reorder and delay frames
//! ([`Faults`]), be partitioned and healed, and nodes can be restarted.
//!
//! # Determinism
//!
//! For a given seed and the same sequence of calls, every node observes the
//! same events at the same virtual times. This holds because:
//! - all randomness comes from one `ChaCha20Rng`, drawn under the network's
//!   lock in call order;
//! - every event (frames and `Connected`/`Disconnected` alike) goes through
//!   one scheduler task, the *wire*, which delivers in `(deliver_at, seq)`
//!   order;
//! - maps are ordered (`BTreeMap`), so iteration never depends on hashing.
//!
//! Run under `#[tokio::test(start_paused = true)]` (current-thread runtime,
//! virtual time): delays then cost no wall time and timestamps replay
//! exactly. With real time the event order per link still holds, but the
//! interleaving with wall-clock time does not replay.
//!
//! # Back-pressure
//!
//! The wire pushes into each node's bounded event channel and waits when it
//! is full, so a node that stops draining its [`EventStream`] stalls the whole
//! network, as a test that forgot to poll would. Frames in flight are capped
//! by [`MemoryConfig::max_in_flight`]; past it, requests fail with
//! [`TransportError::QueueFull`] rather than queue without bound.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::sync::{Notify, mpsc};
use tokio::time::{self, Instant};
use tracing::Instrument;

use crate::{Capabilities, DisconnectReason, EventStream, PeerAddr, Topic, Transport, TransportError, TransportEvent};

/// Longest delay [`Faults`] accepts; keeps instant arithmetic far from
/// overflow.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// A reordered frame is held back by a random extra delay in
/// `[REORDER_HOLD_MIN, REORDER_HOLD + delay.1]`.
const REORDER_HOLD_MIN: Duration = Duration::from_millis(1);
const REORDER_HOLD: Duration = Duration::from_millis(10);

/// Faults applied to frames on a directed link (or published to a receiver).
///
/// `Connected`/`Disconnected` events are never faulted: they model the
/// link's own state, which both ends learn reliably.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Faults {
    /// Probability that a frame is lost.
    pub drop_rate: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate_rate: f64,
    /// Probability that a frame is held back by an extra 1 ms to
    /// `10 ms + delay.1`, letting later frames overtake it.
    pub reorder_rate: f64,
    /// Uniform delivery delay `(min, max)`. Jitter alone never reorders a
    /// link: a frame is never delivered before the link's previous frame.
    pub delay: (Duration, Duration),
}

impl Faults {
    /// A perfect link: no loss, no duplicates, no reordering, no delay.
    pub const fn none() -> Self {
        Self {
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            reorder_rate: 0.0,
            delay: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Checks that rates are in `[0, 1]` and `delay` is an ordered range of
    /// at most an hour.
    pub fn validate(&self) -> Result<(), InvalidFaults> {
        let rate_ok = |rate: f64| (0.0..=1.0).contains(&rate);
        if !rate_ok(self.drop_rate) {
            return Err(InvalidFaults("drop_rate must be in [0, 1]"));
        }
        if !rate_ok(self.duplicate_rate) {
            return Err(InvalidFaults("duplicate_rate must be in [0, 1]"));
        }
        if !rate_ok(self.reorder_rate) {
            return Err(InvalidFaults("reorder_rate must be in [0, 1]"));
        }
        if self.delay.0 > self.delay.1 {
            return Err(InvalidFaults("delay min exceeds max"));
        }
        if self.delay.1 > MAX_DELAY {
            return Err(InvalidFaults("delay max exceeds one hour"));
        }
        Ok(())
    }

    fn sample_delay(&self, rng: &mut ChaCha20Rng) -> Duration {
        let (min, max) = self.delay;
        if min >= max { min } else { rng.random_range(min..=max) }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

/// [`Faults`] that failed [`Faults::validate`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("invalid faults: {0}")]
pub struct InvalidFaults(&'static str);

/// Limits of a [`MemoryNetwork`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemoryConfig {
    /// Largest frame accepted; larger ones fail with
    /// [`TransportError::FrameTooLarge`]. Default: 17 MiB (the 16 MiB PDU
    /// cap plus framing headroom).
    pub max_frame_len: usize,
    /// Capacity of each node's event channel. Default: 1024.
    pub event_capacity: usize,
    /// Most events scheduled but not yet delivered, network-wide; past it
    /// requests fail with [`TransportError::QueueFull`]. Partitions and
    /// restarts may exceed it by the `Disconnected` events they cause.
    /// Default: 65 536.
    pub max_in_flight: usize,
    /// Most recent deliveries kept for [`MemoryNetwork::trace`]; 0 turns
    /// tracing off. Default: 65 536.
    pub trace_capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_frame_len: 17 * 1024 * 1024,
            event_capacity: 1024,
            max_in_flight: 65_536,
            trace_capacity: 65_536,
        }
    }
}

/// One event the wire handed to a node, for comparing runs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TraceEntry {
    /// Virtual time since the network was created.
    pub at: Duration,
    /// The receiving node.
    pub to: PeerAddr,
    /// What it received.
    pub event: TransportEvent,
}

/// A simulated network of [`MemoryTransport`] nodes. Cloning gives another
/// handle to the same network.
#[derive(Clone)]
pub struct MemoryNetwork {
    shared: Arc<Shared>,
}

/// One node's handle on a [`MemoryNetwork`]. After [`MemoryNetwork::restart`]
/// of its node, every request on an old handle fails with
/// [`TransportError::Closed`].
#[derive(Clone)]
pub struct MemoryTransport {
    shared: Arc<Shared>,
    addr: PeerAddr,
    incarnation: u64,
}

struct Shared {
    state: Mutex<State>,
    epoch: Instant,
    /// Capacity 1: a pending wake-up already covers any later ones.
    wake: mpsc::Sender<()>,
    /// Signalled by the wire when nothing is left in flight.
    idle: Notify,
}

struct State {
    config: MemoryConfig,
    rng: ChaCha20Rng,
    next_seq: u64,
    /// Source of node incarnations and link generations: a link or node
    /// that went away never comes back with the same number.
    next_id: u64,
    nodes: BTreeMap<PeerAddr, Node>,
    /// Open point-to-point links and their generation.
    links: BTreeMap<Pair, u64>,
    partitions: BTreeSet<Pair>,
    faults: Faults,
    link_faults: BTreeMap<(PeerAddr, PeerAddr), Faults>,
    /// Per directed link, the latest non-reordered delivery time.
    watermarks: BTreeMap<(PeerAddr, PeerAddr), Instant>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    /// The wire has popped an event and not yet handed it over.
    delivering: bool,
    trace: VecDeque<TraceEntry>,
}

struct Node {
    incarnation: u64,
    events: mpsc::Sender<TransportEvent>,
    topics: BTreeSet<Topic>,
}

/// An unordered pair of nodes, stored sorted.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Pair(PeerAddr, PeerAddr);

impl Pair {
    fn new(a: &PeerAddr, b: &PeerAddr) -> Self {
        if a <= b {
            Self(a.clone(), b.clone())
        } else {
            Self(b.clone(), a.clone())
        }
    }

    fn other(&self, addr: &PeerAddr) -> Option<&PeerAddr> {
        if self.0 == *addr {
            Some(&self.1)
        } else if self.1 == *addr {
            Some(&self.0)
        } else {
            None
        }
    }
}

/// What must still hold at delivery time, beyond the receiver being the
/// same incarnation, for an event to arrive.
#[derive(Clone)]
enum Guard {
    /// `Connected`/`Disconnected`: nothing more.
    Node,
    /// A frame: the link it was sent on is still up.
    Link { pair: Pair, generation: u64 },
    /// A published frame: the pair has not been partitioned since.
    Reachable { pair: Pair },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    to: PeerAddr,
    incarnation: u64,
    guard: Guard,
    event: TransportEvent,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

enum Step {
    Deliver(mpsc::Sender<TransportEvent>, Scheduled),
    SleepUntil(Instant),
    Idle,
}

impl MemoryNetwork {
    /// A network with default limits and no faults, all randomness derived
    /// from `seed`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, since it spawns the network's wire task.
    pub fn new(seed: u64) -> Self {
        Self::with_config(seed, MemoryConfig::default())
    }

    /// A network with the given limits.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, since it spawns the network's wire task.
    pub fn with_config(seed: u64, config: MemoryConfig) -> Self {
        let (wake, wake_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                config,
                rng: ChaCha20Rng::seed_from_u64(seed),
                next_seq: 0,
                next_id: 0,
                nodes: BTreeMap::new(),
                links: BTreeMap::new(),
                partitions: BTreeSet::new(),
                faults: Faults::none(),
                link_faults: BTreeMap::new(),
                watermarks: BTreeMap::new(),
                queue: BinaryHeap::new(),
                delivering: false,
                trace: VecDeque::new(),
            }),
            epoch: Instant::now(),
            wake,
            idle: Notify::new(),
        });
        // The wire holds only a weak reference so that dropping every handle
        // ends it.
        tokio::spawn(run_wire(Arc::downgrade(&shared), wake_rx).instrument(tracing::debug_span!("memory_wire", seed)));
        Self { shared }
    }

    /// Adds a node at `addr`; fails with [`TransportError::AddrInUse`] if the
    /// address is taken.
    pub fn join(&self, addr: impl Into<PeerAddr>) -> Result<(MemoryTransport, EventStream), TransportError> {
        let addr = addr.into();
        let mut state = self.shared.lock();
        if state.nodes.contains_key(&addr) {
            return Err(TransportError::AddrInUse(addr));
        }
        Ok(self.spawn_node(&mut state, addr))
    }

    /// Simulates a crash and restart of the node at `addr`: its links drop
    /// (peers see `Disconnected { ConnectionLost }`), events in flight to it
    /// are lost, its subscriptions are gone, old handles fail with
    /// [`TransportError::Closed`] and its old stream ends once drained. Returns
    /// the new incarnation's handle and stream.
    pub fn restart(&self, addr: &PeerAddr) -> Result<(MemoryTransport, EventStream), TransportError> {
        let fresh = {
            let mut state = self.shared.lock();
            if !state.nodes.contains_key(addr) {
                return Err(TransportError::UnknownPeer(addr.clone()));
            }
            let now = Instant::now();
            let pairs: Vec<Pair> = state
                .links
                .keys()
                .filter(|pair| pair.other(addr).is_some())
                .cloned()
                .collect();
            for pair in pairs {
                state.drop_link(now, &pair, addr, None, DisconnectReason::ConnectionLost);
            }
            // Replacing the node drops the old event sender, which ends the
            // old stream, and bumps the incarnation, which voids old handles
            // and everything still in flight to it.
            self.spawn_node(&mut state, addr.clone())
        };
        self.shared.wake();
        Ok(fresh)
    }

    /// Breaks the link between `a` and `b` both ways: open links close with
    /// `ConnectionLost`, frames in flight between them are lost, and
    /// `connect` fails with [`TransportError::Unreachable`] until
    /// [`heal`](Self::heal). Publications between them are not delivered.
    pub fn partition(&self, a: &PeerAddr, b: &PeerAddr) {
        if a == b {
            return;
        }
        let pair = Pair::new(a, b);
        {
            let mut state = self.shared.lock();
            state.partitions.insert(pair.clone());
            let now = Instant::now();
            state.drop_link(
                now,
                &pair,
                a,
                Some(DisconnectReason::ConnectionLost),
                DisconnectReason::ConnectionLost,
            );
        }
        self.shared.wake();
    }

    /// Lifts a partition between `a` and `b`. Links do not reopen by
    /// themselves: connect again.
    pub fn heal(&self, a: &PeerAddr, b: &PeerAddr) {
        self.shared.lock().partitions.remove(&Pair::new(a, b));
    }

    /// Lifts every partition.
    pub fn heal_all(&self) {
        self.shared.lock().partitions.clear();
    }

    /// Sets the faults of every link without its own.
    pub fn set_faults(&self, faults: Faults) -> Result<(), InvalidFaults> {
        faults.validate()?;
        self.shared.lock().faults = faults;
        Ok(())
    }

    /// Sets the faults of the directed link `from` → `to`, overriding the
    /// network's.
    pub fn set_link_faults(&self, from: &PeerAddr, to: &PeerAddr, faults: Faults) -> Result<(), InvalidFaults> {
        faults.validate()?;
        self.shared
            .lock()
            .link_faults
            .insert((from.clone(), to.clone()), faults);
        Ok(())
    }

    /// Returns the directed link `from` → `to` to the network's faults.
    pub fn clear_link_faults(&self, from: &PeerAddr, to: &PeerAddr) {
        self.shared.lock().link_faults.remove(&(from.clone(), to.clone()));
    }

    /// The most recent events the wire handed to nodes, oldest first (at
    /// most [`MemoryConfig::trace_capacity`]).
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.shared.lock().trace.iter().cloned().collect()
    }

    /// Waits until nothing is in flight: every scheduled event has been
    /// handed to its node's channel or discarded. Under paused time this
    /// advances the clock past every pending delay.
    ///
    /// Never returns while a node's full event channel blocks the wire, so
    /// drain streams concurrently when much is in flight.
    pub async fn settle(&self) {
        loop {
            let idle = self.shared.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Register before checking, so a notification in between is not
            // missed.
            idle.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.queue.is_empty() && !state.delivering {
                    return;
                }
            }
            idle.await;
        }
    }

    fn spawn_node(&self, state: &mut State, addr: PeerAddr) -> (MemoryTransport, EventStream) {
        let (events, rx) = mpsc::channel(state.config.event_capacity.max(1));
        let incarnation = state.next_id();
        state.nodes.insert(
            addr.clone(),
            Node {
                incarnation,
                events,
                topics: BTreeSet::new(),
            },
        );
        let transport = MemoryTransport {
            shared: Arc::clone(&self.shared),
            addr,
            incarnation,
        };
        (transport, EventStream::new(rx))
    }
}

impl fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryNetwork")
            .field("nodes", &state.nodes.keys().collect::<Vec<_>>())
            .field("in_flight", &state.queue.len())
            .finish_non_exhaustive()
    }
}

impl MemoryTransport {
    /// Runs `op` against the network state if this handle is still live,
    /// then wakes the wire for whatever `op` scheduled.
    fn with_state<R>(
        &self,
        op: impl FnOnce(&mut State, Instant) -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        let result = {
            let mut state = self.shared.lock();
            if !state.is_live(&self.addr, self.incarnation) {
                return Err(TransportError::Closed);
            }
            op(&mut state, Instant::now())
        };
        self.shared.wake();
        result
    }
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("addr", &self.addr)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Transport for MemoryTransport {
    fn local_addr(&self) -> PeerAddr {
        self.addr.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let state = self.shared.lock();
        // Network-wide, as the session layer asks once, not per link.
        let all = || std::iter::once(&state.faults).chain(state.link_faults.values());
        let reliable = all().all(|f| f.drop_rate <= 0.0 && f.duplicate_rate <= 0.0);
        let ordered = all().all(|f| f.reorder_rate <= 0.0);
        Capabilities {
            point_to_point: true,
            broadcast: true,
            store_and_forward: false,
            reliable,
            ordered,
            max_frame_len: state.config.max_frame_len,
        }
    }

    async fn connect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        self.with_state(|state, now| {
            if *peer == self.addr {
                return Err(TransportError::Unsupported("connecting to itself"));
            }
            if !state.nodes.contains_key(peer) {
                return Err(TransportError::UnknownPeer(peer.clone()));
            }
            let pair = Pair::new(&self.addr, peer);
            if state.partitions.contains(&pair) {
                return Err(TransportError::Unreachable(peer.clone()));
            }
            if state.links.contains_key(&pair) {
                return Ok(());
            }
            state.ensure_room(2)?;
            let generation = state.next_id();
            state.links.insert(pair, generation);
            let ours = TransportEvent::Connected { peer: peer.clone() };
            state.schedule(now, &self.addr, Guard::Node, ours);
            let theirs = TransportEvent::Connected {
                peer: self.addr.clone(),
            };
            state.schedule(now, peer, Guard::Node, theirs);
            Ok(())
        })
    }

    async fn disconnect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        self.with_state(|state, now| {
            let pair = Pair::new(&self.addr, peer);
            if !state.links.contains_key(&pair) {
                return Err(state.not_connected(peer));
            }
            state.ensure_room(2)?;
            state.drop_link(
                now,
                &pair,
                &self.addr,
                Some(DisconnectReason::Local),
                DisconnectReason::Remote,
            );
            Ok(())
        })
    }

    async fn send(&self, to: &PeerAddr, frame: Bytes) -> Result<(), TransportError> {
        self.with_state(|state, now| {
            state.check_len(frame.len())?;
            let pair = Pair::new(&self.addr, to);
            let Some(&generation) = state.links.get(&pair) else {
                return Err(state.not_connected(to));
            };
            state.ensure_room(1)?;
            let event = TransportEvent::Frame {
                from: self.addr.clone(),
                bytes: frame,
            };
            state.schedule_faulty(now, &self.addr, to, Guard::Link { pair, generation }, event);
            Ok(())
        })
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), TransportError> {
        self.with_state(|state, _| {
            if let Some(node) = state.nodes.get_mut(&self.addr) {
                node.topics.insert(topic.clone());
            }
            Ok(())
        })
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), TransportError> {
        self.with_state(|state, _| {
            if let Some(node) = state.nodes.get_mut(&self.addr) {
                node.topics.remove(topic);
            }
            Ok(())
        })
    }

    async fn publish(&self, topic: &Topic, frame: Bytes) -> Result<(), TransportError> {
        self.with_state(|state, now| {
            state.check_len(frame.len())?;
            let receivers: Vec<PeerAddr> = state
                .nodes
                .iter()
                .filter(|(addr, node)| {
                    **addr != self.addr
                        && node.topics.contains(topic)
                        && !state.partitions.contains(&Pair::new(&self.addr, addr))
                })
                .map(|(addr, _)| addr.clone())
                .collect();
            state.ensure_room(receivers.len())?;
            for to in receivers {
                let event = TransportEvent::Published {
                    topic: topic.clone(),
                    from: Some(self.addr.clone()),
                    bytes: frame.clone(),
                };
                let pair = Pair::new(&self.addr, &to);
                state.schedule_faulty(now, &self.addr, &to, Guard::Reachable { pair }, event);
            }
            Ok(())
        })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, and the state stays
        // consistent between statements, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        // `Full` means a wake-up is already pending; `Closed` cannot happen
        // while `self` is alive.
        let _ = self.wake.try_send(());
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn is_live(&self, addr: &PeerAddr, incarnation: u64) -> bool {
        self.nodes.get(addr).is_some_and(|node| node.incarnation == incarnation)
    }

    fn not_connected(&self, peer: &PeerAddr) -> TransportError {
        if self.nodes.contains_key(peer) {
            TransportError::NotConnected(peer.clone())
        } else {
            TransportError::UnknownPeer(peer.clone())
        }
    }

    fn check_len(&self, len: usize) -> Result<(), TransportError> {
        let max = self.config.max_frame_len;
        if len > max {
            return Err(TransportError::FrameTooLarge { len, max });
        }
        Ok(())
    }

    fn ensure_room(&self, events: usize) -> Result<(), TransportError> {
        if self.queue.len().saturating_add(events) > self.config.max_in_flight {
            return Err(TransportError::QueueFull);
        }
        Ok(())
    }

    /// Closes the link `pair` if open: `local` learns `local_reason` (if
    /// any), the other end learns `remote_reason`.
    fn drop_link(
        &mut self,
        now: Instant,
        pair: &Pair,
        local: &PeerAddr,
        local_reason: Option<DisconnectReason>,
        remote_reason: DisconnectReason,
    ) {
        let Some(remote) = pair.other(local).cloned() else {
            return;
        };
        if self.links.remove(pair).is_none() {
            return;
        }
        self.watermarks.remove(&(local.clone(), remote.clone()));
        self.watermarks.remove(&(remote.clone(), local.clone()));
        if let Some(reason) = local_reason {
            let event = TransportEvent::Disconnected {
                peer: remote.clone(),
                reason,
            };
            self.schedule(now, local, Guard::Node, event);
        }
        let event = TransportEvent::Disconnected {
            peer: local.clone(),
            reason: remote_reason,
        };
        self.schedule(now, &remote, Guard::Node, event);
    }

    /// Schedules `event` for `to` at `at`, behind everything already
    /// scheduled for the same instant.
    fn schedule(&mut self, at: Instant, to: &PeerAddr, guard: Guard, event: TransportEvent) {
        let Some(node) = self.nodes.get(to) else {
            return;
        };
        let incarnation = node.incarnation;
        self.next_seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.next_seq,
            to: to.clone(),
            incarnation,
            guard,
            event,
        }));
    }

    /// Schedules a frame on the directed link `from` → `to`, through that
    /// link's faults. The draws happen in a fixed order, so the same calls
    /// consume the same randomness.
    fn schedule_faulty(&mut self, now: Instant, from: &PeerAddr, to: &PeerAddr, guard: Guard, event: TransportEvent) {
        let link = (from.clone(), to.clone());
        let faults = self.link_faults.get(&link).copied().unwrap_or(self.faults);
        if self.rng.random_bool(faults.drop_rate) {
            tracing::trace!(%from, %to, "fault: frame dropped");
            return;
        }
        let copies = if self.rng.random_bool(faults.duplicate_rate) {
            tracing::trace!(%from, %to, "fault: frame duplicated");
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + faults.sample_delay(&mut self.rng);
            if self.rng.random_bool(faults.reorder_rate) {
                // Held back without raising the watermark, so frames sent
                // after it can overtake it.
                let hold = self.rng.random_range(REORDER_HOLD_MIN..=REORDER_HOLD + faults.delay.1);
                tracing::trace!(%from, %to, ?hold, "fault: frame reordered");
                at += hold;
            } else {
                // Jitter alone must not reorder: never before the link's
                // previous frame.
                let watermark = self.watermarks.entry(link.clone()).or_insert(at);
                at = at.max(*watermark);
                *watermark = at;
            }
            self.schedule(at, to, guard.clone(), event.clone());
        }
    }

    /// The receiver's channel, if `item` may still be delivered: the
    /// receiving incarnation is alive and its guard holds.
    fn deliverable(&self, item: &Scheduled) -> Option<&mpsc::Sender<TransportEvent>> {
        let node = self
            .nodes
            .get(&item.to)
            .filter(|node| node.incarnation == item.incarnation)?;
        let holds = match &item.guard {
            Guard::Node => true,
            Guard::Link { pair, generation } => self.links.get(pair) == Some(generation),
            Guard::Reachable { pair } => !self.partitions.contains(pair),
        };
        holds.then_some(&node.events)
    }

    /// Pops the next due event, discarding those no longer deliverable.
    fn next_step(&mut self, now: Instant) -> Step {
        while let Some(Reverse(head)) = self.queue.peek() {
            if head.at > now {
                return Step::SleepUntil(head.at);
            }
            let Some(Reverse(item)) = self.queue.pop() else {
                break;
            };
            if let Some(events) = self.deliverable(&item) {
                let events = events.clone();
                self.delivering = true;
                return Step::Deliver(events, item);
            }
            tracing::trace!(to = %item.to, "in-flight event lost: link or node gone");
        }
        Step::Idle
    }

    fn record(&mut self, at: Duration, to: &PeerAddr, event: &TransportEvent) {
        let capacity = self.config.trace_capacity;
        if capacity == 0 {
            return;
        }
        if self.trace.len() >= capacity {
            self.trace.pop_front();
        }
        self.trace.push_back(TraceEntry {
            at,
            to: to.clone(),
            event: event.clone(),
        });
    }
}

/// The wire: the one task that delivers every event, in `(at, seq)` order.
async fn run_wire(shared: Weak<Shared>, mut wake: mpsc::Receiver<()>) {
    loop {
        let step = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let step = shared.lock().next_step(Instant::now());
            if matches!(step, Step::Idle) {
                shared.idle.notify_waiters();
            }
            step
        };
        match step {
            Step::Deliver(events, item) => deliver(&shared, events, item).await,
            // `biased` keeps the choice deterministic; either way the loop
            // re-reads the queue.
            Step::SleepUntil(at) => tokio::select! {
                biased;
                () = time::sleep_until(at) => {}
                woken = wake.recv() => if woken.is_none() { return },
            },
            Step::Idle => {
                if wake.recv().await.is_none() {
                    return;
                }
            }
        }
    }
}

async fn deliver(shared: &Weak<Shared>, events: mpsc::Sender<TransportEvent>, item: Scheduled) {
    // Waiting for room is the back-pressure; a closed channel means the
    // node's stream was dropped, and the event is lost with it.
    let slot = events.reserve().await;
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut state = shared.lock();
    state.delivering = false;
    // Re-check: the link or node may have gone while we waited for room.
    match slot {
        Ok(slot) if state.deliverable(&item).is_some() => {
            let at = Instant::now().duration_since(shared.epoch);
            state.record(at, &item.to, &item.event);
            slot.send(item.event);
        }
        _ => tracing::trace!(to = %item.to, "event lost: receiver gone"),
    }
}
