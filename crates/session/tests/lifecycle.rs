//! Session life beyond the first handshake, machine level: restart and
//! resume, lost state, identity change, key rotation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Faults, Sim, installation, ready_both};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::{Command, Config, Event, ResetReason, Rotation};

fn established(seed: u64, faults: Faults, config: Config) -> Sim {
    let mut sim = Sim::new(seed, faults, config);
    sim.connect();
    sim.command(0, Command::Open);
    assert!(sim.run_while(Duration::from_secs(120), ready_both));
    sim
}

fn count(sim: &Sim, i: usize, f: impl Fn(&Event) -> bool) -> usize {
    sim.nodes[i].events.iter().filter(|(_, e)| f(e)).count()
}

#[test]
fn both_sides_restart_and_resume_without_a_handshake() {
    let mut sim = established(7, Faults::NONE, Config::default());
    sim.exchange(3);
    let session = sim.nodes[0].machine().session_id();
    let peers = [sim.nodes[0].machine().peer(), sim.nodes[1].machine().peer()];
    sim.disconnect();
    sim.boot(0, peers[0]);
    sim.boot(1, peers[1]);
    let handshakes_before = count(&sim, 0, |e| matches!(e, Event::HandshakeStarted { .. }));
    sim.connect();
    assert!(sim.run_while(sim.t + Duration::from_secs(30), ready_both));
    assert_eq!(
        count(&sim, 0, |e| matches!(e, Event::HandshakeStarted { .. })),
        handshakes_before
    );
    assert_eq!(sim.nodes[0].machine().session_id(), session);
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::EncryptionReady { resumed: true, .. }))
    );
    sim.exchange(3);
}

#[test]
fn restart_with_messages_in_flight_loses_none_and_duplicates_none() {
    let mut sim = established(8, Faults::LOSSY, Config::default());
    let mut ids = Vec::new();
    for k in 0..10 {
        ids.push(sim.send_text(0, &format!("in flight {k}")));
    }
    // Crash Alice before anything is acknowledged.
    sim.run_until(sim.t + Duration::from_millis(3));
    let peer = sim.nodes[0].machine().peer();
    sim.disconnect();
    sim.boot(0, peer);
    sim.connect();
    let limit = sim.t + Duration::from_secs(600);
    assert!(sim.run_while(limit, |s| ids.iter().all(|id| s.nodes[0].delivered.contains_key(id))));
    for id in &ids {
        assert_eq!(sim.nodes[1].received.get(id), Some(&1), "{id}");
    }
}

#[test]
fn a_side_that_lost_its_state_gets_a_new_handshake_and_the_user_is_told() {
    let mut sim = established(9, Faults::NONE, Config::default());
    sim.exchange(2);
    let old = sim.nodes[0].machine().session_id();
    let peer_of_bob = sim.nodes[1].machine().peer().unwrap().to_string();
    // Bob loses his session state (not his identity or contacts).
    sim.disconnect();
    sim.nodes[1]
        .store()
        .write(|w| {
            w.clear_layer_state(&peer_of_bob)?;
            w.clear_handshake(&peer_of_bob)?;
            Ok(())
        })
        .unwrap();
    let peer = sim.nodes[1].machine().peer();
    sim.boot(1, peer);
    sim.connect();
    assert!(sim.run_while(sim.t + Duration::from_secs(60), |s| {
        ready_both(s)
            && s.nodes[0]
                .machine
                .as_ref()
                .and_then(strata_session::PeerMachine::session_id)
                != old
    }));
    assert!(
        sim.nodes[0].events.iter().any(|(_, e)| matches!(
            e,
            Event::SessionReset {
                reason: ResetReason::PeerLostState
            }
        )),
        "Alice is told"
    );
    assert_eq!(sim.nodes[0].machine().session_id(), sim.nodes[1].machine().session_id());
    sim.exchange(2);
}

