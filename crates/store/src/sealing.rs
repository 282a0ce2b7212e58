//! The storage key and the values it seals: how the key is obtained
//! ([`KeySource`], [`load_or_create_key_file`]), and how a value is sealed
//! into, and opened from, its row.
//!
//! Sealing binds a value to its table and row key, so a value copied into
//! another row fails to open.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use strata_cascade::at_rest::{KdfParams, StorageKey};
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::kv::{ReadTx, Table, WriteTx};

/// How the storage key is obtained.
pub enum KeySource<'a> {
    /// Derive it from a passphrase with Argon2id. The salt and the cost are
    /// stored in the database when it is created.
    Passphrase {
        /// The passphrase.
        passphrase: &'a [u8],
        /// Argon2id cost for a new database (an existing one keeps its own).
        params: KdfParams,
    },
    /// Use this key (e.g. from [`load_or_create_key_file`]).
    Key(StorageKey),
}

/// Reads the 32-byte storage key from `path`, or creates the file with a
/// fresh key and mode 0600. Refuses a key file that others can read.
pub fn load_or_create_key_file(path: &Path) -> Result<StorageKey, StoreError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    match fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(StoreError::KeyFile(format!(
                    "{} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    meta.permissions().mode() & 0o777
                )));
            }
            let bytes = Zeroizing::new(fs::read(path).map_err(|e| StoreError::KeyFile(e.to_string()))?);
            StorageKey::from_bytes(&bytes).map_err(|e| StoreError::KeyFile(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = StorageKey::generate(&mut rand::rng());
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::KeyFile(e.to_string()))?;
            file.write_all(key.expose_bytes())
                .map_err(|e| StoreError::KeyFile(e.to_string()))?;
            file.sync_all().map_err(|e| StoreError::KeyFile(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(StoreError::KeyFile(e.to_string())),
    }
}

/// The slot a sealed value belongs to: its table and row key, bound by the
/// seal.
fn slot(table: Table, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(table.name().len() + 1 + key.len());
    aad.extend_from_slice(table.name().as_bytes());
    aad.push(0);
    aad.extend_from_slice(key);
    aad
}

/// Opens `sealed`, read from row `k` of `table`.
pub(crate) fn open_value(
    key: &StorageKey,
    table: Table,
    k: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    key.open(&slot(table, k), sealed).map_err(|_| StoreError::Corrupt {
        table: table.name(),
        reason: "value failed to authenticate".into(),
    })
}

/// Reads and opens row `k` of `table`, if there is one.
pub(crate) fn open_sealed(
    tx: &dyn ReadTx,
    key: &StorageKey,
    table: Table,
    k: &[u8],
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    tx.get(table, k)?
        .map(|sealed| open_value(key, table, k, &sealed))
        .transpose()
}

/// Seals `plaintext` into row `k` of `table`.
pub(crate) fn put_sealed(
    tx: &mut dyn WriteTx,
    key: &StorageKey,
    table: Table,
    k: &[u8],
    plaintext: &[u8],
) -> Result<(), StoreError> {
    let sealed = key
        .seal(&slot(table, k), plaintext, &mut rand::rng())
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    tx.put(table, k, &sealed)
}
