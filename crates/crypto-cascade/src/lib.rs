//! Strata's identity keys, the four cascade layers (MLS, Signal, ML-KEM-768,
//! AES-256-GCM), their composition, and safety numbers.
//!
//! This is the only crate that touches cryptographic primitives, and it
//! implements none: MLS is openmls, Signal is libsignal, the KEM is
//! RustCrypto `ml-kem`, the AEAD is `aes-gcm`, HKDF is `hkdf`. What is ours
//! is the *composition*, written down here and coded once (in `schedule`,
//! the layer modules and `cascade`).
//!
//! It is sans-I/O and synchronous: time (`now_ms`) and randomness are passed
//! in, nothing reads a clock for protocol decisions, and libsignal's `!Send`
//! store futures are polled on the caller's thread. It must never log or
//! print secrets: every secret type zeroizes on drop and prints
//! `[redacted]`.
//!
//! # Layers and order
//!
//! Encrypt: plaintext → [`MlsLayer`] → [`SignalLayer`] → [`MlKemLayer`] →
//! [`AesGcmLayer`] → `finalCiphertext` (Enkrypted Chat P5.2). Decrypt runs
//! the reverse. [`PairCascade`] is that stack; [`Cascade`] runs any stack of
//! [`Layer`]s (the Appendix A mock vectors use it) through the same
//! composition code.
//!
//! Each layer is keyed independently: MLS by its group's key schedule,
//! Signal by PQXDH and its Double Ratchet/SPQR, ML-KEM by its own KEM
//! exchange per epoch. The AES-GCM layer is keyed from *both* the MLS
//! exporter secret and the ML-KEM epoch secret, so it stays secret while
//! either of those layers does.
//!
//! `layerParameters[i]` carries only public headers (counters, epoch ids,
//! the KEM ciphertext of an unacknowledged epoch, the Signal message type):
//! never a key.
//!
//! | layer | `algorithm` / `version` | `layerParameters` |
//! |---|---|---|
//! | MLS | `MLS` / `strata-1` | `epoch` |
//! | Signal | `Signal` / `strata-1` | `type` (2 = Whisper, 3 = PreKey) |
//! | ML-KEM | `ML-KEM` / `strata-1` | `epoch`, `counter`, `ack`?, `kemKeyId`?, `kemCiphertext`? |
//! | AES-GCM | `AES-GCM-256` / `strata-1` | `counter` |
//!
//! # Key schedule (normative)
//!
//! HKDF is HKDF-SHA-256. `Extract(salt, ikm)`; `Expand(prk, info, 32)`.
//! Every label starts with `strata/v1/`. `‖` is concatenation; integers are
//! big-endian; `lp(x)` is a `u32` length followed by `x`. `S` and `R` are
//! the 16-byte sender and receiver installation ids.
//!
//! **Hash ratchet** (both ML-KEM and AES-GCM, label `L` = `ml-kem-768` or
//! `aes-256-gcm`), with the chain key `ck_n` used directly as HKDF PRK:
//!
//! ```text
//! mk_n     = Expand(ck_n, "strata/v1/" ‖ L ‖ "/message")
//! ck_{n+1} = Expand(ck_n, "strata/v1/" ‖ L ‖ "/chain")
//! ```
//!
//! Message `n` is sealed with AES-256-GCM under `mk_n`, nonce
//! `tag ‖ u64(n)` (`tag` = `"MLKM"` or `"AESG"`): counter nonces, never
//! random, and every key is used once. A receiver keeps at most
//! [`MAX_SKIPPED_KEYS`] (256) skipped message keys per chain (oldest evicted
//! first) and accepts a jump of at most [`MAX_FORWARD_GAP`] (1000). A used
//! key is deleted: reuse is a [`CascadeError::Replay`]; an evicted or too
//! distant counter is [`CascadeError::OutOfWindow`].
//!
//! **ML-KEM-768 layer** (epoch `e`, receiver key id `k`, KEM ciphertext
//! `ct`, shared secret `ss` from encapsulating to the receiver's
//! identity-signed encapsulation key):
//!
//! ```text
//! prk_e    = Extract("strata/v1/ml-kem-768/epoch", ss)
//! ctx_e    = S ‖ R ‖ u64(e) ‖ u32(k) ‖ lp(ct)
//! ck_0     = Expand(prk_e, "strata/v1/ml-kem-768/epoch-chain" ‖ ctx_e)
//! export_e = Expand(prk_e, "strata/v1/ml-kem-768/epoch-export" ‖ ctx_e)
//! ```
//!
//! One KEM exchange per epoch, never per message. `ct` travels in the
//! header of every message of the epoch until the receiver's own messages
//! carry `ack ≥ e`; a new epoch (new encapsulation) starts on
//! [`MlKemLayer::rotate_send_epoch`] or when the peer installs a new key.
//! Receivers keep the last three peer epochs and the last two own keys.
//!
//! **AES-256-GCM layer** for a message whose inner layers contributed
//! `(MLS, m, x_m)` and `(ML-KEM, e, export_e)`, where
//! `x_m = MLS-Exporter("strata/v1/cascade/aes-256-gcm", group_id, 32)` of
//! MLS epoch `m`:
//!
//! ```text
//! prk   = Extract("strata/v1/aes-256-gcm/epoch", x_m ‖ export_e)
//! ck_0  = Expand(prk, "strata/v1/aes-256-gcm/epoch-chain" ‖ S ‖ R
//!                     ‖ lp("MLS") ‖ u64(m) ‖ lp("ML-KEM") ‖ u64(e))
//! ```
//!
//! Each `(m, e)` pair and direction has its own chain; a change of either
//! epoch starts a new one (receivers keep four).
//!
//! **Resume proof** ([`PairCascade::resume_proof`]), so two installations
//! that kept their state can show each other they hold the same session
//! without a new handshake: `MLS-Exporter("strata/v1/resume-proof",
//! lp(context) ‖ S ‖ R, 32)` of the current MLS epoch, where the caller's
//! `context` carries its session id and fresh nonces. The proof is a value
//! of the MLS key schedule, so it needs no key of its own and no MAC
//! construction of ours; checking it is a constant-time comparison.
//!
//! # Binding the layers together
//!
//! Both AEADs we control (ML-KEM and AES-GCM layers) authenticate, as
//! associated data, the payload fields decryption depends on and the
//! headers of every layer up to and including their own:
//!
//! ```text
//! aad_i = "strata/v1/cascade-aad\0" ‖ S ‖ R ‖ u8(has_ts) ‖ u64(timestamp)
//!         ‖ u64(originalSize) ‖ u32(layer count)
//!         ‖ for j in 0..=i: lp(algorithm_j) ‖ lp(version_j) ‖ params_j
//! params   = u32(count) ‖ for each (name, value) in name order:
//!            lp(name) ‖ (0x01 ‖ u64 | 0x02 ‖ u8 | 0x03 ‖ lp(bytes))
//! ```
//!
//! The outermost layer thus covers every header; sender and receiver ids
//! stop reflection. The rest of the envelope is checked before any
//! decryption: layer count, names and versions must match the stack, every
//! `layers[i].timestamp` must equal `timestamp`, and `inputSize`/`outputSize`
//! must chain from `originalSize` to `finalSize` = `len(finalCiphertext)`
//! and match each layer's real output. Only `processingTime` and
//! `totalProcessingTime` are informative and unauthenticated.
//!
//! # Two-phase layers
//!
//! Every layer stages its change while a message passes through and
//! commits only when all layers succeeded ([`Layer`]): a tampered, replayed
//! or out-of-window message changes no state, and a failed send burns no
//! key. Identity bindings are in [`identity`]; safety numbers in [`safety`];
//! signed broadcast bundles (Waku 53/54 style) in [`bundle`]; KeyPackages
//! for an installation's pool, with their private parts detached for
//! sealed storage, from [`generate_key_package`] (joined later with
//! [`MlsLayer::with_key_package_secrets`]).
//!
//! # How this is checked
//!
//! - `tests/vectors.rs`: Enkrypted Chat Appendix A V1–V3 through
//!   [`Cascade`] with [`GoldenMockLayer`]s, and Signal's published
//!   safety-number vector.
//! - `tests/conversation.rs`: two installations from nothing to a working
//!   cascade, 1,000 messages both ways with reordering, reload mid-way, KEM
//!   and MLS epoch rotation. `tests/failures.rs`: tampering (every byte),
//!   truncation, replay, wrong epochs, out-of-window, no state change.
//! - `tests/interop.rs` + `tests/interop/peer.mjs`: Signal's Node client,
//!   ts-mls and mlkem against these layers, both directions; the JS peer
//!   re-implements the ML-KEM layer from the schedule above.
//! - `benches/cascade.rs`: `cargo bench -p strata-cascade` (criterion), and
//!   `-- figures` for the cascade / (openmls + libsignal) ratio and the
//!   wire size of a 256-byte message.

