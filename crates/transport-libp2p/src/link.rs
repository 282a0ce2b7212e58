//! Point-to-point links over gossip: a sans-I/O state machine.
//!
//! Gossipsub is an unreliable broadcast; the session layer runs the same
//! handshake over every transport and wants `connect`, `Connected`,
//! `Disconnected` and `send`. A *link* gives it that on top of the relay
//! network, the way a reliable stream rides on datagrams:
//!
//! - **Open.** `connect(peer)` picks a random non-zero link id and publishes
//!   `OPEN{link, hello(from, to)}` on the peer's installation topic,
//!   repeating it with exponential backoff. The peer answers `OPEN_ACK` and
//!   reports `Connected`; the opener reports `Connected` on the `OPEN_ACK`
//!   (or on any `DATA`/`ACK` of that link, should the `OPEN_ACK` be lost).
//!   When both sides open at once, the larger link id wins; the loser's
//!   `OPEN_ACK` names the id it gave up (in `seq`), and an opener ignores
//!   a smaller-id `OPEN` from the same incarnation, so a late copy of the
//!   losing `OPEN` cannot split the link. Hellos carry each side's
//!   incarnation, so an `OPEN` from a restarted peer replaces the old link.
//! - **Data.** Frames carry a sequence number and a cumulative ack. The
//!   receiver hands them up in order, exactly once (a bounded reorder buffer
//!   of `window` frames absorbs gossip reordering); the sender keeps
//!   unacknowledged frames and retransmits them (RTO doubling from `rto` to
//!   `rto_max`) until acked or the link dies. Acks ride on data or go alone
//!   after `ack_delay`, at once after 16 frames or a gap/duplicate.
//! - **Presence.** An open link sends an `ACK` beacon when it has said
//!   nothing for `keepalive`; a link that has heard nothing for `timeout`
//!   is dead: `Disconnected { ConnectionLost }`. A peer that crashes and
//!   comes back opens a new link, which replaces the old one (the old one is
//!   reported lost first).
//! - **Close.** `disconnect` sends `CLOSE` (peer: `Disconnected { Remote }`)
//!   and reports `Disconnected { Local }`. A lost `CLOSE` is covered by the
//!   timeout.
//!
//! So `reliable` and `ordered` hold per link, as the
//! [`Capabilities`](strata_transport::Capabilities) define them: a frame on
//! an open link arrives exactly once and in order unless the link drops.
//! Time comes in as an argument; nothing here does I/O.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_transport::{DisconnectReason, PeerAddr, TransportError, TransportEvent};

use crate::frame::{Body, Header, Kind, LinkFrame};

/// Send an ack at once after this many unacknowledged frames.
const ACK_EVERY: u32 = 16;
/// Link ids we remember as closed or superseded, to ignore late copies.
const CLOSED_MEMORY: usize = 4096;
/// Retransmissions per link per tick, so a long outage does not end in a
/// burst of the whole window.
const RETRANSMIT_BURST: usize = 256;

/// Timers and windows of the link protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct LinkConfig {
    /// First retransmission timeout (for `OPEN` and `DATA`). Default 250 ms.
    pub rto: Duration,
    /// Longest retransmission timeout. Default 4 s.
    pub rto_max: Duration,
    /// An open link that has sent nothing for this long sends a beacon.
    /// Default 5 s.
    pub keepalive: Duration,
    /// A link that has heard nothing for this long (or an `OPEN` unanswered
    /// for this long) is reported lost. Default 30 s.
    pub timeout: Duration,
    /// Delay of a standalone ack. Default 10 ms.
    pub ack_delay: Duration,
    /// Most unacknowledged frames per link; `send` beyond it fails with
    /// `QueueFull`. Also the receiver's reorder window. Default 1024.
    pub window: usize,
    /// Most unacknowledged bytes per link, and most bytes a receiver holds
    /// out of order per link. Default 16 MiB.
    pub window_bytes: usize,
    /// Most links (open or opening) at once: an `OPEN` beyond it is
    /// ignored and `connect` fails with `QueueFull`, so a flood of `OPEN`s
    /// from made-up addresses cannot grow memory without bound. Default
    /// 1024.
    pub max_links: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(250),
            rto_max: Duration::from_secs(4),
            keepalive: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            ack_delay: Duration::from_millis(10),
            window: 1024,
            window_bytes: 16 << 20,
            max_links: 1024,
        }
    }
}

