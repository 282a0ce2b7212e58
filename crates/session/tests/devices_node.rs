//! Multi-device over the memory network: two accounts, one with two
//! devices and one with three (one stale, partitioned), exchange texts;
//! every listed device of both sees the whole conversation, the stale one
//! hears nothing after its partitioned answer, and a removed device stops
//! receiving.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod node_common;

use std::sync::Arc;
use std::time::Duration;

use node_common::{TestNode, run};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::devices::sign_device_list;
use strata_cascade::{AccountIdentity, InstallationId, InstallationIdentity};
use strata_session::Content;
use strata_session::actors::{ListDevices, NodeEventKind};
use strata_session::group::GroupEvent;
use strata_session::machine::Event;
use strata_store::{KeySource, MemoryBackend, Store};
use strata_test_support::devices::{Accounts, send_to, two_and_three, wait_list, wait_ready_with, wait_text};
use strata_transport::memory::MemoryNetwork;

/// One device of an account: keys of its own, the account key shared.
fn device(account: &AccountIdentity, seed: u64) -> Arc<InstallationIdentity> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    Arc::new(InstallationIdentity::generate(account.clone(), &mut rng).unwrap())
}

/// Starts `identity` at the address its installation id names, its store
/// holding `list` (the account's device list, as pairing leaves it).
fn start(net: &MemoryNetwork, identity: Arc<InstallationIdentity>, list: &[u8], seed: u64) -> TestNode {
    let name: &'static str = Box::leak(identity.installation_id().to_hex().into_boxed_str());
    let backend = MemoryBackend::new();
    let key = StorageKey::generate(&mut ChaCha20Rng::seed_from_u64(seed));
    let store = Store::open(backend.clone(), KeySource::Key(key.clone())).unwrap();
    let account = identity.account().identity_key().serialize();
    store.write(|w| w.set_device_list(&account, list)).unwrap();
    let (transport, stream) = net.join(name).unwrap();
    let downloads = std::env::temp_dir().join(format!("strata-devices-{name}"));
    TestNode::boot(name, transport, stream, identity, backend, key, downloads)
}

fn account_list(account: &AccountIdentity, version: u64, devices: &[&Arc<InstallationIdentity>]) -> Vec<u8> {
    let ids: Vec<InstallationId> = devices.iter().map(|d| d.installation_id()).collect();
    sign_device_list(account, version, &ids, &mut rand::rng())
        .unwrap()
        .as_bytes()
        .to_vec()
}

#[test]
fn two_accounts_with_several_devices_see_the_whole_conversation() {
    run(async {
        let net = MemoryNetwork::new(71);
        let accounts = Accounts::new(71);
        let devices: Vec<_> = accounts.a.iter().chain(accounts.b.iter()).cloned().collect();
        let mut nodes: Vec<TestNode> = devices
            .iter()
            .zip(1..)
            .map(|(d, seed)| start(&net, d.clone(), &accounts.list_of(d), seed))
            .collect();
        let [a1, a2, b1, b2, b3] = &mut nodes[..] else {
            unreachable!("five devices")
        };
        two_and_three(
            &accounts,
            [&mut a1.node, &mut a2.node],
            [&mut b1.node, &mut b2.node, &mut b3.node],
            Duration::from_secs(30),
        )
        .await;
    });
}

