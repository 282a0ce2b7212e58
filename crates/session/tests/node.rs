//! Done-when of the session issue: two `Node`s over `MemoryTransport`
//! handshake, exchange text and a 50 MiB file, restart and resume without a
//! new handshake, and rotate keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod node_common;

use std::io::{Read as _, Write as _};

use node_common::{TestNode, handshake, ready_pair, run};
use rand::{RngCore as _, SeedableRng};
use strata_session::actors::{NodeEventKind, SessionRequest};
use strata_session::{Command, Event, Rotation};
use strata_transport::memory::MemoryNetwork;

#[test]
fn two_nodes_handshake_and_exchange_text() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(1);
        let mut alice = TestNode::start("alice", &net, 1, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 2, dir.path().join("b"));
        alice.connect("bob").await;
        assert!(!alice.wait_ready().await);
        assert!(!bob.wait_ready().await);
        alice.send_text("bob", "hello bob").await;
        bob.wait_text("hello bob").await;
        bob.send_text("alice", "hello alice").await;
        alice.wait_text("hello alice").await;
        let number = alice.request("bob", SessionRequest::SafetyNumber).await.unwrap();
        assert_eq!(
            number,
            bob.request("alice", SessionRequest::SafetyNumber).await.unwrap()
        );
        assert_eq!(number.chars().filter(char::is_ascii_digit).count(), 60);
    });
}

#[test]
fn restart_resumes_without_a_new_handshake() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(2);
        let (mut alice, mut bob) = ready_pair(&net, 3, dir.path()).await;
        alice.send_text("bob", "before").await;
        bob.wait_text("before").await;

        let mut alice = alice.restart(&net).await;
        assert!(alice.wait_ready().await, "resumed");
        assert!(bob.wait_ready().await, "resumed");
        let handshakes = alice
            .seen
            .iter()
            .filter(|e| matches!(e.kind, NodeEventKind::Session(Event::HandshakeStarted { .. })))
            .count();
        assert_eq!(handshakes, 0, "no new handshake after the restart");
        alice.send_text("bob", "after").await;
        bob.wait_text("after").await;
        bob.send_text("alice", "welcome back").await;
        alice.wait_text("welcome back").await;
    });
}

#[test]
fn keys_rotate_and_traffic_goes_on() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(3);
        let (mut alice, mut bob) = ready_pair(&net, 5, dir.path()).await;
        alice.request("bob", SessionRequest::Command(Command::RotateKeys)).await;
        alice.request("bob", SessionRequest::Command(Command::UpdateMls)).await;
        for k in 0..5 {
            alice.send_text("bob", &format!("a{k}")).await;
            bob.send_text("alice", &format!("b{k}")).await;
        }
        bob.wait_for("peer ML-KEM key", |e| {
            matches!(
                e.kind,
                NodeEventKind::Session(Event::Rotated {
                    what: Rotation::PeerKemKey
                })
            )
        })
        .await;
        bob.wait_for("peer MLS update", |e| {
            matches!(
                e.kind,
                NodeEventKind::Session(Event::Rotated {
                    what: Rotation::PeerMlsUpdate
                })
            )
        })
        .await;
        bob.wait_text("a4").await;
        alice.wait_text("b4").await;
    });
}

#[test]
fn a_large_file_streams_in_chunks() {
    let mib: usize = std::env::var("STRATA_FILE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("big.bin");
        {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
            let mut f = std::fs::File::create(&source).unwrap();
            let mut block = vec![0u8; 1 << 20];
            for _ in 0..mib {
                rng.fill_bytes(&mut block);
                f.write_all(&block).unwrap();
            }
            // A tail that is not a whole chunk.
            f.write_all(b"tail").unwrap();
        }
        let net = MemoryNetwork::new(4);
        let (mut alice, mut bob) = ready_pair(&net, 7, dir.path()).await;
        let file_id = alice
            .request("bob", SessionRequest::SendFile(source.clone()))
            .await
            .unwrap();
        let path = node_common::file_transferred(&mut alice, &mut bob, &file_id).await;
        assert!(same_contents(&source, &path), "the received file differs");
    });
}

