//! One suite for every [`Backend`]: what a store must do, whatever holds the
//! bytes. Run it with [`store_conformance!`](crate::store_conformance).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use strata_cascade::at_rest::KdfParams;

use crate::kv::{Backend, Table};
use crate::records::{Accepted, IdentityCheck, IncomingMessage, OutgoingMessage};
use crate::{KeySource, Store, StoreError};

/// Makes backends for the suite.
pub trait Harness {
    /// The backend under test.
    type B: Backend;
    /// A new, empty backend.
    fn fresh(&mut self) -> Self::B;
    /// The same data after a process restart (drop and reopen).
    fn reopen(&mut self, backend: Self::B) -> Self::B;
}

const PASS: &[u8] = b"correct horse battery staple";

fn key() -> KeySource<'static> {
    KeySource::Passphrase {
        passphrase: PASS,
        params: KdfParams::INSECURE_FAST,
    }
}

fn outgoing(id: &str, created_ms: u64) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.into(),
        peer: "bob".into(),
        created_ms,
        body: format!("body of {id}").into_bytes(),
        frames: Vec::new(),
        attempts: 0,
    }
}

fn incoming(id: &str) -> IncomingMessage {
    IncomingMessage {
        peer: "alice".into(),
        message_id: id.into(),
        received_ms: 7,
        body: b"hi bob".to_vec(),
    }
}

pub fn reopen_keeps_everything<H: Harness>(h: &mut H) {
    let b = h.fresh();
    let store = Store::open(b, key()).unwrap();
    store
        .write(|w| {
            w.set_identity(b"identity-bytes")?;
            w.set_layer_state("bob", b"layers")?;
            w.set_handshake("carol", b"step-3")?;
            w.observe_identity("bob", b"bob-key", 1)?;
            w.queue_outgoing(&outgoing("m1", 1))?;
            w.accept_incoming(&incoming("a1"), b"layers-after-a1").map(|_| ())
        })
        .unwrap();
    let store = Store::open(h.reopen(store.into_backend()), key()).unwrap();
    store
        .read(|r| {
            assert_eq!(r.identity()?.unwrap().as_slice(), b"identity-bytes");
            assert_eq!(r.layer_state("bob")?.unwrap().as_slice(), b"layers");
            assert_eq!(r.layer_state("alice")?.unwrap().as_slice(), b"layers-after-a1");
            assert_eq!(r.handshake("carol")?.unwrap().as_slice(), b"step-3");
            assert_eq!(r.contact("bob")?.unwrap().identity_key, b"bob-key");
            assert_eq!(r.outbox("bob")?, vec![outgoing("m1", 1)]);
            assert_eq!(r.inbox("alice")?, vec![incoming("a1")]);
            assert!(r.is_processed("alice", "a1")?);
            Ok(())
        })
        .unwrap();
}

pub fn wrong_passphrase_is_refused_and_changes_nothing<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    store.write(|w| w.set_identity(b"id")).unwrap();
    let wrong = KeySource::Passphrase {
        passphrase: b"wrong",
        params: KdfParams::INSECURE_FAST,
    };
    let backend = h.reopen(store.into_backend());
    let err = Store::open(backend.clone(), wrong)
        .err()
        .expect("wrong passphrase refused");
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    let store = Store::open(backend, key()).unwrap();
    assert_eq!(store.read(|r| r.identity()).unwrap().unwrap().as_slice(), b"id");
}

pub fn outbox_rules<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    store.write(|w| w.queue_outgoing(&outgoing("m2", 20))).unwrap();
    store.write(|w| w.queue_outgoing(&outgoing("m1", 10))).unwrap();
    // The same id twice is refused.
    assert!(matches!(
        store.write(|w| w.queue_outgoing(&outgoing("m1", 10))),
        Err(StoreError::Misuse(_))
    ));
    // Encrypting a message that is not queued is refused: outbox first.
    let err = store
        .write(|w| w.record_encrypted("bob", "ghost", vec![b"f".to_vec()], b"state"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Misuse(_)));
    assert!(
        store.read(|r| r.layer_state("bob")).unwrap().is_none(),
        "no ratchet state without its ciphertext"
    );
    // Ratchet state and ciphertext commit together.
    store
        .write(|w| w.record_encrypted("bob", "m1", vec![b"frame-1".to_vec(), b"frame-2".to_vec()], b"s1"))
        .unwrap();
    assert_eq!(store.write(|w| w.record_attempt("bob", "m1")).unwrap(), 1);
    store
        .read(|r| {
            let out = r.outbox("bob")?;
            assert_eq!(
                out.iter().map(|m| m.message_id.as_str()).collect::<Vec<_>>(),
                ["m1", "m2"],
                "oldest first"
            );
            assert_eq!(out[0].frames, [b"frame-1".to_vec(), b"frame-2".to_vec()]);
            assert_eq!(out[0].attempts, 1);
            assert_eq!(r.layer_state("bob")?.unwrap().as_slice(), b"s1");
            Ok(())
        })
        .unwrap();
    // Only an ack removes it; a repeated ack is harmless.
    assert!(store.write(|w| w.ack_outgoing("bob", "m1")).unwrap());
    assert!(!store.write(|w| w.ack_outgoing("bob", "m1")).unwrap());
    assert_eq!(store.read(|r| r.outbox("bob")).unwrap().len(), 1);
}

