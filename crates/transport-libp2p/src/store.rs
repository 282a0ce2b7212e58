//! Store-and-forward and catch-up: nodes keep recent messages and replay
//! them to nodes that missed them.
//!
//! Every node keeps the valid, non-ephemeral messages it relays or
//! publishes in a store bounded by count, bytes and age
//! ([`StoreConfig`]). A node asks for messages by publishing a query
//! (protobuf `StoreQuery { repeated string content_topics = 1; sint64
//! since_ns = 2; bytes responder = 3; }`) on [`QUERY_TOPIC`]; the answering
//! node publishes each matching message it holds, byte for byte, as the
//! payload of a message on [`REPLAY_TOPIC`] (it cannot republish it
//! verbatim: the gossip id is the SHA-256 of the bytes, already in its
//! duplicate cache). A node receiving a replay of a message it has not seen
//! handles it as if it had just arrived **and re-publishes the original
//! bytes**, under their original gossip id, so that its own neighbours that
//! missed it get it while everyone else drops it as a duplicate.
//!
//! Two queries use this:
//! - **Catch-up**, the cure for the cold-start race: gossipsub forwards a
//!   message only to the mesh of the moment, so a neighbour whose SUBSCRIBE
//!   arrives a few milliseconds later misses it for good. When a peer
//!   subscribes to our pubsub topic, we ask *that peer* (`responder` = its
//!   peer id) for everything it saw in the last [`CATCH_UP`]; our SUBSCRIBE
//!   reached it before the query (same stream), so whatever it received
//!   after answering reaches us through the mesh or gossip.
//! - **Store-and-forward**: a node that starts, or subscribes to a topic,
//!   asks for everything kept on its content topics; nodes configured with
//!   [`StoreConfig::serve`] answer. Publications (bundles, group traffic)
//!   thus reach a node that was offline when they were sent; link frames
//!   reach their link if the same incarnation returns within the link
//!   timeout (a restarted node has new links and ignores them; the session
//!   layer resends from its outbox).
//!
//! Replays and queries travel by gossip, so every relay carries them: the
//! cost is bounded ([`MAX_REPLAY`] messages per query, the publish queue's
//! bounds) and fine for small networks; a point-to-point store protocol
//! (13/WAKU2-STORE style, request-response) is the step up.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;

/// Where store queries are published.
pub const QUERY_TOPIC: &str = "/strata/1/store-query/proto";
/// Where stores publish replays.
pub const REPLAY_TOPIC: &str = "/strata/1/store-replay/proto";

/// Most content topics in one query.
pub(crate) const MAX_QUERY_TOPICS: usize = 64;
/// Most messages replayed for one query.
pub const MAX_REPLAY: usize = 256;

/// How far back a catch-up query reaches: comfortably more than the time
/// between a connection and the SUBSCRIBE exchange.
pub const CATCH_UP: Duration = Duration::from_secs(3);

/// Bounds of a node's message store, and whether it serves returning
/// nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Most messages kept. Default 512.
    pub max_messages: usize,
    /// Most bytes kept. Default 8 MiB.
    pub max_bytes: usize,
    /// Messages older than this are dropped. Default 2 min.
    pub max_age: Duration,
    /// Answer store-and-forward queries from any node (catch-up queries
    /// addressed to this node are always answered). Default off: relays
    /// meant to hold messages for offline nodes turn it on, usually with
    /// larger bounds.
    pub serve: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_messages: 512,
            max_bytes: 8 << 20,
            max_age: Duration::from_secs(120),
            serve: false,
        }
    }
}

impl StoreConfig {
    /// A store for a relay that holds messages for nodes that come back:
    /// 4096 messages, 64 MiB, 10 minutes, serving.
    pub fn serving() -> Self {
        Self {
            max_messages: 4096,
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(600),
            serve: true,
        }
    }
}

/// A request for stored messages.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct StoreQuery {
    /// The content topics wanted; empty means all.
    #[prost(string, repeated, tag = "1")]
    pub(crate) content_topics: Vec<String>,
    /// Only messages that arrived at or after this time (ns since the Unix
    /// epoch, the answerer's clock).
    #[prost(sint64, tag = "2")]
    pub(crate) since_ns: i64,
    /// The libp2p peer id (bytes) that should answer; empty means every
    /// serving store.
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) responder: Vec<u8>,
}

