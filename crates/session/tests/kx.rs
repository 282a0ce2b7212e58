//! The key-exchange book (`strata_session::kx`) driven by hand: invites
//! run to pinned contacts on both sides, survive restarts and lost
//! answers, are used once, and everything forged, replayed, expired,
//! self-addressed or oversized is refused without changing anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::kx::{KxError, KxKeyPair, KxSelf, make_half_kx, seal, verify_invite};
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_proto::kx::{FullKx, Invite, KEM_CIPHERTEXT_BYTES, KeyExchange, Rmo};
use strata_session::SessionError;
use strata_session::kx::{HALF_RETRY, KxBook, KxCompleted, KxOutput, KxRefusal, rendezvous_topic, topic_rendezvous};
use strata_store::{KeySource, MemoryBackend, Store};
use strata_transport::Topic;

const T0: u64 = 1_800_000_000_000;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// One account on a memory store, and its book.
struct Side {
    id: Arc<InstallationIdentity>,
    name: String,
    backend: MemoryBackend,
    key: StorageKey,
    book: KxBook,
}

impl Side {
    fn new(name: &str, rng: &mut ChaCha20Rng) -> Self {
        let id = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap());
        let backend = MemoryBackend::new();
        let key = StorageKey::generate(rng);
        let book = Self::load(&id, &backend, &key, rng.random(), T0);
        Self {
            id,
            name: name.to_owned(),
            backend,
            key,
            book,
        }
    }

    fn load(
        id: &Arc<InstallationIdentity>,
        backend: &MemoryBackend,
        key: &StorageKey,
        seed: [u8; 32],
        now: u64,
    ) -> KxBook {
        let store = Store::open(backend.clone(), KeySource::Key(key.clone())).unwrap();
        KxBook::load(Arc::new(store), Arc::clone(id), seed, now).unwrap()
    }

    fn invite(&mut self, ttl: Duration, now: u64) -> Invite {
        let invite = self.book.invite(&self.name, ttl, now).unwrap();
        self.outputs();
        invite
    }

    fn accept(&mut self, invite: &Invite, now: u64) -> Result<strata_session::kx::AcceptedInvite, SessionError> {
        self.book.accept(invite, &self.name, now)
    }

    /// The book again from its store, as after a restart.
    fn restart(&mut self, now: u64) {
        self.book = Self::load(&self.id, &self.backend, &self.key, [now as u8; 32], now);
    }

    fn store(&self) -> Store<MemoryBackend> {
        Store::open(self.backend.clone(), KeySource::Key(self.key.clone())).unwrap()
    }

    /// Everything stored that the exchange touches.
    fn snapshot(&self) -> (Vec<(String, Vec<u8>)>, Vec<strata_store::Contact>) {
        self.store()
            .read(|r| {
                let kx = r.kx_entries("")?.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
                Ok((kx, r.contacts()?))
            })
            .unwrap()
    }

    fn outputs(&mut self) -> Vec<KxOutput> {
        std::iter::from_fn(|| self.book.poll_output()).collect()
    }

    fn account_key(&self) -> Vec<u8> {
        self.id.account().identity_key().serialize().to_vec()
    }
}

/// What `pick` finds among `outputs`, in order.
fn among<T>(outputs: &[KxOutput], pick: impl Fn(&KxOutput) -> Option<T>) -> Vec<T> {
    outputs.iter().filter_map(pick).collect()
}

/// The frames among `outputs`, with their rendezvous points.
fn published(outputs: &[KxOutput]) -> Vec<([u8; 32], Vec<u8>)> {
    among(outputs, |o| match o {
        KxOutput::Publish { topic, frame } => Some((topic_rendezvous(topic).unwrap(), frame.to_vec())),
        _ => None,
    })
}

fn completed(outputs: &[KxOutput]) -> Vec<KxCompleted> {
    among(outputs, |o| match o {
        KxOutput::Completed(c) => Some(c.clone()),
        _ => None,
    })
}

fn subscribed(outputs: &[KxOutput]) -> Vec<Topic> {
    among(outputs, |o| match o {
        KxOutput::Subscribe(t) => Some(t.clone()),
        _ => None,
    })
}