#[test]
fn a_sent_copy_from_another_account_is_dropped() {
    run(async {
        let net = MemoryNetwork::new(72);
        let mut rng = ChaCha20Rng::seed_from_u64(72);
        let (alice, mallory) = (AccountIdentity::generate(&mut rng), AccountIdentity::generate(&mut rng));
        let (a1, m1) = (device(&alice, 21), device(&mallory, 22));
        let mut na = start(&net, a1.clone(), &account_list(&alice, 5, &[&a1]), 21);
        let mut nm = start(&net, m1.clone(), &account_list(&mallory, 5, &[&m1]), 22);
        nm.connect(na.name).await;
        wait_ready_with(&mut nm, na.name).await;
        wait_ready_with(&mut na, nm.name).await;
        let forged = Content::SentCopy {
            to: mallory.identity_key().serialize().to_vec(),
            text: "you said this".into(),
        };
        nm.request(
            na.name,
            strata_session::actors::SessionRequest::Command(strata_session::Command::Send(forged)),
        )
        .await;
        // A file "you sent", from Mallory's own device.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("forged.bin");
        std::fs::write(&file, b"not yours").unwrap();
        nm.request(
            na.name,
            strata_session::actors::SessionRequest::SendFileCopy {
                path: file,
                to: mallory.identity_key().serialize().to_vec(),
            },
        )
        .await;
        nm.send_text(na.name, "after").await;
        na.wait_text("after").await;
        let copied = |e: &strata_session::actors::NodeEvent| {
            matches!(
                &e.kind,
                NodeEventKind::Session(Event::Received {
                    content: Content::SentCopy { .. } | Content::FileChunk { .. },
                    ..
                }) | NodeEventKind::FileReceived { .. }
            )
        };
        assert!(
            !na.seen.iter().any(copied),
            "a copy from another account is never published"
        );
    });
}

