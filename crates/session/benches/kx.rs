//! The out-of-band key exchange's CPU cost against its KEM and secretbox
//! alone, measured in the same run (issue #19):
//!
//! - `sntrup761 + secretbox`: what a KX cannot do without — four
//!   `strata_cascade::kx::seal` + `open` (each one sntrup761
//!   encapsulation, one decapsulation, one XSalsa20-Poly1305 seal and
//!   open) of a half KX's `RMO`: the half and the full KX are each sealed
//!   to a KEM key and each carries a KEM half;
//! - `kx`: one whole exchange between two `KxBook`s on memory stores, both
//!   sides' CPU: the invite made and checked, the half made, sealed,
//!   opened and checked, the full KX made, sealed, opened, both completed,
//!   every step's records written, both contacts pinned.
//!
//! Medians of `STRATA_BENCH_SAMPLES` (default 50) runs each.
//!
//! `cargo bench -p strata-session --bench kx`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::kx::{KxKeyPair, open, seal};
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::kx::{KxBook, KxOutput, topic_rendezvous};
use strata_store::{KeySource, MemoryBackend, Store};
use strata_test_support::bench::{knob, median};

const T0: u64 = 1_800_000_000_000;

fn book(rng: &mut ChaCha20Rng) -> KxBook {
    let id = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(rng), rng).unwrap());
    let store = Store::open(MemoryBackend::new(), KeySource::Key(StorageKey::generate(rng))).unwrap();
    KxBook::load(Arc::new(store), id, [1; 32], T0).unwrap()
}

/// The first frame published among `book`'s outputs.
fn sent(book: &mut KxBook) -> ([u8; 32], Vec<u8>) {
    let mut out = None;
    while let Some(o) = book.poll_output() {
        if let (KxOutput::Publish { topic, frame }, None) = (o, &out) {
            out = Some((topic_rendezvous(&topic).unwrap(), frame.to_vec()));
        }
    }
    out.unwrap()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let samples: usize = knob("STRATA_BENCH_SAMPLES", 50);
    let mut rng = ChaCha20Rng::seed_from_u64(19);

    let mut half_bytes = 0;
    let kx = median(
        (0..samples)
            .map(|_| {
                // Loading (and the KX key pair made on first use) is not the
                // exchange: untimed.
                let (mut alice, mut bob) = (book(&mut rng), book(&mut rng));
                while alice.poll_output().is_some() || bob.poll_output().is_some() {}
                let t = Instant::now();
                let invite = alice.invite("alice", Duration::from_secs(3600), T0).unwrap();
                bob.accept(&invite, "bob", T0).unwrap();
                let (rv, half) = sent(&mut bob);
                half_bytes = half.len();
                alice.on_frame(&rv, &half, T0).unwrap();
                let (rv, full) = sent(&mut alice);
                bob.on_frame(&rv, &full, T0).unwrap();
                micros(t.elapsed())
            })
            .collect(),
    );

    let kem = KxKeyPair::generate(&mut rng);
    // The half's RMO: its sealed size less the ciphertext, nonce and tag.
    let payload = vec![7u8; half_bytes - 1039 - 24 - 16];
    let primitives = median(
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..4 {
                    let sealed = seal(&kem.public_key(), &payload, &mut rng).unwrap();
                    open(&kem, &sealed).unwrap();
                }
                micros(t.elapsed())
            })
            .collect(),
    );

    println!("kx: one whole exchange, both sides (median of {samples})");
    println!("  sntrup761 + secretbox alone (4 seal/open): {primitives:>9.0} µs");
    println!("  KxBook exchange:                           {kx:>9.0} µs");
    println!("  ratio exchange / primitives:               {:>9.2}×", kx / primitives);
}