/// `account` with `kem` as the cryptography names a side, claiming
/// `installation` (a forger's claim in the tests that use it).
fn side<'a>(
    account: &'a AccountIdentity,
    kem: &'a KxKeyPair,
    name: &'a str,
    installation: strata_cascade::InstallationId,
) -> KxSelf<'a> {
    KxSelf {
        account,
        kem,
        name,
        installation,
    }
}

fn refusal(result: Result<impl std::fmt::Debug, SessionError>) -> KxRefusal {
    match result {
        Err(SessionError::Kx(r)) => r,
        other => panic!("expected a KX refusal, got {other:?}"),
    }
}

#[test]
fn an_invite_runs_to_a_contact_pinned_by_invite_on_both_sides() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    let invite = alice.book.invite("alice", DAY, T0).unwrap();
    assert_eq!(
        subscribed(&alice.outputs()),
        [rendezvous_topic(&invite.initial_rendezvous)]
    );

    let met = bob.accept(&invite, T0 + 1).unwrap();
    assert_eq!(met.identity_key, alice.account_key());
    assert_eq!(met.installation, alice.id.installation_id());
    assert_eq!(met.name, "alice");
    let out = bob.outputs();
    assert_eq!(subscribed(&out).len(), 1, "bob waits on his own point");
    let halves = published(&out);
    assert_eq!(halves.len(), 1);
    assert_eq!(halves[0].0, invite.initial_rendezvous);

    // Both restart in the middle: what waits is stored.
    alice.restart(T0 + 2);
    bob.restart(T0 + 2);
    assert_eq!(subscribed(&alice.outputs()).len(), 1);
    let out = bob.outputs();
    assert_eq!(subscribed(&out).len(), 1);
    assert_eq!(published(&out).len(), 1, "a restarted invitee publishes its half again");

    alice.book.on_frame(&halves[0].0, &halves[0].1, T0 + 3).unwrap();
    let out = alice.outputs();
    let done = completed(&out);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].identity_key, bob.account_key());
    assert_eq!(done[0].installation, bob.id.installation_id());
    assert!(!done[0].accepted);
    let fulls = published(&out);
    assert_eq!(fulls.len(), 1);

    bob.book.on_frame(&fulls[0].0, &fulls[0].1, T0 + 4).unwrap();
    let out = bob.outputs();
    let done = completed(&out);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].identity_key, alice.account_key());
    assert!(done[0].accepted, "the invitee opens the Strata handshake");
    assert!(out.contains(&KxOutput::Unsubscribe(rendezvous_topic(&fulls[0].0))));
    assert_eq!(bob.book.open_counts(), (0, 0));

    for (side, other) in [(&alice, &bob), (&bob, &alice)] {
        let contact = side
            .store()
            .read(|r| r.contact(&other.id.installation_id().to_hex()))
            .unwrap()
            .expect("pinned");
        assert_eq!(contact.identity_key, other.account_key());
        assert!(contact.invited && !contact.verified);
        let peers = side.book.peers().unwrap();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].0, other.id.installation_id());
    }
    // Their reset points cross.
    let a = &alice.book.peers().unwrap()[0].1;
    let b = &bob.book.peers().unwrap()[0].1;
    assert_eq!(a.my_reset, b.their_reset);
    assert_eq!(a.their_reset, b.my_reset);

    // The same invite once more: refused, it is done.
    assert_eq!(refusal(bob.accept(&invite, T0 + 5)), KxRefusal::AlreadyAccepted);
}

