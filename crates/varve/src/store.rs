//! Opening stores from the command line.

use std::path::Path;

use varvedb::{Storage, StorageConfig};
use varvedb::{StreamId, StreamName};

use crate::error::{CliError, CliResult};

/// Opens an existing store: refuses a path that holds none, rather than creating one there.
pub fn open_existing(path: &Path) -> CliResult<Storage> {
    open_existing_keyed(path, None).map(|(storage, _)| storage)
}

/// Refuses a path that is not a store's directory (missing, a file, or without `data.mdb`), so
/// that no command but `import` creates a store.
pub fn check_existing(path: &Path) -> CliResult<()> {
    if path.exists() && !path.is_dir() {
        return Err(crate::target::not_a_directory(path));
    }
    if !path.is_dir() {
        return Err(CliError::new(path, "no such directory")
            .hint("give the directory of a VarveDB store (the one holding data.mdb)"));
    }
    if !path.join("data.mdb").is_file() {
        return Err(
            CliError::new(path, "not a VarveDB store: the directory holds no data.mdb")
                .hint("give the directory of a VarveDB store (the one holding data.mdb)"),
        );
    }
    Ok(())
}

/// Opens an existing store with the master key from `key_file`, else `VARVE_MASTER_KEY`, when
/// either is given; returns the key too.
pub fn open_existing_keyed(
    path: &Path,
    key_file: Option<&Path>,
) -> CliResult<(Storage, Option<[u8; 32]>)> {
    check_existing(path)?;
    let key = crate::keys::load(path, key_file, crate::keys::MASTER_KEY_VAR)?;
    Ok((open_with_key(path, key)?, key))
}

/// Opens an existing store, encrypted when a master key is given.
pub fn open_with_key(path: &Path, master_key: Option<[u8; 32]>) -> CliResult<Storage> {
    Storage::open(StorageConfig {
        path: path.to_owned(),
        encryption_enabled: master_key.is_some(),
        master_key,
        ..Default::default()
    })
    .map_err(|e| CliError::store(path, e))
}

/// Opens (creating when missing) a store with a given event size limit, encrypted when a
/// master key is given.
pub fn open(
    path: &Path,
    max_event_size: usize,
    master_key: Option<[u8; 32]>,
) -> CliResult<Storage> {
    Storage::open(StorageConfig {
        path: path.to_owned(),
        max_event_size,
        encryption_enabled: master_key.is_some(),
        master_key,
        ..Default::default()
    })
    .map_err(|e| CliError::store(path, e))
}

/// Parses a stream: a decimal integer or a UUID is an id; anything else is a stream name
/// (`order-123`), whose id is derived from it.
pub fn parse_stream(store: &Path, text: &str) -> CliResult<StreamId> {
    if let Ok(n) = text.parse::<u128>() {
        return Ok(StreamId(n));
    }
    if let Ok(uuid) = varvedb::Uuid::parse_str(text) {
        return Ok(StreamId::from(uuid));
    }
    StreamName::new(text)
        .map(|name| name.stream_id())
        .map_err(|e| {
            CliError::new(store, format!("{text:?} is not a stream: {e}")).hint(
                "give a stream by its name (`order-123`), or by its id as an unsigned integer or a UUID, as `varve streams` lists them",
            )
        })
}

/// Checks that each of `categories` is one: the part of a stream name before its first `-`.
pub fn check_labels(store: &Path, categories: &[String]) -> CliResult<()> {
    for category in categories {
        let parsed = StreamName::new(category);
        if !matches!(&parsed, Ok(name) if name.id().is_none()) {
            return Err(CliError::new(store, format!("{category:?} is not a category")).hint(
                "a category is the part of a stream name before its first '-': `order` for `order-123`",
            ));
        }
    }
    Ok(())
}
