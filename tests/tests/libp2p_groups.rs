//! A 12-member group chat over real libp2p (issue #17): twelve session
//! `Node`s on loopback that know only a relay. The admin has a pair
//! session with each member (claims and Welcomes go through them); the
//! members have none with each other: they hear one another on the group's
//! gossip topic. Adds, texts all ways, a remove, a restart and a late add.
//!
//! Every node knows the relay alone: a star of 12 subscribers, more than
//! the relay keeps in its mesh (D_high 8), so some members hear the group
//! through the relay's IHAVE gossip (this test found gossipsub 0.50's
//! 16 KiB control-message cap silencing them; see the transport's docs).
//!
//! Real time, real sockets: every wait is on an event with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod libp2p_common;

use libp2p_common::*;
use strata_session::group::{GroupCommand, GroupEvent};
use strata_session::{Config, keep_stocked};
use strata_test_support::groups::is_group_text;
use strata_test_support::libp2p::tcp_addr;
use strata_test_support::now_s;

const NAMES: [&str; 12] = [
    "admin", "m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10", "m11",
];

/// Starts an installation with its KeyPackage pool stocked, as the daemon
/// does at start, and the product's link timers.
async fn start(inst: &Installation) -> Running {
    let identity = std::sync::Arc::clone(&inst.identity);
    inst.start_with(move |config, store| {
        config.link = strata_transport_libp2p::LinkConfig::default();
        keep_stocked(store, &identity, &Config::default().key_package_pool, now_s()).unwrap();
    })
    .await
}

/// How often `text` was received in `group` by `node`.
fn copies(node: &mut Running, group: &str, text: &str) -> usize {
    node.all_events()
        .iter()
        .filter(|e| is_group_text(e, group, text))
        .count()
}

#[test]
fn twelve_members_chat_over_libp2p_through_adds_a_remove_and_a_restart() {
    // Worker threads: twelve nodes' handshakes and MLS work must not
    // starve the libp2p tasks that keep their links alive.
    strata_test_support::run_threaded(async {
        let dir = tempfile::tempdir().unwrap();
        let (relay, _relay_events) = start_relay().await;
        let relay_addr = tcp_addr(&relay).await;
        let installs: Vec<Installation> = NAMES
            .iter()
            .zip(100..)
            .map(|(name, seed)| {
                let mut inst = Installation::new(name, seed, dir.path(), relay_addr.clone());
                // The members are named, not addressed by installation, and
                // this test is about the group: no introductions (55 key
                // exchanges and pair sessions on a 2-core runner).
                inst.session.introduce_group_members = false;
                inst
            })
            .collect();
        let mut nodes: Vec<Option<Running>> = Vec::new();
        for inst in &installs {
            nodes.push(Some(start(inst).await));
        }

        // The admin opens a session with every member.
        for name in &NAMES[1..] {
            nodes[0].as_mut().unwrap().connect(*name).await;
        }
        for i in 1..12 {
            nodes[i].as_mut().unwrap().wait_ready().await;
            nodes[0].as_mut().unwrap().wait_ready().await;
        }

        // Eleven members: ten adds, one commit each.
        let admin = nodes[0].as_mut().unwrap();
        let group = admin.create_group("twelve").await;
        for name in &NAMES[1..=10] {
            admin.add_to_group(&group, *name).await;
        }
        for (i, n) in nodes.iter_mut().enumerate().take(11).skip(1) {
            let n = n.as_mut().unwrap();
            n.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
                .await;
            if i < 10 {
                n.wait_group(&group, "the last add", |e| {
                    matches!(e, GroupEvent::Epoch { epoch: 10, .. })
                })
                .await;
            }
        }

        // Texts all ways: from each, to each.
        for (name, n) in NAMES.iter().zip(&mut nodes).take(11) {
            let text = format!("hello from {name}");
            n.as_mut().unwrap().group_send(&group, &text).await;
        }
        for (i, n) in nodes.iter_mut().enumerate().take(11) {
            for (_, name) in NAMES.iter().enumerate().take(11).filter(|(j, _)| *j != i) {
                let text = format!("hello from {name}");
                n.as_mut().unwrap().wait_group_text(&group, &text).await;
            }
        }

        // m05 is removed: told so, and the others move on.
        let gone = installs[5].identity.installation_id();
        nodes[0]
            .as_mut()
            .unwrap()
            .group_command(&group, GroupCommand::Remove(vec![gone]))
            .await;
        nodes[5]
            .as_mut()
            .unwrap()
            .wait_group(&group, "removed", |e| *e == GroupEvent::Removed)
            .await;
        let current: Vec<usize> = (0..=10).filter(|i| *i != 5).collect();
        for i in &current {
            nodes[*i]
                .as_mut()
                .unwrap()
                .wait_group(&group, "the removal", |e| {
                    matches!(e, GroupEvent::Epoch { epoch: 11, .. })
                })
                .await;
        }

        // m03 restarts: same store, same libp2p identity; its group comes
        // back from the store and goes on.
        nodes[3].take().unwrap().stop().await;
        let mut m03 = start(&installs[3]).await;
        assert!(m03.wait_ready().await, "the stored session with the admin resumes");
        nodes[3] = Some(m03);
        nodes[0].as_mut().unwrap().group_send(&group, "after the restart").await;
        nodes[3].as_mut().unwrap().group_send(&group, "m03 is back").await;
        for i in &current {
            let n = nodes[*i].as_mut().unwrap();
            if *i != 0 {
                n.wait_group_text(&group, "after the restart").await;
            }
            if *i != 3 {
                n.wait_group_text(&group, "m03 is back").await;
            }
        }

        // A late add: m11 joins at epoch 12 and talks with everyone.
        nodes[0].as_mut().unwrap().add_to_group(&group, NAMES[11]).await;
        nodes[11]
            .as_mut()
            .unwrap()
            .wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { epoch: 12, .. }))
            .await;
        let mut current = current;
        current.push(11);
        for i in &current {
            if *i != 11 {
                nodes[*i]
                    .as_mut()
                    .unwrap()
                    .wait_group(&group, "m11's add", |e| {
                        matches!(e, GroupEvent::Epoch { epoch: 12, .. })
                    })
                    .await;
            }
        }
        nodes[11]
            .as_mut()
            .unwrap()
            .group_send(&group, "hello from the newest")
            .await;
        nodes[7].as_mut().unwrap().group_send(&group, "welcome m11").await;
        for i in &current {
            let n = nodes[*i].as_mut().unwrap();
            if *i != 11 {
                n.wait_group_text(&group, "hello from the newest").await;
            }
            if *i != 7 {
                n.wait_group_text(&group, "welcome m11").await;
            }
        }

        // Each text arrived (the waits above) and only once (the sync
        // rounds' copies and the restart's replays are dropped by id).
        let mut texts: Vec<String> = (0..=10).map(|i| format!("hello from {}", NAMES[i])).collect();
        texts.extend(
            [
                "after the restart",
                "m03 is back",
                "hello from the newest",
                "welcome m11",
            ]
            .map(String::from),
        );
        for i in &current {
            let n = nodes[*i].as_mut().unwrap();
            for text in &texts {
                assert!(copies(n, &group, text) <= 1, "{}: {text} more than once", NAMES[*i]);
            }
        }
        let m05 = nodes[5].as_mut().unwrap();
        for text in [
            "after the restart",
            "m03 is back",
            "hello from the newest",
            "welcome m11",
        ] {
            assert_eq!(copies(m05, &group, text), 0, "m05 read {text} after its removal");
        }

        for n in nodes.into_iter().flatten() {
            n.stop().await;
        }
        relay.shutdown().await;
    });
}
