//! KeyPackage claims between `Node`s over `MemoryTransport` (issue #16,
//! "Done when"): a hundred peers claim from one node at once and no
//! package is handed out twice; a package claimed, then used after both
//! nodes restarted, still joins its owner to a group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod node_common;

use std::collections::BTreeSet;

use node_common::{TestNode, now_s, run, stocked_pair};
use strata_cascade::MlsLayer;
use strata_session::actors::{ClaimKeyPackage, NodeEventKind};
use strata_session::{ClaimedKeyPackage, Config, Event, keep_stocked};
use strata_transport::memory::MemoryNetwork;

async fn claim(node: &TestNode, peer: &'static str, request_id: u64) -> ClaimedKeyPackage {
    let reply = node
        .addr
        .send(ClaimKeyPackage {
            request_id,
            peer: peer.into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.request_id, request_id);
    reply.result.unwrap_or_else(|e| panic!("claim {request_id}: {e}"))
}

#[test]
fn a_hundred_peers_claim_at_once_and_no_package_is_handed_out_twice() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(4);
        let mut bob = TestNode::start("bob", &net, 1, dir.path().join("bob"));
        let pool = Config::default().key_package_pool;
        keep_stocked(&bob.store(), &bob.identity, &pool, now_s()).unwrap();
        let mut peers: Vec<TestNode> = (0..100u64)
            .map(|i| {
                let name: &'static str = Box::leak(format!("peer{i}").into_boxed_str());
                TestNode::start(name, &net, 100 + i, dir.path().join(name))
            })
            .collect();
        for p in &mut peers {
            p.connect("bob").await;
        }
        for p in &mut peers {
            p.wait_ready().await;
        }
        // Every claim at once: a hundred sessions each claim one package.
        let claims = peers.iter().enumerate().map(|(i, p)| claim(p, "bob", i as u64));
        let got = futures::future::join_all(claims).await;
        let bob_hex = bob.identity.installation_id().to_hex();
        assert!(got.iter().all(|p| p.installation == bob_hex));
        let one_time: Vec<&[u8]> = got
            .iter()
            .filter(|p| !p.last_resort)
            .map(|p| p.key_ref.as_slice())
            .collect();
        let distinct: BTreeSet<&[u8]> = one_time.iter().copied().collect();
        assert_eq!(distinct.len(), one_time.len(), "a one-time package went out twice");
        // Bob's handshakes took one package each too (step 2); with the
        // refills, most claims still got a one-time package.
        assert!(one_time.len() >= 50, "{} one-time packages", one_time.len());
        let status = bob.store().write(|w| w.key_package_status(now_s())).unwrap();
        assert_eq!(status.held, one_time.len() as u64, "each one held for its claimer");
        // Bob counted each claim he served, and refilled his pool himself.
        let mut served_one_time = 0;
        for _ in 0..100 {
            let e = bob
                .wait_for("KeyPackageServed", |e| {
                    matches!(e.kind, NodeEventKind::Session(Event::KeyPackageServed { .. }))
                })
                .await;
            if let NodeEventKind::Session(Event::KeyPackageServed { last_resort: false }) = e.kind {
                served_one_time += 1;
            }
        }
        assert_eq!(served_one_time, one_time.len());
        let mut available = 0;
        for _ in 0..600 {
            available = bob.store().write(|w| w.key_package_status(now_s())).unwrap().available;
            if available >= pool.refill_below {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Above the threshold again, and more one-time packages went out
        // (claims alone, step 2s aside) than the first stock held: the
        // node refilled by itself, on the low-stock signal.
        assert!(available >= pool.refill_below, "{available} left");
        assert!(one_time.len() as u64 + available > pool.stock, "refilled");
    });
}

#[test]
fn a_package_claimed_then_used_after_both_nodes_restarted_still_works() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(5);
        let (alice, bob) = stocked_pair(&net, 11, dir.path()).await;
        let claimed = claim(&alice, "bob", 1).await;
        assert!(!claimed.last_resort);

        let alice = alice.restart(&net).await;
        let bob = bob.restart(&net).await;

        // Alice uses the package she holds: a group with Bob, from it.
        let bob_hex = bob.identity.installation_id().to_hex();
        let alice_hex = alice.identity.installation_id().to_hex();
        let package = alice
            .store()
            .write(|w| w.take_peer_key_package(&bob_hex, now_s()))
            .unwrap()
            .expect("the claimed package survived the restart");
        assert_eq!(package.key_package.key_ref, claimed.key_ref);
        let mut at_alice = MlsLayer::new(&alice.identity, bob.identity.peer_identity()).unwrap();
        let welcome = at_alice.create_group(&package.key_package.bytes).unwrap();

        // Bob joins with the private parts his pool kept for Alice's claim.
        let secrets = bob
            .store()
            .write(|w| w.redeem_key_package(&alice_hex, &claimed.key_ref, now_s()))
            .unwrap()
            .expect("held for Alice across the restart");
        let secrets = strata_cascade::KeyPackageSecrets::from_bytes(secrets.as_bytes()).unwrap();
        let mut at_bob =
            MlsLayer::with_key_package_secrets(&bob.identity, alice.identity.peer_identity(), &secrets).unwrap();
        at_bob.join_group(&welcome).unwrap();
        assert_eq!(at_bob.group_id(), at_alice.group_id());
        // The group works: Bob commits an update, Alice follows it.
        let commit = at_bob.self_update().unwrap();
        assert_eq!(at_alice.process_commit(&commit).unwrap(), at_bob.epoch().unwrap());
        // Used once: neither side can use it again.
        assert!(
            bob.store()
                .write(|w| w.redeem_key_package(&alice_hex, &claimed.key_ref, now_s()))
                .unwrap()
                .is_none()
        );
        let reused = alice
            .store()
            .write(|w| w.receive_peer_key_package(&bob.identity.peer_identity(), &package.key_package.bytes, now_s()));
        assert!(
            matches!(reused, Err(strata_store::StoreError::KeyPackageReused)),
            "{reused:?}"
        );
    });
}
