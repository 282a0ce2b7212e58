//! Any sequence of headers and chunks from a hostile peer: the reassembler
//! never panics, never exceeds its caps, and only yields messages whose
//! ciphertext has the announced size.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata_proto::limits::{MAX_CONCURRENT_REASSEMBLIES, MAX_REASSEMBLY_BYTES};
use strata_proto::{Chunk, Message, Reassembler};

#[derive(Arbitrary, Debug)]
enum Step {
    Header(Message),
    Chunk(Chunk),
    Wait(u16),
}

fuzz_target!(|steps: Vec<Step>| {
    let mut now = Instant::now();
    let mut r = Reassembler::new();
    for step in steps {
        let out = match step {
            Step::Header(h) => r.push_header(h, now),
            Step::Chunk(c) => r.push_chunk(c, now),
            Step::Wait(s) => {
                now += Duration::from_secs(u64::from(s));
                r.expire(now);
                Ok(None)
            }
        };
        if let Ok(Some(m)) = out {
            let p = &m.encrypted_message.cascaded_payload;
            assert_eq!(p.final_ciphertext.as_ref().map(|c| c.len() as u64), Some(p.final_size));
            assert!(!m.encrypted_message.chunked);
        }
        assert!(r.pending() <= MAX_CONCURRENT_REASSEMBLIES);
        assert!(r.buffered_bytes() <= MAX_REASSEMBLY_BYTES);
    }
});
