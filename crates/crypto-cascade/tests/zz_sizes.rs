#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use rand::SeedableRng;
use strata_cascade::Layer;
#[test]
fn sizes() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let mut p = strata_test_support::cascade::established(&mut rng, 1_700_000_000_000);
    for _ in 0..5 {
        let m = p.alice.encrypt(b"x", 1_700_000_000_000, &mut rng).unwrap();
        p.bob.decrypt(&m, &mut rng).unwrap();
        let m = p.bob.encrypt(b"y", 1_700_000_000_000, &mut rng).unwrap();
        p.alice.decrypt(&m, &mut rng).unwrap();
    }
    let a = &mut p.alice;
    println!("total {}", a.export().unwrap().as_bytes().len());
    println!("mls {}", a.mls_mut().export_state().unwrap().as_bytes().len());
    println!("signal {}", a.signal_mut().export_state().unwrap().as_bytes().len());
    println!("kem {}", a.kem_mut().export_state().unwrap().as_bytes().len());
}
