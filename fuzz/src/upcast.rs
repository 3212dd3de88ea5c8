//! The event types of the `upcast` target: four versions of one event, the stored name
//! changing at version 3 and version 4 splitting one event into one per tag, and the input
//! format.
//!
//! # Input format
//!
//! The first byte selects a reader and the (name, version) the payload is stored under
//! ([`CASES`], `byte % 9`); bit 0 of the second byte puts the record off 16-byte alignment in
//! memory; the rest is the payload.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use varvedb::{Split, Upcast};

/// Version 1, frozen: strings, a vector, an option, a bool and a char, so that bytecheck has
/// relative pointers, lengths, UTF-8, tags, bool values and char values to validate.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
#[event(name = "FuzzUp", version = 1)]
pub struct UpV1 {
    /// A name.
    pub name: String,
    /// A count.
    pub n: u32,
    /// Some tags.
    pub tags: Vec<String>,
    /// A note.
    pub note: Option<String>,
    /// A flag.
    pub flag: bool,
    /// A mark.
    pub mark: char,
}

/// Version 2, frozen: an enum, the count widened.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
#[event(name = "FuzzUp", version = 2, previous = UpV1)]
pub enum UpV2 {
    /// Without tags or note.
    Small {
        /// A name.
        name: String,
        /// A count.
        n: u64,
    },
    /// With them.
    Big {
        /// A name.
        name: String,
        /// A count.
        n: u64,
        /// Some tags.
        tags: Vec<String>,
        /// A note.
        note: Option<String>,
        /// A mark.
        mark: char,
    },
}

impl Upcast<UpV1> for UpV2 {
    fn upcast(old: UpV1) -> Self {
        if old.tags.is_empty() && old.note.is_none() && !old.flag {
            UpV2::Small {
                name: old.name,
                n: u64::from(old.n),
            }
        } else {
            UpV2::Big {
                name: old.name,
                n: u64::from(old.n),
                tags: old.tags,
                note: old.note,
                mark: old.mark,
            }
        }
    }
}

/// Version 3, current: stored under another name, a struct again.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
#[event(name = "FuzzUpNext", version = 3, previous = UpV2)]
pub struct UpV3 {
    /// The name.
    pub label: String,
    /// The count, signed.
    pub total: i128,
    /// Tags, the note last when there was one.
    pub tags: Vec<String>,
    /// The mark, if any.
    pub mark: Option<char>,
}

impl Upcast<UpV2> for UpV3 {
    fn upcast(old: UpV2) -> Self {
        match old {
            UpV2::Small { name, n } => UpV3 {
                label: name,
                total: i128::from(n),
                tags: Vec::new(),
                mark: None,
            },
            UpV2::Big {
                name,
                n,
                mut tags,
                note,
                mark,
            } => {
                tags.extend(note);
                UpV3 {
                    label: name,
                    total: -i128::from(n),
                    tags,
                    mark: Some(mark),
                }
            }
        }
    }
}

/// Version 4, current: one event per tag (one without a tag when there is none).
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event, Debug, Clone, PartialEq, Eq,
)]
#[event(name = "FuzzUpNext", version = 4, previous = UpV3, split)]
pub struct UpV4 {
    /// The name.
    pub label: String,
    /// The count, signed.
    pub total: i128,
    /// One tag, if any.
    pub tag: Option<String>,
    /// The mark, if any.
    pub mark: Option<char>,
}

impl Split<UpV3> for UpV4 {
    fn split(old: UpV3) -> Vec<Self> {
        let part = |tag| UpV4 {
            label: old.label.clone(),
            total: old.total,
            tag,
            mark: old.mark,
        };
        if old.tags.is_empty() {
            return vec![part(None)];
        }
        old.tags.iter().cloned().map(Some).map(part).collect()
    }
}

/// A reader and the (name, version) of the stored payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The version of the reader's type.
    pub reader: u16,
    /// The version the payload is stored under.
    pub stored: u16,
}

/// Every reader and stored version with a way to read: current, one step, two steps, three
/// steps (the last one a split). The first five are the cases of the seeds.
pub const CASES: [Case; 9] = [
    Case {
        reader: 3,
        stored: 1,
    },
    Case {
        reader: 3,
        stored: 2,
    },
    Case {
        reader: 3,
        stored: 3,
    },
    Case {
        reader: 2,
        stored: 1,
    },
    Case {
        reader: 2,
        stored: 2,
    },
    Case {
        reader: 4,
        stored: 1,
    },
    Case {
        reader: 4,
        stored: 2,
    },
    Case {
        reader: 4,
        stored: 3,
    },
    Case {
        reader: 4,
        stored: 4,
    },
];

/// The stored name of version `v`.
pub fn name_of(v: u16) -> &'static str {
    use varvedb::Event;
    match v {
        1 => UpV1::NAME,
        2 => UpV2::NAME,
        3 => UpV3::NAME,
        _ => UpV4::NAME,
    }
}

/// A value of one of the versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyUp {
    /// Version 1.
    V1(UpV1),
    /// Version 2.
    V2(UpV2),
    /// Version 3.
    V3(UpV3),
    /// Version 4.
    V4(UpV4),
}

impl AnyUp {
    /// The values one version up, through the type's own `Upcast` or `Split`.
    pub fn up(self) -> Vec<AnyUp> {
        match self {
            AnyUp::V1(v) => vec![AnyUp::V2(UpV2::upcast(v))],
            AnyUp::V2(v) => vec![AnyUp::V3(UpV3::upcast(v))],
            AnyUp::V3(v) => UpV4::split(v).into_iter().map(AnyUp::V4).collect(),
            AnyUp::V4(_) => panic!("no version after 4"),
        }
    }

    /// The version of the value.
    pub fn version(&self) -> u16 {
        match self {
            AnyUp::V1(_) => 1,
            AnyUp::V2(_) => 2,
            AnyUp::V3(_) => 3,
            AnyUp::V4(_) => 4,
        }
    }

    /// The values at version `k`, at least its own: one, or the parts of a split.
    pub fn at(self, k: u16) -> Vec<AnyUp> {
        let mut values = vec![self];
        while values[0].version() < k {
            values = values.into_iter().flat_map(AnyUp::up).collect();
        }
        values
    }

    /// The archive of the value, as a writer of its version stores it.
    pub fn archive(&self) -> Vec<u8> {
        match self {
            AnyUp::V1(v) => rkyv::to_bytes::<rancor::Error>(v),
            AnyUp::V2(v) => rkyv::to_bytes::<rancor::Error>(v),
            AnyUp::V3(v) => rkyv::to_bytes::<rancor::Error>(v),
            AnyUp::V4(v) => rkyv::to_bytes::<rancor::Error>(v),
        }
        .expect("archiving a value")
        .to_vec()
    }
}

/// `payload` validated (bytecheck) and deserialized as an archive of version `v`, the way
/// rkyv's own API does it; `None` when it is not a valid archive of that version.
pub fn check_as(v: u16, payload: &[u8]) -> Option<AnyUp> {
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    match v {
        1 => rkyv::from_bytes::<UpV1, rancor::Error>(&aligned)
            .ok()
            .map(AnyUp::V1),
        2 => rkyv::from_bytes::<UpV2, rancor::Error>(&aligned)
            .ok()
            .map(AnyUp::V2),
        3 => rkyv::from_bytes::<UpV3, rancor::Error>(&aligned)
            .ok()
            .map(AnyUp::V3),
        _ => rkyv::from_bytes::<UpV4, rancor::Error>(&aligned)
            .ok()
            .map(AnyUp::V4),
    }
}
