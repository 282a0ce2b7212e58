//! File transfers survive restarts of either side, and a finished file's
//! chunks leave the inbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod node_common;

use node_common::{TestNode, run};
use rand::{RngCore as _, SeedableRng};
use strata_session::Content;
use strata_session::actors::{NodeEventKind, SessionRequest};
use strata_transport::memory::MemoryNetwork;

/// Waits until the sender has `n` chunks of `file_id` acknowledged.
async fn acked(node: &mut TestNode, file_id: &str, n: u32) {
    node.wait_for(
        "file progress",
        |e| matches!(&e.kind, NodeEventKind::FileProgress { file_id: f, acked, .. } if f == file_id && *acked >= n),
    )
    .await;
}

#[test]
fn a_file_transfer_resumes_after_either_side_restarts() {
    run(async move {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("album.bin");
        let mut content = vec![0u8; 4 << 20];
        rand_chacha::ChaCha20Rng::seed_from_u64(5).fill_bytes(&mut content);
        content.extend_from_slice(b"tail");
        std::fs::write(&source, &content).unwrap();

        let net = MemoryNetwork::new(6);
        let (mut alice, bob) = node_common::ready_pair(&net, 17, dir.path()).await;
        let file_id = alice
            .request("bob", SessionRequest::SendFile(source.clone()))
            .await
            .unwrap();

        // The sender stops a few chunks in, and comes back.
        acked(&mut alice, &file_id, 5).await;
        let mut alice = alice.restart(&net).await;
        assert!(alice.wait_ready().await, "alice resumes without a handshake");
        acked(&mut alice, &file_id, 20).await;

        // Now the receiver.
        let mut bob = bob.restart(&net).await;
        assert!(bob.wait_ready().await, "bob resumes without a handshake");

        let path = node_common::file_transferred(&mut alice, &mut bob, &file_id).await;
        assert_eq!(std::fs::read(&path).unwrap(), content, "the received file differs");

        // Nothing of the file is left behind: no chunk in the inbox, no
        // part file, no manifest.
        let alice_installation = alice.identity.installation_id().to_hex();
        let inbox = bob.store().read(|r| r.inbox(&alice_installation)).unwrap();
        let chunks = inbox
            .iter()
            .filter(|m| matches!(Content::from_bytes(&m.body), Ok(Content::FileChunk { .. })))
            .count();
        assert_eq!(chunks, 0, "chunks of a finished file stay in the inbox");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("b"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let manifests = std::fs::read_dir(dir.path().join("a").join(".transfers"))
            .unwrap()
            .count();
        assert_eq!(manifests, 0, "the sender's manifest outlived the transfer");
    });
}
