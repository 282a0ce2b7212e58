//! Error kinds, their exit codes, and the one error type of the app.
//!
//! Every failure the user can meet is an [`AppError`]: a [`ErrorKind`] (what
//! class of thing went wrong, which fixes the exit code and the control
//! API's error code), a message that says what happened, and a hint that
//! says what to do. The table in the README is [`ErrorKind::ALL`].

use std::fmt;

use serde::{Deserialize, Serialize};
use strata_store::StoreError;

/// The class of an error. One exit code per kind; the codes are stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ErrorKind {
    /// A bug or an unexpected failure.
    Internal,
    /// Bad command-line arguments (clap reports these itself, with code 2).
    Usage,
    /// The config file or a `STRATA_*` variable is invalid.
    Config,
    /// The data directory has no identity yet.
    NotInitialized,
    /// `init` would replace an existing identity.
    AlreadyInitialized,
    /// The passphrase or key file does not open the store.
    Locked,
    /// The store is damaged, from a newer Strata, or cannot be read.
    Storage,
    /// Another `strata` process uses the data directory.
    Busy,
    /// The command needs a running `strata run`.
    NoDaemon,
    /// The control API refused the token.
    Unauthorized,
    /// The peer or contact is unknown.
    NotFound,
    /// Safety numbers differ, or a contact URI names another account.
    VerificationFailed,
    /// An address could not be bound or reached.
    Network,
    /// The feature is turned off by the configuration.
    NotAvailable,
}

impl ErrorKind {
    /// Every kind, in exit-code order.
    pub(crate) const ALL: &'static [ErrorKind] = &[
        ErrorKind::Internal,
        ErrorKind::Usage,
        ErrorKind::Config,
        ErrorKind::NotInitialized,
        ErrorKind::AlreadyInitialized,
        ErrorKind::Locked,
        ErrorKind::Storage,
        ErrorKind::Busy,
        ErrorKind::NoDaemon,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::VerificationFailed,
        ErrorKind::Network,
        ErrorKind::NotAvailable,
    ];

    /// The process exit code.
    pub(crate) const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Internal => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Config => 3,
            ErrorKind::NotInitialized => 4,
            ErrorKind::AlreadyInitialized => 5,
            ErrorKind::Locked => 6,
            ErrorKind::Storage => 7,
            ErrorKind::Busy => 8,
            ErrorKind::NoDaemon => 9,
            ErrorKind::Unauthorized => 10,
            ErrorKind::NotFound => 11,
            ErrorKind::VerificationFailed => 12,
            ErrorKind::Network => 13,
            ErrorKind::NotAvailable => 14,
        }
    }

    /// The kebab-case name used in JSON output and API errors.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            ErrorKind::Internal => "internal",
            ErrorKind::Usage => "usage",
            ErrorKind::Config => "config",
            ErrorKind::NotInitialized => "not-initialized",
            ErrorKind::AlreadyInitialized => "already-initialized",
            ErrorKind::Locked => "locked",
            ErrorKind::Storage => "storage",
            ErrorKind::Busy => "busy",
            ErrorKind::NoDaemon => "no-daemon",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not-found",
            ErrorKind::VerificationFailed => "verification-failed",
            ErrorKind::Network => "network",
            ErrorKind::NotAvailable => "not-available",
        }
    }

    /// What the kind means, for the exit-code table.
    pub(crate) const fn meaning(self) -> &'static str {
        match self {
            ErrorKind::Internal => "a bug or an unexpected failure",
            ErrorKind::Usage => "bad command-line arguments",
            ErrorKind::Config => "the config file or a STRATA_* variable is invalid",
            ErrorKind::NotInitialized => "no identity in the data directory: run `strata init`",
            ErrorKind::AlreadyInitialized => "`init` would replace an identity (use --force)",
            ErrorKind::Locked => {
                "wrong or missing passphrase (STRATA_PASSPHRASE, or STRATA_BACKUP_PASSPHRASE for a backup) or key file"
            }
            ErrorKind::Storage => "the store is damaged, from a newer Strata, or unreadable",
            ErrorKind::Busy => "another strata process uses the data directory, or the node is busy: try again later",
            ErrorKind::NoDaemon => "the command needs a running `strata run`",
            ErrorKind::Unauthorized => "the control API refused the token",
            ErrorKind::NotFound => "unknown peer, contact or file",
            ErrorKind::VerificationFailed => {
                "the peer is not who the safety number or contact URI says; nothing was recorded"
            }
            ErrorKind::Network => "an address could not be bound or reached",
            ErrorKind::NotAvailable => "the feature is turned off by the configuration",
        }
    }
}

