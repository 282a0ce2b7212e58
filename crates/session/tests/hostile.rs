//! A hostile peer sends each class of bad input: malformed, oversized,
//! unknown, unexpected in this state, undecryptable. Each is refused with a
//! rate-limited `protocol-error`, nothing is stored, and the session goes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Faults, Sim, ready_both};
use strata_cascade::InstallationIdentity;
use strata_proto::{
    Blob, EncryptionSyncResponse, ErrorCode, FixedBytes, KeyBytes, KeyPackageRequest, PROFILE_V0, Pdu, ProtocolError,
    ResumeAnswer, ResumeStatus, SignalSessionComplete, Text,
};
use strata_session::{Command, Config, Durable, Event, Refusal, ResetReason};
use strata_store::StoreError;

/// Everything Bob's store holds about Alice.
fn snapshot(sim: &Sim) -> Vec<Option<Vec<u8>>> {
    let peer = sim.installation_id(0).to_string();
    sim.nodes[1]
        .store()
        .read(|r| {
            Ok(vec![
                r.layer_state(&peer)?.map(|b| b.to_vec()),
                r.handshake(&peer)?.map(|b| b.to_vec()),
                Some(serde_json::to_vec(&r.contact(&peer)?).unwrap()),
                Some(serde_json::to_vec(&r.inbox(&peer)?).unwrap()),
                Some(serde_json::to_vec(&r.outbox(&peer)?).unwrap()),
            ])
        })
        .unwrap()
}

fn established() -> Sim {
    let mut sim = Sim::new(21, Faults::NONE, Config::default());
    sim.connect();
    sim.command(0, Command::Open);
    assert!(sim.run_while(Duration::from_secs(10), ready_both));
    let id = sim.send_text(0, "before");
    assert!(sim.run_while(Duration::from_secs(10), |s| s.nodes[0].delivered.contains_key(&id)));
    sim.run_until(sim.t + Duration::from_secs(1));
    sim
}

/// A real message from Alice to Bob, captured off the wire.
fn captured_message(sim: &mut Sim) -> Vec<u8> {
    let id = sim.send_text(0, "captured");
    // The frames Alice sent are in her outbox until Bob acknowledges them.
    let peer = sim.installation_id(1).to_string();
    let frames = sim.nodes[0]
        .store()
        .read(|r| r.outgoing(&peer, &id))
        .unwrap()
        .unwrap()
        .frames;
    frames.into_iter().next().unwrap()
}

#[test]
fn each_class_of_bad_input_is_refused_and_the_session_survives() {
    let mut sim = established();
    let genuine = captured_message(&mut sim);
    assert!(
        sim.run_while(Duration::from_secs(20), |s| s.nodes[1].received.len() == 2
            && s.nodes[0].delivered.len() == 2)
    );
    // Let every acknowledgement go out, so nothing is pending.
    sim.run_until(sim.t + Duration::from_secs(1));
    // One more that Bob never receives (lost on the wire), to forge from.
    sim.partitioned = true;
    let unseen = captured_message(&mut sim);
    sim.partitioned = false;
    let before = snapshot(&sim);

    let Ok(Pdu::Message(mut forged)) = Pdu::decode(&unseen) else {
        panic!("a message")
    };
    forged.message_id = strata_proto::Text::new("forged-id").unwrap();
    let payload = &mut forged.encrypted_message.cascaded_payload;
    let mut ciphertext = payload.final_ciphertext.take().unwrap().into_vec();
    ciphertext[20] ^= 1;
    payload.final_ciphertext = Some(Blob::new(ciphertext).unwrap());
    let tampered = Pdu::Message(forged).encode();
    let unexpected = Pdu::from(SignalSessionComplete {
        session_id: FixedBytes([9; 16]),
        message: Blob::new(vec![1, 2, 3]).unwrap(),
    })
    .encode();
    let oversized = vec![b' '; strata_proto::limits::MAX_PDU_BYTES + 1];
    let cases: Vec<(&str, Vec<u8>, Refusal)> = vec![
        ("not json", b"{\"type\": \"message\", oops".to_vec(), Refusal::Malformed),
        ("missing fields", br#"{"type":"message"}"#.to_vec(), Refusal::Malformed),
        ("deep nesting", format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(), Refusal::TooLarge),
        ("oversized", oversized, Refusal::TooLarge),
        ("unknown type", br#"{"type":"launch-missiles"}"#.to_vec(), Refusal::UnknownType),
        ("unexpected", unexpected, Refusal::Unexpected),
        ("group pdu", br#"{"type":"group-member-left","groupId":"AA==","epoch":1,"member":{"installationId":"x","identityKey":"AA=="}}"#.to_vec(), Refusal::Unexpected),
        ("undecryptable", tampered, Refusal::Undecryptable),
    ];
    for (what, frame, expected) in cases {
        let refusals = sim.nodes[1].events.len();
        let peer_errors = count_peer_errors(&sim);
        sim.inject(1, frame);
        sim.run_until(sim.t + Duration::from_millis(50));
        let refused: Vec<Refusal> = sim.nodes[1].events[refusals..]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Refused { why } => Some(*why),
                _ => None,
            })
            .collect();
        assert_eq!(refused, vec![expected], "{what}");
        assert_eq!(
            count_peer_errors(&sim),
            peer_errors + 1,
            "{what}: Alice got a protocol-error"
        );
        assert!(snapshot(&sim) == before, "{what}: nothing stored");
        assert!(ready_both(&sim), "{what}: the session survives");
    }
    // A replay of a genuine message is dropped silently (no error, no second delivery).
    sim.inject(1, genuine);
    sim.run_until(sim.t + Duration::from_millis(100));
    assert_eq!(sim.nodes[1].received.values().filter(|c| **c > 1).count(), 0);
    // And traffic goes on.
    let a = sim.send_text(0, "after");
    let b = sim.send_text(1, "after too");
    assert!(sim.run_while(
        sim.t + Duration::from_secs(10),
        |s| s.nodes[1].received.contains_key(&a) && s.nodes[0].received.contains_key(&b)
    ));
}

fn count_peer_errors(sim: &Sim) -> usize {
    sim.nodes[0]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PeerError { .. }))
        .count()
}

