//! Shared set-up: two installations go from nothing to a working cascade by
//! calling the layer APIs directly (`strata-test-support`'s, at [`NOW`],
//! from a seeded generator).
#![allow(dead_code, unreachable_pub, unused_imports)]

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use strata_cascade::InstallationIdentity;
use strata_test_support::cascade;
pub use strata_test_support::cascade::{Layers, Pair, installation};

pub const NOW: u64 = 1_760_000_000_000;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Alice initiates: Bob's KeyPackage → Alice's group + Welcome → Bob joins;
/// Bob's Signal bundle → Alice's PQXDH; signed ML-KEM keys both ways.
pub fn setup_layers(rng: &mut ChaCha20Rng) -> (InstallationIdentity, Layers, InstallationIdentity, Layers) {
    cascade::setup_layers(rng, NOW)
}

pub fn setup(rng: &mut ChaCha20Rng) -> Pair {
    cascade::setup(rng, NOW)
}

/// A set-up pair that has exchanged one message each way (Signal sessions
/// confirmed, ML-KEM epochs acknowledged).
pub fn established(rng: &mut ChaCha20Rng) -> Pair {
    cascade::established(rng, NOW)
}
