//! Any bytes, as a bundle published on a bundle topic:
//! `SignedBundle::decode_bounded` returns the bundle or a typed error, never
//! panics, and whatever it accepts encodes to bytes that decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::bundle::SignedBundle;

fuzz_target!(|data: &[u8]| {
    if let Ok((signed, bundle)) = SignedBundle::decode_bounded(data) {
        assert_eq!(SignedBundle::decode_bounded(&signed.to_bytes()).ok(), Some((signed, bundle)));
    }
});
