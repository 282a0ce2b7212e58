//! [`RedbBackend`]: the store in one redb file. Each [`Backend::write`] is
//! one redb write transaction with immediate durability, so a commit that
//! returned survives `kill -9` and one that did not leaves no trace.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};

use crate::error::StoreError;
use crate::kv::{Backend, Entry, ReadTx, Table, WriteTx, prefix_end};

const fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A redb-backed store file. Clones share the open database.
#[derive(Clone)]
pub struct RedbBackend {
    db: std::sync::Arc<Database>,
}

impl RedbBackend {
    /// Opens the database at `path`, creating it if it does not exist.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            // Typed, so callers can tell "stop the other process" from a
            // damaged file without matching on redb's message text.
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_path_buf(),
            },
            other => StoreError::backend(other),
        })?;
        // Create every table up front so readers never meet a missing one;
        // only when one is missing, so opening never writes by itself.
        let read = db.begin_read().map_err(StoreError::backend)?;
        let missing = Table::ALL
            .iter()
            .any(|t| matches!(read.open_table(definition(*t)), Err(TableError::TableDoesNotExist(_))));
        drop(read);
        if missing {
            let tx = db.begin_write().map_err(StoreError::backend)?;
            for table in Table::ALL {
                tx.open_table(definition(*table)).map_err(StoreError::backend)?;
            }
            tx.commit().map_err(StoreError::backend)?;
        }
        Ok(Self {
            db: std::sync::Arc::new(db),
        })
    }
}

fn scan_table(
    t: &impl ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let end = prefix_end(prefix);
    let range = match &end {
        Some(end) => t.range::<&[u8]>(prefix..end.as_slice()),
        None => t.range::<&[u8]>(prefix..),
    }
    .map_err(StoreError::backend)?;
    let mut out = Vec::new();
    for item in range.take(limit) {
        let (k, v) = item.map_err(StoreError::backend)?;
        out.push((k.value().to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

struct Read(redb::ReadTransaction);

impl Read {
    fn table(&self, table: Table) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>, StoreError> {
        self.0.open_table(definition(table)).map_err(|e| match e {
            TableError::TableDoesNotExist(_) => StoreError::Corrupt {
                table: table.name(),
                reason: "missing".into(),
            },
            other => StoreError::backend(other),
        })
    }
}

impl ReadTx for Read {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.table(table)?;
        Ok(t.get(key).map_err(StoreError::backend)?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        scan_table(&self.table(table)?, prefix, limit)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.table(table)?.len().map_err(StoreError::backend)
    }
}

struct Write(redb::WriteTransaction);

impl Write {
    fn table(&self, table: Table) -> Result<redb::Table<'_, &'static [u8], &'static [u8]>, StoreError> {
        self.0.open_table(definition(table)).map_err(StoreError::backend)
    }
}

impl ReadTx for Write {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.table(table)?;
        let value = t.get(key).map_err(StoreError::backend)?.map(|v| v.value().to_vec());
        Ok(value)
    }

    fn scan(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        scan_table(&self.table(table)?, prefix, limit)
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        self.table(table)?.len().map_err(StoreError::backend)
    }
}

impl WriteTx for Write {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.table(table)?.insert(key, value).map_err(StoreError::backend)?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let existed = self.table(table)?.remove(key).map_err(StoreError::backend)?.is_some();
        Ok(existed)
    }
}

impl Backend for RedbBackend {
    fn read<R>(&self, f: impl FnOnce(&dyn ReadTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let tx = self.db.begin_read().map_err(StoreError::backend)?;
        f(&Read(tx))
    }

    fn write<R>(&self, f: impl FnOnce(&mut dyn WriteTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut tx = Write(self.db.begin_write().map_err(StoreError::backend)?);
        // On `Err` the transaction is dropped, which aborts it.
        let out = f(&mut tx)?;
        tx.0.commit().map_err(StoreError::backend)?;
        Ok(out)
    }
}