/// What the machine asks its driver to do.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Output {
    /// Publish `frame` on `to`'s installation topic.
    Transmit { to: PeerAddr, frame: LinkFrame },
    /// Report `event` to the transport's user.
    Event(TransportEvent),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Opening { retry_at: Instant, rto: Duration },
    Open,
}

struct Pending {
    seq: u64,
    body: Bytes,
    due: Instant,
    rto: Duration,
}

struct Link {
    id: u64,
    phase: Phase,
    /// We sent the `OPEN` that made this link.
    opened_by_us: bool,
    /// The peer's incarnation, once a hello told us.
    peer_incarnation: Option<u64>,
    created: Instant,
    last_heard: Instant,
    last_sent: Instant,
    next_seq: u64,
    unacked: VecDeque<Pending>,
    unacked_bytes: usize,
    /// No retransmission is due before this (may be early, never late).
    next_retx: Option<Instant>,
    expected: u64,
    reorder: BTreeMap<u64, Bytes>,
    reorder_bytes: usize,
    unacked_rx: u32,
    ack_due: Option<Instant>,
}

impl Link {
    fn new(id: u64, phase: Phase, now: Instant) -> Self {
        Self {
            id,
            opened_by_us: matches!(phase, Phase::Opening { .. }),
            peer_incarnation: None,
            phase,
            created: now,
            last_heard: now,
            last_sent: now,
            next_seq: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            next_retx: None,
            expected: 0,
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            unacked_rx: 0,
            ack_due: None,
        }
    }

    fn header(&self, kind: Kind, seq: u64) -> Header {
        Header {
            kind,
            link: self.id,
            seq,
            ack: self.expected,
        }
    }

    fn next_deadline(&self, cfg: &LinkConfig) -> Instant {
        match self.phase {
            Phase::Opening { retry_at, .. } => retry_at.min(self.created + cfg.timeout),
            Phase::Open => {
                let mut at = (self.last_heard + cfg.timeout).min(self.last_sent + cfg.keepalive);
                if let Some(due) = self.ack_due {
                    at = at.min(due);
                }
                if let Some(due) = self.next_retx {
                    at = at.min(due);
                }
                at
            }
        }
    }

    /// Drops every frame the peer has acknowledged (`ack` = the next
    /// sequence number it expects).
    fn on_ack(&mut self, ack: u64) {
        while let Some(front) = self.unacked.front() {
            if front.seq >= ack {
                break;
            }
            self.unacked_bytes = self.unacked_bytes.saturating_sub(front.body.len());
            self.unacked.pop_front();
        }
    }
}

/// Every link of one node.
pub(crate) struct Links {
    me: PeerAddr,
    incarnation: u64,
    cfg: LinkConfig,
    links: BTreeMap<PeerAddr, Link>,
    ids: HashMap<u64, PeerAddr>,
    closed: VecDeque<u64>,
    closed_set: HashSet<u64>,
    out: VecDeque<Output>,
    rng: StdRng,
}

impl Links {
    /// A node at `me`; link ids are drawn from `seed`.
    pub(crate) fn new(me: PeerAddr, cfg: LinkConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        Self {
            me,
            incarnation: rng.random(),
            cfg,
            links: BTreeMap::new(),
            ids: HashMap::new(),
            closed: VecDeque::new(),
            closed_set: HashSet::new(),
            out: VecDeque::new(),
            rng,
        }
    }

    /// The next output, if any.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether `peer` has an open link.
    #[cfg(test)]
    pub(crate) fn is_open(&self, peer: &PeerAddr) -> bool {
        self.links.get(peer).is_some_and(|l| l.phase == Phase::Open)
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.links.values().map(|l| l.next_deadline(&self.cfg)).min()
    }

    /// Starts opening a link to `peer`; `Ok` without effect if one exists.
    pub(crate) fn connect(&mut self, peer: &PeerAddr, now: Instant) -> Result<(), TransportError> {
        if *peer == self.me {
            return Err(TransportError::Unsupported("connecting to itself"));
        }
        if self.links.contains_key(peer) {
            return Ok(());
        }
        if self.links.len() >= self.cfg.max_links {
            return Err(TransportError::QueueFull);
        }
        let id = self.fresh_id();
        let link = Link::new(
            id,
            Phase::Opening {
                retry_at: now + self.cfg.rto,
                rto: self.cfg.rto,
            },
            now,
        );
        self.transmit_open(peer, &link);
        self.ids.insert(id, peer.clone());
        self.links.insert(peer.clone(), link);
        Ok(())
    }

