//! The PDU catalog: one struct per `type`, one enum over all of them, and the
//! bounded decoder. The field reference in each struct's docs is normative for
//! Strata (the public P4 schemas could not be retrieved; see the crate docs).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use crate::codec::{Blob, BoundedVec, FixedBytes, LIMIT_PREFIX, LayerParameters, Text};
use crate::error::DecodeError;
use crate::limits::{
    CHUNK_SIZE, MAX_ADDRESS, MAX_CATCH_UP, MAX_GROUP_NAME, MAX_GROUP_PROPOSALS, MAX_ID, MAX_JSON_DEPTH, MAX_KEY,
    MAX_LAYER_NAMES, MAX_LAYERS, MAX_MLS_OBJECT, MAX_PAIRING_BODY, MAX_PDU_BYTES, MAX_REASON, MAX_SIGNAL_MESSAGE,
    MAX_SYNC_ENTRIES, MAX_SYNC_RANGES,
};

/// The profile id Strata speaks (P1.1).
pub const PROFILE_V0: &str = "EnkryptedChat-Profile-v0";

/// A short identifier: installation id, message id, profile name.
pub type Id = Text<MAX_ID>;
/// A message id, chosen by the sender, unique per sender; the key for
/// duplicate suppression and chunk reassembly.
pub type MessageId = Id;
/// 16 random bytes naming one handshake attempt and then the session it
/// creates. Chosen by the side that sends step 1.
pub type SessionId = FixedBytes<16>;
/// A public key, KEM ciphertext or signature.
pub type KeyBytes = Blob<MAX_KEY>;
/// A TLS-serialized MLS object (RFC 9420 §6 `MLSMessage` or `KeyPackage`).
pub type MlsBytes = Blob<MAX_MLS_OBJECT>;
/// An MLS group id.
pub type GroupId = Blob<256>;
/// A cipher layer name, as in P1.3 `cipherLayers` (`MLS`, `Signal`, `ML-KEM`, `AES`).
pub type LayerName = Text<32>;

/// Step 1, `mls-key-package-request`: opens a handshake and asks the peer
/// for one of its MLS KeyPackages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct KeyPackageRequest {
    /// The new session's id.
    pub session_id: SessionId,
    /// The sender's installation id (one per device).
    pub installation_id: Id,
    /// The sender's account identity key (a serialized Signal `IdentityKey`,
    /// 33 bytes). Pinned on first use.
    pub identity_key: KeyBytes,
    /// The profile the sender speaks, [`PROFILE_V0`].
    pub profile: Id,
    /// Sender's clock, Unix milliseconds; informative.
    pub timestamp: u64,
    /// The session the sender has with the receiver as it starts this one,
    /// if any: a start naming the receiver's session replaces it knowingly;
    /// one that does not, while the receiver's own start is under way or
    /// just completed, is its twin, and of two twins both sides keep the
    /// one whose tie-break value (an MLS exporter value) comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<SessionId>,
}

/// Step 2, `mls-key-package`: the answer to step 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct KeyPackage {
    /// The session id from step 1.
    pub session_id: SessionId,
    /// The sender's installation id.
    pub installation_id: Id,
    /// The sender's account identity key, as in step 1.
    pub identity_key: KeyBytes,
    /// A TLS-serialized RFC 9420 `KeyPackage` (ciphersuite 0x0001) whose
    /// credential is bound to `identity_key`.
    pub key_package: MlsBytes,
    /// Whether `key_package` is the sender's reusable last-resort package.
    #[serde(default)]
    pub last_resort: bool,
}

/// A request to resume a stored session instead of running the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct ResumeProbe {
    /// The MLS epoch the sender holds for this session.
    pub epoch: u64,
    /// A MAC over the probe, keyed from the stored session's secrets; proves
    /// the sender holds the same session without revealing anything of it.
    pub proof: Blob<64>,
}

