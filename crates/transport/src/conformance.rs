//! The conformance suite every [`Transport`] must pass.
//!
//! Each suite function drives fresh nodes from a [`Harness`] and panics with
//! a message saying what went wrong. Run them all with
//! [`transport_conformance!`](crate::transport_conformance):
//!
//! ```text
//! strata_transport::transport_conformance!(MyHarness::new());
//! ```
//!
//! Suites that need a capability the transport does not claim are skipped
//! (with a `tracing` warning): a transport is held to what its
//! [`Capabilities`] promise. Every wait has a deadline; nothing sleeps.

// A failed check here is a test failure: panicking with context is the point.
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use crate::{Capabilities, DisconnectReason, EventStream, PeerAddr, Topic, Transport, TransportError, TransportEvent};

/// How long any single expected event may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How long a `Disconnected` may take after `disconnect`.
const PROMPT: Duration = Duration::from_secs(10);

/// Creates the nodes a suite runs against.
pub trait Harness: Send {
    /// The transport under test.
    type T: Transport;

    /// A fresh node, reachable by the others from this harness, named
    /// `name` where the transport lets nodes choose their address. Names are
    /// unique within one harness.
    fn spawn(&mut self, name: &str) -> impl Future<Output = (Self::T, EventStream)> + Send;
}

/// Runs every suite in this module as one `#[tokio::test]` each, named after
/// the suite function, building a fresh harness per test from `$harness`.
///
/// The calling crate needs `tokio` with the `macros` and `rt` features.
/// Invoke it once per module (wrap several harnesses in separate modules).
#[macro_export]
macro_rules! transport_conformance {
    ($harness:expr) => {
        $crate::transport_conformance!(
            @tests $harness;
            delivery, ordering, disconnect_reconnect, large_frames, many_peers, broadcast
        );
    };
    (@tests $harness:expr; $($suite:ident),*) => {
        $(
            #[::tokio::test]
            async fn $suite() {
                let mut harness = $harness;
                $crate::conformance::$suite(&mut harness).await;
            }
        )*
    };
}

/// Waits up to `deadline` for the first event on `stream` matching
/// `predicate`, skipping (and logging) others. Panics, naming `what`, on
/// timeout or if the stream ends.
pub async fn expect_event(
    stream: &mut EventStream,
    what: &str,
    mut predicate: impl FnMut(&TransportEvent) -> bool,
    deadline: Duration,
) -> TransportEvent {
    let wait = async {
        loop {
            match stream.next().await {
                Some(event) if predicate(&event) => return event,
                Some(other) => {
                    tracing::debug!(event = %describe(&other), "skipped while waiting for {what}");
                }
                None => panic!("event stream ended while waiting for {what}"),
            }
        }
    };
    match tokio::time::timeout(deadline, wait).await {
        Ok(event) => event,
        Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
    }
}

/// `a` connects to `b`; waits until both report `Connected`.
pub async fn connect_pair<T: Transport>(a: &T, a_events: &mut EventStream, b: &T, b_events: &mut EventStream) {
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    a.connect(&b_addr)
        .await
        .unwrap_or_else(|e| panic!("{a_addr} connect to {b_addr}: {e}"));
    expect_connected(a_events, &a_addr, &b_addr).await;
    expect_connected(b_events, &b_addr, &a_addr).await;
}

/// Waits for the next frame from `from` on `stream`.
pub async fn recv_frame(stream: &mut EventStream, from: &PeerAddr) -> Bytes {
    let what = format!("a frame from {from}");
    match expect_event(stream, &what, |e| is_frame_from(e, from), DEADLINE).await {
        TransportEvent::Frame { bytes, .. } => bytes,
        other => panic!("expected a frame, got {}", describe(&other)),
    }
}

/// A connects to B, both see `Connected`, and frames (text and every byte
/// value) arrive intact both ways with the right sender. Sending to a peer
/// that was never connected fails with `NotConnected`.
pub async fn delivery<H: Harness>(h: &mut H) {
    let (a, mut a_events) = h.spawn("delivery-a").await;
    let (b, mut b_events) = h.spawn("delivery-b").await;
    if skip("delivery", a.capabilities(), Need::ReliableLinks) {
        return;
    }
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());

    send(&a, &b_addr, Bytes::from_static(b"ping")).await;
    assert_eq!(recv_frame(&mut b_events, &a_addr).await, "ping");
    send(&b, &a_addr, Bytes::from_static(b"pong")).await;
    assert_eq!(recv_frame(&mut a_events, &b_addr).await, "pong");

    // Binary-safe: every byte value, including NUL and invalid UTF-8.
    let all_bytes: Bytes = (0..=255u8).collect();
    send(&a, &b_addr, all_bytes.clone()).await;
    assert_eq!(recv_frame(&mut b_events, &a_addr).await, all_bytes);

    let (c, _c_events) = h.spawn("delivery-c").await;
    let c_addr = c.local_addr();
    match a.send(&c_addr, Bytes::from_static(b"nope")).await {
        Err(TransportError::NotConnected(peer)) => assert_eq!(peer, c_addr),
        other => panic!("send to an unconnected peer: expected NotConnected, got {other:?}"),
    }
}

