//! openraft's own storage test suite (`openraft::testing::Suite::test_all`) against the
//! RocksDB log store and state machine: what openraft relies on of any storage (vote,
//! log reads, append, truncate, purge, membership, snapshots, the initial state after a
//! restart) holds for Wharf's.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{StorageError, StorageIOError};

use super::db::Db;
use super::{LogStore, StateMachine, TypeConfig};

/// A fresh database in a temporary directory per test of the suite; the directory is
/// the guard, removed when the test ends.
struct RocksBuilder;

fn storage_error(e: super::RaftError) -> StorageError<u64> {
    StorageIOError::read(&e).into()
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().map_err(|e| StorageIOError::read(&e))?;
        let db = Arc::new(Db::open(dir.path()).map_err(storage_error)?);
        let sm = StateMachine::load(Arc::clone(&db)).map_err(storage_error)?;
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn the_rocksdb_stores_pass_openraft_storage_suite() {
    Suite::test_all(RocksBuilder).unwrap();
}
