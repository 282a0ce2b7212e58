//! Done-when of the session issue: two `Node`s over `MemoryTransport`
//! handshake, exchange text and a 50 MiB file, restart and resume without a
//! new handshake, and rotate keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod node_common;

use std::io::{Read as _, Write as _};

use node_common::{TestNode, run};
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
        let mut alice = TestNode::start("alice", &net, 3, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 4, dir.path().join("b"));
        alice.connect("bob").await;
        alice.wait_ready().await;
        bob.wait_ready().await;
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
        let mut alice = TestNode::start("alice", &net, 5, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 6, dir.path().join("b"));
        alice.connect("bob").await;
        alice.wait_ready().await;
        bob.wait_ready().await;
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
        let mut alice = TestNode::start("alice", &net, 7, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 8, dir.path().join("b"));
        alice.connect("bob").await;
        alice.wait_ready().await;
        bob.wait_ready().await;
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
        alice.connect("bob").await;
        alice.wait_ready().await;
        bob.wait_ready().await;
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
        alice.connect("bob").await;
        alice.wait_ready().await;
        bob.wait_ready().await;

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