pub fn incoming_is_stored_once<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    assert_eq!(
        store.write(|w| w.accept_incoming(&incoming("a1"), b"s1")).unwrap(),
        Accepted::New
    );
    // A replay writes nothing: not the body, not the state.
    let mut replay = incoming("a1");
    replay.body = b"forged".to_vec();
    assert_eq!(
        store.write(|w| w.accept_incoming(&replay, b"s2")).unwrap(),
        Accepted::Duplicate
    );
    store
        .read(|r| {
            assert_eq!(r.inbox("alice")?, vec![incoming("a1")]);
            assert_eq!(r.layer_state("alice")?.unwrap().as_slice(), b"s1");
            Ok(())
        })
        .unwrap();
    // Delivered messages may leave the inbox; their id stays processed.
    assert!(store.write(|w| w.remove_incoming("alice", "a1")).unwrap());
    assert_eq!(
        store.write(|w| w.accept_incoming(&incoming("a1"), b"s3")).unwrap(),
        Accepted::Duplicate
    );
    // A burst: each message once (a repeat inside the burst too), and the
    // state after the burst, even when it held only repeats.
    let burst = [incoming("a2"), incoming("a1"), incoming("a3"), incoming("a2")];
    assert_eq!(
        store
            .write(|w| w.accept_incoming_batch("alice", &burst, b"s4"))
            .unwrap(),
        vec![Accepted::New, Accepted::Duplicate, Accepted::New, Accepted::Duplicate]
    );
    assert_eq!(
        store
            .write(|w| w.accept_incoming_batch("alice", &[incoming("a3")], b"s5"))
            .unwrap(),
        vec![Accepted::Duplicate]
    );
    store
        .read(|r| {
            assert_eq!(r.inbox("alice")?, vec![incoming("a2"), incoming("a3")]);
            assert_eq!(r.layer_state("alice")?.unwrap().as_slice(), b"s5");
            Ok(())
        })
        .unwrap();
    // A message of another peer in the burst is refused, and nothing of
    // the burst is written.
    let mut stranger = incoming("c1");
    stranger.peer = "carol".into();
    let err = store
        .write(|w| w.accept_incoming_batch("alice", &[incoming("a4"), stranger.clone()], b"s6"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Misuse(_)));
    assert_eq!(store.read(|r| r.inbox("alice")).unwrap().len(), 2);
}

pub fn failed_transactions_leave_nothing<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    let err = store
        .write(|w| {
            w.queue_outgoing(&outgoing("m1", 1))?;
            w.set_layer_state("bob", b"half")?;
            Err::<(), _>(StoreError::Misuse("abort".into()))
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Misuse(_)));
    store
        .read(|r| {
            assert!(r.outbox("bob")?.is_empty());
            assert!(r.layer_state("bob")?.is_none());
            Ok(())
        })
        .unwrap();
    // Reads inside a transaction see its own writes.
    store
        .write(|w| {
            w.queue_outgoing(&outgoing("m1", 1))?;
            assert_eq!(w.outbox("bob")?.len(), 1);
            assert!(w.ack_outgoing("bob", "m1")?);
            assert!(w.outbox("bob")?.is_empty());
            Ok(())
        })
        .unwrap();
}

pub fn trust_on_first_use<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    assert_eq!(
        store.write(|w| w.observe_identity("bob", b"k1", 1)).unwrap(),
        IdentityCheck::Pinned
    );
    assert_eq!(
        store.write(|w| w.observe_identity("bob", b"k1", 2)).unwrap(),
        IdentityCheck::Same
    );
    assert!(!store.read(|r| r.contact("bob")).unwrap().unwrap().is_blocked());
    store.write(|w| w.mark_verified("bob").map(|_| ())).unwrap();
    // A changed key blocks the contact and keeps the pinned key.
    assert_eq!(
        store.write(|w| w.observe_identity("bob", b"k2", 3)).unwrap(),
        IdentityCheck::Changed
    );
    let c = store.read(|r| r.contact("bob")).unwrap().unwrap();
    assert!(c.is_blocked());
    assert_eq!(
        (c.identity_key.as_slice(), c.offered_key.as_deref()),
        (&b"k1"[..], Some(&b"k2"[..]))
    );
    // Accepting pins the new key, unverified, with the change in the history.
    let c = store.write(|w| w.accept_identity_change("bob", 4)).unwrap();
    assert!(!c.is_blocked() && !c.verified);
    assert_eq!(c.identity_key, b"k2");
    assert_eq!(
        (c.key_history.len(), c.key_history[0].old_key.as_slice()),
        (1, &b"k1"[..])
    );
    assert!(matches!(
        store.write(|w| w.accept_identity_change("bob", 5)),
        Err(StoreError::Misuse(_))
    ));
    assert_eq!(
        store.write(|w| w.observe_identity("bob", b"k2", 6)).unwrap(),
        IdentityCheck::Same
    );
}