#[test]
fn a_lost_full_kx_is_answered_again_and_an_invite_is_used_once() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    let mut carol = Side::new("carol", &mut rng);
    let invite = alice.invite(7 * DAY, T0);
    bob.accept(&invite, T0).unwrap();
    let half = published(&bob.outputs()).remove(0);
    alice.book.on_frame(&half.0, &half.1, T0).unwrap();
    let first = published(&alice.outputs()).remove(0);
    // The full KX is lost; Bob's half goes out again, sealed anew.
    assert_eq!(bob.book.next_deadline(), Some(T0 + 5_000));
    bob.book.tick(T0 + HALF_RETRY.as_secs() * 1000).unwrap();
    let again = published(&bob.outputs()).remove(0);
    assert_eq!(again.0, half.0);
    assert_ne!(again.1, half.1);
    // Alice knows it and answers it again, without a second completion.
    alice.book.on_frame(&again.0, &again.1, T0 + 6_000).unwrap();
    let out = alice.outputs();
    assert!(completed(&out).is_empty());
    let second = published(&out).remove(0);
    assert_eq!(second.0, first.0);
    bob.book.on_frame(&second.0, &second.1, T0 + 7_000).unwrap();
    assert_eq!(completed(&bob.outputs()).len(), 1);
    // The late first answer finds nothing waiting.
    assert_eq!(
        refusal(bob.book.on_frame(&first.0, &first.1, T0 + 8_000)),
        KxRefusal::Unknown
    );

    // A used invite no longer counts against the open ones, and answers
    // repeats for a day, not its whole life.
    assert_eq!(alice.book.open_counts().0, 1);
    assert_eq!(alice.book.next_deadline(), Some((T0 / 1000 + 24 * 3600 + 1) * 1000));

    // Carol got hold of the invite too: it is used.
    let before = alice.snapshot();
    carol.accept(&invite, T0 + 9_000).unwrap();
    let hers = published(&carol.outputs()).remove(0);
    assert_eq!(
        refusal(alice.book.on_frame(&hers.0, &hers.1, T0 + 9_000)),
        KxRefusal::Used
    );
    assert!(alice.outputs().is_empty());
    assert_eq!(alice.snapshot(), before);
}

#[test]
fn an_invite_expires_on_both_sides() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    let invite = alice.invite(Duration::from_secs(60), T0);
    assert_eq!(refusal(bob.accept(&invite, T0 + 61_000)), KxRefusal::Expired);
    assert_eq!(bob.book.open_counts(), (0, 0));
    bob.accept(&invite, T0 + 30_000).unwrap();
    let half = published(&bob.outputs()).remove(0);
    // It reaches Alice too late.
    assert_eq!(
        refusal(alice.book.on_frame(&half.0, &half.1, T0 + 61_000)),
        KxRefusal::Expired
    );
    assert!(
        alice
            .outputs()
            .contains(&KxOutput::Unsubscribe(rendezvous_topic(&half.0)))
    );
    assert_eq!(alice.book.open_counts(), (0, 0));
    // Bob gives up at the expiry too.
    bob.book.tick(T0 + 61_000).unwrap();
    assert_eq!(bob.book.open_counts(), (0, 0));
    assert!(alice.snapshot().0.iter().all(|(k, _)| k == "keypair"));
    assert!(bob.snapshot().0.iter().all(|(k, _)| k == "keypair"));
}

