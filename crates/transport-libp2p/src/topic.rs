//! Topics: the one pubsub topic a node relays, and the content topics that
//! name what is inside it.
//!
//! A node subscribes to **one** gossipsub topic, a Waku static shard
//! (`/waku/2/rs/<cluster>/<shard>`, [`DEFAULT_PUBSUB_TOPIC`]), and filters
//! content topics locally: gossipsub 0.50 caps subscriptions at 100 topics,
//! and Waku autosharding maps every `/strata/1/…` content topic to the same
//! shard anyway. Content topics follow 23/WAKU2-TOPICS,
//! `/{application}/{version}/{name}/{encoding}`:
//!
//! | content topic | carries |
//! |---|---|
//! | `/strata/1/inst-<h>/proto`, `h` = first 16 bytes of SHA-256(`"strata/installation-topic/v1\0"` ‖ address), hex | link frames addressed to that installation ([`installation_topic`]) |
//! | `/strata/1/bundle-<h>/proto`, `h` = first 16 bytes of SHA-256(`"strata/bundle-topic/v1\0"` ‖ identity key), hex | the bundles of that identity ([`bundle_topic`]) |
//! | any valid content topic given to `subscribe`/`publish` | used as is (interop with other Waku apps) |
//! | any other topic name `t` | `/strata/1/t-<h>/proto`, `h` from SHA-256(`"strata/topic/v1\0"` ‖ `t`) |
//!
//! # Direct, not partitioned, installation topics (the metadata trade-off)
//!
//! Status partitions first-contact traffic over 5000 topics so that a
//! topic names a crowd, not a person. That blurs *who is addressed* only if
//! the receiver cannot be picked out of the message by any other means — the
//! recipient must find its own messages by trial decryption. This transport
//! carries opaque frames and knows no keys, so it must name the recipient in
//! clear somewhere; hiding it behind a partition would add a lookup without
//! hiding anything. And with one pubsub topic, every relay receives every
//! message whatever its content topic, so partitions save no bandwidth
//! either. We therefore use direct per-installation topics and say plainly
//! what a relay learns: the recipient installation of each frame (via the
//! hash, which anyone who knows the address can compute), the sender of
//! each `OPEN` (the hello), the link id that ties later frames of a link
//! together, sizes and timing. It does not learn frame contents (the session
//! layer seals them) nor the sender of `DATA` frames. A session layer that
//! wants recipient privacy can publish sealed frames on a shared topic of
//! its choosing through [`publish`](strata_transport::Transport::publish)
//! and have receivers trial-decrypt: the broadcast API leaves that open.

use sha2::{Digest, Sha256};
use strata_transport::{PeerAddr, Topic};

/// The Waku cluster Strata uses by default: an application-defined cluster
/// (16–65535 are free; 1 is The Waku Network).
pub const DEFAULT_CLUSTER_ID: u16 = 42;

/// `/waku/2/rs/42/0`: the static shard a Strata node relays by default.
pub const DEFAULT_PUBSUB_TOPIC: &str = "/waku/2/rs/42/0";

const APP: &str = "strata";
const VERSION: &str = "1";
const ENCODING: &str = "proto";

/// The pubsub topic of a Waku static shard.
pub fn static_shard_topic(cluster: u16, shard: u16) -> String {
    format!("/waku/2/rs/{cluster}/{shard}")
}

/// The content topic that carries link frames to the installation at
/// `addr`.
pub fn installation_topic(addr: &PeerAddr) -> String {
    derived("inst", "strata/installation-topic/v1", addr.as_str().as_bytes())
}

/// The content topic on which the bundles of `identity_key` (its public
/// key bytes) are published: the session layer publishes and subscribes to
/// it through [`Transport`](strata_transport::Transport).
pub fn bundle_topic(identity_key: &[u8]) -> Topic {
    Topic::new(derived("bundle", "strata/bundle-topic/v1", identity_key))
}

/// The content topic that carries `topic`: the topic itself if it already
/// is a valid content topic, else a derived `/strata/1/t-…/proto`.
pub fn content_topic(topic: &Topic) -> String {
    if strata_proto::waku::validate_content_topic(topic.as_str()).is_ok() {
        topic.as_str().to_owned()
    } else {
        derived("t", "strata/topic/v1", topic.as_str().as_bytes())
    }
}

/// Whether `content_topic` is one the transport uses itself (installation
/// topics, store queries and replays): `subscribe` and `publish` refuse
/// these, so user traffic can never be taken for link or store traffic.
pub fn is_reserved(content_topic: &str) -> bool {
    content_topic.starts_with("/strata/1/inst-")
        || content_topic == crate::store::QUERY_TOPIC
        || content_topic == crate::store::REPLAY_TOPIC
}

fn derived(kind: &str, label: &str, input: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(label.as_bytes());
    hasher.update([0]);
    hasher.update(input);
    let digest = hasher.finalize();
    let short = digest.get(..16).unwrap_or(&digest[..]);
    format!("/{APP}/{VERSION}/{kind}-{}/{ENCODING}", hex::encode(short))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use strata_proto::waku::validate_content_topic;

    /// Topic derivations are a wire format: frozen here (values computed
    /// independently with Python's hashlib).
    #[test]
    fn derivations_are_frozen_and_valid() {
        let inst = installation_topic(&PeerAddr::from("alice/phone"));
        assert_eq!(inst, "/strata/1/inst-2aa5fb1d86dcc2c49c7bf9d5c2ab6ea5/proto");
        let bundle = bundle_topic(&[5; 33]);
        assert_eq!(
            bundle.as_str(),
            "/strata/1/bundle-c857f9f5d6fc343958ca4917db3ee9e6/proto"
        );
        for topic in [inst.as_str(), bundle.as_str(), &content_topic(&Topic::from("x y/z"))] {
            validate_content_topic(topic).unwrap();
        }
        assert_eq!(static_shard_topic(42, 0), DEFAULT_PUBSUB_TOPIC);
    }

    #[test]
    fn valid_content_topics_pass_through_and_others_are_mapped() {
        let waku = Topic::from("/strata/1/bundle-test/proto");
        assert_eq!(content_topic(&waku), "/strata/1/bundle-test/proto");
        let plain = Topic::from("strata-conformance");
        assert!(content_topic(&plain).starts_with("/strata/1/t-"));
        assert_ne!(
            content_topic(&plain),
            content_topic(&Topic::from("strata-conformance2"))
        );
        assert!(is_reserved(&installation_topic(&PeerAddr::from("x"))));
        assert!(is_reserved(crate::store::QUERY_TOPIC));
        assert!(!is_reserved(&content_topic(&plain)));
        assert!(!is_reserved(bundle_topic(&[1]).as_str()));
        // Domain separation: the same string as an address and as a topic
        // gives different content topics.
        assert_ne!(
            installation_topic(&PeerAddr::from("x")),
            content_topic(&Topic::from("x"))
        );
    }
}