pub fn peers_do_not_see_each_others_rows<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    // "bo" is a prefix of "bob": length-prefixed keys keep them apart.
    let mut m = outgoing("x", 1);
    m.peer = "bo".into();
    store.write(|w| w.queue_outgoing(&m)).unwrap();
    store.write(|w| w.queue_outgoing(&outgoing("y", 1))).unwrap();
    assert_eq!(store.read(|r| r.outbox("bo")).unwrap(), vec![m]);
    assert_eq!(store.read(|r| r.outbox("bob")).unwrap().len(), 1);
}

/// A stand-in package for the pool's bookkeeping (which never parses a
/// package nor its private parts): distinct bytes per `n`, so a claim that
/// hands back another package's private parts is seen.
/// [`pooled_packages_give_back_working_private_parts`] uses real ones.
fn package(n: u8, last_resort: bool, not_after_s: u64) -> crate::PoolEntry {
    crate::PoolEntry {
        package: crate::PooledKeyPackage {
            key_ref: vec![n; 32],
            init_key: vec![n ^ 0x55; 32],
            not_after_s,
            last_resort,
            bytes: vec![n; 100],
        },
        secrets: strata_cascade::SecretBytes::from_vec(vec![n ^ 0xAA; 48]),
    }
}

/// `entry` under another `key_ref`.
fn with_key_ref(mut entry: crate::PoolEntry, key_ref: Vec<u8>) -> crate::PoolEntry {
    entry.package.key_ref = key_ref;
    entry
}

/// The private parts a claim must hand back with the package numbered by
/// its `key_ref`'s first byte.
fn secrets_of(claim: &crate::Claim) -> strata_cascade::SecretBytes {
    let n = claim.package.key_ref[0];
    package(n, claim.package.last_resort, 0).secrets
}

pub fn key_package_pool_rules<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    let mut stock: Vec<_> = (1..=4).map(|n| package(n, false, 1000)).collect();
    stock.push(package(99, true, 1000));
    store.write(|w| w.add_key_packages(&stock, 0)).unwrap();
    // init_key is unique: a batch repeating one is refused whole.
    let dup = with_key_ref(package(1, false, 1000), vec![7; 32]);
    let err = store
        .write(|w| w.add_key_packages(&[package(5, false, 1000), dup], 0))
        .unwrap_err();
    assert!(matches!(err, StoreError::Misuse(_)));
    assert_eq!(
        store.write(|w| w.key_package_status(0)).unwrap().available,
        4,
        "nothing of the batch was added"
    );

    // Each one-time package once; below the threshold the claim says so.
    let mut seen = Vec::new();
    for i in 0..4u64 {
        let claim = store.write(|w| w.claim_key_package(10, 3)).unwrap();
        assert!(!claim.package.last_resort);
        assert_eq!(claim.secrets, secrets_of(&claim), "its own private parts");
        seen.push(claim.package.key_ref.clone());
        let left = 3 - i;
        assert_eq!(claim.low.map(|l| l.available), (left < 3).then_some(left), "claim {i}");
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "no package handed out twice");
    // Then the last-resort package, as often as needed, flagged for replacement.
    for _ in 0..3 {
        let claim = store.write(|w| w.claim_key_package(10, 3)).unwrap();
        assert!(claim.package.last_resort);
        assert_eq!(claim.secrets, secrets_of(&claim), "kept for the next claim");
        let low = claim.low.unwrap();
        assert_eq!((low.available, low.threshold, low.last_resort_used), (0, 3, true));
    }
    store
        .write(|w| w.replace_last_resort(&package(98, true, 1000), 0))
        .unwrap();
    let status = store.write(|w| w.key_package_status(10)).unwrap();
    assert!(status.has_last_resort && !status.last_resort_used);
    // The old last-resort init_key left the pool with it.
    store
        .write(|w| w.add_key_packages(&[with_key_ref(package(99, false, 1000), vec![1; 32])], 0))
        .unwrap();

    // Expired packages are deleted and never handed out.
    store
        .write(|w| w.add_key_packages(&[package(20, false, 50), package(21, false, 5000)], 0))
        .unwrap();
    assert_eq!(store.write(|w| w.expire_key_packages(100)).unwrap(), 1);
    let claim = store.write(|w| w.claim_key_package(2000, 0)).unwrap();
    assert_eq!(claim.package.key_ref, vec![21; 32], "the unexpired package");
    assert_eq!(claim.secrets, secrets_of(&claim));

    // Rotation replaces everything at once and needs a last-resort package.
    assert!(store.write(|w| w.replace_pool(&[package(30, false, 9000)], 0)).is_err());
    store
        .write(|w| w.replace_pool(&[package(30, false, 9000), package(31, true, 9000)], 0))
        .unwrap();
    let status = store.write(|w| w.key_package_status(2000)).unwrap();
    assert_eq!(
        (status.available, status.has_last_resort, status.last_resort_used),
        (1, true, false)
    );
}

