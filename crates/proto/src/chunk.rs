//! Chunking of large messages (P5.5, P6, P8).
//!
//! A `message` whose `finalCiphertext` is over [`CHUNK_SIZE`] bytes is sent as
//! a *header* — the same `message` with `encryptedMessage.chunked = true`,
//! `totalChunks = n` and no `finalCiphertext` — followed by `n` `__mls_chunk__`
//! PDUs carrying the ciphertext in order. Header and chunks may arrive in any
//! order. The receiver's [`Reassembler`] (one per peer) yields the complete
//! `message` only once every part is there, and never a partial one.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::codec::Blob;
use crate::error::ChunkError;
use crate::limits::{
    CHUNK_SIZE, MAX_CHUNKS_PER_MESSAGE, MAX_CONCURRENT_REASSEMBLIES, MAX_PDU_BYTES, MAX_REASSEMBLY_BYTES,
    REASSEMBLY_TIMEOUT,
};
use crate::pdu::{Chunk, Message, MessageId, Pdu};

/// Splits `message` for sending: itself if its ciphertext fits in one chunk,
/// otherwise a header followed by its chunks, in order.
pub fn split(mut message: Message) -> Result<Vec<Pdu>, ChunkError> {
    let payload = &mut message.encrypted_message.cascaded_payload;
    let ciphertext = match payload.final_ciphertext.take() {
        Some(c) if c.len() > CHUNK_SIZE => c.into_vec(),
        small => {
            payload.final_ciphertext = small;
            return Ok(vec![Pdu::Message(message)]);
        }
    };
    let total = u32::try_from(ciphertext.len().div_ceil(CHUNK_SIZE))
        .ok()
        .filter(|n| *n <= MAX_CHUNKS_PER_MESSAGE)
        .ok_or(ChunkError::PayloadTooLarge {
            len: ciphertext.len(),
            max_chunks: MAX_CHUNKS_PER_MESSAGE,
        })?;
    message.encrypted_message.chunked = true;
    message.encrypted_message.total_chunks = Some(total);
    let message_id = message.message_id.clone();
    let mut pdus = Vec::with_capacity(total as usize + 1);
    pdus.push(Pdu::Message(message));
    for (index, piece) in (0..total).zip(ciphertext.chunks(CHUNK_SIZE)) {
        pdus.push(Pdu::Chunk(Chunk {
            message_id: message_id.clone(),
            chunk_index: index,
            total_chunks: total,
            // `chunks(CHUNK_SIZE)` never yields more than the field's cap.
            data: Blob::new(piece).map_err(|_| ChunkError::PayloadTooLarge {
                len: piece.len(),
                max_chunks: total,
            })?,
        }));
    }
    Ok(pdus)
}

/// The caps a [`Reassembler`] enforces. The defaults are P8's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Most chunks per message.
    pub max_chunks: u32,
    /// Most messages under reassembly at once.
    pub max_concurrent: usize,
    /// How long a message may wait for its missing parts, from its first part.
    pub timeout: Duration,
    /// Most chunk bytes buffered across all messages under reassembly.
    pub max_buffered_bytes: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_chunks: MAX_CHUNKS_PER_MESSAGE,
            max_concurrent: MAX_CONCURRENT_REASSEMBLIES,
            timeout: REASSEMBLY_TIMEOUT,
            max_buffered_bytes: MAX_REASSEMBLY_BYTES,
        }
    }
}

#[derive(Debug)]
struct Pending {
    started: Instant,
    total: u32,
    header: Option<Message>,
    chunks: BTreeMap<u32, Blob<CHUNK_SIZE>>,
    bytes: usize,
}

/// Reassembles one peer's chunked messages. Sans-I/O: the caller passes the
/// current time in.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    pending: HashMap<MessageId, Pending>,
    buffered: usize,
}

impl Reassembler {
    /// A reassembler with P8's limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reassembler with other limits.
    pub fn with_limits(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Messages currently under reassembly.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Chunk bytes currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// When the oldest reassembly times out, if any is pending: the caller's
    /// next timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.started + self.limits.timeout).min()
    }

