//! Multi-device over the memory network: two accounts, one with two
//! devices and one with three (one stale, partitioned), exchange texts;
//! every listed device of both sees the whole conversation, the stale one
//! hears nothing after its partitioned answer, and a removed device stops
//! receiving.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod node_common;

use std::sync::Arc;
use std::time::Duration;

use node_common::{DEADLINE, TestNode, run};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::devices::sign_device_list;
use strata_cascade::{AccountIdentity, InstallationId, InstallationIdentity};
use strata_session::Content;
use strata_session::actors::{ChangeDevices, FannedOut, ListDevices, NodeEvent, NodeEventKind, SendToAccount};
use strata_session::machine::Event;
use strata_store::{KeySource, MemoryBackend, Store};
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

async fn send_to(node: &mut TestNode, account: &AccountIdentity, text: &str) -> Vec<FannedOut> {
    let reply = node
        .addr
        .send(SendToAccount {
            request_id: 1,
            account: account.identity_key().serialize().to_vec(),
            text: text.into(),
        })
        .await
        .unwrap();
    let sent = reply.result.unwrap();
    for copy in &sent {
        assert!(copy.outcome.is_ok(), "{}: {:?}", node.name, copy);
    }
    sent
}

fn is_text(e: &NodeEvent, want: &str) -> bool {
    matches!(&e.kind, NodeEventKind::Session(Event::Received { content: Content::Text { text }, .. }) if text == want)
}

fn is_copy(e: &NodeEvent, want: &str) -> bool {
    matches!(&e.kind, NodeEventKind::Session(Event::Received { content: Content::SentCopy { text, .. }, .. }) if text == want)
}

async fn wait_text(node: &mut TestNode, text: &str) {
    node.wait_for(text, |e| is_text(e, text)).await;
}

async fn wait_copy(node: &mut TestNode, text: &str) {
    node.wait_for(text, |e| is_copy(e, text)).await;
}

/// Waits until `node`'s session with `peer` is ready (a node also opens
/// sessions with its own devices on its own).
async fn wait_ready_with(node: &mut TestNode, peer: &str) {
    node.wait_for("encryptionReady", |e| {
        e.peer.as_str() == peer && matches!(e.kind, NodeEventKind::Session(Event::EncryptionReady { .. }))
    })
    .await;
}

/// Waits until `node` holds a list of `account` at `version`.
async fn wait_list(node: &mut TestNode, account: &AccountIdentity, version: u64) {
    let key = account.identity_key().serialize().to_vec();
    node.wait_for("a device list", |e| {
        matches!(&e.kind, NodeEventKind::DevicesChanged { account, version: v, .. } if *account == key && *v == version)
    })
    .await;
}

/// Lets the network run for `d` (virtual time), collecting events.
async fn settle(nodes: &mut [&mut TestNode], d: Duration) {
    tokio::time::sleep(d).await;
    for node in nodes.iter_mut() {
        while let Ok(e) = node.events.try_recv() {
            node.seen.push(e);
        }
    }
}

fn got(node: &TestNode, text: &str) -> bool {
    node.seen.iter().any(|e| is_text(e, text))
}

#[test]
fn two_accounts_with_several_devices_see_the_whole_conversation() {
    run(async {
        let net = MemoryNetwork::new(71);
        let mut rng = ChaCha20Rng::seed_from_u64(71);
        let (alice, bob) = (AccountIdentity::generate(&mut rng), AccountIdentity::generate(&mut rng));
        let (a1, a2) = (device(&alice, 1), device(&alice, 2));
        let (b1, b2, b3) = (device(&bob, 11), device(&bob, 12), device(&bob, 13));
        let alice_list = account_list(&alice, 100, &[&a1, &a2]);
        // Bob's list names two devices: the third holds the account key
        // and the list, but is not one of them (a stale copy).
        let bob_list = account_list(&bob, 200, &[&b1, &b2]);
        let mut na1 = start(&net, a1.clone(), &alice_list, 1);
        let mut na2 = start(&net, a2.clone(), &alice_list, 2);
        let mut nb1 = start(&net, b1.clone(), &bob_list, 11);
        let mut nb2 = start(&net, b2.clone(), &bob_list, 12);
        let mut nb3 = start(&net, b3.clone(), &bob_list, 13);

        // Alice's first device knows only the stale one (an old contact).
        na1.connect(nb3.name).await;
        wait_ready_with(&mut na1, nb3.name).await;
        let first = send_to(&mut na1, &bob, "hello-1").await;
        let theirs: Vec<InstallationId> = first.iter().filter(|c| !c.own_device).map(|c| c.installation).collect();
        assert_eq!(
            theirs,
            vec![b3.installation_id()],
            "no list known: the pinned installation"
        );
        assert!(
            first
                .iter()
                .any(|c| c.own_device && c.installation == a2.installation_id())
        );
        wait_text(&mut nb3, "hello-1").await;
        // Its partitioned answer tells Alice Bob's list; the text is sent
        // again to the devices it names.
        wait_list(&mut na1, &bob, 200).await;
        wait_text(&mut nb1, "hello-1").await;
        wait_text(&mut nb2, "hello-1").await;
        wait_copy(&mut na2, "hello-1").await;

        let second = send_to(&mut na1, &bob, "hello-2").await;
        let mut theirs: Vec<InstallationId> = second
            .iter()
            .filter(|c| !c.own_device)
            .map(|c| c.installation)
            .collect();
        theirs.sort();
        let mut listed = vec![b1.installation_id(), b2.installation_id()];
        listed.sort();
        assert_eq!(theirs, listed);
        wait_text(&mut nb1, "hello-2").await;
        wait_text(&mut nb2, "hello-2").await;
        wait_copy(&mut na2, "hello-2").await;

        // Bob answers from his second device: both of Alice's get it, and
        // his first device gets the copy.
        let back = send_to(&mut nb2, &alice, "hi-back").await;
        assert_eq!(back.iter().filter(|c| !c.own_device).count(), 2);
        wait_text(&mut na1, "hi-back").await;
        wait_text(&mut na2, "hi-back").await;
        wait_copy(&mut nb1, "hi-back").await;

        settle(&mut [&mut nb3], Duration::from_secs(30)).await;
        assert!(!got(&nb3, "hello-2"), "the stale device gets nothing after its answer");
        assert!(!got(&nb3, "hi-back"));
        let listed = nb3.addr.send(ListDevices).await.unwrap().unwrap();
        assert!(!listed.paired);

        // Bob removes his second device: the new list reaches Alice and
        // his removed device, which hears nothing more.
        let version = nb1
            .addr
            .send(ChangeDevices {
                request_id: 2,
                add: Vec::new(),
                remove: vec![b2.installation_id()],
            })
            .await
            .unwrap()
            .result
            .unwrap();
        wait_list(&mut na1, &bob, version).await;
        let after = send_to(&mut na1, &bob, "hello-3").await;
        let theirs: Vec<InstallationId> = after.iter().filter(|c| !c.own_device).map(|c| c.installation).collect();
        assert_eq!(theirs, vec![b1.installation_id()]);
        wait_text(&mut nb1, "hello-3").await;
        settle(&mut [&mut nb2], Duration::from_secs(30)).await;
        assert!(!got(&nb2, "hello-3"), "a removed device stops receiving");
        let _ = DEADLINE;
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
        nm.send_text(na.name, "after").await;
        na.wait_text("after").await;
        assert!(!na.seen.iter().any(|e| is_copy(e, "you said this")));
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
    });
}
