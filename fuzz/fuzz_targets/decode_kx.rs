//! Any bytes, as a KX message's `RMO` after its seal was opened (what a
//! stranger can put on a rendezvous point once it holds our KEM key):
//! `Rmo::decompose` returns a message or a typed error, never panics,
//! never inflates past its cap, and whatever it accepts composes again to
//! something that decomposes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::kx::Rmo;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, rmo)) = Rmo::decompose(data) {
        let again = Rmo::decompose(&rmo.compose(header.timestamp)).map(|(_, r)| r);
        assert_eq!(again.ok(), Some(rmo));
    }
});