    /// Drops every reassembly older than the timeout and returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<MessageId> {
        let timeout = self.limits.timeout;
        let expired: Vec<MessageId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.started) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.remove(id);
        }
        expired
    }

    /// Accepts the header of a chunked message; returns the whole message if
    /// its chunks were all already here.
    pub fn push_header(&mut self, header: Message, now: Instant) -> Result<Option<Message>, ChunkError> {
        if !header.encrypted_message.chunked {
            return Err(ChunkError::NotChunked);
        }
        let total = header.encrypted_message.total_chunks.ok_or(ChunkError::NotChunked)?;
        if header.encrypted_message.cascaded_payload.final_size > MAX_PDU_BYTES as u64 {
            return Err(ChunkError::MessageTooLarge(MAX_PDU_BYTES));
        }
        let id = header.message_id.clone();
        let pending = self.entry(&id, total, now)?;
        if pending.header.is_some() {
            return Err(ChunkError::DuplicateHeader);
        }
        pending.header = Some(header);
        self.complete(&id)
    }

    /// Accepts one chunk; returns the whole message if it was the last part.
    pub fn push_chunk(&mut self, chunk: Chunk, now: Instant) -> Result<Option<Message>, ChunkError> {
        let Chunk {
            message_id,
            chunk_index,
            total_chunks,
            data,
        } = chunk;
        self.check_total(total_chunks)?;
        if chunk_index >= total_chunks {
            return Err(ChunkError::IndexOutOfRange {
                index: chunk_index,
                total: total_chunks,
            });
        }
        // Checked before the entry exists so a chunk that cannot fit does not
        // take a reassembly slot.
        if self.buffered + data.len() > self.limits.max_buffered_bytes {
            return Err(ChunkError::BudgetExhausted(self.limits.max_buffered_bytes));
        }
        let len = data.len();
        let pending = self.entry(&message_id, total_chunks, now)?;
        if pending.chunks.contains_key(&chunk_index) {
            return Err(ChunkError::DuplicateChunk(chunk_index));
        }
        if pending.bytes + len > MAX_PDU_BYTES {
            self.remove(&message_id);
            return Err(ChunkError::MessageTooLarge(MAX_PDU_BYTES));
        }
        pending.bytes += len;
        pending.chunks.insert(chunk_index, data);
        self.buffered += len;
        self.complete(&message_id)
    }

    /// The reassembly for `id`, created if new, after checking `total`.
    fn entry(&mut self, id: &MessageId, total: u32, now: Instant) -> Result<&mut Pending, ChunkError> {
        self.check_total(total)?;
        self.expire(now);
        match self.pending.get(id).map(|p| p.total) {
            Some(first) if first != total => {
                // A peer that contradicts itself gets nothing of this message.
                self.remove(id);
                return Err(ChunkError::InconsistentTotal { first, then: total });
            }
            Some(_) => {}
            None if self.pending.len() >= self.limits.max_concurrent => {
                return Err(ChunkError::TooManyReassemblies(self.limits.max_concurrent));
            }
            None => {
                self.pending.insert(
                    id.clone(),
                    Pending {
                        started: now,
                        total,
                        header: None,
                        chunks: BTreeMap::new(),
                        bytes: 0,
                    },
                );
            }
        }
        self.pending.get_mut(id).ok_or(ChunkError::TotalOutOfRange(total))
    }

    fn check_total(&self, total: u32) -> Result<(), ChunkError> {
        if total == 0 || total > self.limits.max_chunks {
            return Err(ChunkError::TotalOutOfRange(total));
        }
        Ok(())
    }

    fn remove(&mut self, id: &MessageId) -> Option<Pending> {
        let pending = self.pending.remove(id)?;
        self.buffered -= pending.bytes;
        Some(pending)
    }

    /// Finishes `id` if its header and every chunk are present.
    fn complete(&mut self, id: &MessageId) -> Result<Option<Message>, ChunkError> {
        let ready = self
            .pending
            .get(id)
            .is_some_and(|p| p.header.is_some() && p.chunks.len() == p.total as usize);
        if !ready {
            return Ok(None);
        }
        let Some(Pending {
            header: Some(mut message),
            chunks,
            bytes,
            ..
        }) = self.remove(id)
        else {
            return Ok(None);
        };
        let payload = &mut message.encrypted_message.cascaded_payload;
        if bytes as u64 != payload.final_size {
            return Err(ChunkError::SizeMismatch {
                announced: payload.final_size,
                got: bytes as u64,
            });
        }
        // BTreeMap iterates in index order; indexes are 0..total, all present.
        let mut ciphertext = Vec::with_capacity(bytes);
        for data in chunks.into_values() {
            ciphertext.extend_from_slice(data.as_bytes());
        }
        // Cannot fail: `bytes` equals `final_size`, which the header check capped.
        payload.final_ciphertext =
            Some(Blob::<MAX_PDU_BYTES>::new(ciphertext).map_err(|_| ChunkError::MessageTooLarge(MAX_PDU_BYTES))?);
        message.encrypted_message.chunked = false;
        message.encrypted_message.total_chunks = None;
        Ok(Some(message))
    }
}
