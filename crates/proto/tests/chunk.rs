//! Chunking and reassembly: every cap, order, duplicates, gaps, timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use strata_proto::limits::{CHUNK_SIZE, MAX_CHUNKS_PER_MESSAGE, MAX_CONCURRENT_REASSEMBLIES, REASSEMBLY_TIMEOUT};
use strata_proto::*;

fn ciphertext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Splits a message of `len` ciphertext bytes into (header, chunks).
fn parts(id: &str, len: usize) -> (Message, Vec<Chunk>) {
    let mut pdus = split(common::message(id, ciphertext(len))).unwrap().into_iter();
    let Some(Pdu::Message(header)) = pdus.next() else {
        panic!("header first")
    };
    let chunks = pdus
        .map(|p| {
            if let Pdu::Chunk(c) = p {
                c
            } else {
                panic!("chunks after header")
            }
        })
        .collect();
    (header, chunks)
}

fn chunk(id: &str, index: u32, total: u32, len: usize) -> Chunk {
    Chunk {
        message_id: common::text(id),
        chunk_index: index,
        total_chunks: total,
        data: common::blob(1, len),
    }
}

#[test]
fn small_messages_are_not_chunked() {
    let m = common::message("small", ciphertext(CHUNK_SIZE));
    assert_eq!(split(m.clone()).unwrap(), vec![Pdu::Message(m)]);
}

/// Appendix A V7: 9000 bytes make two chunks, 8192 + 808.
#[test]
fn v7_nine_thousand_bytes_make_two_chunks() {
    let (header, chunks) = parts("v7", 9000);
    assert!(header.encrypted_message.chunked);
    assert_eq!(header.encrypted_message.total_chunks, Some(2));
    assert!(header.encrypted_message.cascaded_payload.final_ciphertext.is_none());
    assert_eq!(header.encrypted_message.cascaded_payload.final_size, 9000);
    let sizes: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
    assert_eq!(sizes, [8192, 808]);
    // Every part is a valid PDU on its own.
    for pdu in split(common::message("v7", ciphertext(9000))).unwrap() {
        assert_eq!(Pdu::decode(&pdu.encode()).unwrap(), pdu);
    }
}

#[test]
fn in_order_reassembly_restores_the_message() {
    let original = common::message("m1", ciphertext(100_000));
    let (header, chunks) = parts("m1", 100_000);
    let now = Instant::now();
    let mut r = Reassembler::new();
    assert_eq!(r.push_header(header, now).unwrap(), None);
    let last = chunks.len() - 1;
    for (i, c) in chunks.into_iter().enumerate() {
        let out = r.push_chunk(c, now).unwrap();
        assert_eq!(out.is_some(), i == last, "yields only on the last part");
        if let Some(m) = out {
            assert_eq!(m, original);
        }
    }
    assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
}

/// Any arrival order, with the header anywhere and duplicates mixed in,
/// yields exactly the original message, exactly once, on the last new part.
#[test]
fn out_of_order_and_duplicated_parts_reassemble() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..200 {
        let len = rng.random_range(CHUNK_SIZE + 1..20 * CHUNK_SIZE);
        let original = common::message("m", ciphertext(len));
        let mut pdus = split(original.clone()).unwrap();
        let distinct = pdus.len();
        for _ in 0..rng.random_range(0..4) {
            let dup = pdus[rng.random_range(0..pdus.len())].clone();
            pdus.push(dup);
        }
        pdus.shuffle(&mut rng);
        let mut r = Reassembler::new();
        let mut done = Vec::new();
        let mut accepted = 0;
        for pdu in pdus {
            let out = match pdu {
                Pdu::Message(h) => r.push_header(h, Instant::now()),
                Pdu::Chunk(c) => r.push_chunk(c, Instant::now()),
                other => panic!("unexpected {other:?}"),
            };
            match out {
                Ok(Some(m)) => {
                    accepted += 1;
                    done.push(m);
                }
                Ok(None) => accepted += 1,
                Err(ChunkError::DuplicateChunk(_) | ChunkError::DuplicateHeader) => {}
                Err(e) => panic!("case {case}: {e}"),
            }
            // A duplicate after completion starts a fresh reassembly; that is the
            // session's message-id dedup's job, so stop at completion here.
            if !done.is_empty() {
                break;
            }
        }
        assert_eq!(done, vec![original], "case {case}");
        assert_eq!(accepted, distinct, "case {case}: every distinct part accepted once");
    }
}

