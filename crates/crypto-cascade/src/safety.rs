//! Safety numbers: Signal's numeric fingerprint (60 digits) and its
//! scannable form for a QR code, from libsignal's `fingerprint` module.
//!
//! The number covers the account identity keys only; the MLS signature keys
//! and ML-KEM keys are bound to them by signature (see [`crate::identity`]),
//! so verifying the number verifies every layer's long-term key.
//!
//! Strata's stable identifiers are domain-separated
//! (`"strata/v1/safety-number:" ‖ id`) so a Strata number can never equal a
//! Signal number for the same keys. [`SafetyNumber::signal_compatible`]
//! computes the plain Signal number (used for the published test vector).

use libsignal_protocol_syft::{Fingerprint, FingerprintError, IdentityKey, ScannableFingerprint};
use subtle::ConstantTimeEq as _;

use crate::error::{CascadeError, Result};

/// Hash iterations, as in Signal's apps and test vectors.
pub const SAFETY_NUMBER_ITERATIONS: u32 = 5200;
/// Version of the scannable (QR) encoding.
pub const SCANNABLE_VERSION: u32 = 2;
const STABLE_ID_PREFIX: &[u8] = b"strata/v1/safety-number:";

fn map_err(e: FingerprintError) -> CascadeError {
    match e {
        FingerprintError::VersionMismatch { .. } => CascadeError::Malformed {
            what: "scanned safety number version",
        },
        FingerprintError::ParsingError(_) => CascadeError::Malformed {
            what: "scanned safety number",
        },
        FingerprintError::InvalidIterationCount(_) => CascadeError::InvalidArgument("safety number iterations"),
    }
}

/// The safety number of a pair of accounts, as seen from the local side.
#[derive(Debug, Clone)]
pub struct SafetyNumber {
    fingerprint: Fingerprint,
}

impl SafetyNumber {
    /// Strata's safety number between the local account (`local_id`,
    /// `local_key`) and the remote one. The ids are the accounts' stable
    /// identifiers.
    pub fn new(local_id: &[u8], local_key: &IdentityKey, remote_id: &[u8], remote_key: &IdentityKey) -> Result<Self> {
        let local = [STABLE_ID_PREFIX, local_id].concat();
        let remote = [STABLE_ID_PREFIX, remote_id].concat();
        Self::signal_compatible(SCANNABLE_VERSION, &local, local_key, &remote, remote_key)
    }

    /// Signal's own safety number, with raw stable identifiers.
    pub fn signal_compatible(
        scannable_version: u32,
        local_id: &[u8],
        local_key: &IdentityKey,
        remote_id: &[u8],
        remote_key: &IdentityKey,
    ) -> Result<Self> {
        let fingerprint = Fingerprint::new(
            scannable_version,
            SAFETY_NUMBER_ITERATIONS,
            local_id,
            local_key,
            remote_id,
            remote_key,
        )
        .map_err(map_err)?;
        Ok(Self { fingerprint })
    }

    /// The 60 digits, identical on both sides.
    pub fn digits(&self) -> Result<String> {
        self.fingerprint.display_string().map_err(map_err)
    }

    /// The 60 digits in 12 groups of 5, as apps show them.
    pub fn grouped(&self) -> Result<String> {
        let digits = self.digits()?;
        let groups: Vec<&str> = digits
            .as_bytes()
            .chunks(5)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        Ok(groups.join(" "))
    }

    /// The scannable form (protobuf `CombinedFingerprints`) to put in a QR
    /// code.
    pub fn scannable(&self) -> Result<Vec<u8>> {
        self.fingerprint.scannable.serialize().map_err(map_err)
    }

    /// True when the peer's scanned QR payload matches this number
    /// (constant-time comparison, done by libsignal). A payload of another
    /// version is an error.
    pub fn matches_scanned(&self, scanned: &[u8]) -> Result<bool> {
        // Reject a syntactically invalid payload before comparing.
        ScannableFingerprint::deserialize(scanned).map_err(map_err)?;
        self.fingerprint.scannable.compare(scanned).map_err(map_err)
    }

    /// True when `typed` (digits, spaces allowed) is this number; compared
    /// in constant time.
    pub fn matches_digits(&self, typed: &str) -> Result<bool> {
        let typed: Vec<u8> = typed.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        let ours = self.digits()?;
        Ok(typed.len() == ours.len() && bool::from(typed.ct_eq(ours.as_bytes())))
    }
}