fn same_contents(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (mut a, mut b) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x).unwrap();
        let m = b.read(&mut y[..n.max(1)]).unwrap();
        if n != m || x[..n] != y[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

#[test]
fn a_hostile_peer_leaves_other_sessions_untouched() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(5);
        let mut alice = TestNode::start("alice", &net, 11, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 12, dir.path().join("b"));
        let (mallory, _mallory_events) = net.join("mallory").unwrap();
        handshake(&mut alice, &mut bob).await;
        use strata_transport::Transport as _;
        let alice_addr = strata_transport::PeerAddr::new("alice");
        mallory.connect(&alice_addr).await.unwrap();
        let garbage: [&[u8]; 4] = [
            b"not json",
            br#"{"type":"launch"}"#,
            br#"{"type":"mls-welcome-ack","sessionId":"AAAAAAAAAAAAAAAAAAAAAA==","groupId":"AA==","epoch":1}"#,
            br#"{"type":"message","messageId":"x","encryptedMessage":{"encrypted":true,"cascaded":true,"cascadedPayload":{"layers":[],"layerParameters":[],"originalSize":0,"finalSize":0}}}"#,
        ];
        for round in 0..50 {
            for g in garbage {
                mallory.send(&alice_addr, bytes::Bytes::from_static(g)).await.unwrap();
            }
            alice.send_text("bob", &format!("still here {round}")).await;
        }
        bob.wait_text("still here 49").await;
        bob.send_text("alice", "and back").await;
        alice.wait_text("and back").await;
        let refused = alice
            .seen
            .iter()
            .filter(|e| e.peer.as_str() == "mallory" && matches!(e.kind, NodeEventKind::Session(Event::Refused { .. })))
            .count();
        assert!(refused > 0, "Mallory's frames were refused");
        assert!(alice.seen.iter().all(|e| e.peer.as_str() != "bob"
            || !matches!(
                e.kind,
                NodeEventKind::Session(Event::Refused { .. }) | NodeEventKind::Failed { .. }
            )));
    });
}

#[test]
fn an_identity_change_is_detected_and_blocks_until_accepted() {
    use std::sync::Arc;

    use strata_cascade::{AccountIdentity, InstallationIdentity};
    use strata_transport::PeerAddr;

    let bob_with = |account_seed: u64| {
        let mut account_rng = rand_chacha::ChaCha20Rng::seed_from_u64(account_seed);
        // The installation id comes from this fixed seed: same id, other key.
        let mut id_rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
        Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut account_rng), &mut id_rng).unwrap())
    };
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(6);
        let mut alice = TestNode::start("alice", &net, 13, dir.path().join("a"));
        let (t, s) = net.join("bob").unwrap();
        let mut bob = TestNode::boot(
            "bob",
            t,
            s,
            bob_with(1),
            strata_store::MemoryBackend::new(),
            strata_cascade::at_rest::StorageKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(2)),
            dir.path().join("b"),
        );
        handshake(&mut alice, &mut bob).await;

        // Bob's installation comes back with another account key.
        bob.addr.send(strata_session::actors::Shutdown).await.unwrap();
        let (t, s) = net.restart(&PeerAddr::new("bob")).unwrap();
        let mut impostor = TestNode::boot(
            "bob",
            t,
            s,
            bob_with(2),
            strata_store::MemoryBackend::new(),
            strata_cascade::at_rest::StorageKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3)),
            dir.path().join("c"),
        );
        impostor.connect("alice").await;
        alice
            .wait_for("identity change", |e| {
                matches!(e.kind, NodeEventKind::Session(Event::IdentityChanged { .. }))
            })
            .await;
        alice.send_text("bob", "held back").await;
        // Give it ample (virtual) time: nothing reaches the new key.
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        while let Ok(e) = impostor.events.try_recv() {
            assert!(
                !matches!(e.kind, NodeEventKind::Session(Event::Received { .. })),
                "sent while blocked"
            );
        }
        alice
            .request("bob", SessionRequest::Command(Command::AcceptIdentity))
            .await;
        impostor.wait_text("held back").await;
    });
}