impl StoreQuery {
    /// Parses a query; `None` if malformed or over the topic cap.
    pub(crate) fn decode_bounded(bytes: &[u8]) -> Option<Self> {
        let query = Self::decode(bytes).ok()?;
        (query.content_topics.len() <= MAX_QUERY_TOPICS).then_some(query)
    }
}

struct Stored {
    at: Instant,
    arrived_ns: i64,
    content_topic: String,
    data: Bytes,
}

/// The bounded message store of a relay.
pub(crate) struct MessageStore {
    cfg: StoreConfig,
    entries: VecDeque<Stored>,
    bytes: usize,
}

impl MessageStore {
    pub(crate) fn new(cfg: StoreConfig) -> Self {
        Self {
            cfg,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Keeps `data` (a serialized `WakuMessage` on `content_topic`, arrived
    /// at `now` / `now_ns`), evicting the oldest entries past the bounds.
    pub(crate) fn insert(&mut self, content_topic: &str, data: Bytes, now: Instant, now_ns: i64) {
        if data.len() > self.cfg.max_bytes {
            return;
        }
        self.bytes += data.len();
        self.entries.push_back(Stored {
            at: now,
            arrived_ns: now_ns,
            content_topic: content_topic.to_owned(),
            data,
        });
        self.evict(now);
    }

    /// The stored messages on any of `topics` (all if empty) that arrived
    /// at or after `since_ns`, oldest first, at most [`MAX_REPLAY`] (the
    /// newest ones if more match).
    pub(crate) fn matching(&mut self, topics: &BTreeSet<String>, since_ns: i64, now: Instant) -> Vec<Bytes> {
        self.evict(now);
        let mut found: Vec<Bytes> = self
            .entries
            .iter()
            .rev()
            .filter(|e| e.arrived_ns >= since_ns && (topics.is_empty() || topics.contains(&e.content_topic)))
            .take(MAX_REPLAY)
            .map(|e| e.data.clone())
            .collect();
        found.reverse();
        found
    }

    /// Whether this store answers queries not addressed to it.
    pub(crate) fn serves(&self) -> bool {
        self.cfg.serve
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn evict(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let expired = now.saturating_duration_since(front.at) > self.cfg.max_age;
            if !expired && self.entries.len() <= self.cfg.max_messages && self.bytes <= self.cfg.max_bytes {
                break;
            }
            if let Some(old) = self.entries.pop_front() {
                self.bytes = self.bytes.saturating_sub(old.data.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn bounded_by_count_bytes_and_age() {
        let cfg = StoreConfig {
            max_messages: 3,
            max_bytes: 10,
            max_age: Duration::from_secs(60),
            serve: false,
        };
        let mut store = MessageStore::new(cfg);
        let now = Instant::now();
        for i in 0..5u8 {
            store.insert("/a/1/x/proto", Bytes::from(vec![i; 2]), now, i64::from(i));
        }
        assert_eq!(store.len(), 3, "count bound");
        let kept = store.matching(&topics(&["/a/1/x/proto"]), 0, now);
        assert_eq!(kept, vec![vec![2; 2], vec![3; 2], vec![4; 2]]);
        // `since` and the all-topics query.
        assert_eq!(store.matching(&topics(&[]), 4, now), vec![vec![4; 2]]);
        store.insert("/a/1/y/proto", Bytes::from(vec![9; 6]), now, 9);
        assert!(store.bytes <= 10, "byte bound");
        assert_eq!(store.matching(&topics(&["/a/1/y/proto"]), 0, now).len(), 1);
        assert!(store.matching(&topics(&["/a/1/z/proto"]), 0, now).is_empty());
        let later = now + Duration::from_secs(61);
        assert!(
            store.matching(&topics(&["/a/1/y/proto"]), 0, later).is_empty(),
            "age bound"
        );
        assert_eq!(store.len(), 0);
        // A message larger than the whole store is not kept.
        store.insert("/a/1/x/proto", Bytes::from(vec![0; 11]), later, 10);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn queries_are_bounded() {
        let ok = StoreQuery {
            content_topics: vec!["/a/1/x/proto".into()],
            since_ns: -5,
            responder: vec![1, 2],
        };
        assert_eq!(StoreQuery::decode_bounded(&ok.encode_to_vec()), Some(ok));
        let many = StoreQuery {
            content_topics: vec!["/a/1/x/proto".into(); MAX_QUERY_TOPICS + 1],
            ..StoreQuery::default()
        };
        assert_eq!(StoreQuery::decode_bounded(&many.encode_to_vec()), None);
        assert_eq!(StoreQuery::decode_bounded(b"\xff\xff"), None);
    }
}