    /// Closes the link to `peer`.
    pub(crate) fn disconnect(&mut self, peer: &PeerAddr) -> Result<(), TransportError> {
        let Some(link) = self.remove(peer) else {
            return Err(TransportError::NotConnected(peer.clone()));
        };
        let frame = LinkFrame {
            header: link.header(Kind::Close, 0),
            body: Body::None,
        };
        self.out.push_back(Output::Transmit {
            to: peer.clone(),
            frame,
        });
        self.report_down(peer, DisconnectReason::Local);
        Ok(())
    }

    /// Queues `body` on the open link to `peer`.
    pub(crate) fn send(&mut self, peer: &PeerAddr, body: Bytes, now: Instant) -> Result<(), TransportError> {
        let cfg = self.cfg;
        let Some(link) = self.links.get_mut(peer).filter(|l| l.phase == Phase::Open) else {
            return Err(TransportError::NotConnected(peer.clone()));
        };
        if link.unacked.len() >= cfg.window || link.unacked_bytes.saturating_add(body.len()) > cfg.window_bytes {
            return Err(TransportError::QueueFull);
        }
        let seq = link.next_seq;
        link.next_seq += 1;
        link.unacked_bytes += body.len();
        let due = now + cfg.rto;
        link.unacked.push_back(Pending {
            seq,
            body: body.clone(),
            due,
            rto: cfg.rto,
        });
        link.next_retx = Some(link.next_retx.map_or(due, |at| at.min(due)));
        link.last_sent = now;
        link.ack_due = None;
        link.unacked_rx = 0;
        let frame = LinkFrame {
            header: link.header(Kind::Data, seq),
            body: Body::Data(body),
        };
        self.out.push_back(Output::Transmit {
            to: peer.clone(),
            frame,
        });
        Ok(())
    }

    /// Handles a link frame received on our installation topic.
    pub(crate) fn handle(&mut self, frame: LinkFrame, now: Instant) {
        let LinkFrame { header, body } = frame;
        if header.kind == Kind::Open {
            if let Body::Hello { from, to, incarnation } = body {
                self.on_open(header.link, from, &to, incarnation, now);
            }
            return;
        }
        let Some(peer) = self.ids.get(&header.link).cloned() else {
            tracing::trace!(link = header.link, kind = ?header.kind, "frame for an unknown link ignored");
            return;
        };
        if let Body::Hello { from, incarnation, .. } = &body
            && (*from != peer
                || self
                    .links
                    .get(&peer)
                    .and_then(|l| l.peer_incarnation)
                    .is_some_and(|known| known != *incarnation))
        {
            tracing::trace!(
                link = header.link,
                "OPEN_ACK from another sender or incarnation ignored"
            );
            return;
        }
        if header.kind == Kind::Close {
            if self.remove(&peer).is_some() {
                self.report_down(&peer, DisconnectReason::Remote);
            }
            return;
        }
        // Any other frame of a link we are opening proves the peer accepted
        // it (the OPEN_ACK may have been lost).
        self.mark_open(&peer, now);
        if header.kind == Kind::OpenAck && header.seq != 0 {
            self.remember_closed(header.seq);
        }
        let cfg = self.cfg;
        let Some(link) = self.links.get_mut(&peer) else {
            return;
        };
        if let Body::Hello { incarnation, .. } = &body {
            link.peer_incarnation = Some(*incarnation);
        }
        link.last_heard = now;
        // An ack beyond what we sent is nonsense: it acknowledges what we sent.
        link.on_ack(header.ack.min(link.next_seq));
        if let (Kind::Data, Body::Data(bytes)) = (header.kind, body) {
            self.on_data(&peer, header.seq, bytes, now, &cfg);
        }
    }