/// On an ordered, reliable transport, 500 frames arrive in send order.
pub async fn ordering<H: Harness>(h: &mut H) {
    const FRAMES: u32 = 500;
    let (a, mut a_events) = h.spawn("ordering-a").await;
    let (b, mut b_events) = h.spawn("ordering-b").await;
    if skip("ordering", a.capabilities(), Need::OrderedLinks) {
        return;
    }
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());

    // Receive while sending, so small transport buffers cannot deadlock.
    let sender = async {
        for i in 0..FRAMES {
            send(&a, &b_addr, Bytes::copy_from_slice(&i.to_be_bytes())).await;
        }
    };
    let receiver = async {
        for i in 0..FRAMES {
            let bytes = recv_frame(&mut b_events, &a_addr).await;
            assert_eq!(bytes, &i.to_be_bytes()[..], "frame {i} out of order");
        }
    };
    tokio::join!(sender, receiver);
}

/// `disconnect` is seen promptly by both sides (`Local` and `Remote`),
/// sending afterwards fails with `NotConnected`, and connecting again (from
/// the other side) restores a working link.
pub async fn disconnect_reconnect<H: Harness>(h: &mut H) {
    let (a, mut a_events) = h.spawn("reconnect-a").await;
    let (b, mut b_events) = h.spawn("reconnect-b").await;
    if skip("disconnect_reconnect", a.capabilities(), Need::ReliableLinks) {
        return;
    }
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());

    a.disconnect(&b_addr)
        .await
        .unwrap_or_else(|e| panic!("disconnect: {e}"));
    expect_disconnected(&mut a_events, &b_addr, DisconnectReason::Local).await;
    expect_disconnected(&mut b_events, &a_addr, DisconnectReason::Remote).await;

    for (from, to) in [(&a, &b_addr), (&b, &a_addr)] {
        match from.send(to, Bytes::from_static(b"late")).await {
            Err(TransportError::NotConnected(peer)) => assert_eq!(&peer, to),
            other => panic!("send after disconnect: expected NotConnected, got {other:?}"),
        }
    }

    connect_pair(&b, &mut b_events, &a, &mut a_events).await;
    send(&a, &b_addr, Bytes::from_static(b"again")).await;
    assert_eq!(recv_frame(&mut b_events, &a_addr).await, "again");
    send(&b, &a_addr, Bytes::from_static(b"back")).await;
    assert_eq!(recv_frame(&mut a_events, &b_addr).await, "back");
}

/// Frames of 1 B, 64 KiB, 1 MiB and `min(max_frame_len, 16 MiB)` arrive
/// byte-exact; `max_frame_len + 1` fails with `FrameTooLarge`.
pub async fn large_frames<H: Harness>(h: &mut H) {
    let (a, mut a_events) = h.spawn("large-a").await;
    let (b, mut b_events) = h.spawn("large-b").await;
    let caps = a.capabilities();
    if skip("large_frames", caps, Need::ReliableLinks) {
        return;
    }
    connect_pair(&a, &mut a_events, &b, &mut b_events).await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());

    let max = caps.max_frame_len;
    let frames: Vec<Bytes> = [1, 64 << 10, 1 << 20, max.min(16 << 20)]
        .into_iter()
        .filter(|&len| len <= max)
        .enumerate()
        .map(|(seed, len)| pattern(seed, len))
        .collect();
    let sender = async {
        for frame in &frames {
            send(&a, &b_addr, frame.clone()).await;
        }
    };
    let receiver = async {
        for frame in &frames {
            let got = recv_frame(&mut b_events, &a_addr).await;
            assert_eq!(got.len(), frame.len(), "large frame truncated or padded");
            // Not assert_eq!: a failure would print megabytes.
            assert!(got == frame, "frame of {} bytes corrupted", frame.len());
        }
    };
    tokio::join!(sender, receiver);

    // Allocating past a huge limit would only test the allocator.
    if max < 256 << 20 {
        match a.send(&b_addr, Bytes::from(vec![0; max + 1])).await {
            Err(TransportError::FrameTooLarge { len, max: limit }) => {
                assert_eq!((len, limit), (max + 1, max));
            }
            other => panic!("oversized frame: expected FrameTooLarge, got {other:?}"),
        }
    }
}