/// An installation of the account `account_seed`; the installation id is
/// the same whatever the account (a fixed seed), so two of them claim one
/// installation with two different keys.
fn installation_of(account_seed: u64) -> std::sync::Arc<strata_cascade::InstallationIdentity> {
    use strata_cascade::{AccountIdentity, InstallationIdentity};
    let mut account_rng = rand_chacha::ChaCha20Rng::seed_from_u64(account_seed);
    let mut id_rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    std::sync::Arc::new(
        InstallationIdentity::generate(AccountIdentity::generate(&mut account_rng), &mut id_rng).unwrap(),
    )
}

fn boot_as(
    net: &MemoryNetwork,
    name: &'static str,
    identity: std::sync::Arc<strata_cascade::InstallationIdentity>,
    dir: std::path::PathBuf,
    key_seed: u64,
) -> TestNode {
    let (t, s) = net.join(name).unwrap();
    TestNode::boot(
        name,
        t,
        s,
        identity,
        strata_store::MemoryBackend::new(),
        strata_cascade::at_rest::StorageKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(key_seed)),
        dir,
    )
}

/// A contact URI names the account key: a session opened with it has no
/// TOFU window. A forger holding the address answers in Bob's installation
/// name with its own key: the handshake is refused, nothing is pinned or
/// stored, and the real Bob, once back at the address, gets a session.
#[test]
fn a_responder_with_another_key_than_expected_is_refused_and_nothing_is_pinned() {
    use strata_session::SessionError;
    use strata_session::actors::Shutdown;
    use strata_transport::PeerAddr;

    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(9);
        let mut alice = TestNode::start("alice", &net, 21, dir.path().join("a"));
        let real = installation_of(1);
        let bob_key = real.account().identity_key().serialize().to_vec();
        let mut forger = boot_as(&net, "bob", installation_of(2), dir.path().join("f"), 5);

        alice.try_connect("bob", Some(bob_key.clone())).await.unwrap();
        let refused = alice
            .wait_for("identity mismatch", |e| {
                matches!(e.kind, NodeEventKind::Session(Event::IdentityMismatch { .. }))
            })
            .await;
        let NodeEventKind::Session(Event::IdentityMismatch { installation }) = refused.kind else {
            unreachable!()
        };
        assert_eq!(
            installation,
            real.installation_id().to_string(),
            "the claimed installation"
        );
        // Well past the handshake's retransmissions: still nothing.
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        let store = alice.store();
        let hex = real.installation_id().to_string();
        assert!(store.read(|r| r.contacts()).unwrap().is_empty(), "a contact was pinned");
        assert!(
            store.read(|r| r.handshake(&hex)).unwrap().is_none(),
            "a session was stored"
        );
        assert!(
            store.read(|r| r.layer_state(&hex)).unwrap().is_none(),
            "layers were stored"
        );
        while let Ok(e) = alice.events.try_recv() {
            assert!(
                !matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. })),
                "alice became ready with the forger"
            );
        }
        while let Ok(e) = forger.events.try_recv() {
            assert!(
                !matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. })),
                "the forger became ready"
            );
        }

        // The real Bob takes his address back: the same expectation holds.
        forger.addr.send(Shutdown).await.unwrap();
        let (t, s) = net.restart(&PeerAddr::new("bob")).unwrap();
        let mut bob = TestNode::boot(
            "bob",
            t,
            s,
            real,
            strata_store::MemoryBackend::new(),
            strata_cascade::at_rest::StorageKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(6)),
            dir.path().join("b"),
        );
        alice.try_connect("bob", Some(bob_key.clone())).await.unwrap();
        alice.wait_ready().await;
        bob.wait_ready().await;
        alice.send_text("bob", "it is you").await;
        bob.wait_text("it is you").await;
        let contacts = alice.store().read(|r| r.contacts()).unwrap();
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].identity_key, bob_key);

        // Asking for another key than the one now pinned fails at once.
        let other = installation_of(3).account().identity_key().serialize().to_vec();
        let e = alice.try_connect("bob", Some(other)).await.unwrap_err();
        assert!(matches!(e, SessionError::IdentityMismatch), "{e:?}");
    });
}

