//! A group chat between three `Node`s over `MemoryTransport` (issue #17):
//! the admin creates it and adds two members from KeyPackages it claims
//! over their sessions; messages and a file go all ways; a removed member
//! hears nothing more; a member restarts and goes on from its stored group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod node_common;

use node_common::{TestNode, handshake, now_s, run, stocked_pair};
use strata_session::actors::{AddToGroup, CreateGroup, GroupRequest, NodeEventKind, SendGroupFile};
use strata_session::group::{GroupCommand, GroupEvent};
use strata_session::{Config, Content, keep_stocked};
use strata_transport::memory::MemoryNetwork;

async fn group_event(node: &mut TestNode, what: &str, mut pred: impl FnMut(&GroupEvent) -> bool) -> GroupEvent {
    let e = node
        .wait_for(
            what,
            |e| matches!(&e.kind, NodeEventKind::Group { event, .. } if pred(event)),
        )
        .await;
    match e.kind {
        NodeEventKind::Group { event, .. } => event,
        _ => unreachable!(),
    }
}

async fn text_from(node: &mut TestNode, text: &str) {
    let want = text.to_owned();
    group_event(
        node,
        text,
        |e| matches!(e, GroupEvent::Received { content: Content::Text { text }, .. } if *text == want),
    )
    .await;
}

async fn send(node: &TestNode, group: &str, text: &str) {
    let reply = node
        .addr
        .send(GroupRequest {
            request_id: 1,
            group: group.to_owned(),
            command: GroupCommand::Send(Content::Text { text: text.into() }),
        })
        .await
        .unwrap();
    reply.result.unwrap();
}

#[test]
fn three_nodes_chat_in_a_group() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(7);
        let mut alice = TestNode::start("alice", &net, 21, dir.path().join("a"));
        let mut bob = TestNode::start("bob", &net, 22, dir.path().join("b"));
        let mut carol = TestNode::start("carol", &net, 23, dir.path().join("c"));
        let pool = Config::default().key_package_pool;
        for n in [&bob, &carol] {
            keep_stocked(&n.store(), &n.identity, &pool, now_s()).unwrap();
        }
        handshake(&mut alice, &mut bob).await;
        handshake(&mut alice, &mut carol).await;
        // No session between Bob and Carol: they hear each other's
        // publishes on the group's topic.

        let group = alice
            .addr
            .send(CreateGroup {
                request_id: 1,
                name: Some("climbing".into()),
            })
            .await
            .unwrap()
            .result
            .unwrap();
        for (i, peer) in ["bob", "carol"].into_iter().enumerate() {
            let reply = alice
                .addr
                .send(AddToGroup {
                    request_id: 2 + i as u64,
                    group: group.clone(),
                    peer: peer.into(),
                })
                .await
                .unwrap();
            reply.result.unwrap();
        }
        for node in [&mut bob, &mut carol] {
            let joined = group_event(node, "joined", |e| matches!(e, GroupEvent::Joined { .. })).await;
            assert!(matches!(joined, GroupEvent::Joined { name: Some(ref n), .. } if n == "climbing"));
        }
        // Carol joined at the second epoch; Bob follows the commit that
        // added her.
        group_event(&mut bob, "carol's add", |e| {
            matches!(e, GroupEvent::Epoch { epoch: 2, .. })
        })
        .await;

        send(&alice, &group, "hello group").await;
        text_from(&mut bob, "hello group").await;
        text_from(&mut carol, "hello group").await;
        send(&bob, &group, "from bob").await;
        text_from(&mut alice, "from bob").await;
        text_from(&mut carol, "from bob").await;

        // A file to the group: three chunks, written whole at both.
        let src = dir.path().join("topo.pdf");
        let bytes: Vec<u8> = (0..strata_session::content::FILE_CHUNK_BYTES * 2 + 7)
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&src, &bytes).unwrap();
        let reply = alice
            .addr
            .send(SendGroupFile {
                request_id: 8,
                group: group.clone(),
                path: src,
            })
            .await
            .unwrap();
        let file_id = reply.result.unwrap();
        for node in [&mut bob, &mut carol] {
            let e = node
                .wait_for("the group file", |e| matches!(&e.kind, NodeEventKind::GroupFile { .. }))
                .await;
            let NodeEventKind::GroupFile {
                file_id: id,
                name,
                path,
                ..
            } = e.kind
            else {
                unreachable!()
            };
            assert_eq!((id.as_str(), name.as_str()), (file_id.as_str(), "topo.pdf"));
            assert_eq!(std::fs::read(path).unwrap(), bytes);
        }

        // Carol is removed: she is told, and hears nothing after.
        let carol_id = carol.identity.installation_id();
        let reply = alice
            .addr
            .send(GroupRequest {
                request_id: 9,
                group: group.clone(),
                command: GroupCommand::Remove(vec![carol_id]),
            })
            .await
            .unwrap();
        reply.result.unwrap();
        group_event(&mut carol, "removed", |e| *e == GroupEvent::Removed).await;
        group_event(&mut bob, "carol's removal", |e| {
            matches!(e, GroupEvent::Epoch { epoch: 3, .. })
        })
        .await;
        send(&alice, &group, "after carol").await;
        text_from(&mut bob, "after carol").await;

        // Bob restarts and goes on from his stored group.
        let mut bob = bob.restart(&net).await;
        bob.wait_ready().await;
        send(&alice, &group, "after the restart").await;
        text_from(&mut bob, "after the restart").await;
        send(&bob, &group, "bob is back").await;
        text_from(&mut alice, "bob is back").await;
        // Alice sent nothing but group PDUs through her pair sessions: their
        // deliveries are the groups' business, not hers.
        let mut alice_saw = alice.seen.clone();
        while let Ok(e) = alice.events.try_recv() {
            alice_saw.push(e);
        }
        let deliveries = alice_saw
            .iter()
            .filter(|e| matches!(e.kind, NodeEventKind::Session(strata_session::Event::Delivered { .. })))
            .count();
        assert_eq!(deliveries, 0, "group PDU deliveries reached subscribers");
        let mut carol_heard = carol.seen.clone();
        while let Ok(e) = carol.events.try_recv() {
            carol_heard.push(e);
        }
        let late = carol_heard.iter().any(|e| {
            matches!(&e.kind, NodeEventKind::Group {
                event: GroupEvent::Received { content: Content::Text { text }, .. },
                ..
            } if text != "hello group" && text != "from bob")
        });
        assert!(!late, "carol heard something after her removal");

        // One publish per message: every group message reached each node
        // once, published on the group's topic, never as a link frame (the
        // admin passes nothing on over gossip).
        let topic = strata_session::actors::group_topic(&group);
        let mut copies = std::collections::BTreeMap::new();
        for entry in net.trace() {
            match entry.event {
                strata_transport::TransportEvent::Published { topic: t, bytes, .. } => {
                    let Ok(strata_proto::Pdu::GroupMessage(m)) = strata_proto::Pdu::decode(&bytes) else {
                        continue;
                    };
                    assert_eq!(t, topic);
                    *copies.entry((entry.to, m.message_id.as_str().to_owned())).or_insert(0) += 1;
                }
                strata_transport::TransportEvent::Frame { bytes, .. } => {
                    let is_message = matches!(
                        strata_proto::Pdu::decode(&bytes),
                        Ok(strata_proto::Pdu::GroupMessage(_))
                    );
                    assert!(!is_message, "a group message went as a link frame");
                }
                _ => {}
            }
        }
        assert!(copies.len() >= 8, "{copies:?}");
        assert!(copies.values().all(|n| *n == 1), "{copies:?}");
        // Carol's node left the group's topic with the group: it got the
        // two texts and the file's three chunks, nothing published after.
        let at_carol = copies.keys().filter(|(to, _)| to.as_str() == "carol").count();
        assert_eq!(at_carol, 5, "{copies:?}");
    });
}