/// Marks a step 3 that opens a handshake from the responder's broadcast
/// bundle: steps 1–2 and 5–6 never happen, so this carries what step 1
/// would have (the initiator's identity) and names the bundle whose
/// pre-keys the rest of the first flight (7, 8, 10) was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct BundleStart {
    /// The initiator's installation id.
    pub installation_id: Id,
    /// The initiator's account identity key (as in step 1). Pinned on first
    /// use; steps 7, 8 and 10 are each bound to it.
    pub identity_key: KeyBytes,
    /// The version of the responder's bundle that was used.
    pub version: u64,
    /// As [`KeyPackageRequest::prior`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<SessionId>,
}

/// The answer to a [`ResumeProbe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct ResumeAnswer {
    /// Whether the responder holds the same session.
    pub status: ResumeStatus,
    /// The responder's own proof when `status` is `resumed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Blob<64>>,
}

/// Outcome of a resume probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "kebab-case")]
pub enum ResumeStatus {
    /// Both sides hold the session; it continues.
    Resumed,
    /// The responder does not hold it (lost state, or a different session):
    /// run the full handshake from step 1.
    Unknown,
}

/// Step 3, `mls-encryption-sync-request`: agree on the profile and layers, or
/// (with `resume`) resume a stored session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSyncRequest {
    /// The session id.
    pub session_id: SessionId,
    /// The profile, [`PROFILE_V0`].
    pub profile: Id,
    /// The cipher layers the sender will run, in encrypt order.
    pub layers: BoundedVec<LayerName, MAX_LAYER_NAMES>,
    /// Present when the sender wants to resume the stored session `session_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeProbe>,
    /// Present when the sender opens the handshake from our bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleStart>,
}

/// Step 4, `mls-encryption-sync-response`: the answer to step 3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSyncResponse {
    /// The session id.
    pub session_id: SessionId,
    /// The profile, [`PROFILE_V0`].
    pub profile: Id,
    /// The layers the responder agrees to, in encrypt order; the session
    /// fails unless they equal the request's.
    pub layers: BoundedVec<LayerName, MAX_LAYER_NAMES>,
    /// The answer to the request's resume probe, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeAnswer>,
}

/// Step 5, `signal-key-exchange-request`: asks the peer for its Signal
/// pre-key bundle (no pre-key server: Appendix B).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct SignalKeyExchangeRequest {
    /// The session id.
    pub session_id: SessionId,
    /// The sender's Signal registration id.
    pub registration_id: u32,
    /// The sender's Signal device id.
    pub device_id: u32,
}

/// A Signal PQXDH pre-key bundle as exchanged live (libsignal `PreKeyBundle`).
/// The Kyber pre-key is mandatory; the one-time EC pre-key is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct SignalPreKeyBundle {
    /// Registration id.
    pub registration_id: u32,
    /// Device id.
    pub device_id: u32,
    /// One-time EC pre-key id, with `pre_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_key_id: Option<u32>,
    /// One-time EC pre-key public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_key: Option<KeyBytes>,
    /// Signed EC pre-key id.
    pub signed_pre_key_id: u32,
    /// Signed EC pre-key public key.
    pub signed_pre_key: KeyBytes,
    /// XEdDSA signature of `signed_pre_key` by the identity key.
    pub signed_pre_key_signature: KeyBytes,
    /// Kyber pre-key id.
    pub kyber_pre_key_id: u32,
    /// Kyber1024 pre-key public key.
    pub kyber_pre_key: KeyBytes,
    /// Signature of `kyber_pre_key` by the identity key.
    pub kyber_pre_key_signature: KeyBytes,
    /// The account identity key.
    pub identity_key: KeyBytes,
}

/// Step 6, `signal-key-exchange-response`: the peer's pre-key bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct SignalKeyExchangeResponse {
    /// The session id.
    pub session_id: SessionId,
    /// The responder's bundle, signed by its identity key.
    pub bundle: SignalPreKeyBundle,
}

/// Step 7, `signal-session-complete`: the requester processed the bundle and
/// sends its first Signal message, from which the responder builds its side
/// of the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct SignalSessionComplete {
    /// The session id.
    pub session_id: SessionId,
    /// A serialized libsignal `PreKeySignalMessage` whose plaintext is the
    /// session id (a key confirmation).
    pub message: Blob<MAX_SIGNAL_MESSAGE>,
}