pub fn key_package_pool_status<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    let empty = store.write(|w| w.key_package_status(0)).unwrap();
    assert_eq!(
        (
            empty.available,
            empty.has_last_resort,
            empty.next_expiry_s,
            empty.claims_last_hour
        ),
        (0, false, None, 0)
    );
    assert_eq!(empty.last_resort_added_s, None);
    store
        .write(|w| {
            w.add_key_packages(
                &[
                    package(1, false, 5_000_000),
                    package(2, false, 2_000_000),
                    package(3, false, 9_000_000),
                    package(4, false, 100),
                    package(9, true, 8_000_000),
                ],
                42,
            )
        })
        .unwrap();
    let status = store.write(|w| w.key_package_status(1_000)).unwrap();
    assert_eq!(status.available, 3, "the package expired at 100 does not count");
    assert!(status.has_last_resort && !status.last_resort_used);
    assert_eq!(status.last_resort_added_s, Some(42), "added when the caller says");
    assert_eq!(status.next_expiry_s, Some(2_000_000), "the earliest unexpired one");
    assert_eq!(status.claims_last_hour, 0);
    // Before 100, the package that expires at 100 is the next one.
    assert_eq!(
        store.write(|w| w.key_package_status(50)).unwrap().next_expiry_s,
        Some(100)
    );

    // Claims at t0 (twice) and t0 + 30 min: all three in the hour.
    let t0 = 20_000 * 60;
    for now_s in [t0, t0 + 59, t0 + 1_800] {
        store.write(|w| w.claim_key_package(now_s, 0)).unwrap();
    }
    let status = store.write(|w| w.key_package_status(t0 + 1_800)).unwrap();
    assert_eq!(status.claims_last_hour, 3);
    // The first claim deleted the package expired at 100; the three took
    // the others.
    assert_eq!(status.available, 0);
    assert_eq!(status.next_expiry_s, Some(8_000_000), "only the last resort is left");
    // An hour after t0's minute, its two claims have left the window.
    let status = store.write(|w| w.key_package_status(t0 + 3_600)).unwrap();
    assert_eq!(status.claims_last_hour, 1);
    assert_eq!(
        store
            .write(|w| w.key_package_status(t0 + 3_599))
            .unwrap()
            .claims_last_hour,
        3
    );
    // A claim served by the last resort counts too, and flags it.
    store.write(|w| w.claim_key_package(t0 + 3_600, 0)).unwrap();
    let status = store.write(|w| w.key_package_status(t0 + 3_600)).unwrap();
    assert_eq!(status.claims_last_hour, 2);
    assert!(status.has_last_resort && status.last_resort_used);
    // Much later, none are counted; and rotation keeps the history.
    assert_eq!(
        store
            .write(|w| w.key_package_status(t0 + 10 * 3_600))
            .unwrap()
            .claims_last_hour,
        0
    );
    store
        .write(|w| w.replace_pool(&[package(30, false, 9_000_000), package(31, true, 9_000_000)], 0))
        .unwrap();
    let status = store.write(|w| w.key_package_status(t0 + 3_600)).unwrap();
    assert_eq!((status.available, status.claims_last_hour), (1, 2));
    assert!(!status.last_resort_used);
}

pub fn concurrent_claims_never_share_a_package<H: Harness>(h: &mut H)
where
    H::B: 'static,
{
    let store = std::sync::Arc::new(Store::open(h.fresh(), key()).unwrap());
    let mut stock: Vec<_> = (1..=16).map(|n| package(n, false, 1000)).collect();
    stock.push(package(200, true, 1000));
    store.write(|w| w.add_key_packages(&stock, 0)).unwrap();
    let claims: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let claim = store.write(|w| w.claim_key_package(10, 4)).unwrap();
                assert_eq!(claim.secrets, secrets_of(&claim));
                claim.package
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut one_time: Vec<_> = claims
        .iter()
        .filter(|p| !p.last_resort)
        .map(|p| p.key_ref.clone())
        .collect();
    assert_eq!(one_time.len(), 16);
    one_time.sort();
    one_time.dedup();
    assert_eq!(one_time.len(), 16, "each one-time package handed out once");
    assert_eq!(claims.iter().filter(|p| p.last_resort).count(), 84);
}

