//! Bundles on gossip: this node's signed bundle goes out on its bundle
//! topic, and bundles received on followed bundle topics are checked, kept
//! (the newest per installation) and surfaced.
//!
//! The format, its caps and the freshness rule are
//! [`strata_proto::bundle`]; signing and verifying need keys, which this
//! crate never holds, so the node is given two hooks in [`BundleConfig`]:
//!
//! - a [`BundleVerifier`]: bytes in, the verified [`BundleHeader`] out, or
//!   a typed [`BundleError`] (the app passes a closure around
//!   `strata_cascade::bundle::verify_bundle`);
//! - optionally a [`BundleSource`]: this node's identity key (naming its
//!   bundle topic) and a freshly signed bundle on demand.
//!
//! # Publishing
//!
//! With a source, the node publishes a freshly signed bundle on
//! [`bundle_topic`]`(identity key)` at start, every
//! [`BundleConfig::rebroadcast`] (default 6 h, as Status), and at once on
//! [`Libp2pTransport::refresh_bundle`](crate::Libp2pTransport::refresh_bundle),
//! which the owner calls after a change of its pre-keys (a new version; the
//! app does so when it renews them). Every publication is signed anew, so
//! its timestamp is fresh and its gossip id new. Bundles are not
//! ephemeral: relays that serve their store replay them to nodes that come
//! back ([`crate::store`]).
//!
//! # Receiving
//!
//! A node follows an identity's bundles by subscribing to its bundle topic
//! (`subscribe(&bundle_topic(key))`). Every message on a followed bundle
//! topic goes through [`BundleBook::admit`]: size cap first (before the
//! verifier sees it), then the verifier, then the topic check (the bundle's
//! identity key must derive the topic it came on), then the freshness rule
//! against the bundle held for that (identity key, installation). What
//! passes replaces the held bundle and is delivered as a
//! `TransportEvent::Published` on that topic (bytes as received); what
//! fails is dropped, logged with its [`BundleError`] and counted in
//! [`Status::bundles_rejected`](crate::Status::bundles_rejected). The held
//! bundles can be read at any time
//! ([`Libp2pTransport::bundles`](crate::Libp2pTransport::bundles)). Gossip
//! still relays such a message: it is a valid Waku message, and judging
//! bundles is for the nodes that follow them.
//!
//! # What a held bundle saves the handshake (P3, `strata_session` docs)
//!
//! | step | without a bundle | with B's bundle held by A |
//! |---|---|---|
//! | 1–2 `mls-key-package-request` / `mls-key-package` | a round trip | replaced: the bundle's KeyPackage (and B's identity key, pinned by TOFU as step 2 would) |
//! | 3–4 `mls-encryption-sync-*` | in the first flight | unchanged (profile agreement; B still answers) |
//! | 5–6 `signal-key-exchange-*` | request and answer | replaced: A runs PQXDH on the bundle's pre-keys |
//! | 7 `signal-session-complete` | after 6 | sent in the first flight |
//! | 8–9 `mlkem-key-exchange*` | A's key, B's answer | 9 replaced by the bundle's signed ML-KEM key; 8 still goes (B needs A's key) |
//! | 10–11 `mls-welcome` / ack | after 2 | 10 in the first flight, 11 unchanged |
//!
//! So A's first flight is 3, 5 (dropped), 7, 8 and 10 at once and B
//! answers 4 and 11: one round trip instead of three, and nothing of B's
//! needs B online until that answer. `strata-session` runs it ("Opening
//! from a bundle" in its docs): B keeps the private halves of what it
//! publishes installation-wide in the store (`strata_session::prekeys`),
//! A starts with `PeerMachine::open_from_bundle`, and step 3 names the
//! bundle version so B seeds the new session from the right keys.
//!
//! # Late followers and re-keying
//!
//! A node that follows a bundle topic asks the network for what was
//! published there (a store query naming the topic): serving relays
//! answer from their store, and the bundle's owner publishes it again, at
//! most once every 10 s however many ask. A follower gets the current
//! bundle within seconds, not at the next re-broadcast hours later.
//!
//! Acting on a bundle of a higher version (54/X3DH-SESSIONS re-keying) is
//! the session node's: it verifies the `Published` bundle again and
//! expires its session with that installation
//! (`strata_session::PeerMachine::expire`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_proto::bundle::{Admission, BundleError, BundleHeader, MAX_BUNDLE_BYTES, check_fresh};

use crate::topic::bundle_topic;

