//! The on-disk schema: its version, its migrations, and how a database is
//! initialised and unlocked.
//!
//! `meta` holds, in the clear: `schema` (u32, big-endian), `kdf` (how the
//! storage key is obtained: a key file, or Argon2id with its salt and cost),
//! and, sealed, `key_check` — a known value that proves a key opens this
//! database before anything else is read or written.

use serde::{Deserialize, Serialize};
use strata_cascade::at_rest::{KdfParams, StorageKey};

use crate::error::StoreError;
use crate::kv::{Backend, Table, WriteTx};
use crate::sealing::{KeySource, open_sealed, put_sealed};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 2;

/// `MIGRATIONS[n]` turns a version-`n + 1` database into version `n + 2`,
/// in the same transaction that records the new version.
const MIGRATIONS: &[Migration] = &[empty_key_package_tables];

/// 1 → 2: the KeyPackage pool gained expiry indexes and held packages, and
/// peers' packages a new key layout. The pool is emptied (the node stocks
/// it again at start; what version 1 handed out was used at once, in step
/// 2, and needs no private parts kept); version 1 stored no peer packages.
fn empty_key_package_tables(tx: &mut dyn WriteTx) -> Result<(), StoreError> {
    for table in [Table::KeyPackages, Table::PeerKeyPackages] {
        for (key, _) in tx.scan(table, &[], usize::MAX)? {
            tx.delete(table, &key)?;
        }
    }
    Ok(())
}

type Migration = fn(&mut dyn WriteTx) -> Result<(), StoreError>;

const SCHEMA: &[u8] = b"schema";
const KDF: &[u8] = b"kdf";
const KEY_CHECK: &[u8] = b"key_check";
const KEY_CHECK_VALUE: &[u8] = b"strata storage key check v1";

/// How this database's storage key is obtained (stored in the clear).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Kdf {
    /// A 32-byte key from a key file.
    KeyFile,
    /// Argon2id over a passphrase.
    Argon2id {
        #[serde(with = "crate::records::b64")]
        salt: Vec<u8>,
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    },
}

fn corrupt(reason: &str) -> StoreError {
    StoreError::Corrupt {
        table: Table::Meta.name(),
        reason: reason.into(),
    }
}

fn read_version(bytes: &[u8]) -> Result<u32, StoreError> {
    let array: [u8; 4] = bytes.try_into().map_err(|_| corrupt("schema version is not 4 bytes"))?;
    Ok(u32::from_be_bytes(array))
}

fn derive(kdf: &Kdf, source: KeySource<'_>) -> Result<StorageKey, StoreError> {
    match (kdf, source) {
        (Kdf::KeyFile, KeySource::Key(key)) => Ok(key),
        (
            Kdf::Argon2id {
                salt,
                m_cost_kib,
                t_cost,
                p_cost,
            },
            KeySource::Passphrase { passphrase, .. },
        ) => {
            let salt: &[u8; 16] = salt
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("salt is not 16 bytes"))?;
            let params = KdfParams {
                m_cost_kib: *m_cost_kib,
                t_cost: *t_cost,
                p_cost: *p_cost,
            };
            StorageKey::derive(passphrase, salt, params).map_err(|e| corrupt(&e.to_string()))
        }
        (Kdf::KeyFile, KeySource::Passphrase { .. }) => Err(StoreError::Misuse(
            "this database is locked with a key file, not a passphrase".into(),
        )),
        (Kdf::Argon2id { .. }, KeySource::Key(_)) => Err(StoreError::Misuse(
            "this database is locked with a passphrase, not a key file".into(),
        )),
    }
}

/// Initialises a new database or unlocks and migrates an existing one;
/// returns its storage key.
pub(crate) fn open(backend: &impl Backend, source: KeySource<'_>) -> Result<StorageKey, StoreError> {
    let existing = backend.read(|tx| {
        let version = tx.get(Table::Meta, SCHEMA)?.map(|v| read_version(&v)).transpose()?;
        let kdf = tx.get(Table::Meta, KDF)?;
        Ok((version, kdf))
    })?;
    match existing {
        (None, _) => init(backend, source),
        (Some(found), _) if found > SCHEMA_VERSION => Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        }),
        (Some(found), Some(kdf)) => {
            let kdf: Kdf = serde_json::from_slice(&kdf).map_err(|e| corrupt(&e.to_string()))?;
            let key = derive(&kdf, source)?;
            backend.read(|tx| match open_sealed(tx, &key, Table::Meta, KEY_CHECK) {
                Ok(Some(v)) if v.as_slice() == KEY_CHECK_VALUE => Ok(()),
                Ok(None) => Err(corrupt("no key check")),
                _ => Err(StoreError::WrongKey),
            })?;
            if found < SCHEMA_VERSION {
                migrate(backend, found)?;
            }
            Ok(key)
        }
        (Some(_), None) => Err(corrupt("no key derivation record")),
    }
}

fn init(backend: &impl Backend, source: KeySource<'_>) -> Result<StorageKey, StoreError> {
    let (kdf, key) = match source {
        KeySource::Key(key) => (Kdf::KeyFile, key),
        KeySource::Passphrase { passphrase, params } => {
            let mut salt = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
            let key = StorageKey::derive(passphrase, &salt, params).map_err(|e| StoreError::Misuse(e.to_string()))?;
            let kdf = Kdf::Argon2id {
                salt: salt.to_vec(),
                m_cost_kib: params.m_cost_kib,
                t_cost: params.t_cost,
                p_cost: params.p_cost,
            };
            (kdf, key)
        }
    };
    let kdf_bytes = serde_json::to_vec(&kdf).map_err(|e| StoreError::Misuse(e.to_string()))?;
    backend.write(|tx| {
        // Two processes may race to initialise: the loser finds a schema.
        if tx.get(Table::Meta, SCHEMA)?.is_some() {
            return Err(StoreError::Misuse(
                "database was initialised concurrently; open it again".into(),
            ));
        }
        tx.put(Table::Meta, SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
        tx.put(Table::Meta, KDF, &kdf_bytes)?;
        put_sealed(tx, &key, Table::Meta, KEY_CHECK, KEY_CHECK_VALUE)
    })?;
    Ok(key)
}

fn migrate(backend: &impl Backend, from: u32) -> Result<(), StoreError> {
    backend.write(|tx| {
        for version in from..SCHEMA_VERSION {
            let step = MIGRATIONS
                .get(version.saturating_sub(1) as usize)
                .ok_or_else(|| corrupt(&format!("no migration from schema {version}")))?;
            step(tx)?;
        }
        tx.put(Table::Meta, SCHEMA, &SCHEMA_VERSION.to_be_bytes())
    })
}