/// Ten nodes connect all-to-all and each pair exchanges a frame each way;
/// every frame arrives exactly once from the right sender.
pub async fn many_peers<H: Harness>(h: &mut H) {
    const NODES: usize = 10;
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        nodes.push(h.spawn(&format!("many-{i}")).await);
    }
    if skip("many_peers", nodes[0].0.capabilities(), Need::ReliableLinks) {
        return;
    }
    for i in 0..NODES {
        for j in i + 1..NODES {
            let (left, right) = nodes.split_at_mut(j);
            let ((a, a_events), (b, b_events)) = (&mut left[i], &mut right[0]);
            connect_pair(a, a_events, b, b_events).await;
        }
    }
    let addrs: Vec<PeerAddr> = nodes.iter().map(|(t, _)| t.local_addr()).collect();
    for (i, (node, _)) in nodes.iter().enumerate() {
        for (j, to) in addrs.iter().enumerate().filter(|&(j, _)| j != i) {
            send(node, to, Bytes::from(format!("{i}->{j}"))).await;
        }
    }
    for (j, (_, events)) in nodes.iter_mut().enumerate() {
        let mut got = BTreeMap::new();
        while got.len() < NODES - 1 {
            let what = format!("frames at many-{j} ({} of {})", got.len(), NODES - 1);
            let event = expect_event(events, &what, is_frame, DEADLINE).await;
            if let TransportEvent::Frame { from, bytes } = event
                && let Some(earlier) = got.insert(from.clone(), bytes)
            {
                panic!("node {j} got a second frame from {from} (first: {earlier:?})");
            }
        }
        for (i, from) in addrs.iter().enumerate().filter(|&(i, _)| i != j) {
            let expected = format!("{i}->{j}");
            assert_eq!(got.get(from).map(|b| &b[..]), Some(expected.as_bytes()));
        }
    }
}

/// With broadcast, three subscribers each publish; every publication reaches
/// the other two exactly once and never its publisher. Without broadcast,
/// `subscribe` and `publish` fail with `Unsupported`.
pub async fn broadcast<H: Harness>(h: &mut H) {
    const NODES: usize = 3;
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        nodes.push(h.spawn(&format!("broadcast-{i}")).await);
    }
    let caps = nodes[0].0.capabilities();
    let topic = Topic::from("strata-conformance");
    if !caps.broadcast {
        let node = &nodes[0].0;
        let subscribed = node.subscribe(&topic).await;
        assert!(
            matches!(subscribed, Err(TransportError::Unsupported(_))),
            "{subscribed:?}"
        );
        let published = node.publish(&topic, Bytes::from_static(b"x")).await;
        assert!(
            matches!(published, Err(TransportError::Unsupported(_))),
            "{published:?}"
        );
        let unsubscribed = node.unsubscribe(&topic).await;
        assert!(
            matches!(unsubscribed, Err(TransportError::Unsupported(_))),
            "{unsubscribed:?}"
        );
        return;
    }
    // A gossip mesh needs links; connect them where the transport can.
    if caps.point_to_point {
        for i in 0..NODES {
            for j in i + 1..NODES {
                let (left, right) = nodes.split_at_mut(j);
                let ((a, a_events), (b, b_events)) = (&mut left[i], &mut right[0]);
                connect_pair(a, a_events, b, b_events).await;
            }
        }
    }
    let barrier = Topic::from("strata-conformance-barrier");
    for (node, _) in &nodes {
        node.subscribe(&topic)
            .await
            .unwrap_or_else(|e| panic!("subscribe: {e}"));
    }
    nodes[2]
        .0
        .subscribe(&barrier)
        .await
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let addrs: Vec<PeerAddr> = nodes.iter().map(|(t, _)| t.local_addr()).collect();
    let mut received: Vec<Vec<(Option<PeerAddr>, Bytes)>> = vec![Vec::new(); NODES];

    // Two rounds: the second is a barrier, so a duplicate or a self-delivery
    // of the first round has had time to show up before we check.
    for round in ["msg", "done"] {
        for (i, (node, _)) in nodes.iter().enumerate() {
            node.publish(&topic, Bytes::from(format!("{round}-{i}")))
                .await
                .unwrap_or_else(|e| panic!("publish: {e}"));
        }
        for (j, (_, events)) in nodes.iter_mut().enumerate() {
            let wanted: BTreeSet<String> = (0..NODES).filter(|&i| i != j).map(|i| format!("{round}-{i}")).collect();
            let got = &mut received[j];
            let missing =
                |got: &[(Option<PeerAddr>, Bytes)]| wanted.iter().any(|w| !got.iter().any(|(_, b)| b == w.as_bytes()));
            while missing(got) {
                let what = format!("{round} publications at broadcast-{j}");
                let event = expect_event(events, &what, |e| is_published(e, &topic), DEADLINE).await;
                if let TransportEvent::Published { from, bytes, .. } = event {
                    got.push((from, bytes));
                }
            }
        }
    }

    for (j, got) in received.iter().enumerate() {
        let mut expected: Vec<String> = (0..NODES)
            .filter(|&i| i != j)
            .flat_map(|i| [format!("msg-{i}"), format!("done-{i}")])
            .collect();
        expected.sort();
        let mut actual: Vec<String> = got
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect();
        actual.sort();
        assert_eq!(actual, expected, "publications at broadcast-{j}");
        for (from, bytes) in got {
            let publisher = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| s.rsplit('-').next())
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| addrs.get(i));
            // Gossip may hide the publisher; if it names one, it must be right.
            if let Some(from) = from {
                assert_eq!(Some(from), publisher, "wrong publisher at broadcast-{j}");
            }
        }
    }

    // Node 2 unsubscribes: what is published on the topic after it no
    // longer reaches it (node 1 still gets it), while the barrier topic,
    // published next, does.
    nodes[2]
        .0
        .unsubscribe(&topic)
        .await
        .unwrap_or_else(|e| panic!("unsubscribe: {e}"));
    nodes[0]
        .0
        .publish(&topic, Bytes::from_static(b"after"))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    nodes[0]
        .0
        .publish(&barrier, Bytes::from_static(b"barrier"))
        .await
        .unwrap_or_else(|e| panic!("publish: {e}"));
    expect_event(
        &mut nodes[1].1,
        "a publication after the unsubscribe",
        |e| is_published(e, &topic),
        DEADLINE,
    )
    .await;
    let first = expect_event(
        &mut nodes[2].1,
        "the barrier",
        |e| matches!(e, TransportEvent::Published { .. }),
        DEADLINE,
    )
    .await;
    assert!(
        is_published(&first, &barrier),
        "an unsubscribed topic was delivered: {}",
        describe(&first)
    );
}

