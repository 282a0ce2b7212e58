//! The KeyPackage pool's costs against openmls KeyPackage generation alone,
//! measured in the same run (issue #16; target: a claim ≤ 1.2× one
//! generation):
//!
//! - `generate`: `strata_cascade::generate_key_package` (openmls makes the
//!   package; its private parts are exported) — the baseline;
//! - `claim`: one claim over an established session, both machines driven
//!   directly on memory stores: the claimer seals a `key-package-claim`,
//!   the owner opens it, hands a package out of its pool in one store
//!   transaction and seals the grant, the claimer opens it, checks the
//!   package (signatures, credential binding, `init_key` history) and
//!   stores it. Both sides' CPU, no transport;
//! - `refill`: `keep_stocked` from an empty pool to 64, per package
//!   (generation, sealing of the private parts, one transaction).
//!
//! Medians of `STRATA_BENCH_SAMPLES` (default 200) runs each.
//!
//! `cargo bench -p strata-session --bench key_packages`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::{AccountIdentity, InstallationIdentity, KeyPackageKind, generate_key_package};
use strata_session::{Command, Config, Content, Event, Input, PoolConfig, keep_stocked};
use strata_test_support::bench::{knob, median};
use strata_test_support::machines::Pair;

const LIFETIME_SECS: u64 = 28 * 24 * 3600;

fn micros(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn main() {
    let samples: usize = knob("STRATA_BENCH_SAMPLES", 200);
    let mut rng = ChaCha20Rng::seed_from_u64(16);
    let a = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());
    let b = Arc::new(InstallationIdentity::generate(AccountIdentity::generate(&mut rng), &mut rng).unwrap());

    let generate = median(
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                generate_key_package(&b, KeyPackageKind::OneTime, LIFETIME_SECS).unwrap();
                micros(t)
            })
            .collect(),
    );

    // Every claim a one-time package: no allowance limit, a pool stocked
    // (untimed) with more than the run takes.
    let config = Config {
        key_package_pool: PoolConfig {
            stock: samples as u64 + 8,
            refill_below: 0,
            claim_burst: u32::MAX,
            ..PoolConfig::default()
        },
        ..Config::default()
    };
    let mut p = Pair::established(&config, &a, &b, &mut rng);
    keep_stocked(&p.store(1), &b, &config.key_package_pool, p.now().unix_ms / 1000).unwrap();
    let claim = median(
        (0..samples)
            .map(|k| {
                let t = Instant::now();
                p.input(0, Input::Command(Command::ClaimKeyPackage { claim: format!("c{k}") }));
                p.settle();
                let took = micros(t);
                match p.events[0].pop() {
                    Some(Event::KeyPackageClaimed { package, .. }) => assert!(!package.last_resort),
                    other => panic!("claim {k}: {other:?}"),
                }
                took
            })
            .collect(),
    );

    // For scale: one text message one way over the same session (seal,
    // outbox commit, open, inbox commit). A claim is two such messages
    // (the claim and the grant) plus the pool transaction and the check.
    let message = median(
        (0..samples)
            .map(|k| {
                let now = p.now();
                let t = Instant::now();
                p.m[0].send(Content::Text { text: format!("m{k}") }, now).unwrap();
                p.settle();
                micros(t)
            })
            .collect(),
    );

    let refill_pool = PoolConfig {
        stock: 64,
        ..PoolConfig::default()
    };
    let refills = (samples / 64).max(3);
    let refill = median(
        (0..refills)
            .map(|_| {
                let fresh = Pair::established(&Config::default(), &a, &b, &mut rng);
                let store = fresh.store(1);
                let now_s = fresh.now().unix_ms / 1000;
                let t = Instant::now();
                let done = keep_stocked(&store, &b, &refill_pool, now_s).unwrap();
                assert_eq!(done.added, 64);
                // 64 one-time packages and a last resort.
                micros(t) / 65.0
            })
            .collect(),
    );

    // The claim's own parts, on fresh stores: the owner's hand-out
    // transaction, and the claimer's check-and-store of the package.
    let q = Pair::established(&config, &a, &b, &mut rng);
    let (owner, claimer) = (q.store(1), q.store(0));
    let now_s = q.now().unix_ms / 1000;
    keep_stocked(&owner, &b, &config.key_package_pool, now_s).unwrap();
    let a_hex = a.installation_id().to_hex();
    let mut handed = Vec::new();
    let hand_out = median(
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                let out = owner.write(|w| w.hand_out_key_package(&a_hex, true, now_s, 0)).unwrap();
                let took = micros(t);
                handed.push(out.package.bytes);
                took
            })
            .collect(),
    );
    let check = median(
        handed
            .iter()
            .map(|bytes| {
                let t = Instant::now();
                claimer
                    .write(|w| w.receive_peer_key_package(&b.peer_identity(), bytes, now_s))
                    .unwrap();
                micros(t)
            })
            .collect(),
    );

    println!("key_package/generate: {generate:.0} µs (openmls alone, median of {samples})");
    println!(
        "key_package/claim over a session: {claim:.0} µs = {:.2}× generate (target ≤ 1.2×)",
        claim / generate
    );
    println!("  parts: hand-out transaction {hand_out:.0} µs, check and store of the package {check:.0} µs");
    println!(
        "session/text one way: {message:.0} µs = {:.2}× generate (for scale: a claim is two messages)",
        message / generate
    );
    println!(
        "key_package/refill: {refill:.0} µs per package = {:.2}× generate (median of {refills} refills of 64)",
        refill / generate
    );
}
