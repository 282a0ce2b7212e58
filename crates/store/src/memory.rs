//! [`MemoryBackend`]: the store in memory, with the same transaction
//! semantics as redb (serialised writers, all-or-nothing commits).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::error::StoreError;
use crate::kv::{Backend, Entry, ReadTx, Table, WriteTx, prefix_end};

type Map = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

/// An in-memory backend. Cloning shares the same data, which is how tests
/// model a process restart that keeps its disk.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    data: Arc<RwLock<Map>>,
    /// Serialises writers; held for a whole write transaction.
    writer: Arc<Mutex<()>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn scan_map(map: &Map, table: Table, prefix: &[u8], limit: usize) -> Vec<Entry> {
    let start = Bound::Included((table, prefix.to_vec()));
    let end = match prefix_end(prefix) {
        Some(end) => Bound::Excluded((table, end)),
        None => Bound::Unbounded,
    };
    map.range((start, end))
        .take_while(|((t, _), _)| *t == table)
        .take(limit)
        .map(|((_, k), v)| (k.clone(), v.clone()))
        .collect()
}

struct Snapshot<'a>(&'a Map);

impl ReadTx for Snapshot<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(&(table, key.to_vec())).cloned())
    }

    fn scan(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        Ok(scan_map(self.0, table, prefix, limit))
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        Ok(scan_map(self.0, table, &[], usize::MAX).len() as u64)
    }
}

/// A write transaction: its changes, kept apart from the shared map until
/// commit (`None` marks a deletion).
struct Pending<'a> {
    base: &'a RwLock<Map>,
    changes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl Pending<'_> {
    fn base(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.base.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ReadTx for Pending<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.changes.get(&(table, key.to_vec())) {
            Some(change) => Ok(change.clone()),
            None => Snapshot(&self.base()).get(table, key),
        }
    }

    fn scan(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        let changes = self
            .changes
            .iter()
            .filter(|((t, k), _)| *t == table && k.starts_with(prefix));
        let changed: Vec<_> = changes.collect();
        // Each change can hide at most one base entry, so this many suffice.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            scan_map(&self.base(), table, prefix, limit.saturating_add(changed.len()))
                .into_iter()
                .collect();
        for ((_, key), change) in changed {
            match change {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn count(&self, table: Table) -> Result<u64, StoreError> {
        let base = self.base();
        let mut n = Snapshot(&base).count(table)?;
        for ((t, key), change) in &self.changes {
            if *t != table {
                continue;
            }
            match (base.contains_key(&(table, key.clone())), change.is_some()) {
                (false, true) => n += 1,
                (true, false) => n -= 1,
                _ => {}
            }
        }
        Ok(n)
    }
}

impl WriteTx for Pending<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.changes.insert((table, key.to_vec()), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let existed = self.get(table, key)?.is_some();
        self.changes.insert((table, key.to_vec()), None);
        Ok(existed)
    }
}

impl Backend for MemoryBackend {
    fn read<R>(&self, f: impl FnOnce(&dyn ReadTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let map = self.data.read().unwrap_or_else(PoisonError::into_inner);
        f(&Snapshot(&map))
    }

    fn write<R>(&self, f: impl FnOnce(&mut dyn WriteTx) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = Pending {
            base: &self.data,
            changes: BTreeMap::new(),
        };
        let out = f(&mut pending)?;
        let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
        for (key, change) in pending.changes {
            match change {
                Some(value) => data.insert(key, value),
                None => data.remove(&key),
            };
        }
        Ok(out)
    }
}
