//! Any bytes, as a signed device list from a peer or a bundle:
//! `SignedDeviceList::decode_bounded` returns the list or a typed error,
//! never panics, and whatever it accepts encodes to bytes that decode to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::devices::SignedDeviceList;

fuzz_target!(|data: &[u8]| {
    if let Ok((signed, list)) = SignedDeviceList::decode_bounded(data) {
        assert_eq!(SignedDeviceList::decode_bounded(&signed.to_bytes()).ok(), Some((signed, list)));
    }
});
