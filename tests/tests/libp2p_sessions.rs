//! The session-level tests of the libp2p transport (issue 7, part 5): two
//! Strata session `Node`s over real `Libp2pTransport`s on loopback, which
//! know only a third libp2p node, the relay. They reach `encryptionReady`
//! through it and exchange messages; then one goes offline, a message is
//! sent to it, and it comes back (a new `Node` on the same redb store and
//! the same libp2p identity) and receives it.
//!
//! Real time, real sockets: every wait is on an event with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod libp2p_common;

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p_common::*;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::Event;
use strata_session::actors::{NodeEventKind, SessionRequest};
use strata_test_support::libp2p::{publication, tcp_addr};
use strata_transport::EventStream;
use strata_transport_libp2p::{Config, Libp2pTransport};

/// Two session nodes that only know the relay handshake through it and
/// talk; Bob goes offline, Alice writes to him, Bob comes back on the same
/// store and libp2p identity and gets the message.
#[test]
fn sessions_over_a_relay_survive_an_offline_peer() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let alice_inst = Installation::new("alice", 21, dir.path(), relay_addr.clone());
        let bob_inst = Installation::new("bob", 22, dir.path(), relay_addr);
        let mut alice = alice_inst.start().await;
        let mut bob = bob_inst.start().await;

        alice.connect("bob").await;
        assert!(!alice.wait_ready().await, "a fresh session, not a resumed one");
        assert!(!bob.wait_ready().await, "a fresh session, not a resumed one");
        // Neither node knows the other at the libp2p level: only the relay.
        for node in [&alice.transport, &bob.transport] {
            let status = node.status().await.unwrap();
            assert_eq!(status.connected_peers, 1, "only the relay: {status:?}");
        }
        let relay_status = relay.status().await.unwrap();
        assert_eq!(relay_status.connected_peers, 2, "{relay_status:?}");

        alice.send_text("bob", "hello bob, via the relay").await;
        bob.wait_text("hello bob, via the relay").await;
        bob.send_text("alice", "hello alice").await;
        alice.wait_text("hello alice").await;

        // Bob's process goes away; Alice's link notices and she writes to
        // him anyway.
        bob.stop().await;
        alice
            .wait_for("the link to bob lost", |e| {
                e.peer.as_str() == "bob" && matches!(e.kind, NodeEventKind::Disconnected)
            })
            .await;
        alice.send_text("bob", "written while you were away").await;

        // Bob comes back: same store, same libp2p identity, new process.
        let mut bob = bob_inst.start().await;
        assert!(bob.wait_ready().await, "the stored session resumes");
        bob.wait_text("written while you were away").await;
        let handshakes = bob
            .seen
            .iter()
            .filter(|e| matches!(e.kind, NodeEventKind::Session(Event::HandshakeStarted { .. })))
            .count();
        assert_eq!(handshakes, 0, "no new handshake after the restart");
        bob.send_text("alice", "back again").await;
        alice.wait_text("back again").await;

        alice.stop().await;
        bob.stop().await;
        relay.shutdown().await;
    });
}

// ---- bundles ---------------------------------------------------------------

/// Multi-device over libp2p (issue #18): Alice's two devices and Bob's
/// three (one stale) through a relay; see
/// `strata_test_support::devices::two_and_three`.
#[test]
fn two_accounts_with_several_devices_over_libp2p() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let accounts = strata_test_support::devices::Accounts::new(81);
        let mut nodes = Vec::new();
        for identity in accounts.a.iter().chain(accounts.b.iter()) {
            let installation = Installation::of(Arc::clone(identity), dir.path(), relay_addr.clone());
            nodes.push(installation.start_with(|_, store| accounts.seed(store, identity)).await);
        }
        let [a1, a2, b1, b2, b3] = &mut nodes[..] else {
            unreachable!("five devices")
        };
        strata_test_support::devices::two_and_three(
            &accounts,
            [&mut a1.node, &mut a2.node],
            [&mut b1.node, &mut b2.node, &mut b3.node],
            Duration::from_secs(5),
        )
        .await;
        for node in nodes {
            node.stop().await;
        }
    });
}

mod bundles {
    use std::sync::Mutex;

