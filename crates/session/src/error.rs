//! The crate's errors. Bad peer input is never an error of these types: the
//! machine answers it with a `protocol-error` PDU and drops it. What is left
//! is local: storage, misuse of the API, and bugs.

use strata_cascade::CascadeError;
use strata_store::StoreError;

/// Why a session step or an actor request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed. The machine's memory may be ahead of the disk: the
    /// owner should drop the machine and rebuild it from the store.
    #[error("storage: {0}")]
    Storage(#[from] StoreError),
    /// The cascade failed on our own data (not on peer input).
    #[error("cascade: {0}")]
    Cascade(#[from] CascadeError),
    /// The request cannot be carried out in this state (e.g. accepting an
    /// identity change that is not pending).
    #[error("invalid request: {0}")]
    Misuse(&'static str),
    /// The peer's pinned identity key is not the one the caller expects
    /// (see [`Command::OpenExpecting`](crate::Command::OpenExpecting)).
    #[error("the peer's identity key is not the expected one")]
    IdentityMismatch,
    /// A KeyPackage claim failed: the peer did not answer in time, or its
    /// package failed the checks (see
    /// [`Event::KeyPackageClaimFailed`](crate::Event::KeyPackageClaimFailed)).
    #[error("KeyPackage claim failed: {0}")]
    ClaimFailed(String),
    /// The named peer or session does not exist.
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// A mailbox was full or an actor has stopped.
    #[error("actor unavailable: {0}")]
    Unavailable(&'static str),
    /// The peer's outbox is full ([`Config::max_outbox`](crate::Config::max_outbox)
    /// messages not yet acknowledged): send again once some are delivered.
    #[error("busy: {queued} messages to this peer wait for delivery")]
    Busy {
        /// Messages queued to the peer.
        queued: usize,
    },
    /// An invite or key-exchange message was refused; nothing changed.
    #[error("key exchange refused: {0}")]
    Kx(#[from] KxRefusal),
    /// A bug or a broken invariant.
    #[error("internal: {0}")]
    Internal(String),
}

/// The class of a [`SessionError`], for callers that map errors to exit
/// codes or API errors without matching every variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Persistent state could not be read or written.
    Storage,
    /// The caller asked for something impossible now.
    Misuse,
    /// Temporarily unavailable (back-pressure, stopped actor).
    Transient,
    /// The peer is not who the caller expects.
    Verification,
    /// A bug.
    Internal,
}

impl SessionError {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Storage(StoreError::KeyPackageRejected { .. } | StoreError::KeyPackageReused) => {
                ErrorKind::Verification
            }
            Self::Storage(_) => ErrorKind::Storage,
            Self::Cascade(e) => match e.class() {
                strata_cascade::ErrorClass::Storage => ErrorKind::Storage,
                strata_cascade::ErrorClass::Misuse | strata_cascade::ErrorClass::BadPeerInput => ErrorKind::Misuse,
                strata_cascade::ErrorClass::Internal => ErrorKind::Internal,
            },
            Self::Misuse(_) | Self::UnknownPeer(_) => ErrorKind::Misuse,
            Self::Unavailable(_) | Self::ClaimFailed(_) | Self::Busy { .. } => ErrorKind::Transient,
            Self::IdentityMismatch => ErrorKind::Verification,
            Self::Kx(KxRefusal::TooMany) => ErrorKind::Transient,
            Self::Kx(_) => ErrorKind::Verification,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// Why an invite or a KX message was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KxRefusal {
    /// Not an `RMO`, over its caps, or not the JSON expected.
    #[error("malformed KX message: {0}")]
    Format(#[from] strata_proto::kx::KxFormatError),
    /// A forged or altered identity, invite or half, or a seal that does
    /// not open with our key.
    #[error("KX check failed: {0}")]
    Check(strata_cascade::kx::KxError),
    /// The invite (or the exchange it started) is past its expiry.
    #[error("the invite expired")]
    Expired,
    /// Our own invite, or a half KX from our own account.
    #[error("an invite of this account: a key exchange needs two accounts")]
    SelfAddressed,
    /// The invite answered another invitee already.
    #[error("the invite was used")]
    Used,
    /// This invite was accepted here before and the exchange completed.
    #[error("this invite was accepted already")]
    AlreadyAccepted,
    /// The installation is pinned to another account key.
    #[error("the installation is a contact with another identity key")]
    InstallationClaimed,
    /// Another kind of message than this rendezvous point waits for.
    #[error("unexpected KX message here")]
    Unexpected,
    /// Over the size a sealed KX message can have.
    #[error("a KX frame of {0} bytes")]
    Oversized(usize),
    /// Nothing waits at this rendezvous point.
    #[error("nothing waits at this rendezvous point")]
    Unknown,
    /// Too many invites open, or too many exchanges under way.
    #[error("too many key exchanges open")]
    TooMany,
    /// No exchange with this installation ever completed: nothing to reset.
    #[error("no key exchange with this installation to reset")]
    NotMet,
    /// A reset, an introduction, or the answer to one, from another
    /// account or installation than the one it is for.
    #[error("from another account or installation than the one it is for")]
    NotThePeer,
    /// An introduction this side did not ask for (or not through this
    /// mediator).
    #[error("an introduction nobody asked for")]
    Unrequested,
    /// Introductions crossed: both sides invited each other, and the other
    /// side's invite goes (BisonRelay's rule: the lower initial rendezvous
    /// point aborts).
    #[error("introductions crossed: the other invite goes")]
    Crossed,
    /// The installation was met already.
    #[error("already met")]
    Met,
}

impl From<strata_cascade::kx::KxError> for KxRefusal {
    fn from(e: strata_cascade::kx::KxError) -> Self {
        match e {
            strata_cascade::kx::KxError::Expired => Self::Expired,
            other => Self::Check(other),
        }
    }
}
