//! Handshake CPU per side (target ≤ 5 ms) and message throughput between
//! two machines driven directly (no transport, no actors), each on a
//! memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::at_rest::StorageKey;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::{Command, Config, Content, Input, Now, Output, PeerMachine};
use strata_store::{KeySource, MemoryBackend, Store};

struct Pair {
    m: [PeerMachine; 2],
    cpu: [Duration; 2],
    base: Instant,
}

fn machine(id: &Arc<InstallationIdentity>, rng: &mut ChaCha20Rng, now: Now) -> PeerMachine {
    let store = Store::open(MemoryBackend::new(), KeySource::Key(StorageKey::generate(rng))).unwrap();
    PeerMachine::new(
        Config::default(),
        Arc::clone(id),
        Arc::new(store),
        None,
        None,
        [7; 32],
        now,
    )
    .unwrap()
}

impl Pair {
    fn now(&self) -> Now {
        Now {
            at: self.base,
            unix_ms: 1_760_000_000_000,
        }
    }

    fn input(&mut self, i: usize, input: Input<'_>) {
        let now = self.now();
        let t = Instant::now();
        self.m[i].handle(input, now).unwrap();
        self.cpu[i] += t.elapsed();
    }

    /// Moves frames between the machines until both are quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(out) = self.m[i].poll_output() {
                    if let Output::Transmit(f) = out {
                        self.input(1 - i, Input::Frame(&f));
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

fn handshake(a: &Arc<InstallationIdentity>, b: &Arc<InstallationIdentity>, rng: &mut ChaCha20Rng) -> Pair {
    let base = Instant::now();
    let now = Now {
        at: base,
        unix_ms: 1_760_000_000_000,
    };
    let mut p = Pair {
        m: [machine(a, rng, now), machine(b, rng, now)],
        cpu: [Duration::ZERO; 2],
        base,
    };
    p.input(0, Input::Connected);
    p.input(1, Input::Connected);
    p.input(0, Input::Command(Command::Open));
    p.settle();
    assert!(p.m[0].is_ready() && p.m[1].is_ready());
    p
}

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
    let b = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
    let mut group = c.benchmark_group("handshake");
    group.sample_size(20);
    for (side, name) in [(0, "initiator"), (1, "responder")] {
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| (0..iters).map(|_| handshake(&a, &b, &mut rng).cpu[side]).sum());
        });
    }
    group.finish();

    let mut p = handshake(&a, &b, &mut rng);
    c.bench_function("message/text_both_sides_with_ack", |bench| {
        bench.iter(|| {
            let now = p.now();
            p.m[0].send(Content::Text { text: "hello".into() }, now).unwrap();
            p.settle();
            // Flush the acknowledgement.
            p.base += Duration::from_millis(50);
            p.input(1, Input::Timeout);
            p.settle();
        });
    });
    // Throughput: a window of 64 messages, then one acknowledgement for all.
    let mut group = c.benchmark_group("message");
    group.throughput(criterion::Throughput::Elements(64));
    group.bench_function("burst_of_64_one_ack", |bench| {
        bench.iter(|| {
            let now = p.now();
            let burst = (0..64)
                .map(|k| Content::Text {
                    text: format!("burst {k}"),
                })
                .collect();
            p.m[0].send_all(burst, now).unwrap();
            p.settle();
            p.base += Duration::from_millis(50);
            p.input(1, Input::Timeout);
            p.settle();
        });
    });
    group.finish();
}

criterion_group!(session, benches);
criterion_main!(session);
