//! The handshake's step 2 hands out a package of the responder's
//! KeyPackage pool (issue #16, item 2), machine level: one claim per
//! attempt, the last resort when the one-time stock is gone, the fresh
//! package when there is no pool, and the low-stock signal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::{Faults, Sim, ready_both};
use strata_cascade::{KeyPackageKind, generate_key_package};
use strata_proto::Pdu;
use strata_session::{Command, Config, Event};
use strata_store::{PoolEntry, PoolStatus};

/// Adds `one_time` one-time packages of node `i` to its pool, and a last
/// resort if `last_resort`; returns their bytes, in that order.
fn stock(sim: &Sim, i: usize, one_time: usize, last_resort: bool) -> Vec<Vec<u8>> {
    let identity = &sim.nodes[i].identity;
    let mut entries: Vec<PoolEntry> = (0..one_time)
        .map(|_| PoolEntry::from(&generate_key_package(identity, KeyPackageKind::OneTime, 3600 * 24).unwrap()))
        .collect();
    if last_resort {
        entries.push(PoolEntry::from(
            &generate_key_package(identity, KeyPackageKind::LastResort, 3600 * 24).unwrap(),
        ));
    }
    sim.nodes[i]
        .store()
        .write(|w| w.add_key_packages(&entries, sim.now().unix_ms / 1000))
        .unwrap();
    entries.into_iter().map(|e| e.package.bytes).collect()
}

fn status(sim: &Sim, i: usize) -> PoolStatus {
    let now_s = sim.now().unix_ms / 1000;
    sim.nodes[i].store().write(|w| w.key_package_status(now_s)).unwrap()
}

/// Alice opens a session with Bob, with every frame tapped; returns the
/// step 2s Bob sent (KeyPackage bytes, last-resort flag).
fn handshake(sim: &mut Sim) -> Vec<(Vec<u8>, bool)> {
    sim.tap = Some(Vec::new());
    sim.connect();
    sim.command(0, Command::Open);
    assert!(
        sim.run_while(Duration::from_secs(120), ready_both),
        "the handshake completes"
    );
    step_twos(sim)
}

fn step_twos(sim: &Sim) -> Vec<(Vec<u8>, bool)> {
    sim.tap
        .as_ref()
        .unwrap()
        .iter()
        .filter(|(from, _)| *from == 1)
        .filter_map(|(_, f)| match Pdu::decode(f) {
            Ok(Pdu::KeyPackage(kp)) => Some((kp.key_package.as_bytes().to_vec(), kp.last_resort)),
            _ => None,
        })
        .collect()
}

fn low_signals(sim: &Sim, i: usize) -> Vec<(u64, u64)> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::LowKeyPackages { available, threshold } => Some((*available, *threshold)),
            _ => None,
        })
        .collect()
}

#[test]
fn step_two_hands_out_a_pooled_one_time_package() {
    let mut sim = Sim::new(61, Faults::NONE, Config::default());
    let pooled = stock(&sim, 1, 20, true);
    let sent = handshake(&mut sim);
    // Every step 2 of the attempt (retransmissions included) is one pooled
    // one-time package, and the session was built on it: Bob joined from a
    // Welcome made for that package, with its private parts from the pool.
    let (package, last_resort) = sent.first().expect("Bob sent step 2").clone();
    assert!(sent.iter().all(|s| s.0 == package));
    assert!(!last_resort);
    assert!(pooled[..20].contains(&package), "a package of Bob's pool");
    let left = status(&sim, 1);
    assert_eq!(
        (left.available, left.has_last_resort, left.last_resort_used),
        (19, true, false)
    );
    assert!(low_signals(&sim, 1).is_empty(), "19 left, above the threshold");
    // Traffic flows both ways over the session it set up.
    sim.exchange_exactly_once(2);
}

#[test]
fn duplicated_step_ones_claim_once() {
    let mut sim = Sim::new(
        62,
        Faults {
            duplicate: 0.5,
            ..Faults::NONE
        },
        Config::default(),
    );
    stock(&sim, 1, 20, true);
    handshake(&mut sim);
    // Replay Alice's step 1 to Bob three more times after the fact.
    let step_one = sim
        .tap
        .as_ref()
        .unwrap()
        .iter()
        .find(|(from, f)| *from == 0 && matches!(Pdu::decode(f), Ok(Pdu::KeyPackageRequest(_))))
        .expect("Alice sent step 1")
        .1
        .clone();
    let before = step_twos(&sim).len();
    for _ in 0..3 {
        sim.inject(1, step_one.clone());
    }
    sim.run_until(sim.t + Duration::from_secs(5));
    let sent = step_twos(&sim);
    assert_eq!(sent.len(), before + 3, "each duplicate was answered");
    assert!(sent.iter().all(|s| s == &sent[0]), "with the cached step 2");
    assert_eq!(status(&sim, 1).available, 19, "one claim for the attempt");
    assert!(ready_both(&sim));
}

#[test]
fn an_exhausted_pool_serves_the_last_resort_and_the_handshake_completes() {
    let mut sim = Sim::new(63, Faults::NONE, Config::default());
    let pooled = stock(&sim, 1, 0, true);
    let sent = handshake(&mut sim);
    let (package, last_resort) = sent.first().expect("Bob sent step 2").clone();
    assert!(last_resort, "step 2 says it is the last resort");
    assert_eq!(package, pooled[0]);
    let left = status(&sim, 1);
    assert_eq!(
        (left.available, left.has_last_resort, left.last_resort_used),
        (0, true, true)
    );
    let threshold = Config::default().key_package_pool.refill_below;
    assert_eq!(low_signals(&sim, 1), vec![(0, threshold)]);
}

#[test]
fn a_claim_below_the_threshold_signals_low_stock() {
    let mut sim = Sim::new(64, Faults::NONE, Config::default());
    stock(&sim, 1, 3, true);
    let sent = handshake(&mut sim);
    assert!(!sent[0].1);
    let threshold = Config::default().key_package_pool.refill_below;
    assert_eq!(low_signals(&sim, 1), vec![(2, threshold)]);
    assert_eq!(status(&sim, 1).available, 2);
    assert!(low_signals(&sim, 0).is_empty(), "Alice claimed nothing");
}

#[test]
fn without_a_pool_step_two_makes_a_fresh_package() {
    let mut sim = Sim::new(65, Faults::NONE, Config::default());
    let sent = handshake(&mut sim);
    assert!(!sent[0].1);
    let left = status(&sim, 1);
    assert_eq!(
        (left.available, left.has_last_resort),
        (0, false),
        "nothing was stocked"
    );
    assert!(low_signals(&sim, 1).is_empty(), "no pool, no signal");
}
