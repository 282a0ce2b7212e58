//! MemoryTransport's own behaviour: seeded faults, partitions, restarts,
//! limits and determinism. All under paused (virtual) time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use strata_transport::memory::{Faults, MemoryConfig, MemoryNetwork, MemoryTransport, TraceEntry};
use strata_transport::{
    Capabilities, DisconnectReason, ErrorKind, EventStream, PeerAddr, Topic, Transport, TransportError, TransportEvent,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// A network whose event channels hold every frame a test sends, so a test
/// can `settle` before reading.
fn network(seed: u64, faults: Faults) -> MemoryNetwork {
    let config = MemoryConfig {
        event_capacity: 8192,
        ..MemoryConfig::default()
    };
    let network = MemoryNetwork::with_config(seed, config);
    network.set_faults(faults).unwrap();
    network
}

/// Everything already delivered to `events`, without waiting.
fn drain(events: &mut EventStream) -> Vec<TransportEvent> {
    let mut out = Vec::new();
    // Unconstrained: Tokio's co-operative budget would otherwise report an
    // empty channel after 128 receives.
    while let Some(Some(event)) = tokio::task::unconstrained(events.next()).now_or_never() {
        out.push(event);
    }
    out
}

struct Node {
    t: MemoryTransport,
    events: EventStream,
    addr: PeerAddr,
}

fn join(network: &MemoryNetwork, name: &str) -> Node {
    let (t, events) = network.join(name).unwrap();
    let addr = t.local_addr();
    Node { t, events, addr }
}

/// Two connected nodes with their `Connected` events consumed.
async fn connected_pair(network: &MemoryNetwork) -> (Node, Node) {
    let mut a = join(network, "a");
    let mut b = join(network, "b");
    a.t.connect(&b.addr).await.unwrap();
    network.settle().await;
    assert_eq!(drain(&mut a.events), [connected(&b.addr)]);
    assert_eq!(drain(&mut b.events), [connected(&a.addr)]);
    (a, b)
}

fn connected(peer: &PeerAddr) -> TransportEvent {
    TransportEvent::Connected { peer: peer.clone() }
}

fn disconnected(peer: &PeerAddr, reason: DisconnectReason) -> TransportEvent {
    TransportEvent::Disconnected {
        peer: peer.clone(),
        reason,
    }
}

fn numbered(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

/// The numbers of the frames in `events`, in arrival order.
fn numbers(events: &[TransportEvent]) -> Vec<u32> {
    events
        .iter()
        .map(|e| match e {
            TransportEvent::Frame { bytes, .. } => u32::from_be_bytes(bytes[..].try_into().unwrap()),
            other => panic!("expected a frame, got {other:?}"),
        })
        .collect()
}

/// Sends frames `0..n` from `a` to `b` and returns the numbers `b` received.
async fn send_numbered(network: &MemoryNetwork, a: &Node, b: &mut Node, n: u32) -> Vec<u32> {
    for i in 0..n {
        a.t.send(&b.addr, numbered(i)).await.unwrap();
    }
    network.settle().await;
    numbers(&drain(&mut b.events))
}

/// No faults but those `set` sets.
fn faults(set: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::none();
    set(&mut faults);
    faults
}

/// Frames `0..n` over a fresh pair on a network with `faults`: the link's
/// capabilities, and the numbers that arrived.
async fn numbered_over(seed: u64, faults: Faults, n: u32) -> (Capabilities, Vec<u32>) {
    let network = network(seed, faults);
    let (a, mut b) = connected_pair(&network).await;
    let caps = a.t.capabilities();
    (caps, send_numbered(&network, &a, &mut b, n).await)
}

async fn lossy_run(seed: u64) -> Vec<u32> {
    numbered_over(seed, faults(|f| f.drop_rate = 0.2), 2000).await.1
}

#[tokio::test(start_paused = true)]
async fn drop_rate_loses_a_seeded_share_of_frames() {
    let first = lossy_run(7).await;
    // 1600 expected, σ ≈ 18: this band is over five σ wide each side.
    assert!((1500..=1700).contains(&first.len()), "delivered {}", first.len());
    assert!(first.windows(2).all(|w| w[0] < w[1]), "loss must not reorder");
    assert_eq!(lossy_run(7).await, first, "same seed, same losses");
    assert_ne!(lossy_run(8).await, first, "another seed, other losses");
}

#[tokio::test(start_paused = true)]
async fn duplicate_rate_delivers_some_frames_twice() {
    let (caps, got) = numbered_over(3, faults(|f| f.duplicate_rate = 0.3), 1000).await;
    assert!(!caps.reliable && caps.ordered, "{caps:?}");
    let mut counts = BTreeMap::new();
    for n in &got {
        *counts.entry(*n).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), 1000, "duplication must not lose frames");
    assert!(counts.values().all(|&c| c == 1 || c == 2));
    let duplicates = got.len() - 1000;
    assert!((200..=400).contains(&duplicates), "{duplicates} duplicates");
}

#[tokio::test(start_paused = true)]
async fn reorder_rate_lets_later_frames_overtake() {
    let (caps, got) = numbered_over(4, faults(|f| f.reorder_rate = 0.3), 1000).await;
    assert!(caps.reliable && !caps.ordered, "{caps:?}");
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>(), "each frame exactly once");
    let inversions = got.windows(2).filter(|w| w[0] > w[1]).count();
    assert!(inversions > 100, "only {inversions} inversions");
}