/// A member the sequencer finds behind beyond its commit log (here: one
/// that asks for the commits since the group's first epoch, long gone from
/// the log) is added again by the node on its own: a fresh KeyPackage
/// claimed over the session, one commit replacing its leaf, and the
/// member's node takes the new state from the Welcome; both go on.
#[test]
fn a_member_behind_is_added_again_by_the_nodes() {
    use strata_session::actors::{PeerRequest, SessionRequest};
    use strata_session::group::COMMIT_LOG;
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let net = MemoryNetwork::new(8);
        let (mut alice, mut bob) = stocked_pair(&net, 31, dir.path()).await;
        let group = alice.create_group("behind").await;
        alice.add_to_group(&group, "bob").await;
        bob.wait_group(&group, "joined", |e| matches!(e, GroupEvent::Joined { .. }))
            .await;
        let updates = COMMIT_LOG as u64 + 2;
        for _ in 0..updates {
            alice.group_command(&group, GroupCommand::Update).await;
        }
        let last = 1 + updates;
        bob.wait_group(
            &group,
            "the last update",
            |e| matches!(e, GroupEvent::Epoch { epoch, .. } if *epoch == last),
        )
        .await;

        let request = strata_proto::GroupCatchUpRequest {
            group_id: strata_proto::Blob::new(hex::decode(&group).unwrap()).unwrap(),
            epoch: 0,
        };
        let data = strata_proto::Pdu::from(request).encode();
        let reply = bob
            .addr
            .send(PeerRequest {
                request_id: 4,
                peer: "alice".into(),
                request: SessionRequest::Command(strata_session::Command::Send(Content::GroupPdu { data })),
            })
            .await
            .unwrap();
        reply.result.unwrap();
        let bob_id = bob.identity.installation_id();
        alice
            .wait_group(&group, "bob to add again", |e| {
                *e == GroupEvent::AddAgain { member: bob_id }
            })
            .await;
        bob.wait_group(
            &group,
            "bob's new join",
            |e| matches!(e, GroupEvent::Joined { epoch, .. } if *epoch == last + 1),
        )
        .await;
        alice.group_send(&group, "still with us").await;
        bob.wait_group_text(&group, "still with us").await;
        bob.group_send(&group, "yes").await;
        alice.wait_group_text(&group, "yes").await;
        let summary = bob.group_info(&group).await;
        assert_eq!((summary.epoch, summary.members.len()), (last + 1, 2));
    });
}