    use bytes::Bytes;
    use strata_cascade::bundle::{BundleContents, sign_bundle, verify_bundle};
    use strata_cascade::{KemKeyPair, KeyPackageKind, MlsLayer, SignalLayer};
    use strata_proto::bundle::{Admission, BundleError, MAX_BUNDLE_BYTES};
    use strata_session::prekeys;
    use strata_transport::{Topic, Transport as _, TransportEvent};
    use strata_transport_libp2p::bundle::SourceError;
    use strata_transport_libp2p::topic::bundle_topic;
    use strata_transport_libp2p::{BundleBook, BundleConfig, BundleSource, BundleVerifier, HeldBundle};

    use super::*;

    fn now_ms() -> u64 {
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    }

    /// The verifier the app plugs in: the cascade's `verify_bundle`.
    fn verifier() -> Arc<dyn BundleVerifier> {
        Arc::new(|bytes: &[u8]| verify_bundle(bytes).map(|v| v.header().clone()))
    }

    /// An installation's bundle source: real keys from the cascade layers,
    /// re-signed with a fresh timestamp at every call.
    struct Source {
        identity: InstallationIdentity,
        contents: Mutex<BundleContents>,
        rng: Mutex<ChaCha20Rng>,
        next_kem_key: Mutex<u32>,
    }

    impl Source {
        fn new(seed: u64) -> Arc<Self> {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let identity = InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap();
            // The layers want a peer; a broadcast bundle's keys are for
            // whoever claims them.
            let anyone = InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap();
            let mut signal = SignalLayer::new(&identity, anyone.peer_identity()).unwrap();
            let mut mls = MlsLayer::new(&identity, anyone.peer_identity()).unwrap();
            let contents = BundleContents {
                version: 1,
                timestamp_ms: now_ms(),
                signal: signal.pre_key_bundle(now_ms(), &mut rng).unwrap(),
                mls_key_package: mls.key_package(KeyPackageKind::LastResort, 24 * 3600).unwrap(),
                kem_key: KemKeyPair::generate(&identity, 1, &mut rng).unwrap().public().clone(),
                paired: Vec::new(),
            };
            Arc::new(Self {
                identity,
                contents: Mutex::new(contents),
                rng: Mutex::new(rng),
                next_kem_key: Mutex::new(2),
            })
        }

        fn key(&self) -> Vec<u8> {
            self.identity.peer_identity().identity_key.serialize().to_vec()
        }

        /// Re-keying: a new ML-KEM key, so a new version.
        fn rekey(&self) {
            let mut id = self.next_kem_key.lock().unwrap();
            let key = KemKeyPair::generate(&self.identity, *id, &mut *self.rng.lock().unwrap()).unwrap();
            *id += 1;
            let mut contents = self.contents.lock().unwrap();
            contents.kem_key = key.public().clone();
            contents.version += 1;
        }

        fn sign_at(&self, timestamp_ms: u64) -> Vec<u8> {
            let mut contents = self.contents.lock().unwrap().clone();
            contents.timestamp_ms = timestamp_ms;
            sign_bundle(&self.identity, &contents, &mut *self.rng.lock().unwrap()).unwrap()
        }
    }

    impl BundleSource for Source {
        fn identity_key(&self) -> Vec<u8> {
            self.key()
        }

        fn signed_bundle(&self, now_ms: u64) -> Result<Vec<u8>, SourceError> {
            let mut contents = self.contents.lock().unwrap().clone();
            contents.timestamp_ms = now_ms;
            Ok(sign_bundle(&self.identity, &contents, &mut *self.rng.lock().unwrap())?)
        }
    }