#[test]
fn a_missing_chunk_never_yields_a_partial_message() {
    let (header, mut chunks) = parts("gap", 5 * CHUNK_SIZE);
    chunks.remove(2);
    let now = Instant::now();
    let mut r = Reassembler::new();
    assert_eq!(r.push_header(header, now).unwrap(), None);
    for c in chunks {
        assert_eq!(r.push_chunk(c, now).unwrap(), None);
    }
    assert_eq!(r.pending(), 1);
    // After the timeout the partial message is dropped, never delivered.
    assert_eq!(r.next_deadline(), Some(now + REASSEMBLY_TIMEOUT));
    assert!(r.expire(now + REASSEMBLY_TIMEOUT - Duration::from_millis(1)).is_empty());
    assert_eq!(r.expire(now + REASSEMBLY_TIMEOUT), vec![common::text("gap")]);
    assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
}

#[test]
fn a_late_part_after_timeout_starts_over_and_does_not_complete() {
    let (header, chunks) = parts("late", 3 * CHUNK_SIZE);
    let t0 = Instant::now();
    let mut r = Reassembler::new();
    r.push_header(header, t0).unwrap();
    r.push_chunk(chunks[0].clone(), t0).unwrap();
    r.push_chunk(chunks[1].clone(), t0).unwrap();
    // The last chunk arrives after 120 s: the old parts are gone.
    let late = t0 + REASSEMBLY_TIMEOUT + Duration::from_secs(1);
    assert_eq!(r.push_chunk(chunks[2].clone(), late).unwrap(), None);
    assert_eq!(r.pending(), 1);
}

#[test]
fn chunk_count_cap_is_4096() {
    let now = Instant::now();
    let mut r = Reassembler::new();
    assert_eq!(
        r.push_chunk(chunk("c", 0, MAX_CHUNKS_PER_MESSAGE + 1, 1), now),
        Err(ChunkError::TotalOutOfRange(MAX_CHUNKS_PER_MESSAGE + 1))
    );
    assert_eq!(
        r.push_chunk(chunk("c", 0, 0, 1), now),
        Err(ChunkError::TotalOutOfRange(0))
    );
    assert_eq!(r.pending(), 0, "a refused chunk takes no slot");

    // Exactly 4096 chunks reassemble.
    let total = MAX_CHUNKS_PER_MESSAGE;
    let mut header = common::message("max", Vec::new());
    header.encrypted_message.chunked = true;
    header.encrypted_message.total_chunks = Some(total);
    header.encrypted_message.cascaded_payload.final_ciphertext = None;
    header.encrypted_message.cascaded_payload.final_size = u64::from(total) * 2;
    assert_eq!(r.push_header(header, now).unwrap(), None);
    for i in (0..total).rev() {
        let out = r.push_chunk(chunk("max", i, total, 2), now).unwrap();
        assert_eq!(out.is_some(), i == 0);
    }

    // The largest ciphertext a `message` can hold (16 MiB) needs 2048 chunks,
    // well inside the cap, and every one of them is a valid PDU.
    let largest = split(common::message("big", ciphertext(strata_proto::limits::MAX_PDU_BYTES))).unwrap();
    assert_eq!(largest.len(), 1 + 2048);
}