    /// Retransmits, acks, beacons and expires links whose time has come.
    pub(crate) fn tick(&mut self, now: Instant) {
        let cfg = self.cfg;
        let mut lost = Vec::new();
        let mut transmit = Vec::new();
        for (peer, link) in &mut self.links {
            match link.phase {
                Phase::Opening { .. } if now >= link.created + cfg.timeout => lost.push(peer.clone()),
                Phase::Opening { retry_at, rto } => {
                    if now >= retry_at {
                        let rto = (rto * 2).min(cfg.rto_max);
                        link.phase = Phase::Opening {
                            retry_at: now + rto,
                            rto,
                        };
                        transmit.push((peer.clone(), None));
                    }
                }
                Phase::Open if now >= link.last_heard + cfg.timeout => lost.push(peer.clone()),
                Phase::Open => {
                    let mut sent_data = false;
                    for pending in link.unacked.iter_mut().filter(|p| p.due <= now).take(RETRANSMIT_BURST) {
                        pending.rto = (pending.rto * 2).min(cfg.rto_max);
                        pending.due = now + pending.rto;
                        transmit.push((
                            peer.clone(),
                            Some(LinkFrame {
                                header: Header {
                                    kind: Kind::Data,
                                    link: link.id,
                                    seq: pending.seq,
                                    ack: link.expected,
                                },
                                body: Body::Data(pending.body.clone()),
                            }),
                        ));
                        sent_data = true;
                    }
                    link.next_retx = link.unacked.iter().map(|p| p.due).min();
                    let ack_due = link.ack_due.is_some_and(|at| now >= at);
                    let quiet = now >= link.last_sent + cfg.keepalive;
                    if !sent_data && (ack_due || quiet) {
                        transmit.push((
                            peer.clone(),
                            Some(LinkFrame {
                                header: link.header(Kind::Ack, 0),
                                body: Body::None,
                            }),
                        ));
                        sent_data = true;
                    }
                    if sent_data {
                        link.last_sent = now;
                        link.ack_due = None;
                        link.unacked_rx = 0;
                    }
                }
            }
        }
        for (peer, frame) in transmit {
            match frame {
                Some(frame) => self.out.push_back(Output::Transmit { to: peer, frame }),
                None => {
                    if let Some(link) = self.links.get(&peer) {
                        let open = self.hello(Kind::Open, &peer, link.id, 0);
                        self.out.push_back(Output::Transmit { to: peer, frame: open });
                    }
                }
            }
        }
        for peer in lost {
            self.remove(&peer);
            self.report_down(&peer, DisconnectReason::ConnectionLost);
        }
    }

    fn on_open(&mut self, id: u64, from: PeerAddr, to: &PeerAddr, incarnation: u64, now: Instant) {
        if *to != self.me || from == self.me || id == 0 || self.closed_set.contains(&id) {
            tracing::trace!(%from, %to, link = id, "OPEN ignored: not for us, or a late copy");
            return;
        }
        let mut superseded = 0;
        if let Some(existing) = self.links.get(&from) {
            match existing.phase {
                Phase::Open if existing.id == id => {
                    // A retransmitted OPEN: our OPEN_ACK was lost.
                    let ack = self.hello(Kind::OpenAck, &from, id, 0);
                    self.out.push_back(Output::Transmit { to: from, frame: ack });
                    return;
                }
                // Both opened at once: the larger id wins.
                Phase::Opening { .. } if existing.id > id => return,
                Phase::Opening { .. } => {
                    superseded = existing.id;
                    self.remove(&from);
                }
                Phase::Open => {
                    let restarted = existing.peer_incarnation.is_some_and(|i| i != incarnation);
                    if !restarted && existing.opened_by_us && existing.id > id {
                        // A late copy of the OPEN that lost a crossing: the
                        // same incarnation would not open with a smaller id
                        // while it holds our link.
                        return;
                    }
                    // The peer restarted or gave up on the old link.
                    self.remove(&from);
                    self.report_down(&from, DisconnectReason::ConnectionLost);
                }
            }
        } else if self.links.len() >= self.cfg.max_links {
            tracing::warn!(%from, "OPEN ignored: too many links");
            return;
        }
        let mut link = Link::new(id, Phase::Open, now);
        link.peer_incarnation = Some(incarnation);
        let ack = self.hello(Kind::OpenAck, &from, id, superseded);
        self.ids.insert(id, from.clone());
        self.links.insert(from.clone(), link);
        self.out.push_back(Output::Transmit {
            to: from.clone(),
            frame: ack,
        });
        self.out
            .push_back(Output::Event(TransportEvent::Connected { peer: from }));
    }