/// The exit-code table, for `strata --help`.
pub(crate) fn exit_code_help() -> String {
    let mut text = String::from("Exit codes:\n  0  success\n");
    for kind in ErrorKind::ALL {
        text.push_str(&format!(
            "  {:<2} {:<20} {}\n",
            kind.exit_code(),
            kind.name(),
            kind.meaning()
        ));
    }
    text
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure: its kind, what happened, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppError {
    /// The class, which fixes the exit code.
    pub(crate) kind: ErrorKind,
    /// What happened.
    pub(crate) message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hint: Option<String>,
}

impl AppError {
    /// An error of `kind` saying what happened.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what the user should do.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A bug or an unexpected failure of something we do not control.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
            .hint("this is unexpected; rerun with RUST_LOG=debug and report it with the output")
    }

    /// Maps a store error met while opening or using the store at `path`.
    pub(crate) fn store(error: StoreError, path: &std::path::Path) -> Self {
        let path = path.display();
        match error {
            StoreError::WrongKey => Self::new(
                ErrorKind::Locked,
                format!("the passphrase or key file does not open the store {path}"),
            )
            .hint("set STRATA_PASSPHRASE to the passphrase given at `strata init`, or restore the storage.key file"),
            StoreError::Misuse(reason) if reason.contains("locked with") => {
                let hint = if reason.contains("with a passphrase") {
                    "set STRATA_PASSPHRASE to the passphrase given at `strata init`"
                } else {
                    "unset STRATA_PASSPHRASE: this store uses the storage.key file in the data directory"
                };
                Self::new(ErrorKind::Locked, format!("cannot open the store {path}: {reason}")).hint(hint)
            }
            StoreError::NewerSchema { .. } => {
                Self::new(ErrorKind::Storage, format!("cannot open the store {path}: {error}"))
                    .hint("upgrade strata to the version that wrote this store")
            }
            StoreError::Corrupt { .. } => Self::new(ErrorKind::Storage, format!("the store {path} is damaged: {error}"))
                .hint("restore the data directory from a backup, or start over with `strata init --force`"),
            StoreError::KeyFile(reason) => {
                Self::new(ErrorKind::Locked, format!("storage key file: {reason}")).hint(
                    "the key file must be 32 bytes, readable only by you (chmod 600), next to the store; \
                     or set STRATA_PASSPHRASE if the store was created with a passphrase",
                )
            }
            // Another process has the file open (redb's lock).
            StoreError::InUse { .. } => Self::new(
                ErrorKind::Busy,
                format!("another strata process has the store {path} open"),
            )
            .hint("stop the other process (a `strata run` daemon?), or let this command talk to it through its control API"),
            other => Self::new(ErrorKind::Storage, format!("store {path}: {other}"))
                .hint("check that the data directory is on a writable, healthy disk"),
        }
    }
}

/// A library error that knows its class (Arti's `HasKind`): the one path
/// from a store, cascade or session failure to the CLI's exit code and the
/// API's error code, so a storage failure is reported as one, not as
/// `internal`.
pub(crate) trait HasKind: fmt::Display {
    /// The class of the error.
    fn kind(&self) -> ErrorKind;
}

impl HasKind for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::WrongKey | StoreError::KeyFile(_) => ErrorKind::Locked,
            StoreError::InUse { .. } => ErrorKind::Busy,
            StoreError::Misuse(_) => ErrorKind::Internal,
            StoreError::KeyPackageRejected { .. } | StoreError::KeyPackageReused => ErrorKind::VerificationFailed,
            _ => ErrorKind::Storage,
        }
    }
}

