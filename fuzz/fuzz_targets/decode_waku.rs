//! Any bytes, as a gossip message off the wire: `WakuMessage::decode_bounded`
//! returns a message or a typed error, never panics, and whatever it
//! accepts encodes to bytes that decode to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_proto::waku::WakuMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = WakuMessage::decode_bounded(data) {
        assert_eq!(WakuMessage::decode_bounded(&message.to_bytes()).ok(), Some(message));
    }
});