/// Step 8, `mlkem-key-exchange`: the sender's ML-KEM-768 encapsulation key,
/// bound to its installation by the identity key. The peer encapsulates to
/// it; the KEM ciphertext then travels in the ML-KEM layer's parameters of
/// the peer's messages until the sender acknowledges the epoch (one KEM
/// exchange per epoch, never per message).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct MlKemKeyExchange {
    /// The session id.
    pub session_id: SessionId,
    /// The key's id within the sender's installation (signed with it).
    pub key_id: u32,
    /// The ML-KEM-768 encapsulation key (1184 bytes).
    pub encapsulation_key: KeyBytes,
    /// The sender's identity-key signature over its installation id, the
    /// key id and the key; verified before the key is used.
    pub signature: KeyBytes,
}

/// Step 9, `mlkem-key-exchange-response`: the responder's own signed
/// encapsulation key, in the same form as step 8, so each side can
/// encapsulate to the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct MlKemKeyExchangeResponse {
    /// The session id.
    pub session_id: SessionId,
    /// The key's id within the responder's installation.
    pub key_id: u32,
    /// The ML-KEM-768 encapsulation key (1184 bytes).
    pub encapsulation_key: KeyBytes,
    /// The responder's identity-key signature, as in step 8.
    pub signature: KeyBytes,
}

/// Step 10, `mls-commit`: an MLS commit for a group the peers share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct MlsCommit {
    /// The pairwise session, when the commit belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch the commit applies to (the group moves to `epoch + 1`).
    pub epoch: u64,
    /// The commit, a TLS-serialized `MLSMessage`.
    pub commit: MlsBytes,
}

/// Step 10, `mls-welcome`: adds the receiver to an MLS group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct MlsWelcome {
    /// The pairwise session, when the welcome belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The MLS group id.
    pub group_id: GroupId,
    /// The welcome, a TLS-serialized `MLSMessage`.
    pub welcome: MlsBytes,
    /// The TLS-serialized ratchet tree, when not carried in the welcome's
    /// extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratchet_tree: Option<MlsBytes>,
}

/// Step 11, `mls-welcome-ack`: the receiver joined the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct MlsWelcomeAck {
    /// The pairwise session, when the welcome belonged to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch the receiver joined at.
    pub epoch: u64,
}

/// P5.3 `LayerMetadata`: what one layer did. Informative, except that it is
/// authenticated as part of the payload by the cascade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct LayerMetadata {
    /// Layer name: `MLS`, `Signal`, `ML-KEM`, `AES-GCM-256`.
    pub algorithm: LayerName,
    /// Layer version.
    pub version: LayerName,
    /// When the layer ran, Unix milliseconds.
    #[serde(default)]
    pub timestamp: u64,
    /// Input length in bytes.
    #[serde(default)]
    pub input_size: u64,
    /// Output length in bytes.
    #[serde(default)]
    pub output_size: u64,
    /// Time the layer took, in whole milliseconds.
    #[serde(default)]
    pub processing_time: u64,
}

/// P5.3 `cascadedPayload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct CascadedPayload {
    /// The outermost layer's output. Absent when the message is chunked: the
    /// bytes then travel in `__mls_chunk__` PDUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_ciphertext: Option<Blob<MAX_PDU_BYTES>>,
    /// One entry per layer, in encrypt order.
    pub layers: BoundedVec<LayerMetadata, MAX_LAYERS>,
    /// Public decrypt parameters, one per layer, same index as `layers`.
    /// Never a key.
    pub layer_parameters: BoundedVec<LayerParameters, MAX_LAYERS>,
    /// Total encrypt time, whole milliseconds.
    #[serde(default)]
    pub total_processing_time: u64,
    /// Plaintext length.
    pub original_size: u64,
    /// `finalCiphertext` length (also when chunked).
    pub final_size: u64,
    /// When the payload was made, Unix milliseconds; informative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
}

