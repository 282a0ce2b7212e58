//! The store suite against both backends.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use strata_store::conformance::Harness;
use strata_store::{MemoryBackend, RedbBackend, store_conformance};

struct Memory;

impl Harness for Memory {
    type B = MemoryBackend;
    fn fresh(&mut self) -> MemoryBackend {
        MemoryBackend::new()
    }
    fn reopen(&mut self, backend: MemoryBackend) -> MemoryBackend {
        backend
    }
}

struct Redb {
    dir: tempfile::TempDir,
    n: usize,
    path: Option<PathBuf>,
}

impl Harness for Redb {
    type B = RedbBackend;
    fn fresh(&mut self) -> RedbBackend {
        self.n += 1;
        let path = self.dir.path().join(format!("store-{}.redb", self.n));
        self.path = Some(path.clone());
        RedbBackend::open(&path).unwrap()
    }
    fn reopen(&mut self, backend: RedbBackend) -> RedbBackend {
        drop(backend);
        RedbBackend::open(self.path.as_ref().unwrap()).unwrap()
    }
}

mod memory {
    use super::*;
    store_conformance!(Memory);
}

mod redb {
    use super::*;
    store_conformance!(Redb {
        dir: tempfile::tempdir().unwrap(),
        n: 0,
        path: None
    });
}