/// Checks received bundle bytes: signature, keys, shape. Implemented by the
/// app around `strata_cascade::bundle::verify_bundle` (this crate holds no
/// keys); any `Fn(&[u8]) -> Result<BundleHeader, BundleError>` is one.
pub trait BundleVerifier: Send + Sync + 'static {
    /// The verified header, or why the bytes were refused.
    fn verify(&self, bytes: &[u8]) -> Result<BundleHeader, BundleError>;
}

impl<F> BundleVerifier for F
where
    F: Fn(&[u8]) -> Result<BundleHeader, BundleError> + Send + Sync + 'static,
{
    fn verify(&self, bytes: &[u8]) -> Result<BundleHeader, BundleError> {
        self(bytes)
    }
}

/// Why a [`BundleSource`] could not produce a bundle (its own error, boxed).
pub type SourceError = Box<dyn std::error::Error + Send + Sync>;

/// This node's bundle, signed on demand. Called on the swarm task: it must
/// be quick (one signature), never block on I/O. Its version must survive
/// restarts (persist it): peers holding a higher version refuse a lower one
/// as stale.
pub trait BundleSource: Send + Sync + 'static {
    /// The identity key whose bundle topic the bundle goes to.
    fn identity_key(&self) -> Vec<u8>;
    /// The current bundle, signed now (timestamp `now_ms`, Unix ms).
    fn signed_bundle(&self, now_ms: u64) -> Result<Vec<u8>, SourceError>;
}

/// Bundle handling of a node; off (`Config::bundles` = `None`) by default.
#[derive(Clone)]
#[non_exhaustive]
pub struct BundleConfig {
    /// Checks received bundles.
    pub verifier: Arc<dyn BundleVerifier>,
    /// This node's bundle, if it publishes one.
    pub source: Option<Arc<dyn BundleSource>>,
    /// Re-broadcast period of this node's bundle. Default 6 h.
    pub rebroadcast: Duration,
    /// Most bundles held (one per installation); the least recently
    /// updated goes first. Default 1024.
    pub max_held: usize,
}

impl BundleConfig {
    /// Receives with `verifier`; publishes nothing until a source is set.
    pub fn new(verifier: Arc<dyn BundleVerifier>) -> Self {
        Self {
            verifier,
            source: None,
            rebroadcast: Duration::from_secs(6 * 3600),
            max_held: 1024,
        }
    }

    /// Also publishes `source`'s bundle.
    pub fn with_source(mut self, source: Arc<dyn BundleSource>) -> Self {
        self.source = Some(source);
        self
    }
}

impl fmt::Debug for BundleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleConfig")
            .field("source", &self.source.as_ref().map(|s| hex::encode(s.identity_key())))
            .field("rebroadcast", &self.rebroadcast)
            .field("max_held", &self.max_held)
            .finish_non_exhaustive()
    }
}

/// A bundle held for one installation: the newest that passed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBundle {
    /// Publisher, version, timestamp (verified).
    pub header: BundleHeader,
    /// The signed bundle, exactly as received.
    pub bytes: Bytes,
    /// What it did to the bundle held before it.
    pub admission: Admission,
}

/// The held bundles and the admission rule: sans-I/O, time passed in.
pub struct BundleBook {
    verifier: Arc<dyn BundleVerifier>,
    max_held: usize,
    held: HashMap<(Vec<u8>, [u8; 16]), (u64, HeldBundle)>,
    updates: u64,
}

impl fmt::Debug for BundleBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleBook")
            .field("held", &self.held.len())
            .field("max_held", &self.max_held)
            .finish_non_exhaustive()
    }
}

impl BundleBook {
    /// An empty book checking with `verifier`, holding at most `max_held`.
    pub fn new(verifier: Arc<dyn BundleVerifier>, max_held: usize) -> Self {
        Self {
            verifier,
            max_held: max_held.max(1),
            held: HashMap::new(),
            updates: 0,
        }
    }