#[test]
fn a_side_holding_another_state_for_the_session_falls_back_to_a_handshake() {
    let mut sim = established(11, Faults::NONE, Config::default());
    sim.exchange(2);
    let alice = sim.nodes[1].machine().peer().unwrap().to_string();
    let first = sim.nodes[1]
        .store()
        .read(|r| r.layer_state(&alice))
        .unwrap()
        .unwrap()
        .to_vec();
    // A second session (Bob lost his state once)...
    sim.disconnect();
    sim.nodes[1]
        .store()
        .write(|w| {
            w.clear_layer_state(&alice)?;
            w.clear_handshake(&alice)
        })
        .unwrap();
    let peer = sim.nodes[1].machine().peer();
    sim.boot(1, peer);
    sim.connect();
    let old = sim.nodes[0].machine().session_id();
    assert!(sim.run_while(sim.t + Duration::from_secs(60), |s| ready_both(s)
        && s.nodes[0].machine.as_ref().unwrap().session_id() != old));
    sim.exchange(2);
    let second = sim.nodes[0].machine().session_id();
    // ...then Bob's cascade goes back to the first session's while his
    // record still names the second: same session id, same MLS epoch
    // number, other secrets. The probes must not match.
    sim.disconnect();
    sim.nodes[1]
        .store()
        .write(|w| w.set_layer_state(&alice, &first))
        .unwrap();
    let resets_before = count(&sim, 0, |e| matches!(e, Event::SessionReset { .. }));
    sim.boot(1, peer);
    sim.connect();
    // Both sides may start at once: twins, settled once both complete.
    assert!(sim.run_while(sim.t + Duration::from_secs(60), |s| ready_both(s)
        && s.nodes[0].view().session_id() != second
        && s.nodes[0].view().session_id() == s.nodes[1].view().session_id()));
    assert!(
        count(&sim, 0, |e| matches!(e, Event::SessionReset { .. })) > resets_before,
        "Alice is told"
    );
    assert!(
        !sim.nodes[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::EncryptionReady { resumed: true, .. })),
        "nothing resumed on a mismatched state"
    );
    assert_eq!(sim.nodes[0].machine().session_id(), sim.nodes[1].machine().session_id());
    sim.exchange(2);
}

#[test]
fn a_changed_identity_key_blocks_sending_until_accepted() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let alice = Arc::new(installation(&mut rng));
    // Bob's installation id comes from this seed; his account key does not.
    let bob_id_seed = 77;
    let bob = Arc::new(
        InstallationIdentity::generate(
            AccountIdentity::generate(&mut rng),
            &mut ChaCha20Rng::seed_from_u64(bob_id_seed),
        )
        .unwrap(),
    );
    let mut sim = Sim::with_identities(10, rng.clone(), Faults::NONE, Config::default(), alice, bob);
    sim.connect();
    sim.command(0, Command::Open);
    assert!(sim.run_while(Duration::from_secs(30), ready_both));
    sim.exchange(1);

    // "Bob" comes back with the same installation id and another account key.
    let impostor = Arc::new(
        InstallationIdentity::generate(
            AccountIdentity::generate(&mut rng),
            &mut ChaCha20Rng::seed_from_u64(bob_id_seed),
        )
        .unwrap(),
    );
    assert_eq!(impostor.installation_id(), sim.installation_id(1));
    sim.disconnect();
    sim.nodes[1].identity = impostor;
    sim.nodes[1].backend = strata_store::MemoryBackend::new();
    sim.boot(1, None);
    sim.connect();
    sim.command(1, Command::Open);
    let queued = sim.send_text(0, "not for an impostor");
    sim.run_until(sim.t + Duration::from_secs(60));
    assert!(sim.nodes[0].machine().is_blocked());
    assert!(!sim.nodes[0].is_ready());
    assert!(
        sim.nodes[0]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::IdentityChanged { .. }))
    );
    assert!(
        !sim.nodes[1].received.contains_key(&queued),
        "nothing is sent while blocked"
    );

    // The user accepts the new key: a fresh handshake, then the queued message.
    sim.command(0, Command::AcceptIdentity);
    assert!(sim.run_while(sim.t + Duration::from_secs(60), |s| {
        s.nodes[1].received.contains_key(&queued)
    }));
    assert!(
        sim.nodes[0]
            .store()
            .read(|r| r.contact(&sim.installation_id(1).to_string()))
            .unwrap()
            .is_some_and(|c| !c.is_blocked() && c.key_history.len() == 1)
    );
}

