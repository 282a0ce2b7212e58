//! Handshakes opened from a held bundle (issue 7), machine level: one round
//! trip instead of three, the fallback when the bundle is stale, faults on
//! the way, and forged first flights.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::{Faults, Sim, ready_both};
use strata_cascade::bundle::{VerifiedBundle, verify_bundle};
use strata_session::{Config, Event, Role, prekeys};

/// Node `i`'s bundle as a peer holding it would have it: published from
/// its stored pre-keys (made on first use), signed, verified.
fn bundle_of(sim: &Sim, i: usize) -> VerifiedBundle {
    let node = &sim.nodes[i];
    let store = node.store();
    let now_ms = sim.now().unix_ms;
    let pre_keys = prekeys::ensure(&store, &node.identity, &sim.config, now_ms).unwrap();
    let bytes = prekeys::signed_bundle(&node.identity, &pre_keys, now_ms, Vec::new()).unwrap();
    verify_bundle(&bytes).unwrap()
}

fn open_from(sim: &mut Sim, i: usize, bundle: &VerifiedBundle) {
    let now = sim.now();
    sim.nodes[i].machine().open_from_bundle(bundle, now).unwrap();
    sim.drain(i);
}

fn started(sim: &Sim, i: usize) -> Vec<(Role, bool)> {
    sim.nodes[i]
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::HandshakeStarted { role, from_bundle, .. } => Some((*role, *from_bundle)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_held_bundle_opens_the_session_in_one_round_trip() {
    let mut sim = Sim::new(21, Faults::NONE, Config::default());
    let bundle = bundle_of(&sim, 1);
    sim.connect();
    let tap_from = sim.t;
    sim.tap = Some(Vec::new());
    open_from(&mut sim, 0, &bundle);
    assert!(sim.run_while(Duration::from_secs(10), ready_both));
    // 1 ms each way: the first flight, then its answers. (The full
    // handshake takes 6 ms on this link: sim.rs.)
    assert!(
        sim.t - tap_from <= Duration::from_millis(2),
        "took {:?}",
        sim.t - tap_from
    );
    let sent: Vec<String> = sim
        .tap
        .take()
        .unwrap()
        .iter()
        .map(|(from, f)| {
            let v: serde_json::Value = serde_json::from_slice(f).unwrap();
            format!("{from}:{}", v["type"].as_str().unwrap())
        })
        .collect();
    for skipped in [
        "mls-key-package-request",
        "mls-key-package",
        "signal-key-exchange-request",
    ] {
        assert!(
            !sent.iter().any(|s| s.ends_with(skipped)),
            "{skipped} was sent: {sent:?}"
        );
    }
    assert_eq!(started(&sim, 0), vec![(Role::Initiator, true)]);
    assert_eq!(started(&sim, 1), vec![(Role::Responder, true)]);
    // The session is a real one: traffic both ways, and both sides pinned
    // each other.
    sim.exchange_exactly_once(5);
    for i in 0..2 {
        let peer = sim.installation_id(1 - i).to_string();
        let contact = sim.nodes[i].store().read(|r| r.contact(&peer)).unwrap();
        assert!(contact.is_some(), "node {i} pinned its peer");
    }
}

#[test]
fn one_round_trip_holds_up_under_loss_duplication_and_reordering() {
    for seed in 0..20 {
        let mut sim = Sim::new(100 + seed, Faults::LOSSY, Config::default());
        let bundle = bundle_of(&sim, 1);
        sim.connect();
        open_from(&mut sim, 0, &bundle);
        assert!(
            sim.run_while(Duration::from_secs(300), ready_both),
            "seed {seed}: not ready"
        );
        sim.exchange_exactly_once(3);
    }
}

#[test]
fn a_bundle_of_an_older_version_falls_back_to_the_full_handshake() {
    let mut sim = Sim::new(22, Faults::NONE, Config::default());
    let old = bundle_of(&sim, 1);
    // B re-keys after A fetched its bundle.
    let store = sim.nodes[1].store();
    let now_ms = sim.now().unix_ms;
    let rotated = prekeys::rotate(&store, &sim.nodes[1].identity, &sim.config, now_ms).unwrap();
    assert_eq!(rotated.version(), 2);
    sim.connect();
    open_from(&mut sim, 0, &old);
    assert!(sim.run_while(Duration::from_secs(30), ready_both));
    let refused = sim.nodes[0]
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::PeerError { reason, .. } if reason.contains("bundle version")));
    assert!(refused, "B named the stale bundle");
    // The bundle attempt, then the full handshake.
    assert_eq!(
        started(&sim, 0),
        vec![(Role::Initiator, true), (Role::Initiator, false)]
    );
    sim.exchange_exactly_once(2);
    // The new bundle works.
    let mut sim = Sim::new(23, Faults::NONE, Config::default());
    let store = sim.nodes[1].store();
    prekeys::rotate(&store, &sim.nodes[1].identity, &sim.config, sim.now().unix_ms).unwrap();
    let new = bundle_of(&sim, 1);
    assert_eq!(new.header().version, 2);
    sim.connect();
    open_from(&mut sim, 0, &new);
    assert!(sim.run_while(Duration::from_secs(10), ready_both));
    assert_eq!(started(&sim, 0), vec![(Role::Initiator, true)]);
}

/// Someone with B's bundle but not A's keys sends a first flight that
/// claims to be A: B pins nothing new, never becomes ready with it, and
/// A's real bundle handshake afterwards works.
#[test]
fn a_first_flight_in_someone_elses_name_goes_nowhere() {
    let mut sim = Sim::new(24, Faults::NONE, Config::default());
    let bundle = bundle_of(&sim, 1);
    // The forger: a third installation runs a real bundle handshake
    // towards B, recorded, not delivered.
    let mut forger = Sim::new(25, Faults::NONE, Config::default());
    std::mem::swap(&mut forger.nodes[1], &mut sim.nodes[1]);
    forger.tap = Some(Vec::new());
    forger.partitioned = true;
    forger.connect();
    open_from(&mut forger, 0, &bundle);
    let flight: Vec<Vec<u8>> = forger
        .tap
        .take()
        .unwrap()
        .into_iter()
        .filter(|(from, _)| *from == 0)
        .map(|(_, f)| f)
        .collect();
    std::mem::swap(&mut forger.nodes[1], &mut sim.nodes[1]);
    sim.boot(1, None);
    sim.connect();
    // The forger's flight with A's identity swapped into step 3.
    let a_key = {
        let mut v: serde_json::Value = serde_json::from_slice(&flight[0]).unwrap();
        assert_eq!(v["type"], "mls-encryption-sync-request");
        let a = &sim.nodes[0].identity;
        let key = strata_proto::KeyBytes::new(a.account().identity_key().serialize().to_vec()).unwrap();
        v["bundle"]["installationId"] = serde_json::Value::String(a.installation_id().to_string());
        v["bundle"]["identityKey"] = serde_json::to_value(key).unwrap();
        serde_json::to_vec(&v).unwrap()
    };
    sim.inject(1, a_key);
    for f in &flight[1..] {
        sim.inject(1, f.clone());
    }
    sim.run_until(sim.t + Duration::from_secs(2));
    assert!(!sim.nodes[1].is_ready(), "B accepted a flight it cannot verify");
    assert!(
        sim.nodes[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Refused { .. })),
        "B refused the forged steps"
    );
    // A's own bundle handshake still goes through.
    open_from(&mut sim, 0, &bundle);
    assert!(sim.run_while(sim.t + Duration::from_secs(400), ready_both));
    sim.exchange_exactly_once(2);
}
