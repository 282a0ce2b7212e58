//! Limits from Enkrypted Chat P8, plus the per-field caps this crate adds so
//! that every parse of remote input is bounded before it allocates.

/// P8: the largest JSON PDU accepted, checked before parsing.
pub const MAX_PDU_BYTES: usize = 16 * 1024 * 1024;
/// P5.5/P8: a `finalCiphertext` larger than this travels in `__mls_chunk__` PDUs.
pub const CHUNK_SIZE: usize = 8192;
/// P8: the most chunks one message may have.
pub const MAX_CHUNKS_PER_MESSAGE: u32 = 4096;
/// P8: the most messages one peer may have under reassembly at once.
pub const MAX_CONCURRENT_REASSEMBLIES: usize = 64;
/// P8: how long a message under reassembly waits for its missing parts.
pub const REASSEMBLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Ours: the most bytes one peer may have buffered in unfinished reassemblies.
/// P8's caps alone would allow 64 × 4096 × 8 KiB = 2 GiB per peer.
pub const MAX_REASSEMBLY_BYTES: usize = 64 * 1024 * 1024;

/// Ours: JSON nesting deeper than this is refused before parsing. Our PDUs
/// nest at most four levels; the margin is for fields we ignore.
pub const MAX_JSON_DEPTH: usize = 32;
/// Ours: cascade layers in one payload (the profile has four).
pub const MAX_LAYERS: usize = 8;
/// Ours: entries in one layer's parameter object.
pub const MAX_LAYER_PARAMS: usize = 16;
/// Ours: bytes of one parameter name.
pub const MAX_PARAM_NAME: usize = 64;
/// Ours: bytes of one layer parameter value (a Kyber1024 ciphertext is 1568 B).
pub const MAX_PARAM_BYTES: usize = 4096;
/// Ours: bytes of a short identifier (installation id, message id, profile name).
pub const MAX_ID: usize = 64;
/// Ours: bytes of a human-readable reason in `protocol-error`.
pub const MAX_REASON: usize = 256;
/// Ours: bytes of a public key or signature field (a Kyber1024 key is 1569 B).
pub const MAX_KEY: usize = 4096;
/// Ours: bytes of one serialized MLS object (KeyPackage, Commit, Welcome, with
/// the ratchet tree for groups of a few hundred members).
pub const MAX_MLS_OBJECT: usize = 1024 * 1024;
/// Ours: bytes of one Signal message inside a handshake PDU.
pub const MAX_SIGNAL_MESSAGE: usize = 64 * 1024;
/// Ours: names in a cipher layer list.
pub const MAX_LAYER_NAMES: usize = 8;
/// Most bytes of a group chat's name.
pub const MAX_GROUP_NAME: usize = 128;
/// Most bytes of a transport address in a PDU (a PeerJS id, a multiaddr).
pub const MAX_ADDRESS: usize = 256;
/// Most member proposals one `group-commit` carries.
pub const MAX_GROUP_PROPOSALS: usize = 64;
/// Most commits one `group-catch-up` carries.
pub const MAX_CATCH_UP: usize = 16;
/// Most (epoch, sender) entries one `group-sync` carries: the epochs a
/// member can still read times the senders heard in them.
pub const MAX_SYNC_ENTRIES: usize = 4096;
/// Most ranges of sequence numbers one `group-sync` entry carries.
pub const MAX_SYNC_RANGES: usize = 64;

/// Most bytes of a `device-pairing` PDU's sealed body: the grant carries
/// the account's contacts (about 150 bytes each in JSON).
pub const MAX_PAIRING_BODY: usize = 1024 * 1024;
