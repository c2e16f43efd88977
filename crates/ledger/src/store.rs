//! The small storage interface the ledger runs on: the node backs it with RocksDB, tests with
//! memory. The ledger never writes through it: it returns a `WriteSet` that the caller commits
//! in one batch.

use std::collections::BTreeMap;

pub trait Store {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Up to `limit` pairs with keys in `[start, end)`, ascending.
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// Pending writes, ordered by key; `None` deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet {
    pub ops: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl WriteSet {
    pub fn iter(&self) -> impl Iterator<Item = (&Vec<u8>, &Option<Vec<u8>>)> {
        self.ops.iter()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An in-memory store for tests and tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemStore {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemStore {
    pub fn apply(&mut self, w: WriteSet) {
        for (k, v) in w.ops {
            match v {
                Some(v) => {
                    self.map.insert(k, v);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
    }
}

impl Store for MemStore {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map.get(key).cloned()
    }
    fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        if start >= end {
            return vec![];
        }
        self.map.range(start.to_vec()..end.to_vec()).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Reads through pending writes to the store beneath: what the ledger sees mid-batch.
pub(crate) struct Overlay<'a, S: Store + ?Sized> {
    pub store: &'a S,
    pub writes: WriteSet,
}

impl<S: Store + ?Sized> Overlay<'_, S> {
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.ops.get(key) {
            Some(v) => v.clone(),
            None => self.store.get(key),
        }
    }

    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        if start >= end {
            return vec![];
        }
        let pending: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = self.writes.ops.range(start.to_vec()..end.to_vec()).collect();
        // Pending deletes can hide at most that many stored rows: read enough to still fill `limit`.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.store.scan(start, end, limit.saturating_add(pending.len())).into_iter().collect();
        for (k, v) in pending {
            match v {
                Some(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                None => {
                    merged.remove(k);
                }
            }
        }
        merged.into_iter().take(limit).collect()
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.ops.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.ops.insert(key, None);
    }
}