#[test]
fn protocol_errors_are_rate_limited() {
    let mut sim = established();
    let burst = Config::default().error_burst as usize;
    for _ in 0..200 {
        sim.inject(1, b"garbage".to_vec());
    }
    sim.run_until(sim.t + Duration::from_millis(10));
    let refused = sim.nodes[1]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Refused { .. }))
        .count();
    assert_eq!(refused, 200);
    let answered = count_peer_errors(&sim);
    assert!(answered <= burst + 1, "{answered} protocol-errors for 200 bad frames");
    assert!(answered >= burst, "the first ones are answered");
    assert!(ready_both(&sim));
}

#[test]
fn handshake_pdus_from_a_stranger_do_not_disturb_a_session() {
    let mut sim = established();
    let before = snapshot(&sim);
    // Late or forged answers for sessions Bob never had.
    for frame in [
        br#"{"type":"mls-key-package","sessionId":"AAAAAAAAAAAAAAAAAAAAAA==","installationId":"00","identityKey":"AA==","keyPackage":"AA=="}"#.to_vec(),
        br#"{"type":"mls-welcome-ack","sessionId":"AAAAAAAAAAAAAAAAAAAAAA==","groupId":"AA==","epoch":3}"#.to_vec(),
        br#"{"type":"mlkem-key-exchange-response","sessionId":"AAAAAAAAAAAAAAAAAAAAAA==","keyId":1,"encapsulationKey":"AA==","signature":"AA=="}"#.to_vec(),
    ] {
        sim.inject(1, frame);
    }
    sim.run_until(sim.t + Duration::from_millis(50));
    assert!(snapshot(&sim) == before, "nothing stored");
    assert!(ready_both(&sim));
}

/// The resume probes each side sends on a new link, captured while a
/// partition drops them (it stays up): (Alice's, Bob's).
fn captured_probes(sim: &mut Sim) -> (Vec<u8>, Vec<u8>) {
    sim.partitioned = true;
    sim.disconnect();
    sim.tap = Some(Vec::new());
    sim.connect();
    let tap = sim.tap.take().unwrap();
    let probe = |from: usize| {
        tap.iter()
            .find(|(f, frame)| {
                *f == from && matches!(Pdu::decode(frame), Ok(Pdu::EncryptionSyncRequest(r)) if r.resume.is_some())
            })
            .map(|(_, frame)| frame.clone())
            .expect("a resume probe")
    };
    (probe(0), probe(1))
}

fn with_proof(probe: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let Ok(Pdu::EncryptionSyncRequest(mut req)) = Pdu::decode(probe) else {
        panic!("a probe")
    };
    let resume = req.resume.as_mut().unwrap();
    let mut proof = resume.proof.as_bytes().to_vec();
    f(&mut proof);
    resume.proof = Blob::new(proof).unwrap();
    Pdu::from(req).encode()
}

