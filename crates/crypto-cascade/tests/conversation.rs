//! Done-when: two parties from nothing to a working cascade, 1,000 messages
//! both ways, interleaved, some out of order; reload mid-conversation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(clippy::print_stderr)]

mod common;

use common::{NOW, established, rng, setup};
use rand::Rng;
use rand::seq::SliceRandom;
use strata_cascade::PairCascade;

#[test]
fn thousand_messages_both_ways_interleaved_and_reordered() {
    let mut rng = rng(1);
    let mut p = setup(&mut rng);
    // Bob has no Signal session until Alice's first PreKey message arrives.
    let first = p.alice.encrypt(b"first", NOW, &mut rng).unwrap();
    assert!(p.bob.encrypt(b"too early", NOW, &mut rng).is_err());
    assert_eq!(p.bob.decrypt(&first, &mut rng).unwrap(), b"first");

    let mut to_bob = Vec::new();
    let mut to_alice = Vec::new();
    let mut delivered = 0usize;
    for i in 0..1000u32 {
        let text = format!("message {i} {}", "x".repeat(i as usize % 300));
        if rng.random_bool(0.5) {
            to_bob.push((
                text.clone(),
                p.alice.encrypt(text.as_bytes(), NOW + u64::from(i), &mut rng).unwrap(),
            ));
        } else {
            to_alice.push((
                text.clone(),
                p.bob.encrypt(text.as_bytes(), NOW + u64::from(i), &mut rng).unwrap(),
            ));
        }
        // Deliver in bursts, shuffled within each burst (out of order).
        if i % 7 == 6 {
            for queue in [&mut to_bob, &mut to_alice] {
                queue.shuffle(&mut rng);
            }
            for (text, m) in to_bob.drain(..) {
                assert_eq!(p.bob.decrypt(&m, &mut rng).unwrap(), text.as_bytes());
                delivered += 1;
            }
            for (text, m) in to_alice.drain(..) {
                assert_eq!(p.alice.decrypt(&m, &mut rng).unwrap(), text.as_bytes());
                delivered += 1;
            }
        }
    }
    for (text, m) in to_bob.drain(..).rev() {
        assert_eq!(p.bob.decrypt(&m, &mut rng).unwrap(), text.as_bytes());
        delivered += 1;
    }
    for (text, m) in to_alice.drain(..).rev() {
        assert_eq!(p.alice.decrypt(&m, &mut rng).unwrap(), text.as_bytes());
        delivered += 1;
    }
    assert_eq!(delivered, 1000);
}

#[test]
fn steady_state_headers_carry_no_kem_ciphertext_and_no_keys() {
    let mut rng = rng(2);
    let mut p = established(&mut rng);
    let m = p.alice.encrypt(&[0u8; 256], NOW, &mut rng).unwrap();
    let names: Vec<Vec<&str>> = m
        .layer_parameters
        .iter()
        .map(|lp| lp.iter().map(|(k, _)| k).collect())
        .collect();
    assert_eq!(
        names,
        vec![
            vec!["epoch"],
            vec!["type"],
            vec!["ack", "counter", "epoch"],
            vec!["counter"]
        ]
    );
    assert_eq!(
        m.layer_parameters.as_slice()[1].uint("type"),
        Some(2),
        "Whisper after the reply"
    );
    let wire = serde_json::to_vec(&m).unwrap();
    eprintln!(
        "256 B plaintext: finalCiphertext {} B, JSON cascadedPayload {} B",
        m.final_size,
        wire.len()
    );
}

#[test]
fn conversation_continues_after_export_and_import() {
    let mut rng = rng(3);
    let mut p = established(&mut rng);
    // Leave a message in flight each way across the reload.
    let in_flight_to_bob = p.alice.encrypt(b"in flight", NOW, &mut rng).unwrap();
    let in_flight_to_alice = p.bob.encrypt(b"in flight back", NOW, &mut rng).unwrap();
    let skipped = p.alice.encrypt(b"skipped", NOW, &mut rng).unwrap();

    let alice_state = p.alice.export().unwrap();
    let bob_state = p.bob.export().unwrap();
    drop(p);
    let mut alice = PairCascade::import(alice_state.as_bytes()).unwrap();
    let mut bob = PairCascade::import(bob_state.as_bytes()).unwrap();

    let next = alice.encrypt(b"after reload", NOW, &mut rng).unwrap();
    assert_eq!(bob.decrypt(&next, &mut rng).unwrap(), b"after reload");
    assert_eq!(bob.decrypt(&in_flight_to_bob, &mut rng).unwrap(), b"in flight");
    assert_eq!(alice.decrypt(&in_flight_to_alice, &mut rng).unwrap(), b"in flight back");
    assert_eq!(bob.decrypt(&skipped, &mut rng).unwrap(), b"skipped");
    let reply = bob.encrypt(b"reply after reload", NOW, &mut rng).unwrap();
    assert_eq!(alice.decrypt(&reply, &mut rng).unwrap(), b"reply after reload");
    // A replay is still a replay after reload.
    assert!(bob.decrypt(&next, &mut rng).is_err());

    // Export is stable: exporting an imported state changes nothing.
    let again = PairCascade::import(alice.export().unwrap().as_bytes()).unwrap();
    assert_eq!(again.export().unwrap(), alice.export().unwrap());
}

