//! First contact from an invite over libp2p only (issue #19): two Strata
//! session `Node`s that know nothing of each other but a relay run
//! BisonRelay's key exchange on rendezvous topics, then the Strata
//! handshake with both identities pinned from it, and talk. Junk
//! published on the invite's rendezvous point first changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod libp2p_common;

use std::sync::Arc;
use std::time::Duration;

use libp2p_common::*;
use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::actors::{AcceptInvite, MakeInvite, NodeEventKind};
use strata_session::group::GroupEvent;
use strata_session::kx::{KxRefusal, rendezvous_topic};
use strata_session::{Event, SessionError};
use strata_store::KeySource;
use strata_test_support::libp2p::tcp_addr;
use strata_test_support::open_store;
use strata_transport::{PeerAddr, Transport as _};

fn identity(seed: u64) -> Arc<InstallationIdentity> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap())
}

#[test]
fn an_invite_over_libp2p_opens_a_session_pinned_on_both_sides() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let (alice_id, bob_id) = (identity(41), identity(42));
        let alice_inst = Installation::of(Arc::clone(&alice_id), dir.path(), relay_addr.clone());
        let bob_inst = Installation::of(Arc::clone(&bob_id), dir.path(), relay_addr);
        let mut alice = alice_inst.start().await;
        let mut bob = bob_inst.start().await;
        let alice_addr = PeerAddr::new(alice_id.installation_id().to_hex());
        let bob_addr = PeerAddr::new(bob_id.installation_id().to_hex());

        let invite = alice
            .addr
            .send(MakeInvite {
                request_id: 1,
                ttl: Duration::from_secs(3600),
                name: "alice".into(),
            })
            .await
            .unwrap()
            .result
            .unwrap();
        assert_eq!(invite.installation, *alice_id.installation_id().as_bytes());

        // Someone who saw the invite publishes junk where Alice waits.
        let topic = rendezvous_topic(&invite.initial_rendezvous);
        relay.publish(&topic, b"junk".to_vec().into()).await.unwrap();
        relay.publish(&topic, vec![0u8; 5000].into()).await.unwrap();

        let accepted = bob
            .addr
            .send(AcceptInvite {
                request_id: 2,
                invite: Box::new(invite.clone()),
                name: "bob".into(),
            })
            .await
            .unwrap()
            .result
            .unwrap();
        assert_eq!(accepted.installation, alice_id.installation_id());
        assert_eq!(
            accepted.identity_key,
            alice_id.account().identity_key().serialize().to_vec()
        );

        let exchanged = |e: &strata_session::actors::NodeEvent, account: &Arc<InstallationIdentity>, accepted: bool| {
            matches!(&e.kind, NodeEventKind::KeyExchanged { account: a, accepted: x, .. }
                if *a == account.account().identity_key().serialize().to_vec() && *x == accepted)
        };
        let at_alice = alice
            .wait_for("the key exchange", |e| exchanged(e, &bob_id, false))
            .await;
        assert_eq!(at_alice.peer, bob_addr);
        let at_bob = bob
            .wait_for("the key exchange", |e| exchanged(e, &alice_id, true))
            .await;
        assert_eq!(at_bob.peer, alice_addr);

        assert!(!bob.wait_ready().await, "a fresh session");
        assert!(!alice.wait_ready().await, "a fresh session");
        // Nobody's key was a surprise: no first-use pin, no change.
        for node in [&alice, &bob] {
            assert!(!node.seen.iter().any(|e| matches!(
                e.kind,
                NodeEventKind::Session(Event::IdentityChanged { .. } | Event::IdentityMismatch { .. })
            )));
        }

        bob.send_text(alice_addr.clone(), "hello alice, from your invite").await;
        alice.wait_text("hello alice, from your invite").await;
        alice.send_text(bob_addr.clone(), "hello bob").await;
        bob.wait_text("hello bob").await;

        // The exchange is done: accepting the invite again is refused.
        let again = bob
            .addr
            .send(AcceptInvite {
                request_id: 3,
                invite: Box::new(invite),
                name: "bob".into(),
            })
            .await
            .unwrap()
            .result;
        assert!(
            matches!(again, Err(SessionError::Kx(KxRefusal::AlreadyAccepted))),
            "{again:?}"
        );

        // Alice loses her session with Bob (its state is wiped while her
        // node is down). At start, her node finds a peer met by invite
        // without a session and resets: the exchange runs again over the
        // reset points, and the conversation goes on.
        alice.stop().await;
        {
            let store = open_store(&alice_inst.store_path, KeySource::Key(alice_inst.key.clone()), DEADLINE).await;
            store
                .write(|w| {
                    assert!(w.clear_handshake(bob_addr.as_str())?);
                    assert!(w.clear_layer_state(bob_addr.as_str())?);
                    Ok(())
                })
                .unwrap();
        }
        let mut alice = alice_inst.start().await;
        let reset =
            |e: &strata_session::actors::NodeEvent| matches!(e.kind, NodeEventKind::KeyExchanged { reset: true, .. });
        let at_bob = bob.wait_for("the reset exchange", reset).await;
        assert_eq!(at_bob.peer, alice_addr);
        let at_alice = alice.wait_for("the reset exchange", reset).await;
        assert_eq!(at_alice.peer, bob_addr);
        alice.wait_ready().await;
        bob.send_text(alice_addr.clone(), "still there after the reset?").await;
        alice.wait_text("still there after the reset?").await;
        alice.send_text(bob_addr.clone(), "yes").await;
        bob.wait_text("yes").await;
        assert!(!alice.seen.iter().any(|e| matches!(
            e.kind,
            NodeEventKind::Session(Event::IdentityChanged { .. } | Event::IdentityMismatch { .. })
        )));

        alice.stop().await;
        bob.stop().await;
        relay.shutdown().await;
    });
}

