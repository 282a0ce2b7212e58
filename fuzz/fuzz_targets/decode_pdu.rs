//! Any bytes: `Pdu::decode` returns a PDU or a typed error, never panics, and
//! whatever it accepts re-encodes to something that decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::Pdu;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = Pdu::decode(data) {
        assert_eq!(Pdu::decode(&pdu.encode()).ok(), Some(pdu));
    }
});
