//! `varve verify` and `varve streams` on what a disk kept after power cuts: a child appends
//! batches to named streams on the power-cut filesystem (`crates/powercut`) until the power goes
//! at a random write or sync after a random number of acknowledgements; then `varve verify` must
//! find the store clean and `varve streams` must list every acknowledged event.

#[path = "../../../tests/common/mod.rs"]
mod shared;

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{json_lines, noted, stdout, varve, Noted};
use varvedb::{ExpectedVersion, Storage, StorageConfig, Writer};

const ENV_DIR: &str = "VARVE_TOOL_POWER_DIR";
const ENV_ITER: &str = "VARVE_TOOL_POWER_ITER";
const MARK: &str = "@@ ";
const CUTS: u64 = 12;

fn config(path: &Path) -> StorageConfig {
    StorageConfig {
        path: path.to_path_buf(),
        index_interval: 32,
        ..Default::default()
    }
}

/// The child: appends batches of one to four events to `order-0` .. `order-4`, printing the
/// stream and its version after each acknowledged batch, until the power goes.
#[test]
fn power_cut_writer() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let iter: u64 = std::env::var(ENV_ITER).unwrap().parse().unwrap();
    // A failed append (the power is off) ends the process.
    shared::start_child();
    let storage = Storage::open(config(Path::new(&dir))).unwrap();
    let mut writer = Writer::<Noted>::new(storage);
    for n in 0.. {
        let stream = format!("order-{}", (iter + n) % 5);
        let events = (0..1 + n % 4).map(|i| noted(iter * 1_000_000 + n * 10 + i));
        let appended = writer
            .append_batch(stream.as_str(), ExpectedVersion::Any, events)
            .unwrap();
        println!(
            "{MARK}ACK {stream} {}",
            appended.positions.last().unwrap().version
        );
    }
}

#[test]
fn varve_finds_the_store_clean_and_whole_after_power_cuts() {
    if std::env::var_os(ENV_DIR).is_some() {
        return;
    }
    let disk = tempfile::tempdir().unwrap();
    let mountpoint = tempfile::tempdir().unwrap();
    let on_disk = disk.path().join("store");
    // The highest acknowledged version of each stream.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut seed = 0x5EED_u64;
    for iter in 1..=CUTS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let fs = shared::mount_power_cut(disk.path(), mountpoint.path());
        let child = shared::Watched::spawn(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "power_cut_writer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ENV_DIR, fs.mountpoint().join("store"))
                .env(ENV_ITER, iter.to_string()),
            MARK,
        );
        let keep = shared::keep_for(iter, seed);
        let acks = 1 + (seed >> 40) % 30;
        let ops = 1 + (seed >> 20) % 30;
        let (_, failure) = child.cut_on_progress(&fs, |l| l.starts_with("ACK"), acks, ops, keep);
        let (status, lines, stderr) = child.finish();
        if let Some(what) = failure {
            panic!("child {iter} {what} ({status}); stderr:\n{stderr}");
        }
        fs.unmount().expect("unmount after the child is gone");
        for line in &lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            let version: u64 = f[2].parse().unwrap();
            let v = acked.entry(f[1].to_string()).or_default();
            *v = (*v).max(version);
        }

        let out = varve(&[&"verify", &on_disk]);
        assert_eq!(out.status.code(), Some(0), "cut {iter}: {}", stdout(&out));
        let report = &json_lines(&[&"verify", &on_disk, &"--json"])[0];
        assert_eq!(report["ok"], true, "cut {iter}: {report}");
        let listed: BTreeMap<String, u64> = json_lines(&[&"streams", &on_disk, &"--json"])
            .iter()
            .map(|l| {
                (
                    l["name"].as_str().unwrap().to_string(),
                    l["version"].as_u64().unwrap(),
                )
            })
            .collect();
        for (stream, version) in &acked {
            let found = listed.get(stream).copied().unwrap_or(0);
            assert!(
                found >= *version,
                "cut {iter}: {stream} is at version {found}, {version} was acknowledged"
            );
        }
    }
    assert!(!acked.is_empty(), "nothing was acknowledged");
}