/// Real packages of this installation: each claim gives back the private
/// parts of the package it hands out, after a restart too, and with them a
/// layer built later joins the group a peer made from that package. A
/// one-time package's private parts leave the store with it.
pub fn pooled_packages_give_back_working_private_parts<H: Harness>(h: &mut H) {
    use strata_cascade::{KeyPackageKind, KeyPackageSecrets, MlsLayer, generate_key_package};
    let (owner, peer) = (installation(), installation());
    let made: Vec<_> = [
        KeyPackageKind::OneTime,
        KeyPackageKind::OneTime,
        KeyPackageKind::LastResort,
    ]
    .into_iter()
    .map(|kind| generate_key_package(&owner, kind, 3600).unwrap())
    .collect();
    let entries: Vec<crate::PoolEntry> = made.iter().map(crate::PoolEntry::from).collect();
    drop(made);
    let store = Store::open(h.fresh(), key()).unwrap();
    store.write(|w| w.add_key_packages(&entries, 0)).unwrap();
    let store = Store::open(h.reopen(store.into_backend()), key()).unwrap();

    // The peer claims each package in turn (the last one twice: it is the
    // last resort), and joins with it, as it would days later.
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let claim = store.write(|w| w.claim_key_package(unix_now(), 0)).unwrap();
        let entry = entries
            .iter()
            .find(|e| e.package.key_ref == claim.package.key_ref)
            .expect("a package that was added");
        assert_eq!(claim.package, entry.package);
        assert_eq!(claim.secrets, entry.secrets);
        claimed.push(claim);
    }
    let kinds: Vec<bool> = claimed.iter().map(|c| c.package.last_resort).collect();
    assert_eq!(kinds, [false, false, true, true]);
    assert_ne!(claimed[0].package.key_ref, claimed[1].package.key_ref);
    for claim in &claimed {
        let mut creator = MlsLayer::new(&peer, owner.peer_identity()).unwrap();
        let welcome = creator.create_group(&claim.package.bytes).unwrap();
        let secrets = KeyPackageSecrets::from_bytes(claim.secrets.as_bytes()).unwrap();
        let mut joiner = MlsLayer::with_key_package_secrets(&owner, peer.peer_identity(), &secrets).unwrap();
        joiner.join_group(&welcome).unwrap();
        assert_eq!(joiner.epoch(), creator.epoch());
    }

    // Only the last resort's private parts are left, beside it.
    let raw = store.into_backend();
    let rows = raw
        .read(|tx| tx.scan(crate::kv::Table::KeyPackages, b"s", usize::MAX))
        .unwrap();
    let last_resort_ref = &claimed[3].package.key_ref;
    let left: Vec<_> = rows.into_iter().map(|(k, _)| k[1..].to_vec()).collect();
    assert_eq!(left, vec![last_resort_ref.clone()]);
}

pub fn a_burst_commits_one_state<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    store
        .write(|w| {
            w.queue_outgoing(&outgoing("m1", 1))?;
            w.queue_outgoing(&outgoing("m2", 2))
        })
        .unwrap();
    // One unqueued id refuses the whole burst, frames and state alike.
    let err = store
        .write(|w| {
            w.record_encrypted_batch(
                "bob",
                vec![
                    ("m1".into(), vec![b"f1".to_vec()]),
                    ("ghost".into(), vec![b"f".to_vec()]),
                ],
                b"state-after-ghost",
            )
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Misuse(_)));
    store
        .read(|r| {
            assert!(r.outgoing("bob", "m1")?.unwrap().frames.is_empty());
            assert!(r.layer_state("bob")?.is_none());
            Ok(())
        })
        .unwrap();
    store
        .write(|w| {
            w.record_encrypted_batch(
                "bob",
                vec![("m1".into(), vec![b"f1".to_vec()]), ("m2".into(), vec![b"f2".to_vec()])],
                b"state-after-m2",
            )
        })
        .unwrap();
    store
        .read(|r| {
            assert_eq!(r.outgoing("bob", "m1")?.unwrap().frames, [b"f1".to_vec()]);
            assert_eq!(r.outgoing("bob", "m2")?.unwrap().frames, [b"f2".to_vec()]);
            assert_eq!(r.layer_state("bob")?.unwrap().as_slice(), b"state-after-m2");
            Ok(())
        })
        .unwrap();
}