/// Step 1 as a stranger sends it, in the name of installation `id`.
fn stranger_step_one(id: [u8; 16], identity_key: &[u8]) -> bytes::Bytes {
    use strata_proto::{FixedBytes, KeyBytes, KeyPackageRequest, PROFILE_V0, Pdu, Text};
    bytes::Bytes::from(
        Pdu::from(KeyPackageRequest {
            session_id: FixedBytes(id),
            installation_id: Text::new(hex::encode(id)).unwrap(),
            identity_key: KeyBytes::new(identity_key.to_vec()).unwrap(),
            profile: Text::new(PROFILE_V0).unwrap(),
            timestamp: 0,
            prior: None,
        })
        .encode(),
    )
}

/// Strangers' step 1s from 10,000 addresses: the node keeps at most its
/// session limit (dropping strangers least recently used first), its peer
/// status map stays bounded with it, and a known contact still resumes and
/// talks, as does a new one.
#[test]
fn a_flood_of_strangers_is_bounded_and_contacts_still_talk() {
    use strata_session::actors::{ListPeers, NodeLimits};
    use strata_transport::{PeerAddr, Transport as _};

    const LIMIT: usize = 32;
    const STRANGERS: u32 = 10_000;
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(10);
        let limits = NodeLimits {
            max_sessions: LIMIT,
            ..NodeLimits::default()
        };
        let mut node = TestNode::start_limited("node", &net, 31, dir.path().join("n"), limits);
        let mut alice = TestNode::start("alice", &net, 32, dir.path().join("a"));
        handshake(&mut alice, &mut node).await;
        alice.send_text("node", "before").await;
        node.wait_text("before").await;

        let stranger_key = installation_of(7).account().identity_key().serialize().to_vec();
        let target = PeerAddr::new("node");
        let mut most = 0;
        let mut strangers = Vec::new();
        for k in 0..STRANGERS {
            let (t, events) = net.join(format!("stranger-{k}")).unwrap();
            t.connect(&target).await.unwrap();
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&k.to_be_bytes());
            id[15] = 0x5a;
            t.send(&target, stranger_step_one(id, &stranger_key)).await.unwrap();
            strangers.push((t, events));
            if k % 250 == 249 {
                // Let the node take this batch in (virtual time passes only
                // once it is idle).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                most = most.max(node.addr.send(ListPeers).await.unwrap().len());
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let peers = node.addr.send(ListPeers).await.unwrap();
        most = most.max(peers.len());
        assert!(
            most <= LIMIT + 1,
            "{most} peers tracked (limit {LIMIT} + the stored contact)"
        );
        // The latest strangers were answered: their sessions got room by
        // dropping older ones, not by being turned away at the limit.
        for (t, events) in strangers.iter_mut().rev().take(LIMIT / 2) {
            let answer = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while let Some(e) = events.next().await {
                    if let strata_transport::TransportEvent::Frame { bytes, .. } = e {
                        return Some(bytes);
                    }
                }
                None
            })
            .await
            .ok()
            .flatten();
            let answer = answer.unwrap_or_else(|| panic!("{} got no answer", t.local_addr()));
            assert!(
                matches!(strata_proto::Pdu::decode(&answer), Ok(strata_proto::Pdu::KeyPackage(_))),
                "{} got something else than step 2",
                t.local_addr()
            );
        }
        // Gone, as a flood's senders are.
        for (t, _) in &strangers {
            t.disconnect(&target).await.ok();
        }
        drop(strangers);
        // Idle strangers' sessions go once their handshakes stall and the
        // idle time passes.
        tokio::time::sleep(std::time::Duration::from_secs(400)).await;
        let left = node.addr.send(ListPeers).await.unwrap();
        assert!(left.len() <= 2, "left after the idle time: {left:?}");

        // The known contact resumes and talks; a new one connects.
        let mut alice = alice.restart(&net).await;
        assert!(alice.wait_ready().await, "alice resumed");
        alice.send_text("node", "after").await;
        node.wait_text("after").await;
        node.send_text("alice", "still here").await;
        alice.wait_text("still here").await;
        let mut carol = TestNode::start("carol", &net, 33, dir.path().join("c"));
        carol.connect("node").await;
        carol.wait_ready().await;
        carol.send_text("node", "new here").await;
        node.wait_text("new here").await;
    });
}

