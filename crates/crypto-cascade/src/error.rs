//! The crate's one error type, split into classes so callers can tell a
//! hostile or broken peer from their own mistakes and from bugs.

/// Which side is at fault for a [`CascadeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The peer sent something malformed, forged, replayed or out of window.
    /// Answer with `protocol-error` and drop it; state is unchanged.
    BadPeerInput,
    /// The caller used the API wrongly (layer not set up, wrong argument).
    Misuse,
    /// Persisted state handed to an `import` function is corrupt.
    Storage,
    /// A bug or an unexpected failure inside a primitive crate.
    Internal,
}

/// Everything that can go wrong in the cascade.
///
/// Messages never contain key material or plaintext: only layer names,
/// counters, epochs and static descriptions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CascadeError {
    // ---- bad peer input -------------------------------------------------
    /// A field or message could not be parsed.
    #[error("malformed {what}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
    },
    /// A payload's layer list, sizes or headers do not match this cascade.
    #[error("payload does not match the layer stack: {0}")]
    StackMismatch(&'static str),
    /// An AEAD tag, MAC or signature did not verify: tampering or wrong key.
    #[error("authentication failed in the {layer} layer")]
    Authentication {
        /// The layer that rejected the message.
        layer: &'static str,
    },
    /// The message was already decrypted once.
    #[error("replayed message in the {layer} layer")]
    Replay {
        /// The layer that detected the replay.
        layer: &'static str,
    },
    /// The message is too far behind (its key was already evicted) or too
    /// far ahead (more than the allowed forward gap) of the receive chain.
    #[error("message outside the {layer} layer's window")]
    OutOfWindow {
        /// The layer whose window was exceeded.
        layer: &'static str,
    },
    /// The message names an epoch this side does not have (unknown, stale or
    /// not yet started).
    #[error("unknown or stale epoch {epoch} in the {layer} layer")]
    UnknownEpoch {
        /// The layer.
        layer: &'static str,
        /// The epoch the message named.
        epoch: u64,
    },
    /// A key was not bound to the expected identity key by a valid signature.
    #[error("key binding rejected: {0}")]
    BadBinding(&'static str),
    /// A received MLS KeyPackage was refused.
    #[error("KeyPackage rejected: {0}")]
    KeyPackageRejected(&'static str),
    /// The peer's identity key is not the pinned one.
    #[error("untrusted identity key")]
    UntrustedIdentity,
    /// A primitive crate refused the peer's message for a reason not covered
    /// above.
    #[error("{layer} layer refused the peer's message: {detail}")]
    PeerProtocol {
        /// The layer.
        layer: &'static str,
        /// The library's description (never contains key material).
        detail: String,
    },

    // ---- misuse ---------------------------------------------------------
    /// The layer has not been set up far enough for this call.
    #[error("{layer} layer not ready: {why}")]
    NotReady {
        /// The layer.
        layer: &'static str,
        /// What is missing.
        why: &'static str,
    },
    /// An argument was out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    // ---- storage --------------------------------------------------------
    /// Exported state could not be imported.
    #[error("corrupt persisted state: {0}")]
    CorruptState(&'static str),

    // ---- internal -------------------------------------------------------
    /// A primitive crate failed unexpectedly, or an invariant broke.
    #[error("internal error in the {layer} layer: {detail}")]
    Internal {
        /// The layer or module.
        layer: &'static str,
        /// A description (never contains key material).
        detail: String,
    },
}

impl CascadeError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Malformed { .. }
            | Self::StackMismatch(_)
            | Self::Authentication { .. }
            | Self::Replay { .. }
            | Self::OutOfWindow { .. }
            | Self::UnknownEpoch { .. }
            | Self::BadBinding(_)
            | Self::KeyPackageRejected(_)
            | Self::UntrustedIdentity
            | Self::PeerProtocol { .. } => ErrorClass::BadPeerInput,
            Self::NotReady { .. } | Self::InvalidArgument(_) => ErrorClass::Misuse,
            Self::CorruptState(_) => ErrorClass::Storage,
            Self::Internal { .. } => ErrorClass::Internal,
        }
    }

    pub(crate) fn internal(layer: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            layer,
            detail: detail.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = CascadeError> = std::result::Result<T, E>;
