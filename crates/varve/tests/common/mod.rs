//! Stores made with the library, and the built `varve` binary run on them.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use varvedb::Writer;
use varvedb::{ExpectedVersion, NewEvent, Uuid};
use varvedb::{Storage, StorageConfig};

#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
pub struct Noted {
    pub n: u64,
    pub label: String,
    pub blob: Vec<u8>,
}

/// `Noted` at schema version 2, stored under another name.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq,
)]
#[event(name = "Noted.v2", version = 2)]
pub struct NotedV2 {
    pub n: u64,
    pub label: String,
    pub blob: Vec<u8>,
}

impl From<Noted> for NotedV2 {
    fn from(n: Noted) -> NotedV2 {
        NotedV2 {
            n: n.n,
            label: n.label,
            blob: n.blob,
        }
    }
}

pub fn open(path: &Path) -> Storage {
    Storage::open(StorageConfig {
        path: path.to_owned(),
        map_size: 4 << 20,
        ..Default::default()
    })
    .expect("open store")
}

pub fn noted(n: u64) -> Noted {
    Noted {
        n,
        label: format!("label-{n:04}"),
        blob: vec![n as u8; (n % 7) as usize],
    }
}

/// Writes `streams` streams of `per_stream` events, interleaved, with ids, metadata,
/// correlation and causation ids on some, two event type names, two schema versions, and one
/// event large enough to live in `log_large`.
pub fn fill(storage: &Storage, streams: u64, per_stream: u64) {
    let mut writer = Writer::<Noted>::new(storage.clone());
    let mut v2 = Writer::<NotedV2>::new(storage.clone());
    let mut n = 0;
    for version in 1..=per_stream {
        for stream in 1..=streams {
            n += 1;
            let mut event = noted(n);
            if n == 5 {
                event.blob = vec![0xAB; 5000];
            }
            let expected = ExpectedVersion::Exact(version - 1);
            if n % 5 == 0 {
                v2.append_batch(stream, expected, [decorate(NotedV2::from(event), n)])
            } else {
                writer.append_batch(stream, expected, [decorate(event, n)])
            }
            .expect("append");
        }
    }
}

/// Event `n` with its id, and metadata, correlation and causation ids on some.
fn decorate<E>(event: E, n: u64) -> NewEvent<E> {
    let mut event = NewEvent::new(event).with_id(Uuid::from_u128(1000 + n as u128));
    if n.is_multiple_of(3) {
        event = event.with_metadata(format!("{{\"user\":{n}}}").into_bytes());
    }
    if n.is_multiple_of(4) {
        event = event
            .with_correlation_id(Uuid::from_u128(7_000 + n as u128))
            .with_causation_id(Uuid::from_u128(8_000 + n as u128));
    }
    event
}

pub fn varve(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varve"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run varve")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("utf-8 errors")
}

/// Runs varve, expects success, and parses every stdout line as JSON.
pub fn json_lines(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<serde_json::Value> {
    let out = varve(args);
    assert!(
        out.status.success(),
        "varve failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Flips one byte in the middle of every copy of `marker` in the file.
pub fn flip_all(file: &Path, marker: &[u8]) -> usize {
    let mut bytes = std::fs::read(file).unwrap();
    let mut found = 0;
    let mut i = 0;
    while i + marker.len() <= bytes.len() {
        if &bytes[i..i + marker.len()] == marker {
            bytes[i + marker.len() / 2] ^= 0x20;
            found += 1;
            i += marker.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(file, bytes).unwrap();
    found
}

/// A store of 7 events in `dir/store`, and a copy of it in `dir/damaged` (the data file only)
/// whose records at sequences 4 and 6 fail their payload checksums. Sequences 1..=3 are streams
/// 1..=3 (`fill`), 4..=7 are versions 1..=4 of stream 9.
pub fn damaged_store(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let path = dir.join("store");
    {
        let storage = open(&path);
        fill(&storage, 3, 1);
        let mut writer = Writer::<Noted>::new(storage.clone());
        for n in 4..=7u64 {
            let label = if n % 2 == 0 {
                format!("PAYLOAD-MARKER-{n:04}")
            } else {
                format!("label-{n:04}")
            };
            let event = Noted { label, ..noted(n) };
            writer.append(9, n - 3, event).expect("append");
        }
    }
    let bad = dir.join("damaged");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(path.join("data.mdb"), bad.join("data.mdb")).unwrap();
    for n in [4, 6] {
        let marker = format!("PAYLOAD-MARKER-{n:04}");
        assert!(flip_all(&bad.join("data.mdb"), marker.as_bytes()) >= 1);
    }
    (path, bad)
}

/// Event lines (each without its newline) as an export: each followed by a newline, then a
/// trailer that matches them, as `varve export` writes it.
pub fn with_trailer(lines: &[&str]) -> String {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let trailer = serde_json::json!({"trailer": {
        "format": 1,
        "events": lines.len(),
        "head": lines.len(),
        "skipped": [],
        "crc32c": format!("{:08x}", crc32c::crc32c(body.as_bytes())),
    }});
    format!("{body}{trailer}\n")
}

/// The event lines of an export (its trailer left out).
pub fn event_lines(export: &str) -> Vec<&str> {
    export
        .lines()
        .filter(|l| !l.starts_with("{\"trailer\""))
        .collect()
}