/// Starts an installation with its KeyPackage pool stocked (group adds
/// claim from it), as the daemon does at start.
async fn stocked(inst: &Installation) -> Running {
    let identity = Arc::clone(&inst.identity);
    inst.start_with(move |_, store| {
        strata_session::keep_stocked(
            store,
            &identity,
            &strata_session::Config::default().key_package_pool,
            strata_test_support::now_s(),
        )
        .unwrap();
    })
    .await
}

/// A group's admin introduces a new member to the others (BisonRelay's
/// auto-KX): Bob, the admin, has sessions with Alice and Carol, who have
/// none with each other. Carol joins first, then Alice; Alice, joining,
/// asks Bob to introduce her to Carol, Carol's invite reaches her sealed
/// through Bob, they run the key exchange over gossip and the handshake,
/// and talk directly, each pinned by the exchange.
#[test]
fn a_new_group_member_is_introduced_to_the_others_through_the_admin() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let ids = [identity(51), identity(52), identity(53)];
        let insts: Vec<Installation> = ids
            .iter()
            .map(|id| Installation::of(Arc::clone(id), dir.path(), relay_addr.clone()))
            .collect();
        let mut bob = stocked(&insts[0]).await;
        let mut alice = stocked(&insts[1]).await;
        let mut carol = stocked(&insts[2]).await;
        let [_, alice_addr, carol_addr] = ids.each_ref().map(|i| PeerAddr::new(i.installation_id().to_hex()));

        bob.connect(alice_addr.clone()).await;
        bob.connect(carol_addr.clone()).await;
        for _ in 0..2 {
            bob.wait_ready().await;
        }
        alice.wait_ready().await;
        carol.wait_ready().await;

        let group = bob.create_group("introductions").await;
        bob.add_to_group(&group, carol_addr.clone()).await;
        carol
            .wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;
        bob.add_to_group(&group, alice_addr.clone()).await;
        alice
            .wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;

        let at_alice = alice
            .wait_for("the introduction's key exchange", |e| {
                matches!(e.kind, NodeEventKind::KeyExchanged { accepted: true, .. })
            })
            .await;
        assert_eq!(at_alice.peer, carol_addr);
        let at_carol = carol
            .wait_for("the introduction's key exchange", |e| {
                matches!(e.kind, NodeEventKind::KeyExchanged { accepted: false, .. })
            })
            .await;
        assert_eq!(at_carol.peer, alice_addr);
        let ready_with = |peer: &PeerAddr| {
            let peer = peer.clone();
            move |e: &strata_session::actors::NodeEvent| {
                e.peer == peer && matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. }))
            }
        };
        alice.wait_for("a session with Carol", ready_with(&carol_addr)).await;
        carol.wait_for("a session with Alice", ready_with(&alice_addr)).await;

        alice
            .send_text(carol_addr.clone(), "hello carol, bob introduced us")
            .await;
        carol.wait_text("hello carol, bob introduced us").await;
        carol.send_text(alice_addr.clone(), "hello alice").await;
        alice.wait_text("hello alice").await;
        // Bob mediated, and met nobody new.
        assert!(
            !bob.all_events()
                .iter()
                .any(|e| matches!(e.kind, NodeEventKind::KeyExchanged { .. }))
        );

        for node in [alice, bob, carol] {
            node.stop().await;
        }
        relay.shutdown().await;
    });
}
