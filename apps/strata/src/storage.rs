//! Opening the sealed store of a data directory.
//!
//! The storage key comes from `STRATA_PASSPHRASE` (Argon2id, with the
//! store's own salt and cost) when it is set, else from the key file
//! `storage.key` (32 random bytes, mode 0600) that `strata init` creates.
//! Only `init` ever creates a key file: every other command refuses to run
//! on a store it cannot unlock rather than invent a new key.

use std::os::unix::fs::PermissionsExt as _;

use strata_cascade::at_rest::KdfParams;
use strata_store::{KeySource, RedbBackend, Store, load_or_create_key_file};
use zeroize::Zeroizing;

use crate::error::{AppError, ErrorKind, Result};
use crate::paths::DataDir;

/// The environment variable holding the store's passphrase.
pub(crate) const PASSPHRASE_ENV: &str = "STRATA_PASSPHRASE";

/// The store of a node.
pub(crate) type NodeStore = Store<RedbBackend>;

/// How the store is unlocked.
pub(crate) enum Unlock {
    /// With this passphrase.
    Passphrase(Zeroizing<Vec<u8>>),
    /// With the key file in the data directory.
    KeyFile,
}

impl Unlock {
    /// From `STRATA_PASSPHRASE`, else the key file. An empty passphrase is
    /// refused: it is always a mistake (an unset variable in a script).
    pub(crate) fn from_env() -> Result<Self> {
        match std::env::var_os(PASSPHRASE_ENV) {
            None => Ok(Self::KeyFile),
            Some(value) if value.is_empty() => Err(AppError::new(
                ErrorKind::Usage,
                format!("{PASSPHRASE_ENV} is set but empty"),
            )
            .hint("set it to the passphrase, or unset it to use the key file")),
            Some(value) => {
                let value = value.into_string().map_err(|_| {
                    AppError::new(ErrorKind::Usage, format!("{PASSPHRASE_ENV} is not valid UTF-8"))
                        .hint("use a passphrase of UTF-8 characters")
                })?;
                Ok(Self::Passphrase(Zeroizing::new(value.into_bytes())))
            }
        }
    }

    /// How the CLI describes it.
    pub(crate) fn describe(&self, dir: &DataDir) -> String {
        match self {
            Self::Passphrase(_) => format!("passphrase from {PASSPHRASE_ENV}"),
            Self::KeyFile => format!(
                "key file {} (mode 0600; back it up with the store)",
                dir.key_file().display()
            ),
        }
    }
}

/// Creates a new store in `dir` (for `init`): a key file is created when no
/// passphrase is given.
pub(crate) fn create(dir: &DataDir, unlock: &Unlock) -> Result<NodeStore> {
    let path = dir.store_file();
    let source = match unlock {
        Unlock::Passphrase(passphrase) => KeySource::Passphrase {
            passphrase,
            params: KdfParams::RECOMMENDED,
        },
        Unlock::KeyFile => {
            KeySource::Key(load_or_create_key_file(&dir.key_file()).map_err(|e| AppError::store(e, &path))?)
        }
    };
    let backend = RedbBackend::open(&path).map_err(|e| AppError::store(e, &path))?;
    // redb creates the file with the process umask; it holds only sealed
    // values, but nobody else has any business reading it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| crate::paths::io_error("restrict the permissions of", &path, &e))?;
    Store::open(backend, source).map_err(|e| AppError::store(e, &path))
}

/// Opens the existing store of `dir`.
pub(crate) fn open(dir: &DataDir, unlock: &Unlock) -> Result<NodeStore> {
    let path = dir.store_file();
    if !path.exists() {
        return Err(AppError::new(
            ErrorKind::NotInitialized,
            format!("{} has no Strata store", dir.root().display()),
        )
        .hint("run `strata init` to create an identity there, or pass the right --data-dir"));
    }
    let source = match unlock {
        Unlock::Passphrase(passphrase) => KeySource::Passphrase {
            passphrase,
            params: KdfParams::RECOMMENDED,
        },
        Unlock::KeyFile => {
            let key_file = dir.key_file();
            if !key_file.exists() {
                return Err(AppError::new(
                    ErrorKind::Locked,
                    format!(
                        "cannot unlock the store {}: no key file and no passphrase",
                        path.display()
                    ),
                )
                .hint(format!(
                    "set {PASSPHRASE_ENV} if the store was created with a passphrase, \
                     or restore {} from your backup",
                    key_file.display()
                )));
            }
            KeySource::Key(load_or_create_key_file(&key_file).map_err(|e| AppError::store(e, &path))?)
        }
    };
    let backend = RedbBackend::open(&path).map_err(|e| AppError::store(e, &path))?;
    Store::open(backend, source).map_err(|e| AppError::store(e, &path))
}