/// Forged, altered, self-addressed, misdirected, oversized and unknown
/// input: each refused with its reason, and the stores unchanged; the
/// invite then still works for its real invitee.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    let invite = alice.invite(DAY, T0);
    let rv = invite.initial_rendezvous;
    let before = (alice.snapshot(), bob.snapshot());

    // Invites: altered, and Alice's own.
    let mut altered = invite.clone();
    altered.expires += 1;
    assert_eq!(
        refusal(bob.accept(&altered, T0)),
        KxRefusal::Check(KxError::BadSignature)
    );
    let mut altered = invite.clone();
    altered.installation[0] ^= 1;
    assert_eq!(
        refusal(bob.accept(&altered, T0)),
        KxRefusal::Check(KxError::BadSignature)
    );
    assert_eq!(refusal(alice.accept(&invite, T0)), KxRefusal::SelfAddressed);

    // Frames on Alice's point: oversized, garbage, not for her key.
    let over = vec![0u8; strata_cascade::kx::MAX_SEALED_BYTES + 1];
    assert_eq!(
        refusal(alice.book.on_frame(&rv, &over, T0)),
        KxRefusal::Oversized(over.len())
    );
    assert_eq!(
        refusal(alice.book.on_frame(&rv, b"junk", T0)),
        KxRefusal::Check(KxError::Malformed)
    );
    let stranger = KxKeyPair::generate(&mut rng);
    let not_hers = seal(&stranger.public_key(), b"x", &mut rng).unwrap();
    assert_eq!(
        refusal(alice.book.on_frame(&rv, &not_hers, T0)),
        KxRefusal::Check(KxError::Unsealed)
    );
    // Sealed to her, but no RMO; then an RMO of the wrong kind.
    let kem = verify_invite(&invite, 0).unwrap().inviter.kem_key;
    let sealed = seal(&kem, b"not zlib", &mut rng).unwrap();
    assert!(matches!(
        refusal(alice.book.on_frame(&rv, &sealed, T0)),
        KxRefusal::Format(_)
    ));
    let full = Rmo::FullKx(Box::new(FullKx {
        full_kx: KeyExchange {
            public: vec![0; 72],
            cipher: [0; KEM_CIPHERTEXT_BYTES],
        },
    }))
    .compose(1);
    let sealed = seal(&kem, &full, &mut rng).unwrap();
    assert_eq!(refusal(alice.book.on_frame(&rv, &sealed, T0)), KxRefusal::Unexpected);

    // Halves: one with another installation than signed, one from Alice's
    // own account, one answering another invite.
    let verified = verify_invite(&invite, 0).unwrap();
    let bob_kem = KxKeyPair::generate(&mut rng);
    let me = side(bob.id.account(), &bob_kem, "bob", bob.id.installation_id());
    let (mut forged, _) = make_half_kx(me, &verified, &mut rng).unwrap();
    forged.installation[0] ^= 1;
    let sealed = seal(&kem, &Rmo::HalfKx(Box::new(forged)).compose(1), &mut rng).unwrap();
    assert_eq!(
        refusal(alice.book.on_frame(&rv, &sealed, T0)),
        KxRefusal::Check(KxError::BadSignature)
    );
    let alice_kem = KxKeyPair::generate(&mut rng);
    let herself = side(alice.id.account(), &alice_kem, "alice", alice.id.installation_id());
    let (own, _) = make_half_kx(herself, &verified, &mut rng).unwrap();
    let sealed = seal(&kem, &Rmo::HalfKx(Box::new(own)).compose(1), &mut rng).unwrap();
    assert_eq!(refusal(alice.book.on_frame(&rv, &sealed, T0)), KxRefusal::SelfAddressed);
    let other: Invite = alice.invite(DAY, T0);
    let (elsewhere, _) = make_half_kx(me, &verify_invite(&other, 0).unwrap(), &mut rng).unwrap();
    let sealed = seal(&kem, &Rmo::HalfKx(Box::new(elsewhere)).compose(1), &mut rng).unwrap();
    assert_eq!(
        refusal(alice.book.on_frame(&rv, &sealed, T0)),
        KxRefusal::Check(KxError::BadSignature)
    );
    // A point nothing waits on.
    assert_eq!(refusal(alice.book.on_frame(&[7; 32], &sealed, T0)), KxRefusal::Unknown);

    assert!(alice.outputs().is_empty());
    let after_alice = alice.snapshot();
    // Only the second invite was added.
    assert_eq!(after_alice.1, before.0.1);
    assert_eq!(after_alice.0.len(), before.0.0.len() + 1);
    assert_eq!(bob.snapshot(), before.1);

    // The real invitee still gets through.
    bob.accept(&invite, T0).unwrap();
    let half = published(&bob.outputs()).remove(0);
    alice.book.on_frame(&half.0, &half.1, T0).unwrap();
    let full = published(&alice.outputs()).remove(0);
    bob.book.on_frame(&full.0, &full.1, T0).unwrap();
    assert_eq!(completed(&bob.outputs()).len(), 1);
}

/// An installation already pinned to another account key is not taken
/// over by an exchange: refused, and the contact stays as it was.
#[test]
fn an_exchange_cannot_take_over_a_pinned_installation() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    let bob_installation = bob.id.installation_id().to_hex();
    alice
        .store()
        .write(|w| w.observe_identity(&bob_installation, &[5; 33], 1).map(drop))
        .unwrap();
    let invite = alice.invite(DAY, T0);
    bob.accept(&invite, T0).unwrap();
    let half = published(&bob.outputs()).remove(0);
    let before = alice.snapshot();
    assert_eq!(
        refusal(alice.book.on_frame(&half.0, &half.1, T0)),
        KxRefusal::InstallationClaimed
    );
    assert!(alice.outputs().is_empty());
    assert_eq!(alice.snapshot(), before);
}

/// Runs an exchange from Alice's invite to the end; the frames it took.
fn exchange(alice: &mut Side, bob: &mut Side, now: u64) {
    let invite = alice.invite(DAY, now);
    bob.accept(&invite, now).unwrap();
    let half = published(&bob.outputs()).remove(0);
    alice.book.on_frame(&half.0, &half.1, now).unwrap();
    let full = published(&alice.outputs()).remove(0);
    bob.book.on_frame(&full.0, &full.1, now).unwrap();
    bob.outputs();
}

