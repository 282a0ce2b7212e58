//! Strata's wire formats: the Enkrypted Chat PDU catalog, its limits and the
//! chunking of large messages.
//!
//! This crate is pure data: no cryptography, no I/O, no clocks (time is passed
//! in). It must never panic on remote input and never allocate more than a
//! field's cap while parsing it.
//!
//! # The catalog (normative for Strata)
//!
//! Every PDU is one UTF-8 JSON object with a string `type` and camelCase
//! fields, carried as one transport frame. The public P4 field schemas of
//! Enkrypted Chat could not be retrieved, so the fields below are *ours*; the
//! `type` strings and the P5 `cascadedPayload` shape are the public ones.
//! Each struct's docs give its fields' meaning.
//!
//! | step | `type` | struct | carries |
//! |---|---|---|---|
//! | 1 | `mls-key-package-request` | [`KeyPackageRequest`] | session id, installation id, identity key, profile; `prior`, the session the sender knows |
//! | 2 | `mls-key-package` | [`KeyPackage`] | an MLS KeyPackage bound to the identity key |
//! | 3 | `mls-encryption-sync-request` | [`EncryptionSyncRequest`] | profile and layer list, or a resume probe |
//! | 4 | `mls-encryption-sync-response` | [`EncryptionSyncResponse`] | agreed layers, or the resume answer |
//! | 5 | `signal-key-exchange-request` | [`SignalKeyExchangeRequest`] | asks for a Signal pre-key bundle |
//! | 6 | `signal-key-exchange-response` | [`SignalKeyExchangeResponse`] | the PQXDH bundle (Kyber pre-key mandatory) |
//! | 7 | `signal-session-complete` | [`SignalSessionComplete`] | the first `PreKeySignalMessage` |
//! | 8 | `mlkem-key-exchange` | [`MlKemKeyExchange`] | the sender's signed ML-KEM-768 encapsulation key |
//! | 9 | `mlkem-key-exchange-response` | [`MlKemKeyExchangeResponse`] | the responder's signed encapsulation key |
//! | 10 | `mls-commit` | [`MlsCommit`] | an MLS commit |
//! | 10 | `mls-welcome` | [`MlsWelcome`] | an MLS welcome |
//! | 11 | `mls-welcome-ack` | [`MlsWelcomeAck`] | the joined epoch |
//! | – | `message` | [`Message`] | `encryptedMessage` with the P5.3 `cascadedPayload` |
//! | – | `__mls_chunk__` | [`Chunk`] | one ≤ 8192-byte piece of a `finalCiphertext` |
//! | – | `protocol-error` | [`ProtocolError`] | why a PDU was refused |
//! | – | `rotation-timestamp-broadcast` | [`RotationTimestampBroadcast`] | a new signed key opening an ML-KEM/AES epoch |
//! | – | `group-member-joined` | [`GroupMemberJoined`] | a member added to a group |
//! | – | `group-member-left` | [`GroupMemberLeft`] | a member removed from a group |
//! | – | `group-message` | [`GroupMessage`] | one MLS message to a whole group |
//! | – | `group-welcome` | [`GroupWelcome`] | an admin's Welcome for one joiner, with the epoch's group secret (pairwise only) |
//! | – | `group-commit` | [`GroupCommit`] | an admin-sequenced commit, the proposals it references, the next epoch's group secret (pairwise only) |
//! | – | `group-proposal` | [`GroupProposal`] | a member asks an admin to add, remove, let it leave, or commit its update (pairwise only) |
//! | – | `group-catch-up-request` | [`GroupCatchUpRequest`] | a member behind asks for the commits since its epoch (pairwise only) |
//! | – | `group-catch-up` | [`GroupCatchUp`] | up to 16 logged commits, oldest first (pairwise only) |
//! | – | `group-sync` | [`GroupSync`] | the group messages a member has, by epoch, sender and sequence ranges: the other sends what it lacks (pairwise only) |
//! | – | `device-pairing` | [`DevicePairing`] | one step of pairing a new device with an account, sealed with the pairing secret (outside sessions) |
//!
//! The group machine (`strata_session::group`) sends them. `group-message`
//! travels in the clear (it is sealed by the group); those marked
//! *pairwise only* carry a group secret and travel as the content of a
//! pair session's `message` (`group-pdu`, inside the cascade): a pair
//! session refuses any `group-*` PDU that arrives in the clear.
//! `group-member-joined` and `group-member-left` are decoded but not sent
//! (members learn of changes from commits). An admin change is a
//! `group-commit` (the admin list is in the MLS group context).
//!
//! Inside an established session, the plaintext of a `message` is itself
//! typed (the *inner catalog*, `strata_session::content`): `text`,
//! `file-chunk`, `ack`, and the KeyPackage claim and its answer,
//! `key-package-claim` (`claim`: an id of the claimer's) and
//! `key-package-grant` (`claim`, `keyPackage`: one serialized KeyPackage,
//! one-time or the last resort). Claims are inner messages rather than
//! PDUs of this catalog on purpose: in the clear anyone on the link could
//! claim in a peer's name and drain its pool; inside the cascade only the
//! session's peer can, and the owner's per-peer allowance counts an
//! authenticated installation.
//!
//! Encoding rules:
//! - Byte fields are standard padded base64 strings. Decoders also accept the
//!   P5 form, a JSON array of integers 0–255.
//! - Integers are unsigned JSON numbers; times are Unix milliseconds.
//! - Unknown fields are ignored (forward compatibility); unknown `type`s are
//!   refused with [`DecodeError::UnknownType`] and dropped (P8.2).
//! - Optional fields are omitted when absent.
//!
//! Limits ([`limits`]): a PDU over 16 MiB is refused before parsing; JSON
//! nested deeper than 32 levels is refused before parsing; every string, byte
//! string and array has a cap checked while it is read. Chunking: see
//! [`chunk`].
//!
//! Besides the PDUs: the Waku relay envelope ([`waku`]), the signed
//! bundles an installation broadcasts over gossip ([`bundle`]) and the
//! signed device list of an account ([`devices`]), all protobuf.

pub mod bundle;
pub mod chunk;
pub mod codec;
pub mod devices;
pub mod error;
pub mod kx;
pub mod limits;
pub mod pdu;
pub mod waku;

pub use chunk::{Reassembler, ReassemblyLimits, split};
pub use codec::{Blob, BoundedVec, FixedBytes, LayerParameters, ParamValue, Text};
pub use error::{ChunkError, DecodeError, LimitError};
pub use pdu::*;
