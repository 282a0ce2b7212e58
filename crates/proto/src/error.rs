//! Typed errors. Every failure to accept remote input is one of these; none
//! of them panics and none of them carries the rejected bytes.

/// A value was larger than its field allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// `len` items/bytes where at most `max` are allowed.
    #[error("{field} too long: {len} > {max}")]
    TooLong {
        /// The kind of field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Its cap.
        max: usize,
    },
}

/// Why a received PDU was rejected. All variants are bad peer input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Over the P8 size cap; refused before parsing.
    #[error("PDU of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// JSON nested deeper than [`MAX_JSON_DEPTH`](crate::limits::MAX_JSON_DEPTH).
    #[error("JSON nested deeper than {max}")]
    TooDeep {
        /// The cap.
        max: usize,
    },
    /// The input ended inside a JSON value.
    #[error("truncated JSON")]
    Truncated,
    /// Not JSON (syntax error, invalid UTF-8, trailing bytes).
    #[error("malformed JSON: {reason}")]
    Syntax {
        /// The parser's message.
        reason: String,
    },
    /// Valid JSON, but not an object with a string `type`.
    #[error("not a PDU: a JSON object with a string `type` is required")]
    MissingType,
    /// A `type` this implementation does not know; P8.2 says drop it.
    #[error("unknown PDU type {0:?}")]
    UnknownType(String),
    /// A field exceeded its cap (string, byte string or array length).
    #[error("{pdu_type}: {reason}")]
    LimitExceeded {
        /// The PDU type.
        pdu_type: &'static str,
        /// Which cap.
        reason: String,
    },
    /// A field is missing, has the wrong JSON type or an invalid value.
    #[error("{pdu_type}: {reason}")]
    InvalidField {
        /// The PDU type.
        pdu_type: &'static str,
        /// The parser's message.
        reason: String,
    },
}

/// Why a chunk could not be accepted by the [`Reassembler`](crate::Reassembler)
/// or a payload could not be split. All but `PayloadTooLarge` are bad peer input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// `totalChunks` is 0 or over [`MAX_CHUNKS_PER_MESSAGE`](crate::limits::MAX_CHUNKS_PER_MESSAGE).
    #[error("total of {0} chunks is out of range")]
    TotalOutOfRange(u32),
    /// `chunkIndex` is not below `totalChunks`.
    #[error("chunk index {index} out of range for {total} chunks")]
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// The announced total.
        total: u32,
    },
    /// A part announced a different total than an earlier one; the whole
    /// message is dropped.
    #[error("inconsistent chunk totals: {first} then {then}")]
    InconsistentTotal {
        /// The total seen first.
        first: u32,
        /// The conflicting total.
        then: u32,
    },
    /// This chunk index was already received; the copy is ignored.
    #[error("duplicate chunk {0}")]
    DuplicateChunk(u32),
    /// The header for this message was already received; the copy is ignored.
    #[error("duplicate chunked-message header")]
    DuplicateHeader,
    /// A `message` PDU passed as a header does not announce chunks.
    #[error("message is not chunked")]
    NotChunked,
    /// The reassembled ciphertext's size differs from the announced `finalSize`;
    /// the whole message is dropped.
    #[error("reassembled {got} bytes, header announced {announced}")]
    SizeMismatch {
        /// Announced size.
        announced: u64,
        /// Reassembled size.
        got: u64,
    },
    /// The reassembled message would exceed the PDU size cap; the whole
    /// message is dropped.
    #[error("chunked message larger than {0} bytes")]
    MessageTooLarge(usize),
    /// The peer already has the maximum number of messages under reassembly.
    #[error("too many concurrent reassemblies (max {0})")]
    TooManyReassemblies(usize),
    /// Accepting this chunk would exceed the peer's reassembly byte budget.
    #[error("reassembly buffer budget of {0} bytes exhausted")]
    BudgetExhausted(usize),
    /// Sender side: the payload needs more than the chunk cap allows.
    #[error("payload of {len} bytes needs more than {max_chunks} chunks")]
    PayloadTooLarge {
        /// Payload size.
        len: usize,
        /// The chunk cap.
        max_chunks: u32,
    },
}
