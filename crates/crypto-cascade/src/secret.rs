//! Secret byte containers: zeroized on drop, redacted in `Debug`.

use std::fmt;

use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte secret (chain key, message key, epoch secret, exporter secret).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret32([u8; 32]);

impl Secret32 {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(array))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PartialEq for Secret32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Serialized state that contains secrets. Zeroized on drop; `Debug` shows
/// only the length; equality is constant-time in the contents.
///
/// The zeroizing lives in a non-generic, never-inlined `Drop` of this crate
/// rather than in `Zeroizing<Vec<u8>>`: generic drop code is compiled in
/// whichever crate drops the value, and a whole pair state (17-24 KB)
/// dropped in an unoptimised debug build of a caller was zeroized a byte at
/// a time through core's UB checks, a third of a session simulation's time.
#[derive(Clone, Default)]
pub struct SecretBytes(Vec<u8>);

impl Drop for SecretBytes {
    #[inline(never)]
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for SecretBytes {}

impl SecretBytes {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Wraps bytes read back from storage.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }

    /// The bytes, to write to storage.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([redacted; {} bytes])", self.0.len())
    }
}