fn resume_answers(sim: &Sim, since: usize) -> Vec<ResumeStatus> {
    sim.tap.as_ref().unwrap()[since..]
        .iter()
        .filter_map(|(from, frame)| match Pdu::decode(frame) {
            Ok(Pdu::EncryptionSyncResponse(r)) if *from == 1 => r.resume.map(|a| a.status),
            _ => None,
        })
        .collect()
}

#[test]
fn a_resume_probe_counts_only_with_a_proof_of_the_same_session() {
    let mut sim = established();
    let before = snapshot(&sim);
    let (genuine, _) = captured_probes(&mut sim);
    assert!(!sim.nodes[1].is_ready(), "Bob waits for a probe or an answer");
    // The partition stays: Bob's answers reach only the tap.
    sim.tap = Some(Vec::new());
    // Forged probes for the real session id and epoch: no proof, a proof
    // with one bit flipped, a proof of the wrong length.
    for forged in [
        with_proof(&genuine, Vec::clear),
        with_proof(&genuine, |p| p[40] ^= 1),
        with_proof(&genuine, |p| p.truncate(48)),
    ] {
        let since = sim.tap.as_ref().unwrap().len();
        sim.inject(1, forged);
        sim.run_until(sim.t + Duration::from_millis(5));
        assert_eq!(resume_answers(&sim, since), vec![ResumeStatus::Unknown]);
        assert!(!sim.nodes[1].is_ready(), "a forged probe resumes nothing");
    }
    assert!(snapshot(&sim) == before, "nothing stored");
    // The genuine probe (the control): Bob resumes.
    let since = sim.tap.as_ref().unwrap().len();
    sim.inject(1, genuine);
    sim.run_until(sim.t + Duration::from_millis(5));
    assert_eq!(resume_answers(&sim, since), vec![ResumeStatus::Resumed]);
    assert!(sim.nodes[1].is_ready());
}

#[test]
fn a_resumed_answer_without_a_matching_proof_falls_back_to_a_handshake() {
    let mut sim = established();
    let session = sim.nodes[0].machine().session_id().unwrap();
    let _ = captured_probes(&mut sim);
    // "resumed", but with a proof that is not over Alice's nonce.
    let forged = Pdu::from(EncryptionSyncResponse {
        session_id: FixedBytes(session),
        profile: Text::new(strata_proto::PROFILE_V0).unwrap(),
        layers: strata_proto::BoundedVec::new(
            ["MLS", "Signal", "ML-KEM", "AES"]
                .map(|l| Text::new(l).unwrap())
                .to_vec(),
        )
        .unwrap(),
        resume: Some(ResumeAnswer {
            status: ResumeStatus::Resumed,
            proof: Some(Blob::new(vec![7; 32]).unwrap()),
        }),
    })
    .encode();
    sim.partitioned = true;
    sim.inject(0, forged);
    sim.run_until(sim.t + Duration::from_millis(5));
    assert!(!sim.nodes[0].is_ready());
    assert!(sim.nodes[0].events.iter().any(|(_, e)| matches!(
        e,
        Event::SessionReset {
            reason: ResetReason::StateMismatch
        }
    )));
    sim.partitioned = false;
    assert!(sim.run_while(sim.t + Duration::from_secs(30), |s| ready_both(s)
        && s.nodes[0].machine.as_ref().unwrap().session_id() != Some(session)));
    let id = sim.send_text(0, "on the new session");
    assert!(sim.run_while(sim.t + Duration::from_secs(10), |s| {
        s.nodes[1].received.contains_key(&id)
    }));
}

/// A forged step 1 in Alice's name, with the lowest session id there is,
/// arrives while Bob's own handshake with Alice runs: Bob answers it and
/// keeps his own, which completes as if nothing happened (a session id
/// anyone can choose no longer decides which handshake lives).
#[test]
fn a_forged_start_does_not_displace_our_own_handshake() {
    let mut sim = Sim::new(31, Faults::NONE, Config::default());
    sim.connect();
    sim.command(1, Command::Open);
    sim.inject(1, step_one([0; 16], &sim.nodes[0].identity));
    assert!(sim.run_while(Duration::from_secs(5), ready_both));
    let ours = sim.nodes[1]
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::HandshakeStarted {
                session_id,
                role: strata_session::Role::Initiator,
                ..
            } => Some(*session_id),
            _ => None,
        })
        .unwrap();
    assert_eq!(sim.nodes[1].machine().session_id(), Some(ours));
    assert_eq!(sim.nodes[0].machine().session_id(), Some(ours));
    assert!(
        !sim.nodes[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::HandshakeStalled { .. }))
    );
    sim.exchange(2);
}

