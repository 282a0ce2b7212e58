//! The link machine under a seeded, lossy, duplicating, reordering network
//! in virtual time: exactly-once in-order delivery, crossing opens, close,
//! restarts and timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::*;

struct Sim {
    nodes: Vec<(PeerAddr, Links)>,
    events: Vec<Vec<TransportEvent>>,
    /// (deliver at, tie-break, receiver, frame)
    wire: Vec<(Instant, u64, usize, LinkFrame)>,
    rng: StdRng,
    drop: f64,
    dup: f64,
    max_delay_ms: u64,
    now: Instant,
    seq: u64,
    transmitted: usize,
}

impl Sim {
    fn new(seed: u64, drop: f64, dup: f64, max_delay_ms: u64) -> Self {
        let cfg = LinkConfig::default();
        let nodes = ["alice", "bob"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let addr = PeerAddr::from(*name);
                (addr.clone(), Links::new(addr, cfg, seed * 10 + i as u64))
            })
            .collect();
        Self {
            nodes,
            events: vec![Vec::new(), Vec::new()],
            wire: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            drop,
            dup,
            max_delay_ms,
            now: Instant::now(),
            seq: 0,
            transmitted: 0,
        }
    }

    fn addr(&self, i: usize) -> PeerAddr {
        self.nodes[i].0.clone()
    }

    fn index(&self, addr: &PeerAddr) -> Option<usize> {
        self.nodes.iter().position(|(a, _)| a == addr)
    }

    /// Moves every node's outputs onto the wire (through the real codec) or
    /// into its event log.
    fn pump(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(out) = self.nodes[i].1.poll_output() {
                match out {
                    Output::Event(e) => self.events[i].push(e),
                    Output::Transmit { to, frame } => {
                        self.transmitted += 1;
                        let (meta, payload) = frame.encode();
                        let frame = LinkFrame::decode(&meta, payload).unwrap();
                        let Some(to) = self.index(&to) else { continue };
                        if self.rng.random_bool(self.drop) {
                            continue;
                        }
                        let copies = if self.rng.random_bool(self.dup) { 2 } else { 1 };
                        for _ in 0..copies {
                            let delay = Duration::from_millis(self.rng.random_range(0..=self.max_delay_ms));
                            self.seq += 1;
                            self.wire.push((self.now + delay, self.seq, to, frame.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Runs until `until` in virtual time, or until `done` holds.
    fn run(&mut self, until: Duration, mut done: impl FnMut(&Self) -> bool) {
        let end = self.now + until;
        loop {
            self.pump();
            if done(self) {
                return;
            }
            let next_wire = self.wire.iter().map(|w| (w.0, w.1)).min();
            let next_tick = self.nodes.iter().filter_map(|(_, l)| l.next_deadline()).min();
            let next = match (next_wire, next_tick) {
                (Some((w, _)), Some(t)) => w.min(t),
                (Some((w, _)), None) => w,
                (None, Some(t)) => t,
                (None, None) => return,
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if let Some(pos) = self
                .wire
                .iter()
                .enumerate()
                .filter(|(_, w)| w.0 <= self.now)
                .min_by_key(|(_, w)| (w.0, w.1))
                .map(|(p, _)| p)
            {
                let (_, _, to, frame) = self.wire.swap_remove(pos);
                self.nodes[to].1.handle(frame, self.now);
            } else {
                for (_, links) in &mut self.nodes {
                    links.tick(self.now);
                }
            }
        }
    }

    fn frames(&self, i: usize) -> Vec<Bytes> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                TransportEvent::Frame { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    fn count(&self, i: usize, pred: impl Fn(&TransportEvent) -> bool) -> usize {
        self.events[i].iter().filter(|e| pred(e)).count()
    }

    fn connected(&self, i: usize) -> usize {
        self.count(i, |e| matches!(e, TransportEvent::Connected { .. }))
    }

    fn connect(&mut self, from: usize, to: usize) {
        let peer = self.addr(to);
        let now = self.now;
        self.nodes[from].1.connect(&peer, now).unwrap();
        self.run(Duration::from_secs(60), |s| {
            s.nodes[0].1.is_open(&s.addr(1)) && s.nodes[1].1.is_open(&s.addr(0))
        });
        assert!(self.nodes[from].1.is_open(&peer), "link did not open");
    }
}

fn numbered(i: u32) -> Bytes {
    Bytes::copy_from_slice(&i.to_be_bytes())
}

/// 300 frames each way over 20 % loss, 10 % duplication and up to 80 ms of
/// jitter (which reorders): each side sees them all, once, in order, and
/// exactly one `Connected`.
#[test]
fn exactly_once_in_order_over_a_lossy_network() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed, 0.2, 0.1, 80);
        sim.connect(0, 1);
        let (a, b) = (sim.addr(0), sim.addr(1));
        let mut sent = 0u32;
        // Send in bursts so the window never fills.
        while sent < 300 {
            let now = sim.now;
            for _ in 0..50 {
                sim.nodes[0].1.send(&b, numbered(sent), now).unwrap();
                sim.nodes[1].1.send(&a, numbered(sent + 1000), now).unwrap();
                sent += 1;
            }
            sim.run(Duration::from_millis(50), |_| false);
        }
        sim.run(Duration::from_secs(60), |s| {
            s.frames(0).len() == 300 && s.frames(1).len() == 300
        });
        let expect_b: Vec<Bytes> = (0..300).map(numbered).collect();
        let expect_a: Vec<Bytes> = (1000..1300).map(numbered).collect();
        assert_eq!(sim.frames(1), expect_b, "seed {seed}: bob's frames");
        assert_eq!(sim.frames(0), expect_a, "seed {seed}: alice's frames");
        assert_eq!((sim.connected(0), sim.connected(1)), (1, 1), "seed {seed}");
        // Everything acknowledged eventually: nothing left to retransmit.
        sim.run(Duration::from_secs(20), |s| {
            s.nodes
                .iter()
                .all(|(_, l)| l.links.values().all(|k| k.unacked.is_empty()))
        });
        assert!(
            sim.nodes
                .iter()
                .all(|(_, l)| l.links.values().all(|k| k.unacked.is_empty()))
        );
    }
}

/// Both sides connect at once: one link survives, each side reports one
/// `Connected`, and frames flow both ways; late OPEN copies change nothing.
#[test]
fn crossing_opens_converge_on_one_link() {
    for seed in 0..50 {
        let mut sim = Sim::new(seed, 0.1, 0.3, 40);
        let (a, b) = (sim.addr(0), sim.addr(1));
        let now = sim.now;
        sim.nodes[0].1.connect(&b, now).unwrap();
        sim.nodes[1].1.connect(&a, now).unwrap();
        sim.run(Duration::from_secs(60), |s| {
            s.nodes[0].1.is_open(&b) && s.nodes[1].1.is_open(&a)
        });
        let now = sim.now;
        sim.nodes[0].1.send(&b, numbered(1), now).unwrap();
        sim.nodes[1].1.send(&a, numbered(2), now).unwrap();
        // Long enough for every late copy to land and every timer to fire.
        sim.run(Duration::from_secs(20), |_| false);
        assert_eq!(sim.frames(1), vec![numbered(1)], "seed {seed}");
        assert_eq!(sim.frames(0), vec![numbered(2)], "seed {seed}");
        assert_eq!(
            (sim.connected(0), sim.connected(1)),
            (1, 1),
            "seed {seed}: {:?}",
            sim.events
        );
        let lost = |e: &TransportEvent| matches!(e, TransportEvent::Disconnected { .. });
        assert_eq!((sim.count(0, lost), sim.count(1, lost)), (0, 0), "seed {seed}");
        assert_eq!(sim.nodes[0].1.links[&b].id, sim.nodes[1].1.links[&a].id);
    }
}

#[test]
fn disconnect_reports_local_and_remote_then_reconnects() {
    let mut sim = Sim::new(7, 0.0, 0.0, 5);
    let (a, b) = (sim.addr(0), sim.addr(1));
    sim.connect(0, 1);
    sim.nodes[0].1.disconnect(&b).unwrap();
    sim.run(Duration::from_secs(5), |_| false);
    assert!(sim.events[0].contains(&TransportEvent::Disconnected {
        peer: b.clone(),
        reason: DisconnectReason::Local
    }));
    assert!(sim.events[1].contains(&TransportEvent::Disconnected {
        peer: a.clone(),
        reason: DisconnectReason::Remote
    }));
    let now = sim.now;
    assert_eq!(
        sim.nodes[0].1.send(&b, numbered(0), now),
        Err(TransportError::NotConnected(b.clone()))
    );
    assert_eq!(
        sim.nodes[0].1.disconnect(&b),
        Err(TransportError::NotConnected(b.clone()))
    );
    sim.connect(1, 0);
    let now = sim.now;
    sim.nodes[0].1.send(&b, numbered(9), now).unwrap();
    sim.run(Duration::from_secs(5), |s| !s.frames(1).is_empty());
    assert_eq!(sim.frames(1), vec![numbered(9)]);
}

/// A peer that vanishes is reported lost after `timeout`; one that crashes
/// and comes back with a fresh machine replaces the old link, which is
/// reported lost first.
#[test]
fn silence_times_out_and_a_restarted_peer_replaces_its_link() {
    let mut sim = Sim::new(3, 0.0, 0.0, 5);
    let (a, b) = (sim.addr(0), sim.addr(1));
    sim.connect(0, 1);
    // Bob restarts: a new machine that knows nothing of the old link.
    sim.nodes[1].1 = Links::new(b.clone(), LinkConfig::default(), 99);
    let now = sim.now;
    sim.nodes[1].1.connect(&a, now).unwrap();
    sim.run(Duration::from_secs(5), |s| s.nodes[1].1.is_open(&a));
    let kinds: Vec<&TransportEvent> = sim.events[0].iter().collect();
    assert_eq!(
        kinds,
        vec![
            &TransportEvent::Connected { peer: b.clone() },
            &TransportEvent::Disconnected {
                peer: b.clone(),
                reason: DisconnectReason::ConnectionLost
            },
            &TransportEvent::Connected { peer: b.clone() },
        ]
    );
    // Now bob goes silent for good.
    sim.nodes.truncate(1);
    let start = sim.now;
    sim.run(Duration::from_secs(120), |s| {
        s.events[0]
            .iter()
            .filter(|e| matches!(e, TransportEvent::Disconnected { .. }))
            .count()
            == 2
    });
    // Bob was last heard at most one keep-alive before he went silent.
    let waited = sim.now - start;
    let LinkConfig { timeout, keepalive, .. } = LinkConfig::default();
    assert!(
        waited >= timeout - keepalive && waited <= timeout + Duration::from_secs(1),
        "{waited:?}"
    );
    assert!(!sim.nodes[0].1.is_open(&b));
}

/// An OPEN nobody answers gives up after `timeout` with `ConnectionLost`,
/// having retried with backoff rather than at a fixed rate.
#[test]
fn unanswered_open_gives_up() {
    let mut sim = Sim::new(5, 0.0, 0.0, 5);
    let ghost = PeerAddr::from("ghost");
    let now = sim.now;
    sim.nodes[0].1.connect(&ghost, now).unwrap();
    sim.run(Duration::from_secs(120), |s| !s.events[0].is_empty());
    assert_eq!(
        sim.events[0],
        vec![TransportEvent::Disconnected {
            peer: ghost,
            reason: DisconnectReason::ConnectionLost
        }]
    );
    // 250 ms doubling to 4 s over 30 s: about a dozen OPENs, not 120.
    assert!((5..=15).contains(&sim.transmitted), "{} OPENs", sim.transmitted);
}

#[test]
fn window_is_bounded() {
    let mut sim = Sim::new(1, 0.0, 0.0, 5);
    let b = sim.addr(1);
    sim.connect(0, 1);
    // Bob stops listening: nothing is acknowledged.
    sim.nodes.truncate(1);
    let now = sim.now;
    for i in 0..1024 {
        sim.nodes[0].1.send(&b, numbered(i), now).unwrap();
    }
    assert_eq!(
        sim.nodes[0].1.send(&b, numbered(0), now),
        Err(TransportError::QueueFull)
    );
}

#[test]
fn misdirected_and_self_opens_are_ignored() {
    let mut links = Links::new("me".into(), LinkConfig::default(), 1);
    let now = Instant::now();
    let hello = |from: &str, to: &str| LinkFrame {
        header: Header {
            kind: Kind::Open,
            link: 5,
            seq: 0,
            ack: 0,
        },
        body: Body::Hello {
            from: from.into(),
            to: to.into(),
            incarnation: 1,
        },
    };
    links.handle(hello("x", "someone-else"), now);
    links.handle(hello("me", "me"), now);
    assert!(links.poll_output().is_none());
    assert_eq!(
        links.connect(&"me".into(), now),
        Err(TransportError::Unsupported("connecting to itself"))
    );
}

/// Hostile input cannot grow memory without bound: `OPEN`s from made-up
/// addresses stop creating links at `max_links`, and out-of-order frames
/// are held only up to `window_bytes`.
#[test]
fn links_and_reorder_buffers_are_bounded() {
    let cfg = LinkConfig {
        max_links: 8,
        window_bytes: 1000,
        ..LinkConfig::default()
    };
    let mut links = Links::new("me".into(), cfg, 1);
    let now = Instant::now();
    for i in 0..100u64 {
        let open = LinkFrame {
            header: Header {
                kind: Kind::Open,
                link: i + 1,
                seq: 0,
                ack: 0,
            },
            body: Body::Hello {
                from: PeerAddr::new(format!("fake-{i}")),
                to: "me".into(),
                incarnation: i,
            },
        };
        links.handle(open, now);
    }
    assert_eq!(links.links.len(), 8);
    assert_eq!(links.connect(&"real".into(), now), Err(TransportError::QueueFull));
    // Link 1 belongs to fake-0: park frames 1.. (0 is missing) of 300 B.
    for seq in 1..100u64 {
        let data = LinkFrame {
            header: Header {
                kind: Kind::Data,
                link: 1,
                seq,
                ack: 0,
            },
            body: Body::Data(Bytes::from(vec![0; 300])),
        };
        links.handle(data, now);
    }
    let link = &links.links[&PeerAddr::from("fake-0")];
    assert_eq!(link.reorder.len(), 3);
    assert!(link.reorder_bytes <= 1000);
}