fn installation() -> strata_cascade::InstallationIdentity {
    let mut rng = rand::rng();
    strata_cascade::InstallationIdentity::generate(strata_cascade::AccountIdentity::generate(&mut rng), &mut rng)
        .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn peer_key_packages_are_checked_keyed_and_consumed<H: Harness>(h: &mut H) {
    use strata_cascade::{KeyPackageKind, MlsLayer};
    let store = Store::open(h.fresh(), key()).unwrap();
    let (alice, bob, carol) = (installation(), installation(), installation());
    let (bob_hex, carol_hex) = (bob.installation_id().to_hex(), carol.installation_id().to_hex());
    let mut bob_mls = MlsLayer::new(&bob, alice.peer_identity()).unwrap();
    let short = bob_mls.key_package(KeyPackageKind::OneTime, 3600).unwrap();
    let long = bob_mls.key_package(KeyPackageKind::OneTime, 7200).unwrap();
    let last = bob_mls.key_package(KeyPackageKind::LastResort, 3600).unwrap();
    let now = unix_now();
    let stored = |store: &Store<H::B>, peer: &str| store.read(|r| r.peer_key_packages(peer)).unwrap().len();

    // Tampered (one bit of the signature), or offered as another peer's:
    // refused with a typed error, nothing stored.
    let mut tampered = short.clone();
    let i = tampered.len() - 10;
    tampered[i] ^= 1;
    let err = store
        .write(|w| w.receive_peer_key_package(&bob.peer_identity(), &tampered, now))
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyPackageRejected { .. }), "{err}");
    let err = store
        .write(|w| w.receive_peer_key_package(&carol.peer_identity(), &short, now))
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyPackageRejected { .. }), "{err}");
    let err = store
        .write(|w| w.receive_peer_key_package(&bob.peer_identity(), b"not a KeyPackage", now))
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyPackageRejected { .. }), "{err}");
    assert_eq!((stored(&store, &bob_hex), stored(&store, &carol_hex)), (0, 0));

    // Checked ones are stored under their peer; the same one twice is one.
    for kp in [&last, &long, &short, &short] {
        let p = store
            .write(|w| w.receive_peer_key_package(&bob.peer_identity(), kp, now))
            .unwrap();
        assert_eq!(p.installation_id, bob_hex);
    }
    assert_eq!((stored(&store, &bob_hex), stored(&store, &carol_hex)), (3, 0));

    // One per use: one-time packages first, the soonest to expire first,
    // then the last-resort one; then none.
    let mut order = Vec::new();
    while let Some(p) = store.write(|w| w.take_peer_key_package(&bob_hex, now)).unwrap() {
        order.push(p.key_package.bytes);
    }
    assert_eq!(order, [short.clone(), long, last]);
    assert_eq!(stored(&store, &bob_hex), 0);

    // Expired ones are refused on receipt and deleted once stored.
    let later = now + 10 * 3600;
    let (fresh, fresher) = (
        bob_mls.key_package(KeyPackageKind::OneTime, 3600).unwrap(),
        bob_mls.key_package(KeyPackageKind::OneTime, 3600).unwrap(),
    );
    let err = store
        .write(|w| w.receive_peer_key_package(&bob.peer_identity(), &fresh, later))
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyPackageRejected { .. }), "{err}");
    store
        .write(|w| w.receive_peer_key_package(&bob.peer_identity(), &fresh, now))
        .unwrap();
    assert!(
        store
            .write(|w| w.take_peer_key_package(&bob_hex, later))
            .unwrap()
            .is_none()
    );
    assert_eq!(stored(&store, &bob_hex), 0, "the expired package was deleted");
    store
        .write(|w| w.receive_peer_key_package(&bob.peer_identity(), &fresher, now))
        .unwrap();
    assert_eq!(store.write(|w| w.expire_peer_key_packages(later)).unwrap(), 1);
    assert_eq!(stored(&store, &bob_hex), 0);
}