/// Anyone on the path can send a step 1 in Alice's name: her installation
/// id and identity key are public. Bob answers it (it may be Alice after
/// losing her state), but the established session carries on while the
/// attempt waits and after it is given up: no reset, never not ready,
/// messages both ways.
#[test]
fn a_forged_step_one_in_a_known_name_does_not_pause_the_session() {
    let mut sim = established();
    let seen = sim.nodes[1].events.len();
    let forged = step_one([0x5a; 16], &sim.nodes[0].identity);
    let mut ids = Vec::new();
    // Past the handshake timeout, so the forged attempt is given up.
    for round in 0..40 {
        if round % 10 == 0 {
            sim.inject(1, forged.clone());
        }
        ids.push((0, sim.send_text(0, &format!("a{round}"))));
        ids.push((1, sim.send_text(1, &format!("b{round}"))));
        let limit = sim.t + Duration::from_secs(1);
        sim.run_until(limit);
        assert!(ready_both(&sim), "round {round}: not ready");
    }
    let limit = sim.t + Duration::from_secs(10);
    assert!(sim.run_while(limit, |s| {
        ids.iter().all(|(i, id)| s.nodes[1 - i].received.contains_key(id))
    }));
    let disturbed: Vec<&Event> = sim.nodes[1].events[seen..]
        .iter()
        .map(|(_, e)| e)
        .filter(|e| {
            matches!(
                e,
                Event::SessionReset { .. } | Event::NotReady | Event::EncryptionReady { .. }
            )
        })
        .collect();
    assert!(disturbed.is_empty(), "{disturbed:?}");
}

/// Step 1 as `claimed` would send it; all of it is public.
fn step_one(session_id: [u8; 16], claimed: &InstallationIdentity) -> Vec<u8> {
    Pdu::from(KeyPackageRequest {
        session_id: FixedBytes(session_id),
        installation_id: Text::new(claimed.installation_id().to_string()).unwrap(),
        identity_key: KeyBytes::new(claimed.account().identity_key().serialize().to_vec()).unwrap(),
        profile: Text::new(PROFILE_V0).unwrap(),
        timestamp: 0,
        prior: None,
    })
    .encode()
}

fn contacts(sim: &Sim, i: usize) -> Vec<(String, Vec<u8>)> {
    let contacts = sim.nodes[i].store().read(|r| r.contacts()).unwrap();
    contacts
        .into_iter()
        .map(|c| (c.installation_id, c.identity_key))
        .collect()
}

/// A first contact is pinned when its handshake completes, in the
/// transaction that saves the session: step 1s from strangers that never
/// finish leave nothing in the store, however many there are.
#[test]
fn only_a_completed_handshake_pins_a_first_contact() {
    let mut sim = Sim::new(31, Faults::NONE, Config::default());
    sim.connect();
    for k in 0..20u8 {
        let stranger = common::installation(&mut sim.rng);
        sim.inject(1, step_one([k; 16], &stranger));
    }
    sim.run_until(sim.t + Duration::from_secs(2));
    assert!(contacts(&sim, 1).is_empty(), "a stranger's step 1 was stored");
    sim.command(0, Command::Open);
    assert!(sim.run_while(sim.t + Duration::from_secs(30), ready_both));
    let alice = &sim.nodes[0].identity;
    assert_eq!(
        contacts(&sim, 1),
        vec![(
            alice.installation_id().to_string(),
            alice.account().identity_key().serialize().to_vec()
        )]
    );
}

/// The user pins another key for Alice while her first handshake runs:
/// the handshake's own pin meets it at completion, and the session is
/// dropped unsaved with the contact blocked, as for any changed key.
#[test]
fn a_key_pinned_during_the_first_handshake_wins_over_it() {
    let mut sim = Sim::new(32, Faults::NONE, Config::default());
    open_until_bob_answers(&mut sim);
    let alice = sim.installation_id(0).to_string();
    let other = common::installation(&mut sim.rng)
        .account()
        .identity_key()
        .serialize()
        .to_vec();
    let now_ms = sim.now().unix_ms;
    sim.nodes[1]
        .store()
        .write(|w| w.observe_identity(&alice, &other, now_ms).map(drop))
        .unwrap();
    sim.run_until(sim.t + Duration::from_secs(2));
    assert!(!sim.nodes[1].is_ready());
    assert!(
        sim.nodes[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::IdentityChanged { .. }))
    );
    let contact = sim.nodes[1].store().read(|r| r.contact(&alice)).unwrap().unwrap();
    assert_eq!(contact.identity_key, other);
    let real = sim.nodes[0].identity.account().identity_key().serialize().to_vec();
    assert_eq!(contact.offered_key, Some(real));
    let saved = sim.nodes[1].store().read(|r| r.handshake(&alice)).unwrap();
    assert!(saved.is_none(), "the session was saved");
}

