//! Steady-state cost of the cascade against its parts and against plain
//! libsignal and plain openmls. Run with `cargo bench -p strata-cascade`;
//! the last lines printed are the two figures issue 3 asks for: the ratio
//! cascade / (openmls alone + libsignal alone) at 256 B, and the wire size
//! of a 256 B message. `cargo bench -p strata-cascade -- figures` prints
//! only those (no criterion benchmark matches the filter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![allow(missing_docs, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use common::{NOW, rng, setup_layers};
use criterion::{BenchmarkId, Criterion, Throughput};
use libsignal_protocol_syft as signal;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand_chacha::ChaCha20Rng;
use signal::GenericSignedPreKey as _;
use strata_cascade::{Cascade, Layer, PairCascade};

const SIZES: [usize; 3] = [256, 16 * 1024, 1024 * 1024];

fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("in-memory store future pending"),
    }
}

// ---- plain libsignal ------------------------------------------------------

struct PlainSignal {
    alice: signal::InMemSignalProtocolStore,
    bob: signal::InMemSignalProtocolStore,
    a_addr: signal::ProtocolAddress,
    b_addr: signal::ProtocolAddress,
    rng: ChaCha20Rng,
}

impl PlainSignal {
    fn new() -> Self {
        let mut rng = rng(100);
        let a_id = signal::IdentityKeyPair::generate(&mut rng);
        let b_id = signal::IdentityKeyPair::generate(&mut rng);
        let mut alice = signal::InMemSignalProtocolStore::new(a_id, 1).unwrap();
        let mut bob = signal::InMemSignalProtocolStore::new(b_id, 2).unwrap();
        let device = signal::DeviceId::new(1).unwrap();
        let a_addr = signal::ProtocolAddress::new("alice".into(), device);
        let b_addr = signal::ProtocolAddress::new("bob".into(), device);
        let signed = signal::KeyPair::generate(&mut rng);
        let signed_sig = b_id
            .private_key()
            .calculate_signature(&signed.public_key.serialize(), &mut rng)
            .unwrap();
        let kyber = signal::kem::KeyPair::generate(signal::kem::KeyType::Kyber1024, &mut rng);
        let kyber_sig = b_id
            .private_key()
            .calculate_signature(&kyber.public_key.serialize(), &mut rng)
            .unwrap();
        let ts = signal::Timestamp::from_epoch_millis(NOW);
        ready(signal::SignedPreKeyStore::save_signed_pre_key(
            &mut bob,
            1.into(),
            &signal::SignedPreKeyRecord::new(1.into(), ts, &signed, &signed_sig),
        ))
        .unwrap();
        ready(signal::KyberPreKeyStore::save_kyber_pre_key(
            &mut bob,
            1.into(),
            &signal::KyberPreKeyRecord::new(1.into(), ts, &kyber, &kyber_sig),
        ))
        .unwrap();
        let bundle = signal::PreKeyBundle::new(
            2,
            device,
            None,
            1.into(),
            signed.public_key,
            signed_sig.into_vec(),
            1.into(),
            kyber.public_key,
            kyber_sig.into_vec(),
            *b_id.identity_key(),
        )
        .unwrap();
        ready(signal::process_prekey_bundle(
            &b_addr,
            &mut alice.session_store,
            &mut alice.identity_store,
            &bundle,
            SystemTime::now(),
            &mut rng,
        ))
        .unwrap();
        let mut s = Self {
            alice,
            bob,
            a_addr,
            b_addr,
            rng,
        };
        // Reach the steady state: first message, reply, next message.
        s.a_to_b(b"hi");
        let reply = ready(signal::message_encrypt(
            b"hi",
            &s.a_addr,
            &mut s.bob.session_store,
            &mut s.bob.identity_store,
            SystemTime::now(),
            &mut s.rng,
        ))
        .unwrap();
        ready(signal::message_decrypt(
            &reply,
            &s.b_addr,
            &mut s.alice.session_store,
            &mut s.alice.identity_store,
            &mut s.alice.pre_key_store,
            &s.alice.signed_pre_key_store,
            &mut s.alice.kyber_pre_key_store,
            &mut s.rng,
        ))
        .unwrap();
        s
    }

    fn a_to_b(&mut self, msg: &[u8]) -> Vec<u8> {
        let ct = ready(signal::message_encrypt(
            msg,
            &self.b_addr,
            &mut self.alice.session_store,
            &mut self.alice.identity_store,
            SystemTime::now(),
            &mut self.rng,
        ))
        .unwrap();
        ready(signal::message_decrypt(
            &ct,
            &self.a_addr,
            &mut self.bob.session_store,
            &mut self.bob.identity_store,
            &mut self.bob.pre_key_store,
            &self.bob.signed_pre_key_store,
            &mut self.bob.kyber_pre_key_store,
            &mut self.rng,
        ))
        .unwrap()
    }
}

