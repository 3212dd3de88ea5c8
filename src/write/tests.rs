//! Unit tests of the write path that reach below the public API.

use crate::env::{Commit, WriteKind};
use crate::error::{DamagedEntry, Error};
use crate::{ExpectedVersion, Storage, StorageConfig, Writer};

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(StorageConfig {
        path: dir.to_path_buf(),
        map_size: 1 << 20,
        ..Default::default()
    })
    .unwrap()
}

/// A batch whose checks cannot read what they need (a damaged stream head) fails alone: the
/// other batches of its commit group are written.
#[test]
fn a_damaged_stream_head_fails_only_its_own_batch() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path());
        let mut writer = Writer::<u64>::new(storage.clone());
        writer.append(1, 1, 10).unwrap();
        writer.append(2, 1, 20).unwrap();
        storage.flush_index().unwrap();
        // Damage stream 1's head on disk: a wrong checksum.
        let dbs = storage.log().dbs;
        storage
            .env
            .write(WriteKind::Append, |wtxn| {
                dbs.heads
                    .put(wtxn, &crate::StreamId(1).to_key(), &[0u8; 28])?;
                Ok(Commit::Commit(()))
            })
            .unwrap();
    }
    // Reopened, the tail is empty: version checks read the heads on disk.
    let storage = open(dir.path());
    let mut writer = Writer::<u64>::new(storage.clone());
    let mut group = vec![
        writer
            .prepare(1, ExpectedVersion::Exact(1), [11u64])
            .unwrap(),
        writer
            .prepare(2, ExpectedVersion::Exact(1), [21u64])
            .unwrap(),
    ];
    let results = storage.store.writes.commit_group(&mut group);
    assert!(
        matches!(
            &results[0],
            Err(Error::Damaged {
                entry: DamagedEntry::StreamHead { .. },
                ..
            })
        ),
        "{:?}",
        results[0]
    );
    let written = results[1].as_ref().unwrap();
    assert_eq!(written.first().version, 2);
    assert_eq!(storage.stream_version(2).unwrap(), 2);
    assert_eq!(storage.head(), 3);
}