#[test]
fn a_reset_runs_the_exchange_again_through_the_reset_points() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    exchange(&mut alice, &mut bob, T0);
    let bob_id = bob.id.installation_id();
    let old = bob.book.peers().unwrap()[0].1.clone();

    alice.book.reset(bob_id, "alice", T0 + 1).unwrap();
    let out = alice.outputs();
    assert_eq!(subscribed(&out).len(), 1, "Alice waits on the new invite's point");
    let sent = published(&out).remove(0);
    assert_eq!(sent.0, old.my_reset, "the invite goes to Bob's reset point");

    bob.book.on_frame(&sent.0, &sent.1, T0 + 2).unwrap();
    let half = published(&bob.outputs()).remove(0);
    alice.book.on_frame(&half.0, &half.1, T0 + 3).unwrap();
    let out = alice.outputs();
    let done = completed(&out);
    assert!(done[0].reset && !done[0].accepted);
    let full = published(&out).remove(0);
    bob.book.on_frame(&full.0, &full.1, T0 + 4).unwrap();
    let out = bob.outputs();
    let done = completed(&out);
    assert!(done[0].reset && done[0].accepted);
    assert_eq!(done[0].identity_key, alice.account_key());

    // New reset points, the old one dropped; the same reset again is
    // refused, there or at the new point.
    let new = bob.book.peers().unwrap()[0].1.clone();
    assert_ne!(new.my_reset, old.my_reset);
    assert!(out.contains(&KxOutput::Unsubscribe(rendezvous_topic(&old.my_reset))));
    assert!(out.contains(&KxOutput::Subscribe(rendezvous_topic(&new.my_reset))));
    assert_eq!(alice.book.peers().unwrap()[0].1.their_reset, new.my_reset);
    assert_eq!(refusal(bob.book.on_frame(&sent.0, &sent.1, T0 + 5)), KxRefusal::Unknown);
    assert_eq!(
        refusal(bob.book.on_frame(&new.my_reset, &sent.1, T0 + 5)),
        KxRefusal::AlreadyAccepted
    );
}

/// Only the account met may reset: Mallory, who somehow knows Bob's reset
/// point and KEM key, is refused; so is a reset of someone never met.
#[test]
fn a_reset_from_another_account_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    let mallory = Side::new("mallory", &mut rng);
    exchange(&mut alice, &mut bob, T0);
    let bob_seen_by_alice = alice.book.peers().unwrap()[0].1.clone();
    let kem = KxKeyPair::generate(&mut rng);
    let me = side(mallory.id.account(), &kem, "alice", alice.id.installation_id());
    let forged = strata_cascade::kx::make_invite(me, T0 / 1000 + 3600, &mut rng).unwrap();
    let their_kem: [u8; strata_proto::kx::KEM_PUBLIC_KEY_BYTES] =
        bob_seen_by_alice.kem_key.as_slice().try_into().unwrap();
    let sealed = seal(&their_kem, &Rmo::Invite(Box::new(forged)).compose(1), &mut rng).unwrap();
    let before = bob.snapshot();
    assert_eq!(
        refusal(bob.book.on_frame(&bob_seen_by_alice.their_reset, &sealed, T0 + 1)),
        KxRefusal::NotThePeer
    );
    assert!(bob.outputs().is_empty());
    assert_eq!(bob.snapshot(), before);
    assert_eq!(
        refusal(bob.book.reset(mallory.id.installation_id(), "bob", T0)),
        KxRefusal::NotMet
    );
}

/// At start, a peer met by invite whose session is not held is reset, once.
#[test]
fn peers_whose_session_is_lost_are_reset_once() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut alice = Side::new("alice", &mut rng);
    let mut bob = Side::new("bob", &mut rng);
    exchange(&mut alice, &mut bob, T0);
    // No Strata session ran in this test: none is held.
    assert_eq!(
        alice.book.reset_lost("alice", T0 + 1).unwrap(),
        [bob.id.installation_id()]
    );
    assert_eq!(published(&alice.outputs()).len(), 1);
    assert!(alice.book.reset_lost("alice", T0 + 2).unwrap().is_empty(), "under way");
    alice.restart(T0 + 3);
    assert!(
        alice.book.reset_lost("alice", T0 + 3).unwrap().is_empty(),
        "still under way"
    );
}

