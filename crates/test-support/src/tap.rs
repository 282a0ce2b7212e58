//! A transport that records every frame its node sends and publishes:
//! tests compare them with what crossed a broker, benches count them.
//! Everything else is the wrapped transport.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_transport::{Capabilities, PeerAddr, Topic, Transport, TransportError};

/// Records the frames sent and published through `T`.
#[derive(Clone)]
pub struct Tap<T> {
    inner: T,
    sent: Arc<Mutex<Vec<Bytes>>>,
    published: Arc<Mutex<Vec<Bytes>>>,
}

impl<T> Tap<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            sent: Arc::new(Mutex::new(Vec::new())),
            published: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every frame sent point-to-point so far.
    pub fn sent(&self) -> Vec<Bytes> {
        self.sent.lock().unwrap().clone()
    }

    /// Every frame published so far.
    pub fn published(&self) -> Vec<Bytes> {
        self.published.lock().unwrap().clone()
    }
}

impl<T: Transport> Transport for Tap<T> {
    fn local_addr(&self) -> PeerAddr {
        self.inner.local_addr()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn connect(&self, peer: &PeerAddr) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.connect(peer)
    }

    fn disconnect(&self, peer: &PeerAddr) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.disconnect(peer)
    }

    fn send(&self, to: &PeerAddr, frame: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.sent.lock().unwrap().push(frame.clone());
        self.inner.send(to, frame)
    }

    fn subscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.subscribe(topic)
    }

    fn unsubscribe(&self, topic: &Topic) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.inner.unsubscribe(topic)
    }

    fn publish(&self, topic: &Topic, frame: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.published.lock().unwrap().push(frame.clone());
        self.inner.publish(topic, frame)
    }
}