    fn mark_open(&mut self, peer: &PeerAddr, now: Instant) {
        if let Some(link) = self.links.get_mut(peer)
            && matches!(link.phase, Phase::Opening { .. })
        {
            link.phase = Phase::Open;
            link.last_sent = now;
            self.out
                .push_back(Output::Event(TransportEvent::Connected { peer: peer.clone() }));
        }
    }

    fn on_data(&mut self, peer: &PeerAddr, seq: u64, bytes: Bytes, now: Instant, cfg: &LinkConfig) {
        let Some(link) = self.links.get_mut(peer) else {
            return;
        };
        let window = u64::try_from(cfg.window).unwrap_or(u64::MAX);
        let mut ack_now = false;
        if seq == link.expected {
            link.expected += 1;
            self.out.push_back(Output::Event(TransportEvent::Frame {
                from: peer.clone(),
                bytes,
            }));
            while let Some(next) = link.reorder.remove(&link.expected) {
                link.reorder_bytes = link.reorder_bytes.saturating_sub(next.len());
                link.expected += 1;
                self.out.push_back(Output::Event(TransportEvent::Frame {
                    from: peer.clone(),
                    bytes: next,
                }));
            }
            // The gap just closed: tell the sender at once.
            ack_now |= !link.reorder.is_empty();
        } else if seq > link.expected && seq - link.expected < window {
            // Held only within the byte bound too: a peer cannot park a
            // window of maximal frames here. What is refused is not acked,
            // so its sender retransmits it.
            if !link.reorder.contains_key(&seq) && link.reorder_bytes.saturating_add(bytes.len()) <= cfg.window_bytes {
                link.reorder_bytes += bytes.len();
                link.reorder.insert(seq, bytes);
            }
            ack_now = true;
        } else {
            // A duplicate (our ack was lost or late) or beyond the window.
            ack_now = true;
        }
        link.unacked_rx += 1;
        if ack_now || link.unacked_rx >= ACK_EVERY {
            link.ack_due = Some(now);
        } else if link.ack_due.is_none() {
            link.ack_due = Some(now + cfg.ack_delay);
        }
        if link.ack_due.is_some_and(|at| at <= now) {
            link.ack_due = None;
            link.unacked_rx = 0;
            link.last_sent = now;
            let frame = LinkFrame {
                header: link.header(Kind::Ack, 0),
                body: Body::None,
            };
            self.out.push_back(Output::Transmit {
                to: peer.clone(),
                frame,
            });
        }
    }

    fn transmit_open(&mut self, peer: &PeerAddr, link: &Link) {
        let frame = self.hello(Kind::Open, peer, link.id, 0);
        self.out.push_back(Output::Transmit {
            to: peer.clone(),
            frame,
        });
    }

    fn remove(&mut self, peer: &PeerAddr) -> Option<Link> {
        let link = self.links.remove(peer)?;
        self.ids.remove(&link.id);
        self.remember_closed(link.id);
        Some(link)
    }

    fn report_down(&mut self, peer: &PeerAddr, reason: DisconnectReason) {
        self.out.push_back(Output::Event(TransportEvent::Disconnected {
            peer: peer.clone(),
            reason,
        }));
    }

    fn remember_closed(&mut self, id: u64) {
        if self.closed_set.insert(id) {
            self.closed.push_back(id);
            if self.closed.len() > CLOSED_MEMORY
                && let Some(old) = self.closed.pop_front()
            {
                self.closed_set.remove(&old);
            }
        }
    }

    /// An `OPEN` or `OPEN_ACK` (`seq` = the superseded link id) for `peer`.
    fn hello(&self, kind: Kind, peer: &PeerAddr, id: u64, seq: u64) -> LinkFrame {
        LinkFrame {
            header: Header {
                kind,
                link: id,
                seq,
                ack: 0,
            },
            body: Body::Hello {
                from: self.me.clone(),
                to: peer.clone(),
                incarnation: self.incarnation,
            },
        }
    }

    fn fresh_id(&mut self) -> u64 {
        loop {
            let id: u64 = self.rng.random();
            if id != 0 && !self.ids.contains_key(&id) && !self.closed_set.contains(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