#[tokio::test(start_paused = true)]
async fn delay_stays_within_bounds_and_keeps_order() {
    let (min, max) = (10 * MS, 50 * MS);
    let network = network(5, faults(|f| f.delay = (min, max)));
    let (a, mut b) = connected_pair(&network).await;
    let caps = a.t.capabilities();
    assert!(caps.reliable && caps.ordered, "jitter alone keeps a link ordered");

    // Paced wider than the delay range, so each frame's delay is its own.
    let sender = async {
        let mut sent = Vec::new();
        for i in 0..100 {
            sent.push(Instant::now());
            a.t.send(&b.addr, numbered(i)).await.unwrap();
            tokio::time::sleep(100 * MS).await;
        }
        sent
    };
    let receiver = async {
        let mut received = Vec::new();
        for i in 0..100 {
            let event = b.events.next().await.unwrap();
            assert_eq!(numbers(&[event]), [i]);
            received.push(Instant::now());
        }
        received
    };
    let (sent, received) = tokio::join!(sender, receiver);
    let delays: Vec<Duration> = sent.iter().zip(&received).map(|(s, r)| *r - *s).collect();
    assert!(delays.iter().all(|d| (min..=max).contains(d)), "{delays:?}");
    // Spread over the range, not pinned to one end.
    assert!(delays.iter().any(|d| *d < 15 * MS), "{delays:?}");
    assert!(delays.iter().any(|d| *d > 45 * MS), "{delays:?}");

    // Sent together, jittered frames still arrive in order.
    let start = Instant::now();
    let got = send_numbered(&network, &a, &mut b, 200).await;
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert!(Instant::now() - start <= max);
}