/// A store whose writes can be made to fail (a full disk, say).
struct Flaky {
    inner: strata_store::Store<strata_store::MemoryBackend>,
    failing: Arc<AtomicBool>,
}

impl Durable for Flaky {
    fn read_tx(
        &self,
        f: &mut dyn FnMut(&strata_store::Reader<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.inner.read_tx(f)
    }

    fn write_tx(
        &self,
        f: &mut dyn FnMut(&mut strata_store::Writer<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected: no space left on device".into()));
        }
        self.inner.write_tx(f)
    }
}

/// Bob's store refuses the write that would save his first session with
/// Alice: the session is dropped unsaved, nothing about Alice is pinned,
/// and once writes work again a new handshake, started by Alice as soon as
/// Bob refuses the old one, pins her and carries text.
#[test]
fn a_session_whose_save_fails_is_neither_used_nor_pinned() {
    let mut sim = Sim::new(33, Faults::NONE, Config::default());
    sim.tolerate_errors = true;
    let failing = Arc::new(AtomicBool::new(false));
    sim.nodes[1].durable = Some(Arc::new(Flaky {
        inner: sim.nodes[1].store(),
        failing: Arc::clone(&failing),
    }));
    sim.boot(1, None);
    open_until_bob_answers(&mut sim);
    failing.store(true, Ordering::SeqCst);
    sim.run_until(sim.t + Duration::from_secs(2));
    assert!(!sim.nodes[1].errors.is_empty(), "no write was refused");
    assert!(!sim.nodes[1].is_ready());
    assert!(contacts(&sim, 1).is_empty(), "a contact was pinned without its session");
    let alice = sim.installation_id(0).to_string();
    assert!(sim.nodes[1].store().read(|r| r.handshake(&alice)).unwrap().is_none());

    failing.store(false, Ordering::SeqCst);
    let id = sim.send_text(0, "after the disk was freed");
    // Alice hears "unknown session" for her handshake and starts a new one
    // at once, rather than retransmitting into the 5-minute stall.
    let limit = sim.t + Duration::from_secs(30);
    assert!(sim.run_while(limit, |s| s.nodes[1].received.contains_key(&id) && ready_both(s)));
    let key = sim.nodes[0].identity.account().identity_key().serialize().to_vec();
    assert_eq!(contacts(&sim, 1), vec![(alice, key)]);
}

/// Alice opens; returns once Bob has started answering (step 1 is in).
fn open_until_bob_answers(sim: &mut Sim) {
    sim.connect();
    sim.command(0, Command::Open);
    assert!(sim.run_while(sim.t + Duration::from_secs(10), |s| {
        s.nodes[1]
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::HandshakeStarted { .. }))
    }));
}

/// After a simultaneous open the twin not kept stays aside for a while. A
/// forged refusal of one of our messages "at the outer layer" (protocol
/// errors are not authenticated) moves Alice to it; the peer's next message,
/// under the twin that came first, moves her back: both end in the same
/// session and every message arrives.
#[test]
fn a_forged_refusal_does_not_split_settled_twins() {
    let mut sim = Sim::new(33, Faults::NONE, Config::default());
    sim.connect();
    sim.command(0, Command::Open);
    sim.command(1, Command::Open);
    assert!(sim.run_while(Duration::from_secs(30), common::twins_settled));
    let kept = sim.nodes[0].view().last_tie_break().unwrap().kept.0;
    let id = sim.send_text(0, "refused, says someone");
    let forged = Pdu::from(ProtocolError {
        code: ErrorCode::DecryptFailed,
        reason: Text::new("authentication failed in the AES-GCM-256 layer").unwrap(),
        ref_type: Some(Text::new("message").unwrap()),
        ref_id: Some(Text::new(id.clone()).unwrap()),
    })
    .encode();
    sim.inject(0, forged);
    let limit = sim.t + Duration::from_secs(1);
    assert!(
        sim.run_while(limit, |s| s.nodes[0].view().session_id() != Some(kept)),
        "the refusal moves Alice to the other twin"
    );
    let back = sim.send_text(1, "under the one kept");
    let limit = sim.t + Duration::from_secs(10);
    assert!(sim.run_while(limit, |s| s.nodes[1].received.contains_key(&id)
        && s.nodes[0].received.contains_key(&back)
        && s.nodes[0].view().session_id() == Some(kept)));
    assert_eq!(sim.nodes[1].view().session_id(), Some(kept));
    sim.exchange(2);
}
