//! The publish queue: messages wait here until gossipsub can send them.
//!
//! Right after a dial, gossipsub refuses to publish
//! (`NoPeersSubscribedToTopic`) until the remote's SUBSCRIBE arrives,
//! 20–70 ms on loopback; a publish at start-up would otherwise be lost.
//! Every outgoing message goes through this queue: the driver flushes it at
//! once, and again whenever a peer subscribes to our pubsub topic or a retry
//! timer fires. A message leaves the queue when gossipsub accepts it, or
//! when it has waited longer than the TTL. Bounded by count and bytes;
//! entries with the same dedupe key as one still waiting are not queued
//! twice (a link retransmission of a frame that never left).

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use strata_transport::TransportError;

use crate::config::QueueConfig;

/// One message waiting to be published.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) content_topic: String,
    pub(crate) payload: Bytes,
    pub(crate) meta: Option<Vec<u8>>,
    pub(crate) ephemeral: bool,
    pub(crate) dedupe: Option<[u8; 32]>,
    /// `payload` is a complete serialized `WakuMessage`, published as is
    /// (a replayed message re-published under its own id).
    pub(crate) raw: bool,
}

struct Entry {
    message: Outgoing,
    deadline: Instant,
}

/// What happened to a publish attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Attempt {
    /// Sent: remove it.
    Sent,
    /// Not now (no peer yet, queues full): keep it and stop flushing.
    Later,
    /// Never (too large, duplicate): drop it and go on.
    Drop,
}

/// Counters, for status and tests.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct QueueStats {
    pub(crate) sent: u64,
    pub(crate) expired: u64,
    pub(crate) dropped: u64,
    pub(crate) deduped: u64,
}

pub(crate) struct PublishQueue {
    cfg: QueueConfig,
    entries: VecDeque<Entry>,
    bytes: usize,
    keys: HashSet<[u8; 32]>,
    stats: QueueStats,
}

impl PublishQueue {
    pub(crate) fn new(cfg: QueueConfig) -> Self {
        Self {
            cfg,
            entries: VecDeque::new(),
            bytes: 0,
            keys: HashSet::new(),
            stats: QueueStats::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Queues `message`; `QueueFull` past the bounds.
    pub(crate) fn push(&mut self, message: Outgoing, now: Instant) -> Result<(), TransportError> {
        if let Some(key) = message.dedupe
            && self.keys.contains(&key)
        {
            self.stats.deduped += 1;
            return Ok(());
        }
        let len = message.payload.len();
        if self.entries.len() >= self.cfg.max_messages || self.bytes.saturating_add(len) > self.cfg.max_bytes {
            return Err(TransportError::QueueFull);
        }
        if let Some(key) = message.dedupe {
            self.keys.insert(key);
        }
        self.bytes += len;
        self.entries.push_back(Entry {
            message,
            deadline: now + self.cfg.ttl,
        });
        Ok(())
    }

    /// Offers queued messages, oldest first, to `publish` until it answers
    /// [`Attempt::Later`]; drops expired ones on the way.
    pub(crate) fn flush(&mut self, now: Instant, mut publish: impl FnMut(&Outgoing) -> Attempt) {
        while let Some(entry) = self.entries.front() {
            let outcome = if entry.deadline <= now {
                tracing::warn!(topic = %entry.message.content_topic, "publish queue: message expired unsent");
                self.stats.expired += 1;
                Attempt::Drop
            } else {
                publish(&entry.message)
            };
            match outcome {
                Attempt::Later => return,
                Attempt::Sent => self.stats.sent += 1,
                Attempt::Drop => self.stats.dropped += 1,
            }
            if let Some(entry) = self.entries.pop_front() {
                self.bytes = self.bytes.saturating_sub(entry.message.payload.len());
                if let Some(key) = entry.message.dedupe {
                    self.keys.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn msg(payload: &'static [u8], dedupe: Option<u8>) -> Outgoing {
        Outgoing {
            content_topic: "/a/1/b/proto".into(),
            payload: Bytes::from_static(payload),
            meta: None,
            ephemeral: false,
            dedupe: dedupe.map(|d| [d; 32]),
            raw: false,
        }
    }

    #[test]
    fn waits_until_gossipsub_takes_it_then_keeps_order() {
        let mut q = PublishQueue::new(QueueConfig::default());
        let now = Instant::now();
        for p in [&b"1"[..], b"2", b"3"] {
            q.push(msg(p, None), now).unwrap();
        }
        q.flush(now, |_| Attempt::Later);
        assert_eq!(q.len(), 3);
        let mut sent = Vec::new();
        q.flush(now, |m| {
            sent.push(m.payload.clone());
            Attempt::Sent
        });
        assert_eq!(sent, vec!["1", "2", "3"]);
        assert!(q.is_empty());
        assert_eq!(q.stats().sent, 3);
    }

    #[test]
    fn bounded_deduped_and_expiring() {
        let cfg = QueueConfig {
            max_messages: 2,
            max_bytes: 100,
            ttl: Duration::from_secs(1),
        };
        let mut q = PublishQueue::new(cfg);
        let now = Instant::now();
        q.push(msg(b"a", Some(1)), now).unwrap();
        q.push(msg(b"a", Some(1)), now).unwrap();
        assert_eq!((q.len(), q.stats().deduped), (1, 1));
        q.push(msg(b"b", None), now).unwrap();
        assert_eq!(q.push(msg(b"c", None), now), Err(TransportError::QueueFull));
        q.flush(now + Duration::from_secs(2), |_| Attempt::Sent);
        assert_eq!((q.len(), q.stats().expired, q.stats().sent), (0, 2, 0));
        // The key is free again once its entry left.
        q.push(msg(b"a", Some(1)), now).unwrap();
        assert_eq!(q.len(), 1);
        let big = Outgoing {
            payload: Bytes::from(vec![0; 101]),
            ..msg(b"", None)
        };
        assert_eq!(q.push(big, now), Err(TransportError::QueueFull));
    }
}