    /// Checks `bytes`, received on `content_topic` at `now_ms`, and holds
    /// it if it passes (see the module docs for the order of the checks).
    pub fn admit(&mut self, content_topic: &str, bytes: &[u8], now_ms: u64) -> Result<HeldBundle, BundleError> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge {
                len: bytes.len(),
                max: MAX_BUNDLE_BYTES,
            });
        }
        let header = self.verifier.verify(bytes)?;
        if bundle_topic(&header.identity_key).as_str() != content_topic {
            return Err(BundleError::WrongTopic);
        }
        let key = (header.identity_key.clone(), header.installation_id);
        let admission = check_fresh(&header, self.held.get(&key).map(|(_, h)| &h.header), now_ms)?;
        let bundle = HeldBundle {
            header,
            bytes: Bytes::copy_from_slice(bytes),
            admission,
        };
        self.updates += 1;
        self.held.insert(key, (self.updates, bundle.clone()));
        while self.held.len() > self.max_held {
            let oldest = self.held.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.held.remove(&k),
                None => break,
            };
        }
        Ok(bundle)
    }

    /// The bundles held for `identity_key` (one per installation), or all
    /// of them when `None`; ordered by identity key and installation.
    pub fn held(&self, identity_key: Option<&[u8]>) -> Vec<HeldBundle> {
        let mut out: Vec<HeldBundle> = self
            .held
            .iter()
            .filter(|((key, _), _)| identity_key.is_none_or(|k| k == key.as_slice()))
            .map(|(_, (_, b))| b.clone())
            .collect();
        out.sort_by(|a, b| {
            (&a.header.identity_key, a.header.installation_id).cmp(&(&b.header.identity_key, b.header.installation_id))
        });
        out
    }

    /// How many bundles are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// Whether `content_topic` is a bundle topic ([`bundle_topic`]'s shape).
pub(crate) fn is_bundle_topic(content_topic: &str) -> bool {
    content_topic.starts_with("/strata/1/bundle-")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// A stand-in verifier for the book's own rules (the real one, with
    /// real signatures, is exercised in `tests/tests/libp2p_sessions.rs`):
    /// bytes are `identity(33) ‖ installation(16) ‖ version(8) ‖ ts(8)`,
    /// and a leading 0xff means "bad signature".
    fn verifier() -> Arc<dyn BundleVerifier> {
        Arc::new(|bytes: &[u8]| {
            if bytes.first() == Some(&0xff) {
                return Err(BundleError::BadSignature);
            }
            let get = |r: std::ops::Range<usize>| bytes.get(r).ok_or(BundleError::Malformed("short".into()));
            Ok(BundleHeader {
                identity_key: get(0..33)?.to_vec(),
                installation_id: get(33..49)?.try_into().unwrap(),
                version: u64::from_be_bytes(get(49..57)?.try_into().unwrap()),
                timestamp_ms: u64::from_be_bytes(get(57..65)?.try_into().unwrap()),
            })
        })
    }

    fn encode(identity: u8, installation: u8, version: u64, ts: u64) -> Vec<u8> {
        let mut b = vec![identity; 33];
        b.extend([installation; 16]);
        b.extend(version.to_be_bytes());
        b.extend(ts.to_be_bytes());
        b
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn admission_rules() {
        let mut book = BundleBook::new(verifier(), 2);
        let topic = |id: u8| bundle_topic(&[id; 33]).as_str().to_owned();
        let first = book.admit(&topic(1), &encode(1, 1, 1, NOW - 10), NOW).unwrap();
        assert_eq!(first.admission, Admission::New);
        let refreshed = book.admit(&topic(1), &encode(1, 1, 1, NOW), NOW).unwrap();
        assert_eq!(refreshed.admission, Admission::Refreshed);
        assert!(matches!(
            book.admit(&topic(1), &encode(1, 1, 1, NOW - 10), NOW),
            Err(BundleError::Stale { .. })
        ));
        let rekeyed = book.admit(&topic(1), &encode(1, 1, 2, NOW - 5), NOW).unwrap();
        assert_eq!(rekeyed.admission, Admission::Rekeyed { previous_version: 1 });
        assert_eq!(book.held(Some(&[1; 33])), vec![rekeyed]);
        assert_eq!(
            book.admit(&topic(2), &encode(1, 1, 3, NOW), NOW),
            Err(BundleError::WrongTopic)
        );
        assert_eq!(book.admit(&topic(1), &[0xff; 80], NOW), Err(BundleError::BadSignature));
        assert!(matches!(
            book.admit(&topic(1), &vec![1; MAX_BUNDLE_BYTES + 1], NOW),
            Err(BundleError::TooLarge { .. })
        ));
        // Bounded: a third installation evicts the least recently updated.
        book.admit(&topic(1), &encode(1, 2, 1, NOW), NOW).unwrap();
        book.admit(&topic(3), &encode(3, 1, 1, NOW), NOW).unwrap();
        assert_eq!(book.len(), 2);
        assert!(
            book.held(Some(&[1; 33]))
                .iter()
                .all(|b| b.header.installation_id == [2; 16])
        );
    }
}
