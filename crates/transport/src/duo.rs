//! [`Duo`]: two transports behind one, for a node that is reachable both
//! ways (PeerJS/WebRTC and libp2p gossip) under one address.
//!
//! Both inner transports address a peer by the same string (Strata uses the
//! installation id for both), so the session layer above sees one peer and
//! runs one session, whichever path its frames take. The rules:
//!
//! - **Links.** A peer is connected while *either* side has a link to it:
//!   the merged stream reports `Connected` when the first link opens and
//!   `Disconnected` only when the last one closes. A second link opening or
//!   one of two closing is silent, because the session keeps running.
//! - **Sending** prefers the first transport (`A`, point-to-point WebRTC in
//!   Strata) and falls back to the second when `A` has no link or refuses
//!   the frame. Frames of one session may so travel both paths; the session
//!   layer already tolerates the reordering that can cause.
//! - **Connecting** tries both at once and succeeds with the first that
//!   does; the slower attempt goes on and becomes the standby link.
//! - **Topics**: subscriptions go to every side that can broadcast, so
//!   publications arrive either way; a publication goes out on one side
//!   only (the first that can broadcast), so it arrives once.
//! - **Capabilities** are what holds whichever path a frame takes: reliable
//!   and ordered only if both are, the smaller frame limit.
//!
//! Either side may be absent (turned off by configuration); the duo then
//! behaves as the one it has.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::Either;
use tokio::sync::mpsc;

use crate::{Capabilities, EventStream, PeerAddr, Topic, Transport, TransportError, TransportEvent};

/// Which side of a [`Duo`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

/// The links a peer has, per side.
#[derive(Clone, Copy, Default, Debug)]
struct Links {
    a: bool,
    b: bool,
}

impl Links {
    fn set(&mut self, side: Side, up: bool) {
        match side {
            Side::A => self.a = up,
            Side::B => self.b = up,
        }
    }

    fn any(self) -> bool {
        self.a || self.b
    }
}

type ConnectFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>;

type LinkTable = Arc<Mutex<HashMap<PeerAddr, Links>>>;

/// Two transports as one. See the [module docs](self).
#[derive(Clone)]
pub struct Duo<A, B> {
    a: Option<A>,
    b: Option<B>,
    local: PeerAddr,
    links: LinkTable,
}

impl<A: Transport, B: Transport> Duo<A, B> {
    /// Joins the two transports (either may be absent, not both) and merges
    /// their event streams into one of `capacity` events. Both must have
    /// the same local address. Spawns the merging task on the current
    /// tokio runtime; it ends when both inner streams end.
    pub fn new(
        a: Option<(A, EventStream)>,
        b: Option<(B, EventStream)>,
        capacity: usize,
    ) -> Result<(Self, EventStream), TransportError> {
        let local = match (&a, &b) {
            (Some((a, _)), Some((b, _))) if a.local_addr() != b.local_addr() => {
                return Err(TransportError::Internal(format!(
                    "the two transports have different local addresses ({} and {})",
                    a.local_addr(),
                    b.local_addr()
                )));
            }
            (Some((a, _)), _) => a.local_addr(),
            (None, Some((b, _))) => b.local_addr(),
            (None, None) => return Err(TransportError::Unsupported("a duo of no transport")),
        };
        let links = LinkTable::default();
        let (a, a_events) = a.unzip();
        let (b, b_events) = b.unzip();
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let a_events = a_events.map(|s| s.map(|e| (Side::A, e)).boxed());
        let b_events = b_events.map(|s| s.map(|e| (Side::B, e)).boxed());
        let merged = futures::stream::select(
            a_events.unwrap_or_else(|| futures::stream::empty().boxed()),
            b_events.unwrap_or_else(|| futures::stream::empty().boxed()),
        );
        tokio::spawn(merge(merged, Arc::clone(&links), tx));
        Ok((Self { a, b, local, links }, EventStream::new(rx)))
    }

    /// The first transport, if configured.
    pub fn first(&self) -> Option<&A> {
        self.a.as_ref()
    }

    /// The second transport, if configured.
    pub fn second(&self) -> Option<&B> {
        self.b.as_ref()
    }

    fn links(&self, peer: &PeerAddr) -> Links {
        links_of(&self.links, peer)
    }

    /// Which sides hold a link to `peer` now: `(first, second)`.
    pub fn links_to(&self, peer: &PeerAddr) -> (bool, bool) {
        let links = self.links(peer);
        (links.a, links.b)
    }
}

/// Forwards both sides' events, folding their link events into one link
/// per peer.
async fn merge(
    mut events: impl futures::Stream<Item = (Side, TransportEvent)> + Unpin,
    links: LinkTable,
    tx: mpsc::Sender<TransportEvent>,
) {
    while let Some((side, event)) = events.next().await {
        let forward = match event {
            TransportEvent::Connected { peer } => {
                let was_up = update(&links, &peer, side, true);
                (!was_up).then_some(TransportEvent::Connected { peer })
            }
            TransportEvent::Disconnected { peer, reason } => {
                let was_up = update(&links, &peer, side, false);
                let still_up = links_of(&links, &peer).any();
                (was_up && !still_up).then_some(TransportEvent::Disconnected { peer, reason })
            }
            other => Some(other),
        };
        if let Some(event) = forward
            && tx.send(event).await.is_err()
        {
            return; // nobody listens any more
        }
    }
}