/// Which capabilities a suite relies on.
#[derive(Clone, Copy)]
enum Need {
    ReliableLinks,
    OrderedLinks,
}

fn skip(suite: &str, caps: Capabilities, need: Need) -> bool {
    let ok = caps.point_to_point
        && caps.reliable
        && match need {
            Need::ReliableLinks => true,
            Need::OrderedLinks => caps.ordered,
        };
    if !ok {
        tracing::warn!(?caps, "conformance suite {suite} skipped: capability not claimed");
    }
    !ok
}

async fn send<T: Transport>(from: &T, to: &PeerAddr, frame: Bytes) {
    let len = frame.len();
    from.send(to, frame)
        .await
        .unwrap_or_else(|e| panic!("{} send {len} bytes to {to}: {e}", from.local_addr()));
}

async fn expect_connected(stream: &mut EventStream, at: &PeerAddr, peer: &PeerAddr) {
    let what = format!("Connected {{ {peer} }} at {at}");
    expect_event(
        stream,
        &what,
        |e| matches!(e, TransportEvent::Connected { peer: p } if p == peer),
        DEADLINE,
    )
    .await;
}

async fn expect_disconnected(stream: &mut EventStream, peer: &PeerAddr, reason: DisconnectReason) {
    let what = format!("Disconnected {{ {peer}, {reason:?} }}");
    expect_event(
        stream,
        &what,
        |e| matches!(e, TransportEvent::Disconnected { peer: p, reason: r } if p == peer && *r == reason),
        PROMPT,
    )
    .await;
}

fn is_frame(event: &TransportEvent) -> bool {
    matches!(event, TransportEvent::Frame { .. })
}

fn is_frame_from(event: &TransportEvent, from: &PeerAddr) -> bool {
    matches!(event, TransportEvent::Frame { from: f, .. } if f == from)
}

fn is_published(event: &TransportEvent, topic: &Topic) -> bool {
    matches!(event, TransportEvent::Published { topic: t, .. } if t == topic)
}

/// A frame's content that differs by `seed` and position, so a shifted,
/// truncated or swapped frame is caught.
fn pattern(seed: usize, len: usize) -> Bytes {
    (0..len)
        .map(|i| u8::try_from((i.wrapping_mul(31) + seed) % 251).unwrap_or(0))
        .collect()
}

/// An event without its payload, for logs.
fn describe(event: &TransportEvent) -> String {
    match event {
        TransportEvent::Frame { from, bytes } => format!("Frame {{ from: {from}, {} bytes }}", bytes.len()),
        TransportEvent::Published { topic, from, bytes } => {
            format!("Published {{ {topic}, from: {from:?}, {} bytes }}", bytes.len())
        }
        other => format!("{other:?}"),
    }
}
