//! Handshake CPU per side (target ≤ 5 ms) and message throughput between
//! two machines driven directly (no transport, no actors), each on a
//! memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::{AccountIdentity, InstallationIdentity};
use strata_session::{Config, Content, Input};
use strata_test_support::machines::Pair;

fn handshake(a: &Arc<InstallationIdentity>, b: &Arc<InstallationIdentity>, rng: &mut ChaCha20Rng) -> Pair {
    Pair::established(&Config::default(), a, b, rng)
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