/// P4 `encryptedMessage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct EncryptedMessage {
    /// Always true in Strata.
    pub encrypted: bool,
    /// Always true in Strata: the MLS-only fallback envelope is a downgrade
    /// and is neither sent nor accepted.
    pub cascaded: bool,
    /// True when `cascadedPayload.finalCiphertext` travels in chunks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub chunked: bool,
    /// With `chunked`: how many `__mls_chunk__` PDUs carry the ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_chunks: Option<u32>,
    /// The cascade output.
    pub cascaded_payload: CascadedPayload,
}

/// `message`: an application payload through the cascade. The plaintext is
/// a UTF-8 JSON object whose `type` names the application content; the
/// session layer defines that inner catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Unique per sender; the key for duplicate suppression and chunking.
    pub message_id: MessageId,
    /// The ciphertext and its headers.
    pub encrypted_message: EncryptedMessage,
}

/// `__mls_chunk__`: one piece of a chunked message's `finalCiphertext`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct Chunk {
    /// The `messageId` of the chunked `message`.
    pub message_id: MessageId,
    /// Position, from 0.
    pub chunk_index: u32,
    /// Number of chunks; the same in every chunk of the message.
    pub total_chunks: u32,
    /// At most [`CHUNK_SIZE`] bytes of the ciphertext.
    pub data: Blob<CHUNK_SIZE>,
}

/// Why a PDU was refused, in a `protocol-error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Not valid JSON, or a field was missing or wrong.
    Malformed,
    /// Over a size or count limit.
    TooLarge,
    /// An unknown `type`.
    UnknownType,
    /// A PDU that is not valid in the session's current state.
    Unexpected,
    /// A layer failed to decrypt or authenticate.
    DecryptFailed,
    /// A message id or ciphertext seen before.
    Replay,
    /// Too many PDUs; some were dropped.
    RateLimited,
    /// The peer's identity key changed; sending is blocked until the user
    /// accepts it.
    IdentityChanged,
    /// The session referred to does not exist here (e.g. lost state).
    UnknownSession,
    /// A local failure unrelated to the PDU.
    Internal,
    /// A code this implementation does not know.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The wire name (the JSON value of `code`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too-large",
            Self::UnknownType => "unknown-type",
            Self::Unexpected => "unexpected",
            Self::DecryptFailed => "decrypt-failed",
            Self::Replay => "replay",
            Self::RateLimited => "rate-limited",
            Self::IdentityChanged => "identity-changed",
            Self::UnknownSession => "unknown-session",
            Self::Internal => "internal",
            Self::Other => "other",
        }
    }
}

/// `protocol-error`: tells the peer a PDU was refused. Informative (P8.2:
/// Profile-v0 has no application-level error codes); rate-limited by senders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct ProtocolError {
    /// The class of failure.
    pub code: ErrorCode,
    /// A short human-readable reason; never includes the refused bytes.
    #[serde(default)]
    pub reason: Text<MAX_REASON>,
    /// The `type` of the refused PDU, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_type: Option<Id>,
    /// The message or session id of the refused PDU, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_id: Option<Id>,
}

/// `rotation-timestamp-broadcast`: starts a new epoch of the ML-KEM and AES
/// layers with a fresh signed encapsulation key. The peer installs it, and
/// its next messages open the new epoch (the KEM ciphertext travels in
/// their ML-KEM layer parameters); in-flight messages of older epochs still
/// decrypt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct RotationTimestampBroadcast {
    /// The session id.
    pub session_id: SessionId,
    /// When the sender rotated, Unix milliseconds.
    pub timestamp: u64,
    /// The new key's id, greater than any earlier one of the sender.
    pub key_id: u32,
    /// The sender's fresh ML-KEM-768 encapsulation key.
    pub encapsulation_key: KeyBytes,
    /// The sender's identity-key signature, as in `mlkem-key-exchange`.
    pub signature: KeyBytes,
}

/// A group member, named by installation and account identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    /// The member's installation id.
    pub installation_id: Id,
    /// The member's account identity key.
    pub identity_key: KeyBytes,
}

/// `group-member-joined`: announces a member added to a group, so other
/// members can be introduced to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberJoined {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch that added the member.
    pub epoch: u64,
    /// The new member.
    pub member: MemberInfo,
    /// The installation that committed the add.
    pub added_by: Id,
}