    /// The book with the real verifier: round trip, tampering, unsigned,
    /// oversized, stale, replacement by a higher version, wrong topic.
    #[test]
    fn the_book_admits_only_fresh_verified_bundles() {
        let bob = Source::new(31);
        let mallory = Source::new(32);
        let topic = bundle_topic(&bob.key());
        let mut book = BundleBook::new(verifier(), 16);
        let t0 = now_ms();

        let v1 = bob.sign_at(t0);
        let held = book.admit(topic.as_str(), &v1, t0).unwrap();
        assert_eq!(held.admission, Admission::New);
        assert_eq!(held.header.version, 1);
        assert_eq!(held.bytes, v1);
        let verified = verify_bundle(&held.bytes).unwrap();
        assert_eq!(verified.peer(), bob.identity.peer_identity());

        let mut tampered = bob.sign_at(t0 + 1);
        let middle = tampered.len() / 2;
        tampered[middle] ^= 0x40;
        assert!(book.admit(topic.as_str(), &tampered, t0).is_err(), "tampered");
        let mut oversized = bob.sign_at(t0 + 1);
        oversized.resize(MAX_BUNDLE_BYTES + 1, 0);
        assert!(matches!(
            book.admit(topic.as_str(), &oversized, t0),
            Err(BundleError::TooLarge { .. })
        ));
        let (signed, _) = strata_proto::bundle::SignedBundle::decode_bounded(&v1).unwrap();
        let unsigned = strata_proto::bundle::SignedBundle {
            signature: Vec::new(),
            ..signed
        }
        .to_bytes();
        assert_eq!(book.admit(topic.as_str(), &unsigned, t0), Err(BundleError::Unsigned));
        // Mallory's valid bundle on Bob's topic.
        assert_eq!(
            book.admit(topic.as_str(), &mallory.sign_at(t0), t0),
            Err(BundleError::WrongTopic)
        );

        // The periodic re-broadcast refreshes; a replay of the old one is stale.
        let refreshed = book.admit(topic.as_str(), &bob.sign_at(t0 + 1000), t0 + 1000).unwrap();
        assert_eq!(refreshed.admission, Admission::Refreshed);
        assert!(matches!(
            book.admit(topic.as_str(), &v1, t0 + 1000),
            Err(BundleError::Stale { .. })
        ));
        // Re-keying: a higher version replaces, even with an older clock.
        bob.rekey();
        let v2 = book.admit(topic.as_str(), &bob.sign_at(t0 + 500), t0 + 1000).unwrap();
        assert_eq!(v2.admission, Admission::Rekeyed { previous_version: 1 });
        let new_key = verify_bundle(&v2.bytes).unwrap().kem_key().clone();
        assert_eq!(new_key, bob.contents.lock().unwrap().kem_key);
        assert_eq!(book.held(Some(&bob.key())), vec![v2]);
        assert!(matches!(
            book.admit(topic.as_str(), &refreshed.bytes, t0 + 2000),
            Err(BundleError::Stale { .. })
        ));
    }

    async fn bundle_node(
        name: &str,
        relay: &Multiaddr,
        source: &Arc<Source>,
        follow: &Arc<Source>,
    ) -> (Libp2pTransport, EventStream) {
        let mut config = Config::loopback(name);
        config.bootstrap = vec![relay.clone()];
        config.topics = vec![bundle_topic(&follow.key())];
        let mut bundles = BundleConfig::new(verifier()).with_source(Arc::clone(source) as Arc<dyn BundleSource>);
        // Short, so the test sees a re-broadcast.
        bundles.rebroadcast = Duration::from_secs(1);
        config.bundles = Some(bundles);
        Libp2pTransport::start(config).await.unwrap()
    }

    /// A node that starts after Bob published and went away gets his
    /// bundle from the relay's store, verified.
    #[tokio::test]
    async fn a_late_follower_gets_the_bundle_from_the_relay_store() {
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let bob_src = Source::new(51);
        let bob_topic = bundle_topic(&bob_src.key());
        let mut config = Config::loopback("bob");
        config.bootstrap = vec![relay_addr.clone()];
        config.bundles = Some(BundleConfig::new(verifier()).with_source(Arc::clone(&bob_src) as Arc<dyn BundleSource>));
        let (bob, _bob_events) = Libp2pTransport::start(config).await.unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while relay.status().await.unwrap().stored == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the relay never got bob's bundle"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Bob is gone: only the relay's store can answer.
        bob.shutdown().await;
        let mut config = Config::loopback("carol");
        config.bootstrap = vec![relay_addr];
        config.topics = vec![bob_topic.clone()];
        config.bundles = Some(BundleConfig::new(verifier()));
        let (carol, mut carol_events) = Libp2pTransport::start(config).await.unwrap();
        let bytes = next_bundle(&mut carol_events, &bob_topic, "bob's stored bundle").await;
        assert_eq!(verify_bundle(&bytes).unwrap().peer(), bob_src.identity.peer_identity());
        assert_eq!(held_of(&carol, &bob_src).await.admission, Admission::New);
        for node in [carol, relay] {
            node.shutdown().await;
        }
    }