#[tokio::test(start_paused = true)]
async fn link_faults_override_the_network_per_direction() {
    let network = network(6, Faults::none());
    let (mut a, mut b) = connected_pair(&network).await;
    let lossy = faults(|f| f.drop_rate = 1.0);
    network.set_link_faults(&a.addr, &b.addr, lossy).unwrap();
    assert!(!a.t.capabilities().reliable);

    assert!(send_numbered(&network, &a, &mut b, 10).await.is_empty());
    assert_eq!(send_numbered(&network, &b, &mut a, 10).await.len(), 10);

    network.clear_link_faults(&a.addr, &b.addr);
    assert!(a.t.capabilities().reliable);
    assert_eq!(send_numbered(&network, &a, &mut b, 10).await.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn faults_are_validated() {
    let network = network(0, Faults::none());
    let bad = [
        faults(|f| f.drop_rate = 1.5),
        faults(|f| f.duplicate_rate = -0.1),
        faults(|f| f.reorder_rate = f64::NAN),
        faults(|f| f.delay = (2 * MS, MS)),
    ];
    for faults in bad {
        assert!(network.set_faults(faults).is_err(), "{faults:?} accepted");
    }
    let edge = Faults {
        drop_rate: 1.0,
        duplicate_rate: 0.0,
        reorder_rate: 1.0,
        delay: (MS, MS),
    };
    assert!(network.set_faults(edge).is_ok());
}

#[tokio::test(start_paused = true)]
async fn partition_drops_links_and_in_flight_frames_until_healed() {
    let network = network(9, faults(|f| f.delay = (5 * MS, 5 * MS)));
    let (mut a, mut b) = connected_pair(&network).await;
    let topic = Topic::from("t");
    b.t.subscribe(&topic).await.unwrap();

    a.t.send(&b.addr, Bytes::from_static(b"in flight")).await.unwrap();
    network.partition(&a.addr, &b.addr);
    network.settle().await;
    let lost = DisconnectReason::ConnectionLost;
    assert_eq!(drain(&mut a.events), [disconnected(&b.addr, lost)]);
    assert_eq!(drain(&mut b.events), [disconnected(&a.addr, lost)], "frame lost");

    assert_eq!(
        a.t.connect(&b.addr).await,
        Err(TransportError::Unreachable(b.addr.clone()))
    );
    assert_eq!(
        b.t.connect(&a.addr).await,
        Err(TransportError::Unreachable(a.addr.clone()))
    );
    let sent = a.t.send(&b.addr, Bytes::from_static(b"x")).await;
    assert_eq!(sent, Err(TransportError::NotConnected(b.addr.clone())));
    a.t.publish(&topic, Bytes::from_static(b"gossip")).await.unwrap();
    network.settle().await;
    assert!(drain(&mut b.events).is_empty(), "publication crossed the partition");

    network.heal(&a.addr, &b.addr);
    a.t.connect(&b.addr).await.unwrap();
    a.t.publish(&topic, Bytes::from_static(b"gossip")).await.unwrap();
    network.settle().await;
    let published = TransportEvent::Published {
        topic: topic.clone(),
        from: Some(a.addr.clone()),
        bytes: Bytes::from_static(b"gossip"),
    };
    assert_eq!(drain(&mut a.events), [connected(&b.addr)]);
    assert_eq!(drain(&mut b.events), [connected(&a.addr), published]);
    assert_eq!(send_numbered(&network, &a, &mut b, 3).await, [0, 1, 2]);

    let c = join(&network, "c");
    network.partition(&a.addr, &c.addr);
    network.partition(&b.addr, &c.addr);
    network.heal_all();
    c.t.connect(&a.addr).await.unwrap();
    c.t.connect(&b.addr).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn restart_closes_the_old_incarnation_and_returns_a_fresh_one() {
    let network = network(10, faults(|f| f.delay = (5 * MS, 5 * MS)));
    let (mut a, mut b) = connected_pair(&network).await;
    let topic = Topic::from("t");
    b.t.subscribe(&topic).await.unwrap();
    a.t.send(&b.addr, Bytes::from_static(b"lost")).await.unwrap();
    a.t.publish(&topic, Bytes::from_static(b"lost")).await.unwrap();

    let (b2, mut b2_events) = network.restart(&b.addr).unwrap();
    assert_eq!(b2.local_addr(), b.addr);

    // The old stream ends and the old handle is dead.
    let ended = tokio::time::timeout(Duration::from_secs(1), b.events.next()).await;
    assert_eq!(ended, Ok(None), "old stream must end");
    let ping = Bytes::from_static(b"ping");
    assert_eq!(b.t.send(&a.addr, ping.clone()).await, Err(TransportError::Closed));
    assert_eq!(b.t.connect(&a.addr).await, Err(TransportError::Closed));
    assert_eq!(b.t.subscribe(&topic).await, Err(TransportError::Closed));
    assert_eq!(TransportError::Closed.kind(), ErrorKind::Misuse);

    // The peer saw the crash; nothing in flight or subscribed survives it.
    a.t.publish(&topic, ping.clone()).await.unwrap();
    network.settle().await;
    let lost = DisconnectReason::ConnectionLost;
    assert_eq!(drain(&mut a.events), [disconnected(&b.addr, lost)]);
    assert!(drain(&mut b2_events).is_empty());
    let sent = a.t.send(&b.addr, ping.clone()).await;
    assert_eq!(sent, Err(TransportError::NotConnected(b.addr.clone())));

    // The new incarnation works.
    let mut b2 = Node {
        t: b2,
        events: b2_events,
        addr: b.addr.clone(),
    };
    a.t.connect(&b2.addr).await.unwrap();
    network.settle().await;
    assert_eq!(drain(&mut b2.events), [connected(&a.addr)]);
    assert_eq!(drain(&mut a.events), [connected(&b2.addr)]);
    assert_eq!(send_numbered(&network, &a, &mut b2, 2).await, [0, 1]);
    assert_eq!(send_numbered(&network, &b2, &mut a, 2).await, [0, 1]);

    let ghost = PeerAddr::from("ghost");
    assert_eq!(network.restart(&ghost).err(), Some(TransportError::UnknownPeer(ghost)));
}

#[tokio::test(start_paused = true)]
async fn connect_is_idempotent_and_disconnect_reports_both_sides() {
    let network = network(11, Faults::none());
    let (mut a, mut b) = connected_pair(&network).await;
    a.t.connect(&b.addr).await.unwrap();
    b.t.connect(&a.addr).await.unwrap();
    network.settle().await;
    assert!(drain(&mut a.events).is_empty(), "second connect must be silent");
    assert!(drain(&mut b.events).is_empty());

    b.t.disconnect(&a.addr).await.unwrap();
    network.settle().await;
    assert_eq!(drain(&mut a.events), [disconnected(&b.addr, DisconnectReason::Remote)]);
    assert_eq!(drain(&mut b.events), [disconnected(&a.addr, DisconnectReason::Local)]);
    let again = b.t.disconnect(&a.addr).await;
    assert_eq!(again, Err(TransportError::NotConnected(a.addr.clone())));
}

#[tokio::test(start_paused = true)]
async fn frames_over_the_limit_are_refused() {
    let config = MemoryConfig {
        max_frame_len: 1024,
        ..MemoryConfig::default()
    };
    let network = MemoryNetwork::with_config(12, config);
    let (a, mut b) = connected_pair(&network).await;
    assert_eq!(a.t.capabilities().max_frame_len, 1024);

    let too_large = TransportError::FrameTooLarge { len: 1025, max: 1024 };
    let big = Bytes::from(vec![7; 1025]);
    assert_eq!(a.t.send(&b.addr, big.clone()).await, Err(too_large.clone()));
    assert_eq!(a.t.publish(&Topic::from("t"), big).await, Err(too_large.clone()));
    assert_eq!(too_large.kind(), ErrorKind::InvalidInput);

    let exact = Bytes::from(vec![7; 1024]);
    a.t.send(&b.addr, exact.clone()).await.unwrap();
    network.settle().await;
    let frame = TransportEvent::Frame {
        from: a.addr.clone(),
        bytes: exact,
    };
    assert_eq!(drain(&mut b.events), [frame]);
}

#[tokio::test(start_paused = true)]
async fn unknown_peers_and_self_are_refused() {
    let network = network(13, Faults::none());
    let a = join(&network, "a");
    let ghost = PeerAddr::from("ghost");
    let unknown = Err(TransportError::UnknownPeer(ghost.clone()));
    assert_eq!(a.t.connect(&ghost).await, unknown);
    assert_eq!(a.t.send(&ghost, Bytes::new()).await, unknown);
    assert_eq!(a.t.disconnect(&ghost).await, unknown);
    assert!(matches!(
        a.t.connect(&a.addr).await,
        Err(TransportError::Unsupported(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn join_refuses_a_taken_address() {
    let network = network(14, Faults::none());
    let a = join(&network, "a");
    assert_eq!(network.join("a").err(), Some(TransportError::AddrInUse(a.addr.clone())));
    network.restart(&a.addr).unwrap();
    assert!(network.join("a").is_err(), "a restarted node keeps its address");
    assert!(network.join("b").is_ok());
}

#[tokio::test(start_paused = true)]
async fn in_flight_frames_are_capped() {
    let config = MemoryConfig {
        max_in_flight: 10,
        ..MemoryConfig::default()
    };
    let network = MemoryNetwork::with_config(15, config);
    network
        .set_faults(faults(|f| f.delay = (Duration::from_secs(1), Duration::from_secs(1))))
        .unwrap();
    let (a, mut b) = connected_pair(&network).await;
    for i in 0..10 {
        a.t.send(&b.addr, numbered(i)).await.unwrap();
    }
    let full = a.t.send(&b.addr, numbered(10)).await.unwrap_err();
    assert_eq!(full, TransportError::QueueFull);
    assert!(full.is_retryable());

    network.settle().await;
    assert_eq!(numbers(&drain(&mut b.events)), (0..10).collect::<Vec<_>>());
    a.t.send(&b.addr, numbered(10)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_slow_receiver_gets_every_frame_and_a_dropped_one_stalls_nothing() {
    let config = MemoryConfig {
        event_capacity: 4,
        ..MemoryConfig::default()
    };
    let network = MemoryNetwork::with_config(16, config);
    let (a, mut b) = connected_pair(&network).await;

    // Far more than the channel holds: the wire waits instead of dropping.
    let sender = async {
        for i in 0..100 {
            a.t.send(&b.addr, numbered(i)).await.unwrap();
        }
    };
    let receiver = async {
        let mut got = Vec::new();
        while got.len() < 100 {
            got.extend(numbers(&[b.events.next().await.unwrap()]));
            tokio::task::yield_now().await;
        }
        got
    };
    let ((), got) = tokio::join!(sender, receiver);
    assert_eq!(got, (0..100).collect::<Vec<_>>());

    let c = join(&network, "c");
    drop(c.events);
    a.t.connect(&c.addr).await.unwrap();
    for i in 0..100 {
        a.t.send(&c.addr, numbered(i)).await.unwrap();
    }
    network.settle().await;
    assert_eq!(send_numbered(&network, &a, &mut b, 3).await, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn broadcast_reaches_other_subscribers_once() {
    let network = network(17, Faults::none());
    let mut nodes: Vec<Node> = ["a", "b", "c", "d"].iter().map(|n| join(&network, n)).collect();
    let topic = Topic::from("t");
    for node in &nodes[..3] {
        node.t.subscribe(&topic).await.unwrap();
        node.t.subscribe(&topic).await.unwrap();
    }
    nodes[0].t.publish(&topic, Bytes::from_static(b"hi")).await.unwrap();
    network.settle().await;
    let published = TransportEvent::Published {
        topic,
        from: Some(nodes[0].addr.clone()),
        bytes: Bytes::from_static(b"hi"),
    };
    let got: Vec<Vec<TransportEvent>> = nodes.iter_mut().map(|n| drain(&mut n.events)).collect();
    assert_eq!(got, [vec![], vec![published.clone()], vec![published], vec![]]);
}

type Observed = BTreeMap<PeerAddr, Vec<(Duration, TransportEvent)>>;

/// Records everything `events` yields, with virtual timestamps, until it ends.
fn observe(events: EventStream, start: Instant) -> tokio::task::JoinHandle<Vec<(Duration, TransportEvent)>> {
    let mut events = events;
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            seen.push((Instant::now() - start, event));
        }
        seen
    })
}

/// A busy scenario with every fault, a partition and a restart; returns the
/// network's trace, what each node observed, and every call's result.
async fn scenario(seed: u64) -> (Vec<TraceEntry>, Observed, Vec<String>) {
    let start = Instant::now();
    let network = MemoryNetwork::new(seed);
    network
        .set_faults(Faults {
            drop_rate: 0.1,
            duplicate_rate: 0.1,
            reorder_rate: 0.2,
            delay: (MS, 20 * MS),
        })
        .unwrap();
    let mut observers = Vec::new();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let (t, events) = network.join(name).unwrap();
        observers.push((t.local_addr(), observe(events, start)));
        nodes.push(t);
    }
    let addrs: Vec<PeerAddr> = nodes.iter().map(Transport::local_addr).collect();
    let topic = Topic::from("t");
    let mut results = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        results.push(node.connect(&addrs[(i + 1) % 3]).await);
        results.push(node.subscribe(&topic).await);
    }
    for round in 0..60u32 {
        for (i, node) in nodes.iter().enumerate() {
            results.push(node.send(&addrs[(i + 1) % 3], numbered(round)).await);
        }
        results.push(nodes[0].publish(&topic, numbered(round)).await);
        match round {
            20 => network.partition(&addrs[0], &addrs[1]),
            30 => {
                network.heal(&addrs[0], &addrs[1]);
                results.push(nodes[0].connect(&addrs[1]).await);
            }
            40 => {
                let (t, events) = network.restart(&addrs[2]).unwrap();
                observers.push((t.local_addr(), observe(events, start)));
                nodes[2] = t;
                results.push(nodes[2].connect(&addrs[0]).await);
                results.push(nodes[2].subscribe(&topic).await);
            }
            _ => {}
        }
        tokio::time::sleep(3 * MS).await;
    }
    network.settle().await;
    let trace = network.trace();
    // Dropping every handle stops the network, which ends every stream.
    drop((network, nodes));
    let mut observed = Observed::new();
    for (addr, observer) in observers {
        observed.entry(addr).or_default().extend(observer.await.unwrap());
    }
    let results = results.iter().map(|r| format!("{r:?}")).collect();
    (trace, observed, results)
}

#[tokio::test(start_paused = true)]
async fn same_seed_replays_the_same_trace_and_another_seed_does_not() {
    let (trace, observed, results) = scenario(42).await;
    assert!(trace.len() > 200, "scenario too quiet: {} events", trace.len());
    assert!(
        results.iter().any(|r| r.contains("NotConnected")),
        "partition had no effect"
    );

    // What nodes observed is exactly what the wire delivered, when it did.
    let mut from_trace = Observed::new();
    for entry in &trace {
        from_trace
            .entry(entry.to.clone())
            .or_default()
            .push((entry.at, entry.event.clone()));
    }
    assert_eq!(observed, from_trace);

    assert_eq!(
        scenario(42).await,
        (trace.clone(), observed, results),
        "seed 42 must replay"
    );
    let (other, ..) = scenario(43).await;
    assert_ne!(other, trace, "another seed must give another trace");
}