/// An introduction with its messages passed by hand (the mediator is only
/// an installation id here): Carol's invite, sealed to Alice, is accepted
/// only when Alice asked to meet Carol through that mediator; a forward
/// nobody asked for, through another mediator, or replayed, is refused
/// and changes nothing.
#[test]
fn an_introduction_runs_only_when_asked_for() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut alice = Side::new("alice", &mut rng);
    let mut carol = Side::new("carol", &mut rng);
    let (mediator, other) = (
        strata_cascade::InstallationId::from_bytes([0xb0; 16]),
        strata_cascade::InstallationId::from_bytes([0xb1; 16]),
    );
    let (a_id, c_id) = (alice.id.installation_id(), carol.id.installation_id());
    let identity = alice.book.public_identity("alice").unwrap();
    let sealed = carol.book.invite_for(&identity, a_id, T0).unwrap();
    assert_eq!(subscribed(&carol.outputs()).len(), 1);

    let before = alice.snapshot();
    assert_eq!(
        refusal(alice.book.on_introduction(c_id, mediator, &sealed, T0)),
        KxRefusal::Unrequested
    );
    assert_eq!(alice.snapshot(), before);
    assert!(alice.book.ask_introduction(c_id, mediator, T0).unwrap());
    assert!(
        !alice.book.ask_introduction(c_id, mediator, T0).unwrap(),
        "asked already"
    );
    assert_eq!(
        refusal(alice.book.on_introduction(c_id, other, &sealed, T0)),
        KxRefusal::Unrequested
    );
    // Carol's invite named as another installation's.
    assert_eq!(
        refusal(alice.book.on_introduction(mediator, mediator, &sealed, T0)),
        KxRefusal::Unrequested
    );

    let met = alice.book.on_introduction(c_id, mediator, &sealed, T0).unwrap();
    assert_eq!(met.installation, c_id);
    assert_eq!(met.identity_key, carol.account_key());
    assert_eq!(
        refusal(alice.book.on_introduction(c_id, mediator, &sealed, T0)),
        KxRefusal::Unrequested,
        "replayed"
    );
    let half = published(&alice.outputs()).remove(0);
    carol.book.on_frame(&half.0, &half.1, T0).unwrap();
    let out = carol.outputs();
    assert_eq!(completed(&out)[0].identity_key, alice.account_key());
    let full = published(&out).remove(0);
    alice.book.on_frame(&full.0, &full.1, T0).unwrap();
    let done = completed(&alice.outputs());
    assert!(done[0].accepted, "Alice accepted: she opens the session");
    assert_eq!(done[0].installation, c_id);
    // Met: neither asks nor invites again.
    assert!(!alice.book.ask_introduction(c_id, mediator, T0).unwrap());
    assert_eq!(refusal(carol.book.invite_for(&identity, a_id, T0)), KxRefusal::Met);
    // An asked introduction lapses after an hour.
    let dave = strata_cascade::InstallationId::from_bytes([0xd0; 16]);
    assert!(alice.book.ask_introduction(dave, mediator, T0).unwrap());
    assert!(alice.book.ask_introduction(dave, mediator, T0 + 3_601_000).unwrap());
}