/// Packages handed out to claimers over a session keep their private parts
/// for their claimer until redeemed once (one-time) or until they expire
/// (the last resort, even after its replacement and a rotation).
pub fn handed_out_packages_are_held_for_their_claimer<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    let mut stock: Vec<_> = (1..=3).map(|n| package(n, false, 1000)).collect();
    stock.push(package(90, true, 2000));
    store.write(|w| w.add_key_packages(&stock, 0)).unwrap();
    let secrets = |n: u8| package(n, false, 0).secrets;

    let first = store.write(|w| w.hand_out_key_package("aa", true, 10, 0)).unwrap();
    assert!(!first.package.last_resort);
    let status = store.write(|w| w.key_package_status(10)).unwrap();
    assert_eq!((status.available, status.held), (2, 1));
    let n = first.package.key_ref[0];
    // Only its claimer redeems it, once.
    let redeem =
        |who: &str, key_ref: &[u8], now_s: u64| store.write(|w| w.redeem_key_package(who, key_ref, now_s)).unwrap();
    assert_eq!(redeem("bb", &first.package.key_ref, 20), None);
    assert_eq!(redeem("aa", &first.package.key_ref, 20), Some(secrets(n)));
    assert_eq!(redeem("aa", &first.package.key_ref, 20), None, "used once");
    assert_eq!(store.write(|w| w.key_package_status(20)).unwrap().held, 0);

    // Above the claimer's allowance: the last resort, redeemable by any
    // claimer, again and again, even after it was replaced.
    let last = store.write(|w| w.hand_out_key_package("bb", false, 30, 0)).unwrap();
    assert!(last.package.last_resort);
    assert!(store.write(|w| w.key_package_status(30)).unwrap().last_resort_used);
    for who in ["bb", "cc", "bb"] {
        assert_eq!(
            redeem(who, &last.package.key_ref, 40),
            Some(package(90, true, 0).secrets)
        );
    }
    store
        .write(|w| w.replace_last_resort(&package(91, true, 3000), 50))
        .unwrap();
    assert_eq!(
        redeem("dd", &last.package.key_ref, 60),
        Some(package(90, true, 0).secrets)
    );

    // A rotation keeps what was handed out.
    let second = store.write(|w| w.hand_out_key_package("aa", true, 70, 0)).unwrap();
    let mut rotated: Vec<_> = (10..=12).map(|n| package(n, false, 5000)).collect();
    rotated.push(package(92, true, 5000));
    store.write(|w| w.replace_pool(&rotated, 80)).unwrap();
    let status = store.write(|w| w.key_package_status(80)).unwrap();
    assert_eq!((status.available, status.held), (3, 1));
    let third = store.write(|w| w.hand_out_key_package("aa", true, 90, 0)).unwrap();

    // Expired: never redeemed, and its private parts are gone.
    assert_eq!(redeem("aa", &second.package.key_ref, 1001), None);
    assert_eq!(redeem("aa", &last.package.key_ref, 2001), None);
    store.write(|w| w.expire_key_packages(2001)).unwrap();
    let rows = |prefix: u8| {
        store
            .write(|w| Ok(w.raw().scan(Table::KeyPackages, &[prefix], usize::MAX)?.len()))
            .unwrap()
    };
    // Left: the rotated pool's two one-time packages and its last resort,
    // and the one handed out from it.
    assert_eq!(rows(b's'), 4, "private parts of expired packages deleted");
    assert_eq!((rows(b'h'), rows(b'e')), (1, 1));
    assert_eq!(
        redeem("aa", &third.package.key_ref, 2001),
        Some(secrets(third.package.key_ref[0]))
    );
    assert_eq!((rows(b'h'), rows(b'e'), rows(b's')), (0, 0, 3));
    assert_eq!(store.write(|w| w.key_package_status(2001)).unwrap().held, 0);

    // An expired package is never handed out: the claim after its end gets
    // the one still valid, then the last resort.
    store
        .write(|w| {
            w.add_key_packages(
                &[
                    package(30, false, 6000),
                    package(31, false, 9000),
                    package(93, true, 9000),
                ],
                2001,
            )
        })
        .unwrap();
    // At 7000 the rotated pool (5000) and package 30 have expired.
    let valid = store.write(|w| w.hand_out_key_package("aa", true, 7000, 0)).unwrap();
    assert_eq!(valid.package.key_ref[0], 31);
    let then = store.write(|w| w.hand_out_key_package("aa", true, 7000, 0)).unwrap();
    assert_eq!(then.package.key_ref[0], 93, "the last resort");
}

/// At most [`crate::MAX_HELD_KEY_PACKAGES`] one-time packages are held; a
/// claim above that is served the last resort.
pub fn held_packages_are_capped<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    let cap = crate::MAX_HELD_KEY_PACKAGES;
    let numbered = |i: usize| {
        let mut e = package(0, false, 1000);
        e.package.key_ref = (i as u64).to_be_bytes().repeat(4);
        e.package.init_key = (i as u64 ^ 0xFFFF_0000).to_be_bytes().repeat(4);
        e
    };
    store
        .write(|w| w.add_key_packages(&[package(99, true, 1000)], 0))
        .unwrap();
    // Added and handed out one by one (a claim sweeps the whole stock),
    // in transactions of 128 (the memory backend's write overlay is
    // scanned linearly).
    for chunk in (0..cap).collect::<Vec<_>>().chunks(128) {
        store
            .write(|w| {
                for &i in chunk {
                    w.add_key_packages(&[numbered(i)], 0)?;
                    assert!(!w.hand_out_key_package("aa", true, 1, 0)?.package.last_resort);
                }
                Ok(())
            })
            .unwrap();
    }
    store.write(|w| w.add_key_packages(&[numbered(cap)], 0)).unwrap();
    let over = store.write(|w| w.hand_out_key_package("aa", true, 1, 0)).unwrap();
    assert!(over.package.last_resort, "over the cap: the last resort");
    let status = store.write(|w| w.key_package_status(1)).unwrap();
    assert_eq!((status.available, status.held), (1, cap as u64));
}