/// `AwaitReady` answers with a typed `Ready` carrying the request id: once
/// the handshake completes, and at once when the session is ready already;
/// a refused identity answers with the typed error.
#[test]
fn await_ready_answers_typed_and_correlated() {
    use strata_session::SessionError;
    use strata_session::actors::AwaitReady;

    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(11);
        let mut alice = TestNode::start("alice", &net, 41, dir.path().join("a"));
        let _bob = TestNode::start("bob", &net, 42, dir.path().join("b"));
        let waiting = alice.addr.send(AwaitReady {
            request_id: 7,
            peer: "bob".into(),
        });
        alice.connect("bob").await;
        let reply = waiting.await.unwrap();
        assert_eq!(reply.request_id, 7);
        let ready = reply.result.unwrap();
        assert!(!ready.resumed);
        assert_eq!(
            ready.installation,
            strata_test_support::identity(42).installation_id().to_string()
        );
        let again = alice
            .addr
            .send(AwaitReady {
                request_id: 8,
                peer: "bob".into(),
            })
            .await
            .unwrap();
        assert_eq!((again.request_id, again.result.unwrap()), (8, ready));

        let mut carol = TestNode::start("carol", &net, 43, dir.path().join("c"));
        let _impostor = boot_as(&net, "dave", installation_of(8), dir.path().join("d"), 9);
        let expected = installation_of(10).account().identity_key().serialize().to_vec();
        carol.try_connect("dave", Some(expected)).await.unwrap();
        // Asked after the refusal was seen: answered from the node's state.
        carol
            .wait_for("identity mismatch", |e| {
                matches!(e.kind, NodeEventKind::Session(Event::IdentityMismatch { .. }))
            })
            .await;
        let refused = carol
            .addr
            .send(AwaitReady {
                request_id: 9,
                peer: "dave".into(),
            })
            .await
            .unwrap();
        assert_eq!(refused.request_id, 9);
        assert!(
            matches!(refused.result, Err(SessionError::IdentityMismatch)),
            "{refused:?}"
        );
    });
}

/// Issue #16: a handshake's step 2 claims from the responder's pool, and a
/// claim that leaves it low is refilled by the node itself.
#[test]
fn a_low_pool_is_refilled_by_the_node_after_a_handshake() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(1);
        let mut alice = TestNode::start("alice", &net, 1, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 2, dir.path().join("b"));
        let pool = strata_session::Config::default().key_package_pool;
        let now_s = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        // Three one-time packages and a last resort: one claim leaves Bob
        // below the threshold.
        let small = strata_session::PoolConfig {
            stock: 3,
            ..pool.clone()
        };
        strata_session::keep_stocked(&bob.store(), &bob.identity, &small, now_s()).unwrap();
        handshake(&mut alice, &mut bob).await;
        // Step 2 came before Bob's encryptionReady, and so did the signal.
        let low: Vec<_> = bob
            .seen
            .iter()
            .filter_map(|e| match e.kind {
                NodeEventKind::Session(Event::LowKeyPackages { available, .. }) => Some(available),
                _ => None,
            })
            .collect();
        assert_eq!(low, vec![2], "one claim, two one-time packages left");
        // The node tops the stock up to its configured size on its own.
        let mut available = 0;
        for _ in 0..600 {
            available = bob.store().write(|w| w.key_package_status(now_s())).unwrap().available;
            if available == pool.stock {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(available, pool.stock, "refilled");
    });
}