/// Only the account an introduction's invite is for may answer it.
#[test]
fn an_introductions_invite_answers_only_its_account() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut alice = Side::new("alice", &mut rng);
    let mut carol = Side::new("carol", &mut rng);
    let mallory = Side::new("mallory", &mut rng);
    let identity = alice.book.public_identity("alice").unwrap();
    carol
        .book
        .invite_for(&identity, alice.id.installation_id(), T0)
        .unwrap();
    let rv = match carol.outputs().remove(0) {
        KxOutput::Subscribe(topic) => topic_rendezvous(&topic).unwrap(),
        other => panic!("{other:?}"),
    };
    // Mallory answers the point with a half of her own, sealed to Carol
    // (she learnt Carol's KEM key from a public identity).
    let carol_identity: strata_proto::kx::PublicIdentity =
        serde_json::from_slice(&carol.book.public_identity("carol").unwrap()).unwrap();
    let carol_invite = strata_cascade::kx::VerifiedInvite {
        inviter: strata_cascade::kx::verify_identity(&carol_identity).unwrap(),
        installation: carol.id.installation_id(),
        initial_rendezvous: rv,
        reset_rendezvous: [0; 32],
        expires: T0 / 1000 + 60,
    };
    let kem = KxKeyPair::generate(&mut rng);
    let me = side(mallory.id.account(), &kem, "alice", alice.id.installation_id());
    let (half, _) = make_half_kx(me, &carol_invite, &mut rng).unwrap();
    let sealed = seal(&carol_identity.key, &Rmo::HalfKx(Box::new(half)).compose(1), &mut rng).unwrap();
    let before = carol.snapshot();
    assert_eq!(refusal(carol.book.on_frame(&rv, &sealed, T0)), KxRefusal::NotThePeer);
    assert_eq!(carol.snapshot(), before);
    // A forged identity is refused before any invite is made.
    let mut forged: strata_proto::kx::PublicIdentity = serde_json::from_slice(&identity).unwrap();
    forged.key[0] ^= 1;
    assert_eq!(
        refusal(
            carol
                .book
                .invite_for(&serde_json::to_vec(&forged).unwrap(), alice.id.installation_id(), T0)
        ),
        KxRefusal::Check(KxError::BadIdentity)
    );
    assert!(matches!(
        refusal(carol.book.invite_for(b"{}", alice.id.installation_id(), T0)),
        KxRefusal::Format(_)
    ));
}

/// Alice and Carol asked to meet each other at once and each invited the
/// other: by BisonRelay's rule exactly one accepts, and that one exchange
/// runs to the end.
#[test]
fn crossed_introductions_converge_to_one_exchange() {
    for seed in 11..19 {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut alice = Side::new("alice", &mut rng);
        let mut carol = Side::new("carol", &mut rng);
        let mediator = strata_cascade::InstallationId::from_bytes([0xb0; 16]);
        let (a_id, c_id) = (alice.id.installation_id(), carol.id.installation_id());
        assert!(alice.book.ask_introduction(c_id, mediator, T0).unwrap());
        assert!(carol.book.ask_introduction(a_id, mediator, T0).unwrap());
        let a_identity = alice.book.public_identity("alice").unwrap();
        let c_identity = carol.book.public_identity("carol").unwrap();
        let from_carol = carol.book.invite_for(&a_identity, a_id, T0).unwrap();
        let from_alice = alice.book.invite_for(&c_identity, c_id, T0).unwrap();
        carol.outputs();
        alice.outputs();
        let at_alice = alice.book.on_introduction(c_id, mediator, &from_carol, T0);
        let at_carol = carol.book.on_introduction(a_id, mediator, &from_alice, T0);
        let (accepter, inviter) = match (at_alice, at_carol) {
            (Ok(_), Err(SessionError::Kx(KxRefusal::Crossed))) => (&mut alice, &mut carol),
            (Err(SessionError::Kx(KxRefusal::Crossed)), Ok(_)) => (&mut carol, &mut alice),
            other => panic!("seed {seed}: not one exchange: {other:?}"),
        };
        let half = published(&accepter.outputs()).remove(0);
        inviter.book.on_frame(&half.0, &half.1, T0).unwrap();
        let full = published(&inviter.outputs()).remove(0);
        accepter.book.on_frame(&full.0, &full.1, T0).unwrap();
        assert_eq!(completed(&accepter.outputs()).len(), 1, "seed {seed}");
    }
}

/// Contacts start introductions (a mediator asks this side to invite
/// someone): they may take only part of the open invites, so they cannot
/// crowd out the user's own.
#[test]
fn introductions_cannot_crowd_out_the_users_invites() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let mut alice = Side::new("alice", &mut rng);
    let mut carol = Side::new("carol", &mut rng);
    let identity = alice.book.public_identity("alice").unwrap();
    for i in 0..strata_session::kx::MAX_INTRODUCTIONS {
        let installation = strata_cascade::InstallationId::from_bytes([i as u8; 16]);
        carol.book.invite_for(&identity, installation, T0).unwrap();
    }
    let one_more = strata_cascade::InstallationId::from_bytes([0xee; 16]);
    assert_eq!(
        refusal(carol.book.invite_for(&identity, one_more, T0)),
        KxRefusal::TooMany
    );
    carol.invite(DAY, T0);
    assert_eq!(carol.book.open_counts().0, strata_session::kx::MAX_INTRODUCTIONS + 1);
}