// ---- plain openmls --------------------------------------------------------

struct PlainMls {
    alice: MlsGroup,
    bob: MlsGroup,
    a_provider: OpenMlsRustCrypto,
    b_provider: OpenMlsRustCrypto,
    a_signer: SignatureKeyPair,
}

impl PlainMls {
    fn new() -> Self {
        let cs = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
        let a_provider = OpenMlsRustCrypto::default();
        let b_provider = OpenMlsRustCrypto::default();
        let member = |name: &str, p: &OpenMlsRustCrypto| {
            let signer = SignatureKeyPair::new(cs.signature_algorithm()).unwrap();
            signer.store(p.storage()).unwrap();
            let cwk = CredentialWithKey {
                credential: BasicCredential::new(name.into()).into(),
                signature_key: signer.public().into(),
            };
            (signer, cwk)
        };
        let (a_signer, a_cwk) = member("alice", &a_provider);
        let (b_signer, b_cwk) = member("bob", &b_provider);
        let kp = KeyPackage::builder().build(cs, &b_provider, &b_signer, b_cwk).unwrap();
        let ratchet = SenderRatchetConfiguration::new(256, 1000);
        let cfg = MlsGroupCreateConfig::builder()
            .ciphersuite(cs)
            .use_ratchet_tree_extension(true)
            .sender_ratchet_configuration(ratchet)
            .build();
        let mut alice = MlsGroup::new(&a_provider, &a_signer, &cfg, a_cwk).unwrap();
        let (_, welcome, _) = alice
            .add_members(&a_provider, &a_signer, &[kp.key_package().clone()])
            .unwrap();
        alice.merge_pending_commit(&a_provider).unwrap();
        let bytes = welcome.tls_serialize_detached().unwrap();
        let MlsMessageBodyIn::Welcome(w) = MlsMessageIn::tls_deserialize_exact(&bytes).unwrap().extract() else {
            panic!("not a welcome")
        };
        let bob = StagedWelcome::new_from_welcome(&b_provider, cfg.join_config(), w, None)
            .unwrap()
            .into_group(&b_provider)
            .unwrap();
        Self {
            alice,
            bob,
            a_provider,
            b_provider,
            a_signer,
        }
    }

    fn a_to_b(&mut self, msg: &[u8]) -> Vec<u8> {
        let out = self
            .alice
            .create_message(&self.a_provider, &self.a_signer, msg)
            .unwrap();
        let bytes = out.tls_serialize_detached().unwrap();
        let pm = MlsMessageIn::tls_deserialize_exact(&bytes)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        match self.bob.process_message(&self.b_provider, pm).unwrap().into_content() {
            ProcessedMessageContent::ApplicationMessage(a) => a.into_bytes(),
            _ => panic!("not an application message"),
        }
    }
}

// ---- the cascade and its layers -------------------------------------------

struct Duo<C> {
    alice: C,
    bob: C,
    rng: ChaCha20Rng,
}

fn full() -> Duo<PairCascade> {
    let mut rng = rng(101);
    let p = common::established(&mut rng);
    Duo {
        alice: p.alice,
        bob: p.bob,
        rng,
    }
}

/// A cascade of a subset of the real layers (`pick` chooses them).
fn subset(pick: fn(common::Layers) -> Vec<Box<dyn Layer>>) -> Duo<Cascade> {
    let mut rng = rng(102);
    let (a_id, a, b_id, b) = setup_layers(&mut rng);
    let (ai, bi) = (a_id.installation_id(), b_id.installation_id());
    let mut alice = Cascade::new(pick(a), ai, bi).unwrap();
    let mut bob = Cascade::new(pick(b), bi, ai).unwrap();
    // Warm up both directions (Signal's first message is a PreKey message).
    for _ in 0..2 {
        let m = alice.encrypt(b"warm", NOW, &mut rng).unwrap();
        bob.decrypt(&m, &mut rng).unwrap();
        let m = bob.encrypt(b"warm", NOW, &mut rng).unwrap();
        alice.decrypt(&m, &mut rng).unwrap();
    }
    Duo { alice, bob, rng }
}

trait RoundTrip {
    fn round_trip(&mut self, msg: &[u8]) -> Vec<u8>;
}

impl RoundTrip for Duo<PairCascade> {
    fn round_trip(&mut self, msg: &[u8]) -> Vec<u8> {
        let m = self.alice.encrypt(msg, NOW, &mut self.rng).unwrap();
        self.bob.decrypt(&m, &mut self.rng).unwrap()
    }
}