/// `group-member-left`: announces a member removed from (or leaving) a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberLeft {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch that removed the member.
    pub epoch: u64,
    /// The member that left.
    pub member: MemberInfo,
    /// The installation that committed the removal; absent when it left itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_by: Option<Id>,
}

/// `group-message`: one application message to a whole MLS group, sent once
/// (on gossip, to the group's topic) rather than once per member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupMessage {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch the message was sent in.
    pub epoch: u64,
    /// Unique per sender.
    pub message_id: MessageId,
    /// The MLS `PrivateMessage`, TLS-serialized.
    pub ciphertext: Blob<MAX_PDU_BYTES>,
}

/// `group-welcome`: an admin's invitation into a group chat, for one
/// joiner. **Pairwise only**: it travels as the plaintext of the pair
/// session's `message` (it carries the epoch's group secret), never in
/// the clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupWelcome {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch the Welcome joins.
    pub epoch: u64,
    /// The MLS `Welcome` (`MLSMessage`, ratchet tree included).
    pub welcome: MlsBytes,
    /// The `KeyPackageRef` of the joiner's package it was made for: the
    /// joiner redeems that package's private parts from its pool.
    pub key_package_ref: Blob<64>,
    /// The group secret of `epoch`, mixed into every group message key.
    pub epoch_secret: FixedBytes<32>,
    /// The chat's name, as its creator chose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Text<MAX_GROUP_NAME>>,
}

/// `group-commit`: the commit that moves a group from `epoch` to
/// `epoch + 1`, sequenced by an admin (one per epoch), with the member
/// proposals it references (each processed before it) and the new
/// epoch's group secret. **Pairwise only**, like `group-welcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupCommit {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The epoch the commit was made in.
    pub epoch: u64,
    /// The MLS commit (`MLSMessage`).
    pub commit: MlsBytes,
    /// Member proposals (`MLSMessage`) the commit references, in order.
    #[serde(default, skip_serializing_if = "BoundedVec::is_empty")]
    pub proposals: BoundedVec<MlsBytes, MAX_GROUP_PROPOSALS>,
    /// The group secret of `epoch + 1`; absent for a member the commit
    /// removes (it learns of its removal, and nothing of the next epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_secret: Option<FixedBytes<32>>,
}

/// What a member asks of the admin in a `group-proposal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "kebab-case")]
pub enum ProposalKind {
    /// Add `member` (reachable at `address`); for a current member, add
    /// it again (it is behind beyond every commit log: the sender could
    /// not catch it up).
    Add,
    /// Remove `member`.
    Remove,
    /// Remove the sender.
    Leave,
    /// Commit the sender's own update (its MLS proposal in `proposal`).
    Update,
}

/// `group-proposal`: a member asks an admin for a membership change or a
/// key update; the admin commits it (or not). **Pairwise only.**
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupProposal {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The sender's epoch.
    pub epoch: u64,
    /// What is asked.
    pub kind: ProposalKind,
    /// The installation to add or remove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Id>,
    /// Where the admin reaches the member to add (a PeerJS id or a
    /// multiaddr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Text<MAX_ADDRESS>>,
    /// The sender's MLS proposal (`MLSMessage`), for `update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<MlsBytes>,
}

/// `group-catch-up-request`: a member that missed commits asks an admin or
/// another member for those made since `epoch`. **Pairwise only.**
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupCatchUpRequest {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The asker's epoch.
    pub epoch: u64,
}

/// `group-catch-up`: the commits since the asked epoch, oldest first, as
/// far as the answerer's commit log reaches; `complete` when they reach its
/// own epoch. A member too far behind for any log is re-added by an admin.
/// **Pairwise only.**
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupCatchUp {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The commits, each as its `group-commit`.
    pub commits: BoundedVec<GroupCommit, MAX_CATCH_UP>,
    /// Whether they bring the asker to the answerer's epoch.
    pub complete: bool,
}

/// The group messages of one sender in one epoch that a member has:
/// their sequence numbers, as inclusive ranges, lowest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct HeardSeqs {
    /// The epoch the messages were sent in.
    pub epoch: u64,
    /// The sender's installation id (hex).
    pub sender: Id,
    /// `[first, last]` ranges of the sequence numbers held.
    pub seqs: BoundedVec<[u64; 2], MAX_SYNC_RANGES>,
}

