//! A 5-member group chat over PeerJS/WebRTC (issue #17): session `Node`s
//! on an embedded broker with real WebRTC data channels. The admin has a
//! link and a pair session with every member; m1 and m2 also have one with
//! each other; the others reach each other only through the admin, which
//! passes every member's message on (PeerJS has no broadcast). Adds, texts
//! all ways, a remove, a restart and a late add.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod peerjs_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peerjs_common::{PeerNode, fresh_identity, open_store, peer_id, run};
use strata_cascade::InstallationIdentity;
use strata_session::group::{GroupCommand, GroupEvent};
use strata_session::{Config, keep_stocked};
use strata_test_support::groups::is_group_text;
use strata_test_support::now_s;
use strata_test_support::peerjs;
use strata_transport_peerjs::{BrokerConfig, PeerJsTransport};

type Node = PeerNode<PeerJsTransport>;

/// Starts `identity`'s node on its store in `dir`, its KeyPackage pool
/// stocked first, as the daemon does at start.
async fn start(name: &'static str, identity: &Arc<InstallationIdentity>, dir: &Path, port: u16) -> Node {
    let store = open_store(dir).await;
    keep_stocked(&store, identity, &Config::default().key_package_pool, now_s()).unwrap();
    drop(store);
    let (transport, stream) = PeerJsTransport::start(peerjs::config(&peer_id(identity), port))
        .await
        .unwrap();
    PeerNode::boot(name, Arc::clone(identity), dir.to_owned(), transport, stream).await
}

async fn wait_epoch(node: &mut Node, group: &str, epoch: u64) {
    node.wait_group(
        group,
        "an epoch",
        |e| matches!(e, GroupEvent::Epoch { epoch: n, .. } if *n == epoch),
    )
    .await;
}

#[test]
fn five_members_chat_over_webrtc_through_adds_a_remove_and_a_restart() {
    run(async {
        let broker = peerjs::broker(BrokerConfig::default()).await;
        let port = broker.local_addr().port();
        let dir = tempfile::tempdir().unwrap();
        let names = ["admin", "m1", "m2", "m3", "m4"];
        let identities: Vec<_> = names.iter().map(|_| fresh_identity()).collect();
        let dirs: Vec<PathBuf> = names.iter().map(|n| dir.path().join(n)).collect();
        let mut nodes = Vec::new();
        for ((name, identity), dir) in names.iter().zip(&identities).zip(&dirs) {
            nodes.push(start(name, identity, dir, port).await);
        }
        let ids: Vec<_> = nodes.iter().map(|n| n.id.clone()).collect();

        // Links: the admin with everyone, and m1 with m2.
        for id in &ids[1..] {
            nodes[0].connect(id).await;
        }
        for i in 1..5 {
            nodes[0].wait_ready().await;
            nodes[i].wait_ready().await;
        }
        nodes[1].connect(&ids[2]).await;
        nodes[1].wait_ready().await;
        nodes[2].wait_ready().await;

        let group = nodes[0].create_group("five").await;
        for id in &ids[1..4] {
            nodes[0].add_to_group(&group, id).await;
        }
        for n in &mut nodes[1..4] {
            n.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
                .await;
        }
        for n in &mut nodes[1..3] {
            wait_epoch(n, &group, 3).await;
        }

        // Texts all ways among the four.
        for (name, n) in names.iter().zip(&mut nodes).take(4) {
            n.group_send(&group, &format!("hello from {name}")).await;
        }
        for (i, n) in nodes.iter_mut().enumerate().take(4) {
            for (_, name) in names.iter().enumerate().take(4).filter(|(j, _)| *j != i) {
                n.wait_group_text(&group, &format!("hello from {name}")).await;
            }
        }

        // m3 is removed.
        let gone = identities[3].installation_id();
        nodes[0].group_command(&group, GroupCommand::Remove(vec![gone])).await;
        nodes[3]
            .wait_group(&group, "removed", |e| *e == GroupEvent::Removed)
            .await;
        for n in &mut nodes[0..3] {
            wait_epoch(n, &group, 4).await;
        }

        // m2 restarts on its store: its links and sessions come back
        // through the broker by themselves, and its group goes on.
        let m2 = nodes.remove(2);
        m2.shutdown().await;
        let mut m2 = start("m2", &identities[2], &dirs[2], port).await;
        assert!(m2.wait_ready().await, "a stored session resumes");
        nodes.insert(2, m2);
        nodes[0].group_send(&group, "after the restart").await;
        nodes[2].group_send(&group, "m2 is back").await;
        for i in [1, 2] {
            nodes[i].wait_group_text(&group, "after the restart").await;
        }
        for i in [0, 1] {
            nodes[i].wait_group_text(&group, "m2 is back").await;
        }

        // A late add: m4, linked to the admin only, talks with everyone.
        nodes[0].add_to_group(&group, &ids[4]).await;
        nodes[4]
            .wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { epoch: 5, .. }))
            .await;
        for n in &mut nodes[1..3] {
            wait_epoch(n, &group, 5).await;
        }
        nodes[4].group_send(&group, "hello from the newest").await;
        nodes[1].group_send(&group, "welcome m4").await;
        for i in [0, 1, 2] {
            nodes[i].wait_group_text(&group, "hello from the newest").await;
        }
        for i in [0, 2, 4] {
            nodes[i].wait_group_text(&group, "welcome m4").await;
        }

        // Each text once everywhere; nothing after its removal at m3.
        let mut texts: Vec<String> = names[..4].iter().map(|n| format!("hello from {n}")).collect();
        texts.extend(["after the restart", "m2 is back", "hello from the newest", "welcome m4"].map(String::from));
        for (i, n) in nodes.iter_mut().enumerate() {
            for text in &texts {
                let copies = n.all_events().iter().filter(|e| is_group_text(e, &group, text)).count();
                assert!(copies <= 1, "{}: {text} {copies} times", names[i]);
                if i == 3 && texts[4..].contains(text) {
                    assert_eq!(copies, 0, "m3 read {text} after its removal");
                }
            }
        }

        for n in nodes {
            n.shutdown().await;
        }
        broker.shutdown().await;
    });
}