    /// Through a relay that keeps nothing, a node that follows Bob's
    /// bundle topic after Bob published (his re-broadcast hours away) gets
    /// the bundle within seconds: its query names the topic, and Bob
    /// publishes again. Queries do not make him publish more than once per
    /// interval.
    #[tokio::test]
    async fn a_late_follower_gets_the_bundle_from_its_owner() {
        let (relay, _relay_events) = Libp2pTransport::start(Config::loopback("relay")).await.unwrap();
        let relay_addr = tcp_addr(&relay).await;
        let bob_src = Source::new(52);
        let bob_topic = bundle_topic(&bob_src.key());
        let mut config = Config::loopback("bob");
        config.bootstrap = vec![relay_addr.clone()];
        config.bundles = Some(BundleConfig::new(verifier()).with_source(Arc::clone(&bob_src) as Arc<dyn BundleSource>));
        let (bob, _bob_events) = Libp2pTransport::start(config).await.unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while relay.status().await.unwrap().connected_peers == 0 || bob.status().await.unwrap().bundles_published == 0 {
            assert!(tokio::time::Instant::now() < deadline, "bob never published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        let started = tokio::time::Instant::now();
        let mut config = Config::loopback("carol");
        config.bootstrap = vec![relay_addr.clone()];
        config.topics = vec![bob_topic.clone()];
        config.bundles = Some(BundleConfig::new(verifier()));
        let (carol, mut carol_events) = Libp2pTransport::start(config).await.unwrap();
        let bytes = next_bundle(&mut carol_events, &bob_topic, "bob's bundle, published again").await;
        assert_eq!(verify_bundle(&bytes).unwrap().peer(), bob_src.identity.peer_identity());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(bob.status().await.unwrap().bundles_published, 2, "published again once");
        // A second late follower within the interval: no third publication.
        let mut config = Config::loopback("dave");
        config.bootstrap = vec![relay_addr];
        config.topics = vec![bob_topic.clone()];
        config.bundles = Some(BundleConfig::new(verifier()));
        let (dave, _dave_events) = Libp2pTransport::start(config).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(bob.status().await.unwrap().bundles_published, 2, "rate-limited");
        for node in [dave, carol, bob, relay] {
            node.shutdown().await;
        }
    }

    async fn next_bundle(events: &mut EventStream, topic: &Topic, what: &str) -> Bytes {
        publication(events, topic, what, DEADLINE).await.1
    }

    async fn held_of(node: &Libp2pTransport, source: &Source) -> HeldBundle {
        let held = node.bundles_of(&source.key()).await.unwrap();
        assert_eq!(held.len(), 1, "one installation: {held:?}");
        held.into_iter().next().unwrap()
    }

    /// Alice and Bob, through a relay that knows nothing of bundles, see
    /// each other's signed bundles, their periodic refreshes and Bob's
    /// re-keying; replays, forgeries and oversized bundles that a third
    /// node publishes on Bob's topic are refused.
    #[tokio::test]
    async fn nodes_see_each_others_bundles_over_a_relay() {
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let alice_src = Source::new(41);
        let bob_src = Source::new(42);
        let bob_topic = bundle_topic(&bob_src.key());
        let alice_topic = bundle_topic(&alice_src.key());
        let (alice, mut alice_events) = bundle_node("alice", &relay_addr, &alice_src, &bob_src).await;
        let (bob, mut bob_events) = bundle_node("bob", &relay_addr, &bob_src, &alice_src).await;

        let at_alice = next_bundle(&mut alice_events, &bob_topic, "bob's bundle").await;
        assert_eq!(
            verify_bundle(&at_alice).unwrap().peer(),
            bob_src.identity.peer_identity()
        );
        let at_bob = next_bundle(&mut bob_events, &alice_topic, "alice's bundle").await;
        assert_eq!(
            verify_bundle(&at_bob).unwrap().peer(),
            alice_src.identity.peer_identity()
        );
        let first = verify_bundle(&at_alice).unwrap().header().clone();

        // The re-broadcast: same version, later timestamp.
        let again = next_bundle(&mut alice_events, &bob_topic, "bob's re-broadcast").await;
        let again = verify_bundle(&again).unwrap().header().clone();
        assert_eq!(again.version, first.version);
        assert!(again.timestamp_ms > first.timestamp_ms);

        // Bob re-keys and says so at once.
        bob_src.rekey();
        bob.refresh_bundle().await.unwrap();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let bytes = next_bundle(&mut alice_events, &bob_topic, "bob's new version").await;
            if verify_bundle(&bytes).unwrap().header().version == 2 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no version 2");
        }
        let held = held_of(&alice, &bob_src).await;
        assert_eq!(held.header.version, 2);
        assert_eq!(
            verify_bundle(&held.bytes).unwrap().kem_key(),
            &bob_src.contents.lock().unwrap().kem_key
        );

        // Mallory, a plain node on the same relay, publishes on Bob's topic:
        // Bob's old version (a replay), a forged copy and an oversized one.
        let mut config = Config::loopback("mallory");
        config.bootstrap = vec![relay_addr.clone()];
        let (mallory, _mallory_events) = Libp2pTransport::start(config).await.unwrap();
        let rejected_before = alice.status().await.unwrap().bundles_rejected;
        let mut forged = held.bytes.to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let mut oversized = held.bytes.to_vec();
        oversized.resize(MAX_BUNDLE_BYTES + 100, 7);
        for bytes in [at_alice.to_vec(), forged, oversized] {
            mallory.publish(&bob_topic, Bytes::from(bytes)).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while alice.status().await.unwrap().bundles_rejected < rejected_before + 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mallory's bundles were not all refused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Nothing Mallory sent surfaced, and Alice still holds version 2.
        while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, alice_events.next()).await {
            if let TransportEvent::Published { topic, bytes, .. } = event
                && topic == bob_topic
            {
                assert!(verify_bundle(&bytes).unwrap().header().version >= 2);
            }
        }
        assert!(held_of(&alice, &bob_src).await.header.version >= 2);
        assert_eq!(held_of(&bob, &alice_src).await.header.version, 1);

        for node in [alice, bob, mallory, relay] {
            node.shutdown().await;
        }
    }

    /// What the app plugs in for a session node: the bundle of the
    /// installation pre-keys in its store, re-signed at every call.
    struct SessionSource {
        identity: Arc<InstallationIdentity>,
        pre_keys: strata_cascade::InstallationPreKeys,
    }

    impl BundleSource for SessionSource {
        fn identity_key(&self) -> Vec<u8> {
            self.identity.account().identity_key().serialize().to_vec()
        }

        fn signed_bundle(&self, now_ms: u64) -> Result<Vec<u8>, SourceError> {
            Ok(prekeys::signed_bundle(
                &self.identity,
                &self.pre_keys,
                now_ms,
                Vec::new(),
            )?)
        }
    }

    /// Bob publishes the bundle of his session pre-keys; Alice follows his
    /// bundle topic, gets it through the relay, and opens the session from
    /// it: both reach `encryptionReady` on a handshake that both report as
    /// opened from the bundle (steps 1–2 and 5–6 never ran), and talk.
    #[test]
    fn a_session_opens_from_a_bundle_fetched_through_the_relay() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (relay, _relay_events) = start_relay().await;
            let relay_addr = tcp_addr(&relay).await;
            let alice_inst = Installation::new("alice", 31, dir.path(), relay_addr.clone());
            let bob_inst = Installation::new("bob", 32, dir.path(), relay_addr);
            let bob_key = bob_inst.identity.account().identity_key().serialize().to_vec();
            let bob_identity = Arc::clone(&bob_inst.identity);
            let mut bob = bob_inst
                .start_with(|config, store| {
                    let pre_keys =
                        prekeys::ensure(store, &bob_identity, &strata_session::Config::default(), now_ms()).unwrap();
                    let source = Arc::new(SessionSource {
                        identity: bob_identity,
                        pre_keys,
                    });
                    config.bundles = Some(BundleConfig::new(verifier()).with_source(source));
                })
                .await;
            let mut alice = alice_inst
                .start_with(|config, _| {
                    config.topics = vec![bundle_topic(&bob_key)];
                    config.bundles = Some(BundleConfig::new(verifier()));
                })
                .await;
            let deadline = tokio::time::Instant::now() + DEADLINE;
            let held = loop {
                if let Some(h) = alice.transport.bundles_of(&bob_key).await.unwrap().into_iter().next() {
                    break h;
                }
                assert!(tokio::time::Instant::now() < deadline, "alice never got bob's bundle");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let bundle = verify_bundle(&held.bytes).unwrap();
            // The attempt starts from the bundle; `connect` then brings the
            // link up (its own `Open` finds the attempt under way).
            alice
                .request("bob", SessionRequest::OpenFromBundle(Box::new(bundle)))
                .await;
            alice.connect("bob").await;
            assert!(!alice.wait_ready().await, "a fresh session");
            assert!(!bob.wait_ready().await, "a fresh session");
            for node in [&alice, &bob] {
                let started: Vec<bool> = node
                    .seen
                    .iter()
                    .filter_map(|e| match e.kind {
                        NodeEventKind::Session(Event::HandshakeStarted { from_bundle, .. }) => Some(from_bundle),
                        _ => None,
                    })
                    .collect();
                assert_eq!(started, vec![true], "{}: one handshake, from the bundle", node.name);
            }
            alice.send_text("bob", "opened from your bundle").await;
            bob.wait_text("opened from your bundle").await;
            bob.send_text("alice", "and answered").await;
            alice.wait_text("and answered").await;
            alice.stop().await;
            bob.stop().await;
            relay.shutdown().await;
        });
    }

    /// A source whose pre-keys can be swapped, as the app's renewal does.
    struct Renewable {
        identity: Arc<InstallationIdentity>,
        pre_keys: std::sync::RwLock<strata_cascade::InstallationPreKeys>,
    }

    impl BundleSource for Renewable {
        fn identity_key(&self) -> Vec<u8> {
            self.identity.account().identity_key().serialize().to_vec()
        }

        fn signed_bundle(&self, now_ms: u64) -> Result<Vec<u8>, SourceError> {
            let pre_keys = self.pre_keys.read().unwrap();
            Ok(prekeys::signed_bundle(&self.identity, &pre_keys, now_ms, Vec::new())?)
        }
    }

    /// Re-keying over libp2p (issue #18): Alice has a session with Bob and
    /// follows his bundle topic; Bob publishes a bundle of a higher version
    /// (new pre-keys); Alice's next send opens a new session from it, which
    /// both then use.
    #[test]
    fn a_newer_bundle_re_keys_the_session_over_libp2p() {
        run(async {
            let dir = tempfile::tempdir().unwrap();
            let (relay, _relay_events) = start_relay().await;
            let relay_addr = tcp_addr(&relay).await;
            let alice_inst = Installation::new("alice", 33, dir.path(), relay_addr.clone());
            let bob_inst = Installation::new("bob", 34, dir.path(), relay_addr);
            let bob_key = bob_inst.identity.account().identity_key().serialize().to_vec();
            let bob_identity = Arc::clone(&bob_inst.identity);
            let mut next = None;
            let mut source = None;
            let mut bob = bob_inst
                .start_with(|config, store| {
                    let session = strata_session::Config::default();
                    let v1 = prekeys::ensure(store, &bob_identity, &session, now_ms()).unwrap();
                    // What Bob renews to later; his store holds it from now.
                    next = Some(prekeys::rotate(store, &bob_identity, &session, now_ms()).unwrap());
                    let renewable = Arc::new(Renewable {
                        identity: bob_identity,
                        pre_keys: std::sync::RwLock::new(v1),
                    });
                    source = Some(Arc::clone(&renewable));
                    config.bundles = Some(BundleConfig::new(verifier()).with_source(renewable));
                })
                .await;
            let mut alice = alice_inst
                .start_with(|config, _| {
                    config.topics = vec![bundle_topic(&bob_key)];
                    config.bundles = Some(BundleConfig::new(verifier()));
                })
                .await;
            let held_version = |node: &Libp2pTransport| {
                let node = node.clone();
                let key = bob_key.clone();
                async move { node.bundles_of(&key).await.unwrap().first().map(|h| h.header.version) }
            };
            let deadline = tokio::time::Instant::now() + DEADLINE;
            while held_version(&alice.transport).await.is_none() {
                assert!(tokio::time::Instant::now() < deadline, "alice never got bob's bundle");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            alice.connect("bob").await;
            alice.wait_ready().await;
            bob.wait_ready().await;
            alice.send_text("bob", "before").await;
            bob.wait_text("before").await;

            let (next, source) = (next.unwrap(), source.unwrap());
            let version = next.version();
            *source.pre_keys.write().unwrap() = next;
            bob.transport.refresh_bundle().await.unwrap();
            while held_version(&alice.transport).await != Some(version) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "alice never got the newer bundle"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            alice.send_text("bob", "after the new bundle").await;
            alice
                .wait_for("re-keyed", |e| {
                    matches!(
                        e.kind,
                        NodeEventKind::Session(Event::SessionReset {
                            reason: strata_session::ResetReason::Rekeyed
                        })
                    )
                })
                .await;
            bob.wait_text("after the new bundle").await;
            bob.send_text("alice", "on the new session").await;
            alice.wait_text("on the new session").await;
            alice.stop().await;
            bob.stop().await;
            relay.shutdown().await;
        });
    }
}