impl HasKind for strata_cascade::CascadeError {
    fn kind(&self) -> ErrorKind {
        match self.class() {
            strata_cascade::ErrorClass::Storage => ErrorKind::Storage,
            strata_cascade::ErrorClass::BadPeerInput => ErrorKind::VerificationFailed,
            strata_cascade::ErrorClass::Misuse | strata_cascade::ErrorClass::Internal => ErrorKind::Internal,
        }
    }
}

impl HasKind for strata_session::SessionError {
    fn kind(&self) -> ErrorKind {
        match strata_session::SessionError::kind(self) {
            strata_session::ErrorKind::Storage => ErrorKind::Storage,
            strata_session::ErrorKind::Misuse => ErrorKind::Usage,
            strata_session::ErrorKind::Transient => ErrorKind::Busy,
            strata_session::ErrorKind::Verification => ErrorKind::VerificationFailed,
            strata_session::ErrorKind::Internal => ErrorKind::Internal,
        }
    }
}

impl AppError {
    /// `context: error`, of the error's own kind (see [`HasKind`]).
    pub(crate) fn caused(context: &str, error: &impl HasKind) -> Self {
        let kind = error.kind();
        let error = Self::new(kind, format!("{context}: {error}"));
        match kind {
            ErrorKind::Internal => {
                error.hint("this is unexpected; rerun with RUST_LOG=debug and report it with the output")
            }
            ErrorKind::Storage => {
                error.hint("the store may be damaged or the disk full; check the disk, then see `strata run -v`")
            }
            _ => error,
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AppError {}

/// The app's result type.
pub(crate) type Result<T, E = AppError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_in_table_order() {
        let codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        let unique: HashSet<u8> = codes.iter().copied().collect();
        assert_eq!(unique.len(), codes.len(), "duplicate exit code in {codes:?}");
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "ALL is not in exit-code order");
        assert!(!codes.contains(&0), "0 is success");
        // clap exits with 2 on bad arguments: the Usage kind must agree.
        assert_eq!(ErrorKind::Usage.exit_code(), 2);
    }

    #[test]
    fn the_readme_documents_every_exit_code() {
        let readme = include_str!("../README.md");
        for kind in ErrorKind::ALL {
            let row = format!("| {} | `{}` |", kind.exit_code(), kind.name());
            assert!(readme.contains(&row), "README lacks the row {row}");
        }
        let help = exit_code_help();
        assert_eq!(help.lines().count(), ErrorKind::ALL.len() + 2);
    }

    #[test]
    fn names_round_trip_through_json() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            let back: ErrorKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *kind);
        }
    }

    #[test]
    fn store_errors_map_to_kinds_with_hints() {
        let path = std::path::Path::new("store.redb");
        let cases = [
            (StoreError::WrongKey, ErrorKind::Locked),
            (
                StoreError::Misuse("this database is locked with a passphrase, not a key file".into()),
                ErrorKind::Locked,
            ),
            (StoreError::NewerSchema { found: 9, supported: 1 }, ErrorKind::Storage),
            (
                StoreError::InUse {
                    path: path.to_path_buf(),
                },
                ErrorKind::Busy,
            ),
            (StoreError::Backend("disk full".into()), ErrorKind::Storage),
        ];
        for (error, kind) in cases {
            let mapped = AppError::store(error, path);
            assert_eq!(mapped.kind, kind, "{mapped}");
            assert!(mapped.hint.is_some(), "{mapped}");
            assert!(
                mapped.message.contains("store.redb") || kind == ErrorKind::Locked,
                "{mapped}"
            );
        }
        let passphrase = AppError::store(
            StoreError::Misuse("this database is locked with a passphrase, not a key file".into()),
            path,
        );
        assert!(passphrase.hint.unwrap().contains("STRATA_PASSPHRASE"));
    }
}