/// A new device pairs with Alice's through the node's offer, gets her
/// account key, contacts and device list, and from then on receives what a
/// contact sends to her account, as her first device does.
#[test]
fn a_device_pairs_over_the_network_and_receives_what_the_account_gets() {
    use strata_session::actors::OfferPairing;
    use strata_session::pairing::{Joiner, PairingError, PairingRefusal, join, store_grant};

    run(async {
        let net = MemoryNetwork::new(73);
        let mut rng = ChaCha20Rng::seed_from_u64(73);
        let (alice, carol) = (AccountIdentity::generate(&mut rng), AccountIdentity::generate(&mut rng));
        let (a1, c1) = (device(&alice, 31), device(&carol, 32));
        let mut na1 = start(&net, a1.clone(), &account_list(&alice, 5, &[&a1]), 31);
        let mut nc1 = start(&net, c1.clone(), &account_list(&carol, 5, &[&c1]), 32);
        nc1.connect(na1.name).await;
        wait_ready_with(&mut nc1, na1.name).await;
        // Alice's group with Carol, before the new device exists.
        let pool = strata_session::Config::default().key_package_pool;
        strata_session::keep_stocked(&nc1.store(), &c1, &pool, strata_test_support::now_s()).unwrap();
        let group = na1.create_group("climbing").await;
        na1.add_to_group(&group, nc1.name).await;
        nc1.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;
        // And Carol's group with Alice: Carol sequences it.
        strata_session::keep_stocked(&na1.store(), &a1, &pool, strata_test_support::now_s()).unwrap();
        let carols = nc1.create_group("carols").await;
        nc1.add_to_group(&carols, na1.name).await;
        na1.wait_group(&carols, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;

        let offer = na1
            .addr
            .send(OfferPairing { request_id: 3 })
            .await
            .unwrap()
            .result
            .unwrap();
        let new_id = strata_cascade::InstallationId::from_bytes([0x42; 16]);
        let name: &'static str = Box::leak(new_id.to_hex().into_boxed_str());
        let (transport, mut events) = net.join(name).unwrap();
        let device_addr = strata_transport::PeerAddr::new(na1.name);

        // A wrong secret changes nothing and is told so.
        let wrong = Joiner::new(strata_cascade::pairing::PairingSecret::generate(&mut rng), new_id).unwrap();
        let refused = join(&transport, &mut events, &device_addr, &wrong, Duration::from_secs(20)).await;
        assert_eq!(
            refused.unwrap_err(),
            PairingError::Refused(Some(PairingRefusal::UnknownOffer))
        );

        let joiner = Joiner::new(offer.secret.clone(), new_id).unwrap();
        let grant = join(&transport, &mut events, &device_addr, &joiner, Duration::from_secs(20))
            .await
            .unwrap();
        // A second device with the same offer is refused.
        let late = Joiner::new(offer.secret, strata_cascade::InstallationId::from_bytes([0x43; 16])).unwrap();
        let used = join(&transport, &mut events, &device_addr, &late, Duration::from_secs(20)).await;
        assert_eq!(used.unwrap_err(), PairingError::Refused(Some(PairingRefusal::Used)));
        drop(transport);

        // The new device: the account key from the grant, its own keys.
        let account = AccountIdentity::import(&grant.account).unwrap();
        assert_eq!(account.identity_key(), alice.identity_key());
        let a2 = Arc::new(InstallationIdentity::generate_with_id(account, new_id, &mut rng).unwrap());
        assert_eq!(grant.contacts.len(), 1, "Carol");
        let backend = MemoryBackend::new();
        let key = StorageKey::generate(&mut rng);
        let store = Store::open(backend.clone(), KeySource::Key(key.clone())).unwrap();
        store_grant(&store, &grant).unwrap();
        strata_session::keep_stocked(&store, &a2, &pool, strata_test_support::now_s()).unwrap();
        // `strata run` after `devices join`: the same address, a new process.
        let (transport, stream) = net.restart(&strata_transport::PeerAddr::new(name)).unwrap();
        let mut na2 = TestNode::boot(name, transport, stream, a2, backend, key, std::env::temp_dir());
        wait_ready_with(&mut na2, na1.name).await;

        // Carol hears of the new list from Alice's first device, and her
        // next text reaches both.
        let list = na1.addr.send(ListDevices).await.unwrap().unwrap();
        wait_list(&mut nc1, &alice, list.version).await;
        let sent = send_to(&mut nc1, &alice, "to both").await;
        assert_eq!(sent.len(), 2);
        wait_text(&mut na1, "to both").await;
        wait_text(&mut na2, "to both").await;
        // Alice's first device sequences the group: it adds the new one.
        na2.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;
        nc1.group_send(&group, "hello both of you").await;
        na2.wait_group_text(&group, "hello both of you").await;
        na1.wait_group_text(&group, "hello both of you").await;
        // Carol sequences her group: Alice's first device asks her node to
        // add the new one, a device Alice's list names, and it does so
        // without asking Carol.
        na2.wait_group(&carols, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;
        nc1.group_send(&carols, "welcome, second device").await;
        na2.wait_group_text(&carols, "welcome, second device").await;
        assert!(
            !nc1.seen.iter().any(|e| matches!(
                &e.kind,
                NodeEventKind::Group {
                    event: GroupEvent::AddRequested { .. },
                    ..
                }
            )),
            "Carol's user was not asked"
        );
    });
}

/// Re-keying (54/WAKU2-X3DH-SESSIONS): Bob publishes a bundle, then a newer
/// one; Alice's session with him expires on the newer one, and her next
/// send opens a new session from it, which both sides then use.
#[test]
fn a_newer_bundle_re_keys_the_session_at_the_next_send() {
    use strata_session::ResetReason;
    use strata_session::prekeys;

    run(async {
        let net = MemoryNetwork::new(74);
        let mut rng = ChaCha20Rng::seed_from_u64(74);
        let (alice, bob) = (AccountIdentity::generate(&mut rng), AccountIdentity::generate(&mut rng));
        let (a1, b1) = (device(&alice, 41), device(&bob, 42));
        let topic = strata_transport::Topic::new("bundles-of-bob");
        // Alice follows Bob's bundle topic; a third node publishes them (a
        // bundle is self-certifying: who relays it does not matter).
        let name: &'static str = Box::leak(a1.installation_id().to_hex().into_boxed_str());
        let (transport, stream) = net.join(name).unwrap();
        strata_transport::Transport::subscribe(&transport, &topic)
            .await
            .unwrap();
        let backend = MemoryBackend::new();
        let key = StorageKey::generate(&mut rng);
        let mut na = TestNode::boot(name, transport, stream, a1.clone(), backend, key, std::env::temp_dir());
        let mut nb = start(&net, b1.clone(), &account_list(&bob, 5, &[&b1]), 42);
        let (relay, _relay_events) = net.join("relay").unwrap();

        na.connect(nb.name).await;
        wait_ready_with(&mut na, nb.name).await;
        let config = strata_session::Config::default();
        let now_ms = strata_test_support::now_s() * 1000;
        let bob_store = nb.store();
        let v1 = prekeys::ensure(&bob_store, &b1, &config, now_ms).unwrap();
        let publish = |pre_keys: &strata_cascade::InstallationPreKeys| {
            prekeys::signed_bundle(&b1, pre_keys, now_ms, Vec::new()).unwrap()
        };
        strata_transport::Transport::publish(&relay, &topic, publish(&v1).into())
            .await
            .unwrap();
        nb.send_text(na.name, "before").await;
        na.wait_text("before").await;
        // Seen once: the first version only marks what Alice knows.
        assert!(
            !na.seen
                .iter()
                .any(|e| matches!(e.kind, NodeEventKind::Session(Event::SessionReset { .. })))
        );

        let v2 = prekeys::rotate(&bob_store, &b1, &config, now_ms).unwrap();
        assert!(v2.version() > v1.version());
        strata_transport::Transport::publish(&relay, &topic, publish(&v2).into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        na.send_text(nb.name, "after the new bundle").await;
        na.wait_for("re-keyed", |e| {
            matches!(
                e.kind,
                NodeEventKind::Session(Event::SessionReset {
                    reason: ResetReason::Rekeyed
                })
            )
        })
        .await;
        nb.wait_for("the peer's new session", |e| {
            matches!(
                e.kind,
                NodeEventKind::Session(Event::SessionReset {
                    reason: ResetReason::PeerRestarted
                })
            )
        })
        .await;
        nb.wait_text("after the new bundle").await;
        // Nothing was sent under the expiring session meanwhile.
        let refused = |e: &strata_session::actors::NodeEvent| {
            matches!(
                e.kind,
                NodeEventKind::Session(Event::Refused { .. } | Event::PeerError { .. })
            )
        };
        assert!(!nb.seen.iter().any(refused) && !na.seen.iter().any(refused));
        // Both sides are on the new session: texts flow both ways.
        nb.send_text(na.name, "on the new session").await;
        na.wait_text("on the new session").await;
        na.send_text(nb.name, "and back").await;
        nb.wait_text("and back").await;
    });
}

/// A member asks the sequencer to add an installation that its account's
/// list does not name (a device holding its account key, but not listed):
/// the sequencer's node does not add it on its own, it asks its user.
#[test]
fn a_member_cannot_have_another_accounts_device_added_unasked() {
    use strata_session::group::GroupCommand;

    run(async {
        let net = MemoryNetwork::new(75);
        let mut rng = ChaCha20Rng::seed_from_u64(75);
        let (carol, mallory) = (AccountIdentity::generate(&mut rng), AccountIdentity::generate(&mut rng));
        let (c1, m1, m2, m3) = (
            device(&carol, 53),
            device(&mallory, 54),
            device(&mallory, 55),
            device(&mallory, 56),
        );
        // Mallory's list names two devices (so Carol holds it), not m2.
        let list = account_list(&mallory, 5, &[&m1, &m3]);
        let mut nc1 = start(&net, c1.clone(), &account_list(&carol, 5, &[&c1]), 53);
        let mut nm1 = start(&net, m1.clone(), &list, 54);
        let nm2 = start(&net, m2.clone(), &list, 55);
        let pool = strata_session::Config::default().key_package_pool;
        strata_session::keep_stocked(&nm2.store(), &m2, &pool, strata_test_support::now_s()).unwrap();
        nc1.connect(nm1.name).await;
        wait_ready_with(&mut nc1, nm1.name).await;
        wait_list(&mut nc1, &mallory, 5).await;
        strata_session::keep_stocked(&nm1.store(), &m1, &pool, strata_test_support::now_s()).unwrap();
        let group = nc1.create_group("carols").await;
        nc1.add_to_group(&group, nm1.name).await;
        nm1.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;

        let target = m2.installation_id();
        nm1.group_command(
            &group,
            GroupCommand::AskToAdd {
                member: target,
                address: target.to_hex(),
            },
        )
        .await;
        nc1.wait_group(
            &group,
            "the request, for the user",
            |e| matches!(e, GroupEvent::AddRequested { member, .. } if *member == target.to_hex()),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let info = nc1.group_info(&group).await;
        assert!(!info.members.contains(&target.to_hex()), "{info:?}");
    });
}