#[test]
fn concurrent_reassembly_cap_is_64() {
    let now = Instant::now();
    let mut r = Reassembler::new();
    for i in 0..MAX_CONCURRENT_REASSEMBLIES {
        assert_eq!(r.push_chunk(chunk(&format!("m{i}"), 0, 2, 10), now).unwrap(), None);
    }
    assert_eq!(
        r.push_chunk(chunk("one-too-many", 0, 2, 10), now),
        Err(ChunkError::TooManyReassemblies(MAX_CONCURRENT_REASSEMBLIES))
    );
    // Parts of messages already under way are still accepted...
    assert_eq!(r.push_chunk(chunk("m3", 1, 2, 10), now).unwrap(), None);
    // ...and once the old ones time out there is room again.
    let later = now + REASSEMBLY_TIMEOUT;
    assert_eq!(r.push_chunk(chunk("one-too-many", 0, 2, 10), later).unwrap(), None);
    assert_eq!(r.pending(), 1);
}

#[test]
fn duplicates_out_of_range_and_inconsistent_totals_are_refused() {
    let now = Instant::now();
    let mut r = Reassembler::new();
    assert_eq!(r.push_chunk(chunk("d", 0, 3, 5), now).unwrap(), None);
    assert_eq!(
        r.push_chunk(chunk("d", 0, 3, 5), now),
        Err(ChunkError::DuplicateChunk(0))
    );
    assert_eq!(r.buffered_bytes(), 5, "a duplicate is not buffered twice");
    assert_eq!(
        r.push_chunk(chunk("d", 3, 3, 5), now),
        Err(ChunkError::IndexOutOfRange { index: 3, total: 3 })
    );
    assert_eq!(
        r.push_chunk(chunk("d", 1, 4, 5), now),
        Err(ChunkError::InconsistentTotal { first: 3, then: 4 })
    );
    // A peer that contradicts itself loses the whole message.
    assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));

    // A header whose total disagrees with the chunks is refused the same way.
    let (mut header, chunks) = parts("h", 3 * CHUNK_SIZE);
    r.push_chunk(chunks[0].clone(), now).unwrap();
    header.encrypted_message.total_chunks = Some(7);
    assert_eq!(
        r.push_header(header.clone(), now),
        Err(ChunkError::InconsistentTotal { first: 3, then: 7 })
    );
    header.encrypted_message.chunked = false;
    assert_eq!(r.push_header(header, now), Err(ChunkError::NotChunked));
}

#[test]
fn size_mismatch_drops_the_message() {
    let (mut header, chunks) = parts("s", 2 * CHUNK_SIZE + 10);
    header.encrypted_message.cascaded_payload.final_size += 1;
    let now = Instant::now();
    let mut r = Reassembler::new();
    r.push_header(header, now).unwrap();
    r.push_chunk(chunks[0].clone(), now).unwrap();
    r.push_chunk(chunks[1].clone(), now).unwrap();
    assert!(matches!(
        r.push_chunk(chunks[2].clone(), now),
        Err(ChunkError::SizeMismatch { .. })
    ));
    assert_eq!((r.pending(), r.buffered_bytes()), (0, 0));
}

#[test]
fn buffered_bytes_are_budgeted() {
    let limits = ReassemblyLimits {
        max_buffered_bytes: 3 * CHUNK_SIZE,
        ..ReassemblyLimits::default()
    };
    let now = Instant::now();
    let mut r = Reassembler::with_limits(limits);
    for i in 0..3 {
        r.push_chunk(chunk("b", i, 10, CHUNK_SIZE), now).unwrap();
    }
    assert_eq!(
        r.push_chunk(chunk("b", 3, 10, 1), now),
        Err(ChunkError::BudgetExhausted(3 * CHUNK_SIZE))
    );
    assert_eq!(
        r.push_chunk(chunk("other", 0, 2, 1), now),
        Err(ChunkError::BudgetExhausted(3 * CHUNK_SIZE))
    );
    assert_eq!(r.pending(), 1, "a chunk over budget takes no slot");
    r.expire(now + REASSEMBLY_TIMEOUT);
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn a_header_announcing_more_than_the_pdu_cap_is_refused() {
    let (mut header, _) = parts("huge", 2 * CHUNK_SIZE);
    header.encrypted_message.cascaded_payload.final_size = u64::MAX;
    let mut r = Reassembler::new();
    assert!(matches!(
        r.push_header(header, Instant::now()),
        Err(ChunkError::MessageTooLarge(_))
    ));
    assert_eq!(r.pending(), 0);
}
