//! KeyPackage claims over an established session (issue #16, item 2 and
//! 3), machine level: one-time packages within the claimer's allowance,
//! the last resort above it, each package handed out once even over a
//! lossy link, the claimer's checks (a reused `init_key` is refused with a
//! `protocol-error`), and a claim with no answer given up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Faults, Sim, ready_both};
use strata_cascade::{KeyPackageKind, generate_key_package};
use strata_proto::ErrorCode;
use strata_session::{ClaimedKeyPackage, Command, Config, Event, Refusal, SessionError};
use strata_store::PoolEntry;

/// Adds `one_time` one-time packages and a last resort to node `i`'s pool;
/// returns them.
fn stock(sim: &Sim, i: usize, one_time: usize) -> Vec<PoolEntry> {
    let identity = &sim.nodes[i].identity;
    let mut entries: Vec<PoolEntry> = (0..one_time)
        .map(|_| PoolEntry::from(&generate_key_package(identity, KeyPackageKind::OneTime, 3600 * 24).unwrap()))
        .collect();
    entries.push(PoolEntry::from(
        &generate_key_package(identity, KeyPackageKind::LastResort, 3600 * 24).unwrap(),
    ));
    add(sim, i, &entries);
    entries
}

fn add(sim: &Sim, i: usize, entries: &[PoolEntry]) {
    let now_s = sim.now().unix_ms / 1000;
    sim.nodes[i]
        .store()
        .write(|w| w.add_key_packages(entries, now_s))
        .unwrap();
}

/// A ready session between Alice (0) and Bob (1), Bob's pool stocked with
/// `one_time` packages and a last resort (step 2 takes one of them).
fn session(seed: u64, faults: Faults, one_time: usize) -> (Sim, Vec<PoolEntry>) {
    let mut sim = Sim::new(seed, faults, Config::default());
    let pooled = stock(&sim, 1, one_time);
    sim.connect();
    sim.command(0, Command::Open);
    assert!(
        sim.run_while(Duration::from_secs(300), ready_both),
        "the handshake completes"
    );
    (sim, pooled)
}

/// Alice's claims answered so far: claim id → package, or the failure.
fn answers(sim: &Sim) -> Vec<(String, Result<ClaimedKeyPackage, String>)> {
    sim.nodes[0]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::KeyPackageClaimed { claim, package } => Some((claim.clone(), Ok(package.clone()))),
            Event::KeyPackageClaimFailed { claim, reason } => Some((claim.clone(), Err(reason.clone()))),
            _ => None,
        })
        .collect()
}

/// Alice claims `n` packages of Bob at once and runs until all are
/// answered; returns the answers in claim order.
fn claim(sim: &mut Sim, n: usize, tag: &str) -> Vec<Result<ClaimedKeyPackage, String>> {
    let ids: Vec<String> = (0..n).map(|k| format!("{tag}-{k}")).collect();
    for id in &ids {
        sim.command(0, Command::ClaimKeyPackage { claim: id.clone() });
    }
    let limit = sim.t + Duration::from_secs(120);
    let answered = |s: &Sim| {
        let got = answers(s);
        ids.iter().all(|id| got.iter().any(|(c, _)| c == id))
    };
    assert!(sim.run_while(limit, answered), "seed {}: claims unanswered", sim.seed);
    let got = answers(sim);
    ids.iter()
        .map(|id| {
            let mut for_id = got.iter().filter(|(c, _)| c == id);
            let first = for_id.next().unwrap().1.clone();
            assert!(for_id.next().is_none(), "one answer per claim");
            first
        })
        .collect()
}

fn served(sim: &Sim) -> Vec<bool> {
    sim.nodes[1]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::KeyPackageServed { last_resort } => Some(*last_resort),
            _ => None,
        })
        .collect()
}

#[test]
fn claims_get_one_time_packages_within_the_allowance_then_the_last_resort() {
    let (mut sim, pooled) = session(81, Faults::NONE, 20);
    let burst = Config::default().key_package_pool.claim_burst as usize;
    let got = claim(&mut sim, burst + 2, "a");
    let packages: Vec<ClaimedKeyPackage> = got.into_iter().map(Result::unwrap).collect();
    let alice_sees_bob = sim.installation_id(1).to_hex();
    assert!(packages.iter().all(|p| p.installation == alice_sees_bob));
    // The burst: distinct one-time packages of Bob's pool.
    let one_time: BTreeSet<&[u8]> = packages[..burst].iter().map(|p| p.key_ref.as_slice()).collect();
    assert_eq!(one_time.len(), burst);
    assert!(packages[..burst].iter().all(|p| !p.last_resort));
    let pooled_refs: BTreeSet<&[u8]> = pooled.iter().map(|e| e.package.key_ref.as_slice()).collect();
    assert!(one_time.is_subset(&pooled_refs));
    // Over the allowance: the last resort, twice.
    let last = pooled.last().unwrap();
    for p in &packages[burst..] {
        assert!(p.last_resort);
        assert_eq!(p.key_ref, last.package.key_ref);
    }
    // Bob: 20 - 1 (step 2) - burst left, the burst held for Alice's
    // Welcomes; the last resort served. Alice stored what she claimed.
    let now_s = sim.now().unix_ms / 1000;
    let status = sim.nodes[1].store().write(|w| w.key_package_status(now_s)).unwrap();
    assert_eq!((status.available, status.held), ((19 - burst) as u64, burst as u64));
    assert!(status.last_resort_used);
    let stored = sim.nodes[0]
        .store()
        .read(|r| r.peer_key_packages(&alice_sees_bob))
        .unwrap();
    assert_eq!(stored.len(), burst + 1, "the one-time packages and the last resort");
    // The allowance refills: one more one-time package per interval.
    let interval = Config::default().key_package_pool.claim_interval;
    sim.run_until(sim.t + interval);
    let later = claim(&mut sim, 2, "b");
    assert!(!later[0].as_ref().unwrap().last_resort);
    assert!(later[1].as_ref().unwrap().last_resort);
    assert_eq!(served(&sim).iter().filter(|l| !**l).count(), burst + 1);
    // Traffic is untouched.
    sim.exchange_exactly_once(2);
}