fn links_of(links: &LinkTable, peer: &PeerAddr) -> Links {
    links
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(peer)
        .copied()
        .unwrap_or_default()
}

/// Sets one side's link; returns whether the peer had any link before.
fn update(links: &LinkTable, peer: &PeerAddr, side: Side, up: bool) -> bool {
    let mut table = links.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = table.entry(peer.clone()).or_default();
    let before = entry.any();
    entry.set(side, up);
    if !entry.any() {
        table.remove(peer);
    }
    before
}

impl<A: Transport, B: Transport> Transport for Duo<A, B> {
    fn local_addr(&self) -> PeerAddr {
        self.local.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let caps = [
            self.a.as_ref().map(Transport::capabilities),
            self.b.as_ref().map(Transport::capabilities),
        ];
        let caps = caps.iter().flatten();
        Capabilities {
            point_to_point: caps.clone().any(|c| c.point_to_point),
            broadcast: caps.clone().any(|c| c.broadcast),
            store_and_forward: caps.clone().any(|c| c.store_and_forward),
            reliable: caps.clone().all(|c| c.reliable),
            ordered: caps.clone().all(|c| c.ordered),
            max_frame_len: caps.map(|c| c.max_frame_len).min().unwrap_or(0),
        }
    }

    async fn connect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        match (&self.a, &self.b) {
            (Some(a), Some(b)) => {
                // Spawned, so the slower attempt is not cancelled when the
                // faster one wins: it becomes the standby link.
                let attempt = |t: Box<dyn FnOnce() -> ConnectFuture + Send>| tokio::spawn(t());
                let (a, b, pa, pb) = (a.clone(), b.clone(), peer.clone(), peer.clone());
                let a = attempt(Box::new(move || Box::pin(async move { a.connect(&pa).await })));
                let b = attempt(Box::new(move || Box::pin(async move { b.connect(&pb).await })));
                let joined = |r: Result<Result<(), TransportError>, tokio::task::JoinError>| {
                    r.unwrap_or_else(|e| Err(TransportError::Internal(format!("connect task: {e}"))))
                };
                match futures::future::select(a, b).await {
                    Either::Left((first, other)) | Either::Right((first, other)) => match joined(first) {
                        Ok(()) => Ok(()),
                        // One failed: the other decides.
                        Err(_) => joined(other.await),
                    },
                }
            }
            (Some(a), None) => a.connect(peer).await,
            (None, Some(b)) => b.connect(peer).await,
            (None, None) => Err(TransportError::Closed),
        }
    }

    async fn disconnect(&self, peer: &PeerAddr) -> Result<(), TransportError> {
        let mut result = Err(TransportError::NotConnected(peer.clone()));
        if let Some(a) = &self.a
            && a.disconnect(peer).await.is_ok()
        {
            result = Ok(());
        }
        if let Some(b) = &self.b
            && b.disconnect(peer).await.is_ok()
        {
            result = Ok(());
        }
        result
    }

    async fn send(&self, to: &PeerAddr, frame: Bytes) -> Result<(), TransportError> {
        let links = self.links(to);
        let mut result = Err(TransportError::NotConnected(to.clone()));
        if let Some(a) = self.a.as_ref().filter(|_| links.a) {
            result = a.send(to, frame.clone()).await;
            if result.is_ok() {
                return result;
            }
        }
        if let Some(b) = self.b.as_ref().filter(|_| links.b) {
            result = b.send(to, frame).await;
        }
        result
    }

    async fn subscribe(&self, topic: &Topic) -> Result<(), TransportError> {
        let mut result = Err(TransportError::Unsupported("no transport here can broadcast"));
        if let Some(a) = self.a.as_ref().filter(|a| a.capabilities().broadcast) {
            result = a.subscribe(topic).await;
        }
        if let Some(b) = self.b.as_ref().filter(|b| b.capabilities().broadcast) {
            result = b.subscribe(topic).await.or(result);
        }
        result
    }

    async fn unsubscribe(&self, topic: &Topic) -> Result<(), TransportError> {
        let mut result = Err(TransportError::Unsupported("no transport here can broadcast"));
        if let Some(a) = self.a.as_ref().filter(|a| a.capabilities().broadcast) {
            result = a.unsubscribe(topic).await;
        }
        if let Some(b) = self.b.as_ref().filter(|b| b.capabilities().broadcast) {
            result = b.unsubscribe(topic).await.or(result);
        }
        result
    }

    async fn publish(&self, topic: &Topic, frame: Bytes) -> Result<(), TransportError> {
        // One side only, or subscribers of both would get it twice.
        if let Some(a) = self.a.as_ref().filter(|a| a.capabilities().broadcast) {
            return a.publish(topic, frame).await;
        }
        if let Some(b) = self.b.as_ref().filter(|b| b.capabilities().broadcast) {
            return b.publish(topic, frame).await;
        }
        Err(TransportError::Unsupported("no transport here can broadcast"))
    }
}