/// `group-sync`: which group messages a member has, for the epochs it can
/// read (`fromEpoch..=toEpoch`), so the receiver sends back what it holds
/// and the sender lacks (each as a `group-message`, pairwise). Unless
/// `answer` is set, a receiver that lacks messages the sender has answers
/// with its own `group-sync`. **Pairwise only.**
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct GroupSync {
    /// The MLS group id.
    pub group_id: GroupId,
    /// The oldest epoch whose messages the sender can read.
    pub from_epoch: u64,
    /// The sender's epoch.
    pub to_epoch: u64,
    /// What it has, by epoch and sender; an absent pair is none.
    pub heard: BoundedVec<HeardSeqs, MAX_SYNC_ENTRIES>,
    /// Whether this answers a `group-sync` (and so is not answered).
    pub answer: bool,
}

/// `device-pairing`: one step of pairing a new device with an account
/// (`strata_session::pairing`), between the new device and one of the
/// account's, outside any session. Steps: 1, the new device asks; 2, the
/// existing device grants (the account key, its device list naming the
/// new device, its contacts); 0, the existing device refuses, in the clear
/// (`reason`: the asker may not hold the secret, so nothing can be sealed
/// for it). Steps 1 and 2 are sealed with keys only holders of the pairing
/// secret derive (`strata_cascade::pairing`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[serde(rename_all = "camelCase")]
pub struct DevicePairing {
    /// Names the offer (derived from the pairing secret; public).
    pub pairing: FixedBytes<16>,
    /// The step: 0, 1 or 2.
    pub step: u8,
    /// The step's body, sealed (steps 1 and 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Blob<MAX_PAIRING_BODY>>,
    /// Why the attempt was refused (step 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Text<MAX_REASON>>,
}

/// Where a PDU type belongs in a session's life (P6.4: handshake PDUs are
/// processed before `encryptionReady`; messages are not).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Session establishment (P3 steps 1–11).
    Handshake,
    /// Encrypted application traffic and its chunks.
    Traffic,
    /// Errors and key rotation, valid in any state.
    Control,
    /// Group management and group traffic.
    Group,
    /// Pairing a new device, outside any session.
    Pairing,
}

macro_rules! catalog {
    ($( $variant:ident($ty:ident) = $name:literal, $phase:ident; )*) => {
        /// Every PDU Strata knows, tagged on the wire by `type`.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        #[serde(tag = "type")]
        pub enum Pdu {
            $(
                #[doc = concat!("`", $name, "`")]
                #[serde(rename = $name)]
                $variant($ty),
            )*
        }

        /// The `type` of a PDU.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum PduType {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl PduType {
            /// Every type, in catalog order.
            pub const ALL: &'static [PduType] = &[$(PduType::$variant),*];

            /// The exact wire `type` string.
            pub const fn as_str(self) -> &'static str {
                match self { $(PduType::$variant => $name,)* }
            }

            /// The type named `name`, if it is one we know.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(PduType::$variant),)* _ => None }
            }

            /// Where this type belongs in a session's life.
            pub const fn phase(self) -> Phase {
                match self { $(PduType::$variant => Phase::$phase,)* }
            }
        }

        impl Pdu {
            /// This PDU's `type`.
            pub const fn pdu_type(&self) -> PduType {
                match self { $(Pdu::$variant(_) => PduType::$variant,)* }
            }
        }

        $(
            impl From<$ty> for Pdu {
                fn from(pdu: $ty) -> Self {
                    Pdu::$variant(pdu)
                }
            }
        )*

        fn decode_as(ty: PduType, bytes: &[u8]) -> Result<Pdu, DecodeError> {
            match ty {
                $(PduType::$variant => parse::<$ty>(bytes, $name).map(Pdu::$variant),)*
            }
        }
    };
}