/// A peer's `init_key` is accepted once: a one-time package used (taken,
/// or used as it arrived) and offered again, or another package repeating
/// its `init_key`, is refused; the same last-resort package is not.
pub fn a_peers_init_key_is_accepted_once<H: Harness>(h: &mut H) {
    use strata_cascade::{KeyPackageKind, generate_key_package};
    let store = Store::open(h.fresh(), key()).unwrap();
    let bob = installation();
    let peer = bob.peer_identity();
    let bob_hex = bob.installation_id().to_hex();
    let now = unix_now();
    let made = |kind| generate_key_package(&bob, kind, 3600).unwrap().package.bytes().to_vec();
    let (one, two, last) = (
        made(KeyPackageKind::OneTime),
        made(KeyPackageKind::OneTime),
        made(KeyPackageKind::LastResort),
    );

    // Used as it arrived (a handshake's step 2), then offered again.
    store.write(|w| w.use_peer_key_package(&peer, &one, now)).unwrap();
    for again in [
        store.write(|w| w.use_peer_key_package(&peer, &one, now)),
        store.write(|w| w.receive_peer_key_package(&peer, &one, now)),
    ] {
        assert!(matches!(again, Err(StoreError::KeyPackageReused)), "{again:?}");
    }
    // Stored, taken, offered again.
    store.write(|w| w.receive_peer_key_package(&peer, &two, now)).unwrap();
    store
        .write(|w| w.take_peer_key_package(&bob_hex, now))
        .unwrap()
        .unwrap();
    let again = store.write(|w| w.receive_peer_key_package(&peer, &two, now));
    assert!(matches!(again, Err(StoreError::KeyPackageReused)), "{again:?}");
    // The last resort is reusable by design.
    for _ in 0..3 {
        store.write(|w| w.use_peer_key_package(&peer, &last, now)).unwrap();
    }
    store.write(|w| w.receive_peer_key_package(&peer, &last, now)).unwrap();
    assert_eq!(store.read(|r| r.peer_key_packages(&bob_hex)).unwrap().len(), 1);
    // Once the package's lifetime is over, its init_key row goes too.
    store
        .write(|w| w.take_peer_key_package(&bob_hex, now))
        .unwrap()
        .unwrap();
    let rows = || {
        store
            .write(|w| Ok(w.raw().scan(Table::PeerKeyPackages, &[], usize::MAX)?.len()))
            .unwrap()
    };
    assert_eq!(rows(), 3, "three init_keys used");
    store.write(|w| w.expire_peer_key_packages(now + 2 * 3600)).unwrap();
    assert_eq!(rows(), 0);
}

/// A version-1 database opens migrated: its KeyPackage tables emptied
/// (the node restocks the pool), everything else kept.
pub fn version_one_key_package_tables_are_emptied<H: Harness>(h: &mut H) {
    let store = Store::open(h.fresh(), key()).unwrap();
    store
        .write(|w| {
            w.set_layer_state("bob", b"layers")?;
            w.add_key_packages(&[package(1, false, 1000), package(2, true, 1000)], 0)?;
            // A peer row in version 1's layout, and version 1 on record.
            w.raw_mut().put(Table::PeerKeyPackages, b"\x00\x03bobab12", b"old")?;
            w.raw_mut().put(Table::Meta, b"schema", &1u32.to_be_bytes())
        })
        .unwrap();
    let store = Store::open(h.reopen(store.into_backend()), key()).unwrap();
    store
        .write(|w| {
            for table in [Table::KeyPackages, Table::PeerKeyPackages] {
                let left = w.raw().scan(table, &[], usize::MAX)?;
                assert!(
                    left.is_empty(),
                    "{table:?}: {:?}",
                    left.iter().map(|(k, _)| k).collect::<Vec<_>>()
                );
            }
            assert_eq!(w.layer_state("bob")?.unwrap().as_slice(), b"layers");
            assert_eq!(w.expire_peer_key_packages(u64::MAX)?, 0);
            Ok(())
        })
        .unwrap();
}

/// Runs the whole store suite against the harness `$make`, one `#[test]`
/// per case.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            reopen_keeps_everything,
            wrong_passphrase_is_refused_and_changes_nothing,
            outbox_rules,
            incoming_is_stored_once,
            failed_transactions_leave_nothing,
            trust_on_first_use,
            peers_do_not_see_each_others_rows,
            key_package_pool_rules,
            key_package_pool_status,
            concurrent_claims_never_share_a_package,
            a_burst_commits_one_state,
            peer_key_packages_are_checked_keyed_and_consumed,
            pooled_packages_give_back_working_private_parts,
            handed_out_packages_are_held_for_their_claimer,
            held_packages_are_capped,
            a_peers_init_key_is_accepted_once,
            version_one_key_package_tables_are_emptied,
        );
    };
    (@cases $make:expr; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                let mut harness = $make;
                $crate::conformance::$case(&mut harness);
            }
        )*
    };
}
