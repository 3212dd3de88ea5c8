//! `shred` and `rotate-key` on an encrypted store, with keys from a file and the environment.

mod common;

use std::process::Command;

use common::*;
use varvedb::error::Error;
use varvedb::{Reader, Writer};
use varvedb::{Storage, StorageConfig};

fn encrypted(path: &std::path::Path, key: [u8; 32]) -> varvedb::error::Result<Storage> {
    Storage::open(StorageConfig {
        path: path.to_owned(),
        map_size: 4 << 20,
        encryption_enabled: true,
        master_key: Some(key),
        ..Default::default()
    })
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn shred_and_rotate_key_read_keys_from_file_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let old = [7u8; 32];
    let new = [9u8; 32];
    {
        let storage = encrypted(&path, old).unwrap();
        let mut writer = Writer::<Noted>::new(storage.clone());
        writer.append(42, 1, noted(1)).unwrap();
        writer.append(43, 1, noted(2)).unwrap();
    }
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, old).unwrap();

    // No key: a clear refusal.
    let out = varve(&[&"shred", &path, &"42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no master key given"),
        "{}",
        stderr(&out)
    );

    // The key from the environment, in hex.
    let out = Command::new(env!("CARGO_BIN_EXE_varve"))
        .args(["shred", "--json"])
        .arg(&path)
        .arg("42")
        .env("VARVE_MASTER_KEY", hex(&old))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["shredded"], true);

    // Info and verify open the encrypted store with the key from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_varve"))
        .args(["verify"])
        .arg(&path)
        .env("VARVE_MASTER_KEY", hex(&old))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Rotation: the current key from a file, the new one from the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_varve"))
        .args(["rotate-key", "--json", "--key-file"])
        .arg(&key_file)
        .arg(&path)
        .env("VARVE_NEW_MASTER_KEY", hex(&new))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["rewrapped"], 1);

    assert!(matches!(
        encrypted(&path, old),
        Err(Error::WrongMasterKey { .. })
    ));
    let storage = encrypted(&path, new).unwrap();
    let reader = Reader::<Noted>::new(storage.clone());
    let txn = storage.env.read_txn().unwrap();
    assert!(matches!(
        reader.get(&txn, 1),
        Err(Error::Shredded { seq: 1, .. })
    ));
    assert_eq!(reader.get(&txn, 2).unwrap().unwrap().n, 2);
}