#![forbid(unsafe_code)]

pub mod at_rest;
pub mod bundle;
mod cascade;
mod codec;
pub mod devices;
mod error;
pub mod group;
pub mod identity;
mod key_packages;
pub mod kx;
mod layer;
pub mod layers;
mod pair;
pub mod pairing;
mod prekeys;
pub mod safety;
mod schedule;
#[cfg(feature = "seal-fingerprints")]
pub mod seal_fingerprints;
mod secret;

pub use cascade::{Cascade, FrozenStopwatch, MonotonicStopwatch, Stopwatch};
pub use error::{CascadeError, ErrorClass, Result};
pub use identity::{AccountIdentity, InstallationId, InstallationIdentity, ParseInstallationIdError, PeerIdentity};
pub use key_packages::{GeneratedKeyPackage, KeyPackageSecrets, generate_key_package};
pub use layer::{Contribution, Layer, LayerContext, LayerInfo, Sealed};
pub use layers::aes::{AES_ALGORITHM, AesGcmLayer};
pub use layers::mlkem::{KemKeyPair, MlKemLayer, SignedKemKey};
pub use layers::mls::{KeyPackageKind, MlsLayer, VerifiedKeyPackage, verify_key_package};
pub use layers::mock::GoldenMockLayer;
pub use layers::signal::{SignalBundle, SignalLayer};
/// The Signal identity key type, re-exported: account identity keys are
/// libsignal `IdentityKey`s.
pub use libsignal_protocol_syft::IdentityKey;
pub use pair::{PairCascade, RESUME_PROOF_LEN};
pub use prekeys::InstallationPreKeys;
pub use safety::SafetyNumber;
pub use schedule::{MAX_FORWARD_GAP, MAX_SKIPPED_KEYS};
pub use secret::SecretBytes;