#[test]
fn kem_epoch_rotation_in_band() {
    let mut rng = rng(4);
    let mut p = established(&mut rng);
    let before = p.alice.kem_mut().send_epoch().unwrap();
    p.alice.kem_mut().rotate_send_epoch();
    let old_epoch_late = p.bob.encrypt(b"late", NOW, &mut rng).unwrap();
    let r1 = p.alice.encrypt(b"new epoch 1", NOW, &mut rng).unwrap();
    let r2 = p.alice.encrypt(b"new epoch 2", NOW, &mut rng).unwrap();
    let kem = &r1.layer_parameters.as_slice()[2];
    assert_eq!(kem.uint("epoch"), Some(before + 1));
    assert_eq!(kem.bytes("kemCiphertext").map(<[u8]>::len), Some(1088));
    // Out of order across the epoch start: the second message carries the
    // KEM ciphertext too.
    assert_eq!(p.bob.decrypt(&r2, &mut rng).unwrap(), b"new epoch 2");
    assert_eq!(p.bob.decrypt(&r1, &mut rng).unwrap(), b"new epoch 1");
    assert_eq!(p.alice.decrypt(&old_epoch_late, &mut rng).unwrap(), b"late");
    // Bob acknowledges; Alice stops sending the ciphertext.
    let ack = p.bob.encrypt(b"ack", NOW, &mut rng).unwrap();
    p.alice.decrypt(&ack, &mut rng).unwrap();
    let r3 = p.alice.encrypt(b"acked", NOW, &mut rng).unwrap();
    assert!(r3.layer_parameters.as_slice()[2].bytes("kemCiphertext").is_none());
    assert_eq!(p.bob.decrypt(&r3, &mut rng).unwrap(), b"acked");

    // New receive key: Bob rotates, Alice installs it, the next epoch uses it.
    let new_key = p.bob.kem_mut().rotate_receive_key(&p.bob_id, &mut rng).unwrap();
    p.alice.kem_mut().set_peer_key(new_key).unwrap();
    let r4 = p.alice.encrypt(b"under key 2", NOW, &mut rng).unwrap();
    assert_eq!(r4.layer_parameters.as_slice()[2].uint("kemKeyId"), Some(2));
    assert_eq!(p.bob.decrypt(&r4, &mut rng).unwrap(), b"under key 2");
}

#[test]
fn mls_epoch_rotation_rekeys_the_aes_layer() {
    let mut rng = rng(5);
    let mut p = established(&mut rng);
    let epoch = p.alice.mls_mut().epoch().unwrap();
    assert_eq!(p.alice.mls_mut().group_id(), p.bob.mls_mut().group_id());
    let commit = p.alice.mls_mut().self_update().unwrap();
    assert_eq!(p.bob.mls_mut().process_commit(&commit).unwrap(), epoch + 1);
    // A replayed commit changes nothing.
    assert!(p.bob.mls_mut().process_commit(&commit).is_err());
    assert_eq!(p.bob.mls_mut().epoch(), Some(epoch + 1));
    for i in 0..5u8 {
        let m = p.alice.encrypt(&[i; 40], NOW, &mut rng).unwrap();
        assert_eq!(m.layer_parameters.as_slice()[0].uint("epoch"), Some(epoch + 1));
        assert_eq!(
            m.layer_parameters.as_slice()[3].uint("counter"),
            Some(u64::from(i)),
            "new AES chain"
        );
        assert_eq!(p.bob.decrypt(&m, &mut rng).unwrap(), [i; 40]);
        let r = p.bob.encrypt(&[i; 3], NOW, &mut rng).unwrap();
        assert_eq!(p.alice.decrypt(&r, &mut rng).unwrap(), [i; 3]);
    }
    // And Bob can rotate too.
    let commit = p.bob.mls_mut().self_update().unwrap();
    p.alice.mls_mut().process_commit(&commit).unwrap();
    let m = p.alice.encrypt(b"epoch 3", NOW, &mut rng).unwrap();
    assert_eq!(p.bob.decrypt(&m, &mut rng).unwrap(), b"epoch 3");
}

#[test]
fn resume_proofs_match_only_between_holders_of_the_same_group_and_epoch() {
    let mut rng = rng(9);
    let mut p = established(&mut rng);
    let ctx = b"session id and a fresh nonce";
    let (epoch, proof) = p.alice.resume_proof(ctx).unwrap();
    assert_eq!(Some(epoch), p.bob.mls().epoch());
    assert!(p.bob.verify_resume_proof(ctx, &proof).unwrap());
    // Bound to the context and the direction; exact length only.
    assert!(
        !p.bob
            .verify_resume_proof(b"session id and another nonce", &proof)
            .unwrap()
    );
    assert!(!p.alice.verify_resume_proof(ctx, &proof).unwrap(), "no reflection");
    assert!(!p.bob.verify_resume_proof(ctx, &proof[..31]).unwrap());
    assert!(!p.bob.verify_resume_proof(ctx, &[]).unwrap());
    // A state reloaded from disk still proves and checks.
    let bob = PairCascade::import(p.bob.export().unwrap().as_bytes()).unwrap();
    assert!(bob.verify_resume_proof(ctx, &proof).unwrap());
    assert_eq!(bob.resume_proof(ctx).unwrap(), p.bob.resume_proof(ctx).unwrap());
    // Another group at the same epoch number does not.
    let other = established(&mut rng);
    assert_eq!(other.bob.mls().epoch(), Some(epoch));
    assert!(!other.bob.verify_resume_proof(ctx, &proof).unwrap());
    // Another epoch does not, until the commit is processed.
    let commit = p.alice.mls_mut().self_update().unwrap();
    let (newer_epoch, newer) = p.alice.resume_proof(ctx).unwrap();
    assert_eq!(newer_epoch, epoch + 1);
    assert!(!p.bob.verify_resume_proof(ctx, &newer).unwrap());
    p.bob.mls_mut().process_commit(&commit).unwrap();
    assert!(p.bob.verify_resume_proof(ctx, &newer).unwrap());
}