catalog! {
    KeyPackageRequest(KeyPackageRequest) = "mls-key-package-request", Handshake;
    KeyPackage(KeyPackage) = "mls-key-package", Handshake;
    EncryptionSyncRequest(EncryptionSyncRequest) = "mls-encryption-sync-request", Handshake;
    EncryptionSyncResponse(EncryptionSyncResponse) = "mls-encryption-sync-response", Handshake;
    SignalKeyExchangeRequest(SignalKeyExchangeRequest) = "signal-key-exchange-request", Handshake;
    SignalKeyExchangeResponse(SignalKeyExchangeResponse) = "signal-key-exchange-response", Handshake;
    SignalSessionComplete(SignalSessionComplete) = "signal-session-complete", Handshake;
    MlKemKeyExchange(MlKemKeyExchange) = "mlkem-key-exchange", Handshake;
    MlKemKeyExchangeResponse(MlKemKeyExchangeResponse) = "mlkem-key-exchange-response", Handshake;
    MlsCommit(MlsCommit) = "mls-commit", Handshake;
    MlsWelcome(MlsWelcome) = "mls-welcome", Handshake;
    MlsWelcomeAck(MlsWelcomeAck) = "mls-welcome-ack", Handshake;
    Message(Message) = "message", Traffic;
    Chunk(Chunk) = "__mls_chunk__", Traffic;
    ProtocolError(ProtocolError) = "protocol-error", Control;
    RotationTimestampBroadcast(RotationTimestampBroadcast) = "rotation-timestamp-broadcast", Control;
    GroupMemberJoined(GroupMemberJoined) = "group-member-joined", Group;
    GroupMemberLeft(GroupMemberLeft) = "group-member-left", Group;
    GroupMessage(GroupMessage) = "group-message", Group;
    GroupWelcome(GroupWelcome) = "group-welcome", Group;
    GroupCommit(GroupCommit) = "group-commit", Group;
    GroupProposal(GroupProposal) = "group-proposal", Group;
    GroupCatchUpRequest(GroupCatchUpRequest) = "group-catch-up-request", Group;
    GroupCatchUp(GroupCatchUp) = "group-catch-up", Group;
    GroupSync(GroupSync) = "group-sync", Group;
    DevicePairing(DevicePairing) = "device-pairing", Pairing;
}

impl std::fmt::Display for PduType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Pdu {
    /// Serializes to UTF-8 JSON, `type` first.
    pub fn encode(&self) -> Vec<u8> {
        // Every field is a bounded string, byte string, integer or bool:
        // serialization to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses one received PDU. Bounded: over-size input is refused before
    /// parsing, nesting is checked before parsing, and every field is capped
    /// as it is read. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Pdu, DecodeError> {
        if bytes.len() > MAX_PDU_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_PDU_BYTES,
            });
        }
        check_depth(bytes)?;
        let ty = peek_type(bytes)?;
        decode_as(ty, bytes)
    }
}

/// Reads only `type`, skipping every other value without allocating it.
fn peek_type(bytes: &[u8]) -> Result<PduType, DecodeError> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(rename = "type", borrow, default)]
        ty: Option<Cow<'a, str>>,
    }
    let peek: Peek<'_> = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => DecodeError::MissingType,
        _ => syntax_error(&e),
    })?;
    let name = peek.ty.ok_or(DecodeError::MissingType)?;
    PduType::from_name(&name).ok_or_else(|| {
        let mut shown: String = name.chars().take(MAX_ID).collect();
        shown.shrink_to_fit();
        DecodeError::UnknownType(shown)
    })
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], pdu_type: &'static str) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => {
            let reason = e.to_string();
            match reason.strip_prefix(LIMIT_PREFIX) {
                Some(rest) => DecodeError::LimitExceeded {
                    pdu_type,
                    reason: rest.to_owned(),
                },
                None => DecodeError::InvalidField { pdu_type, reason },
            }
        }
        _ => syntax_error(&e),
    })
}

fn syntax_error(e: &serde_json::Error) -> DecodeError {
    match e.classify() {
        Category::Eof => DecodeError::Truncated,
        _ => DecodeError::Syntax { reason: e.to_string() },
    }
}

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`], in one pass over the
/// bytes, so the parser never recurses on hostile nesting.
fn check_depth(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(DecodeError::TooDeep { max: MAX_JSON_DEPTH });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