impl RoundTrip for Duo<Cascade> {
    fn round_trip(&mut self, msg: &[u8]) -> Vec<u8> {
        let m = self.alice.encrypt(msg, NOW, &mut self.rng).unwrap();
        self.bob.decrypt(&m, &mut self.rng).unwrap()
    }
}

impl RoundTrip for PlainSignal {
    fn round_trip(&mut self, msg: &[u8]) -> Vec<u8> {
        self.a_to_b(msg)
    }
}

impl RoundTrip for PlainMls {
    fn round_trip(&mut self, msg: &[u8]) -> Vec<u8> {
        self.a_to_b(msg)
    }
}

fn mls_only(l: common::Layers) -> Vec<Box<dyn Layer>> {
    vec![Box::new(l.mls)]
}
fn signal_only(l: common::Layers) -> Vec<Box<dyn Layer>> {
    vec![Box::new(l.signal)]
}
fn kem_only(l: common::Layers) -> Vec<Box<dyn Layer>> {
    vec![Box::new(l.kem)]
}
fn kem_aes(l: common::Layers) -> Vec<Box<dyn Layer>> {
    vec![Box::new(l.kem), Box::new(l.aes)]
}

fn bench_all(c: &mut Criterion) {
    let mut group = c.benchmark_group("encrypt+decrypt");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for size in SIZES {
        if size >= 1024 * 1024 {
            group.sample_size(10);
        }
        group.throughput(Throughput::Bytes(size as u64));
        let msg = vec![0x5au8; size];
        let mut runners: Vec<(&str, Box<dyn RoundTrip>)> = vec![
            ("cascade", Box::new(full())),
            ("layer MLS", Box::new(subset(mls_only))),
            ("layer Signal", Box::new(subset(signal_only))),
            ("layer ML-KEM", Box::new(subset(kem_only))),
            ("layers ML-KEM+AES-GCM", Box::new(subset(kem_aes))),
            ("openmls alone", Box::new(PlainMls::new())),
            ("libsignal alone", Box::new(PlainSignal::new())),
        ];
        for (name, runner) in runners.iter_mut() {
            group.bench_with_input(BenchmarkId::new(*name, size), &msg, |b, msg| {
                b.iter(|| black_box(runner.round_trip(black_box(msg))))
            });
        }
    }
    group.finish();
}

/// Median over `rounds` of the mean round-trip time of a batch of `batch`
/// runs, the runners measured in turn within each round so that load from
/// other processes on the machine hits all of them alike.
fn interleaved(runners: &mut [&mut dyn RoundTrip], msg: &[u8], rounds: usize, batch: u32) -> Vec<Duration> {
    for r in runners.iter_mut() {
        for _ in 0..batch {
            r.round_trip(msg);
        }
    }
    let mut samples = vec![Vec::with_capacity(rounds); runners.len()];
    for _ in 0..rounds {
        for (i, r) in runners.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..batch {
                black_box(r.round_trip(black_box(msg)));
            }
            samples[i].push(start.elapsed() / batch);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s[s.len() / 2]
        })
        .collect()
}

fn print_figures() {
    let msg = vec![0x5au8; 256];
    let (rounds, batch) = (31, 100);
    let (mut cascade, mut mls, mut signal) = (full(), PlainMls::new(), PlainSignal::new());
    let (mut mls_layer, mut signal_layer) = (subset(mls_only), subset(signal_only));
    let t = interleaved(
        &mut [&mut cascade, &mut mls, &mut signal, &mut mls_layer, &mut signal_layer],
        &msg,
        rounds,
        batch,
    );
    let ratio = t[0].as_secs_f64() / (t[1] + t[2]).as_secs_f64();
    let payload = cascade.alice.encrypt(&msg, NOW, &mut cascade.rng).unwrap();
    let json = serde_json::to_vec(&payload).unwrap();
    println!("256 B steady state, encrypt+decrypt, median of {rounds} interleaved batches of {batch}:");
    println!(
        "  cascade {:?}; openmls alone {:?}; libsignal alone {:?}",
        t[0], t[1], t[2]
    );
    println!(
        "  (Strata's MLS layer alone {:?}; Strata's Signal layer alone {:?})",
        t[3], t[4]
    );
    println!("  RATIO cascade / (openmls alone + libsignal alone) = {ratio:.3} (target <= 1.25)");
    println!(
        "  WIRE 256 B plaintext -> finalCiphertext {} B (target <= 700); JSON cascadedPayload {} B",
        payload.final_size,
        json.len()
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_all(&mut c);
    c.final_summary();
    print_figures();
}
