//! The store's errors, split into the classes callers act on.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The passphrase or key file does not open this database. Nothing was
    /// changed.
    #[error("wrong passphrase or key file for this database")]
    WrongKey,
    /// The database was written by a newer Strata (schema `found`, this build
    /// understands up to `supported`). Nothing was changed.
    #[error("database schema {found} is newer than this build supports ({supported}); upgrade Strata")]
    NewerSchema {
        /// The database's schema version.
        found: u32,
        /// The newest this build knows.
        supported: u32,
    },
    /// A stored value failed to authenticate or decode: the file was
    /// tampered with or damaged.
    #[error("corrupt record in {table}: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The caller asked for something that cannot be done (e.g. a record
    /// that does not exist where one must).
    #[error("invalid request: {0}")]
    Misuse(String),
    /// Another process (or another handle in this one) has the database
    /// open; redb allows one at a time. Nothing was changed.
    #[error("the database {} is in use by another process", path.display())]
    InUse {
        /// The database file.
        path: std::path::PathBuf,
    },
    /// A KeyPackage received from a peer failed its check (encoding,
    /// signature, ciphersuite, lifetime, binding to the peer)
    /// and was not stored.
    #[error("KeyPackage rejected: {reason}")]
    KeyPackageRejected {
        /// Why.
        reason: String,
    },
    /// A KeyPackage received from a peer repeats the `init_key` of another
    /// package of that peer, stored or already used (RFC 9420 §10: a
    /// one-time package is used once); it was not stored.
    #[error("KeyPackage rejected: its init_key was seen before from this installation")]
    KeyPackageReused,
    /// The backend (file system, redb) failed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A key file could not be read or created safely.
    #[error("key file: {0}")]
    KeyFile(String),
}

impl StoreError {
    pub(crate) fn backend(e: impl std::fmt::Display) -> Self {
        Self::Backend(e.to_string())
    }
}