/// Over a link that drops, duplicates and reorders, claims are sent again
/// until answered; a claim seen twice gets the same package, and no
/// one-time package is handed out twice.
#[test]
fn claims_over_a_lossy_link_hand_out_each_package_once() {
    for seed in [82, 83, 84] {
        let (mut sim, _) = session(seed, Faults::LOSSY, 20);
        let got = claim(&mut sim, 6, "x");
        let refs: Vec<Vec<u8>> = got.into_iter().map(|p| p.unwrap().key_ref).collect();
        let distinct: BTreeSet<&Vec<u8>> = refs.iter().collect();
        assert_eq!(distinct.len(), 6, "seed {seed}: six distinct one-time packages");
        let served = served(&sim);
        assert!(served.iter().all(|l| !l), "seed {seed}: no last resort needed");
        assert_eq!(
            served.len(),
            6,
            "seed {seed}: a claim sent again is answered from the cache"
        );
        let now_s = sim.now().unix_ms / 1000;
        let status = sim.nodes[1].store().write(|w| w.key_package_status(now_s)).unwrap();
        assert_eq!((status.available, status.held), (13, 6), "seed {seed}");
    }
}

/// Bob serves Alice a one-time package whose `init_key` she has seen (the
/// one his step 2 gave her, put back in his pool): refused, nothing
/// stored, a typed failure and a `protocol-error` to Bob; a genuine claim
/// after it still works.
#[test]
fn a_reused_init_key_is_refused() {
    let mut sim = Sim::new(85, Faults::NONE, Config::default());
    let pooled = stock(&sim, 1, 1);
    sim.connect();
    sim.command(0, Command::Open);
    assert!(sim.run_while(Duration::from_secs(300), ready_both));
    // Step 2 took the one one-time package; Bob's pool gets it back, as a
    // dishonest or broken owner would hand it out again.
    let step_two = pooled[0].clone();
    add(&sim, 1, std::slice::from_ref(&step_two));
    let got = claim(&mut sim, 1, "again");
    let reason = got[0].clone().unwrap_err();
    assert!(reason.contains("init_key"), "{reason}");
    sim.run_until(sim.t + Duration::from_secs(1));
    assert!(sim.nodes[0].events.iter().any(|(_, e)| matches!(
        e,
        Event::Refused {
            why: Refusal::BadKeyPackage
        }
    )));
    assert!(sim.nodes[1].events.iter().any(|(_, e)| matches!(
        e,
        Event::PeerError {
            code: ErrorCode::Malformed,
            ..
        }
    )));
    let bob_hex = sim.installation_id(1).to_hex();
    assert!(
        sim.nodes[0]
            .store()
            .read(|r| r.peer_key_packages(&bob_hex))
            .unwrap()
            .is_empty()
    );
    // Bob's pool is down to its last resort: that is reusable, and taken.
    let next = claim(&mut sim, 1, "fresh");
    assert!(next[0].as_ref().unwrap().last_resort);
    sim.exchange_exactly_once(1);
}

/// A claim needs a session; one the peer never answers is given up after
/// the claim timeout, with a typed failure.
#[test]
fn claims_without_a_session_fail_and_unanswered_ones_time_out() {
    let mut sim = Sim::new(86, Faults::NONE, Config::default());
    sim.boot(0, None);
    let now = sim.now();
    let err = sim.nodes[0]
        .machine()
        .handle(
            strata_session::Input::Command(Command::ClaimKeyPackage { claim: "c".into() }),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, SessionError::Misuse(_)), "{err}");

    let (mut sim, _) = session(87, Faults::NONE, 4);
    sim.partitioned = true;
    sim.command(0, Command::ClaimKeyPackage { claim: "lost".into() });
    let timeout = Config::default().claim_timeout;
    let limit = sim.t + timeout + Duration::from_secs(5);
    assert!(sim.run_while(limit, |s| !answers(s).is_empty()));
    let got = answers(&sim);
    assert_eq!(got.len(), 1);
    assert!(got[0].1.as_ref().unwrap_err().contains("no answer"));
    assert!(served(&sim).is_empty());
    // Claim ids are checked.
    let now = sim.now();
    for bad in [String::new(), "c".repeat(65)] {
        let err = sim.nodes[0]
            .machine()
            .handle(
                strata_session::Input::Command(Command::ClaimKeyPackage { claim: bad }),
                now,
            )
            .unwrap_err();
        assert!(matches!(err, SessionError::Misuse(_)));
    }
}