#[test]
fn keys_rotate_on_schedule_and_messages_across_rotations_decrypt() {
    let config = Config {
        kem_rotation_messages: 5,
        mls_update_messages: 7,
        ..Config::default()
    };
    let mut sim = established(11, Faults::LOSSY, config);
    sim.exchange(40);
    let rotations =
        |i: usize, what: Rotation| count(&sim, i, |e| matches!(e, Event::Rotated { what: w } if *w == what));
    for i in 0..2 {
        assert!(rotations(i, Rotation::KemKey) >= 3, "node {i} rotated its ML-KEM key");
        assert!(
            rotations(i, Rotation::PeerKemKey) >= 3,
            "node {i} installed the peer's keys"
        );
    }
    let updates = rotations(0, Rotation::MlsUpdate) + rotations(1, Rotation::MlsUpdate);
    let processed = rotations(0, Rotation::PeerMlsUpdate) + rotations(1, Rotation::PeerMlsUpdate);
    assert!(updates >= 3, "MLS self-updates: {updates}");
    assert_eq!(updates, processed);
}

#[test]
fn a_stalled_handshake_is_abandoned_and_retried_with_backoff() {
    let mut sim = Sim::new(12, Faults::NONE, Config::default());
    sim.connect();
    // Everything Alice sends is lost for six minutes.
    sim.partitioned = true;
    sim.command(0, Command::Open);
    sim.run_until(Duration::from_secs(360));
    let stalled = count(&sim, 0, |e| matches!(e, Event::HandshakeStalled { .. }));
    assert_eq!(stalled, 1, "abandoned after 300 s");
    let started = count(&sim, 0, |e| matches!(e, Event::HandshakeStarted { .. }));
    assert_eq!(started, 2, "retried after the backoff");
    sim.partitioned = false;
    assert!(sim.run_while(Duration::from_secs(1200), ready_both));
    assert!(
        !sim.nodes[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::HandshakeStalled { .. }))
    );
}

/// A peer slowed down to a 3 s round trip is not sent every message twice:
/// the first message's timeout (2 s, nothing measured yet) fires, and once
/// a round trip is measured the timeout follows it (RFC 6298), where a
/// fixed one would send every message again.
#[test]
fn a_slow_peer_is_not_sent_every_message_twice() {
    use std::collections::BTreeMap;
    use strata_proto::Pdu;
    let mut sim = established(71, Faults::NONE, Config::default());
    sim.faults.delay_ms = (1500, 1500);
    sim.tap = Some(Vec::new());
    for k in 0..6 {
        let id = sim.send_text(0, &format!("slow {k}"));
        let until = sim.t + Duration::from_secs(60);
        assert!(
            sim.run_while(until, |s| s.nodes[0].delivered.contains_key(&id)),
            "message {k}"
        );
    }
    let mut copies = BTreeMap::<String, u32>::new();
    for (from, frame) in sim.tap.take().unwrap() {
        if from == 0
            && let Ok(Pdu::Message(m)) = Pdu::decode(&frame)
        {
            *copies.entry(m.message_id.as_str().to_owned()).or_default() += 1;
        }
    }
    let resent = copies.values().filter(|n| **n > 1).count();
    assert!(resent <= 1, "{copies:?}");
}

/// A flood of sends to a peer that does not answer meets back-pressure:
/// past `max_outbox` messages waiting, a send is refused with a transient
/// error and stores nothing; once the peer has them, sending goes on.
#[test]
fn a_flood_of_sends_meets_back_pressure() {
    use strata_session::{Content, ErrorKind, SessionError};
    let config = Config {
        max_outbox: 50,
        ..Config::default()
    };
    let mut sim = established(73, Faults::NONE, config);
    sim.disconnect();
    let mut refused = 0;
    for k in 0..60 {
        let now = sim.now();
        match sim.nodes[0].machine().send(
            Content::Text {
                text: format!("flood {k}"),
            },
            now,
        ) {
            Ok(id) => sim.nodes[0].sent.push(id),
            Err(e @ SessionError::Busy { queued: 50 }) => {
                assert_eq!(e.kind(), ErrorKind::Transient);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
        sim.drain(0);
    }
    assert_eq!(refused, 10);
    let bob = sim.nodes[0].machine().peer().unwrap().to_string();
    assert_eq!(sim.nodes[0].store().read(|r| r.outbox(&bob)).unwrap().len(), 50);
    sim.connect();
    assert!(sim.run_while(sim.t + Duration::from_secs(120), |s| s.nodes[0].delivered.len() >= 50));
    let after = sim.send_text(0, "after the flood");
    assert!(sim.run_while(sim.t + Duration::from_secs(30), |s| {
        s.nodes[0].delivered.contains_key(&after)
    }));
}
