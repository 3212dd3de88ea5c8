//! Rewriting a store into a new one with every event of an older version upcast to the current
//! type: [`Migration`].
//!
//! The application names its current event types ([`Migration::upcast`]); the migration reads
//! the source in log order in one read snapshot and imports every event into a new store
//! ([`Importer`]), each either upcast through the type's [`Reader`] (the rules of typed reads,
//! layout checks included, are the reader's) or copied exactly. The target is built under a
//! temporary name beside its final one and renamed into place only once complete.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::ops::ControlFlow;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use heed::types::{Bytes, DecodeIgnore};
use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;

use super::import::{ImportError, ImportEvent, Importer};
use super::raw::{self, RawEvent};
use crate::env::{Commit, ReadTxn, WriteKind};
use crate::error::Error;
use crate::event::{Event, Fingerprint};
use crate::format::schema::Registered;
use crate::read::Reader;
use crate::store::{Storage, StorageConfig};
use crate::subscribe::checkpoint;
use crate::types::Direction;

/// Events between two calls of the progress callback.
const PROGRESS_EVERY: u64 = 1024;
/// The file that marks a directory as a migration's unfinished target.
const MARKER: &str = "MIGRATING";
/// Prefix of the names of a store's projection databases.
const PROJECTION_PREFIX: &[u8] = b"projection/";
/// How long the migration waits for the finished target to close before renaming it.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// Why a migration failed. In every case the source is unchanged and nothing is left at the
/// target's final path; the partial target is removed (a process killed during a migration
/// leaves it behind, and the next migration into the same target removes it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The target directory exists and is not empty: a migration writes a new store.
    #[error("the migration target {} is not empty; migrate into a new directory", path.display())]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The migration cannot be done as configured.
    #[error("cannot migrate {} into {}: {reason}", source_path.display(), target.display())]
    Invalid {
        /// The source store's directory.
        source_path: PathBuf,
        /// The target's directory.
        target: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Two registered types both upcast events of one older type and version.
    #[error("{event_type} v{version} is upcast by two registered types, {first} and {second}; register only the current one")]
    Conflict {
        /// The older event type's name.
        event_type: String,
        /// Its schema version.
        version: u16,
        /// The name and version of the first type registered for it (`Name vN`).
        first: String,
        /// The name and version of the second one.
        second: String,
    },
    /// An event of the source cannot be read or upcast: a damaged record, an upcaster that
    /// fails, a frozen type whose layout is not the one the store recorded
    /// ([`Error::LayoutChanged`]), a key that is missing.
    #[error("event {seq} of the source cannot be migrated: {error}")]
    Read {
        /// Its global sequence.
        seq: u64,
        /// What reading it gave.
        #[source]
        error: Error,
    },
    /// The target refused an event ([`ImportError::Invalid`]) or failed to write it.
    #[error("writing the target failed: {0}")]
    Import(#[from] ImportError),
    /// The progress callback stopped the migration.
    #[error("the migration was stopped after {events} events; the target was removed")]
    Cancelled {
        /// Events read when it stopped.
        events: u64,
    },
    /// The finished target failed [`verify`](super::verify) ([`Migration::verify`]).
    #[error("the migrated store failed verification ({problems} problems; the first: {first}); it was removed")]
    Verify {
        /// Problems found.
        problems: usize,
        /// The first one, described.
        first: String,
    },
    /// The source or target store failed (I/O, LMDB).
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<heed::Error> for MigrateError {
    fn from(e: heed::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

impl From<std::io::Error> for MigrateError {
    fn from(e: std::io::Error) -> Self {
        MigrateError::Store(e.into())
    }
}

/// Where a migration stands, as handed to [`Migration::on_progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationProgress {
    /// Events read from the source so far.
    pub events: u64,
    /// Events in the source's snapshot: the migration ends at this many.
    pub total: u64,
    /// Events upcast so far.
    pub upcast: u64,
}

/// Events of one older type and version upcast to a current type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpcastCount {
    /// The stored event type name.
    pub from_type: String,
    /// The stored schema version.
    pub from_version: u16,
    /// The current type's name, as the target stores it.
    pub to_type: String,
    /// The current type's version.
    pub to_version: u16,
    /// Events upcast.
    pub events: u64,
}

/// Events of one type and version copied exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TypeCount {
    /// The event type name.
    pub event_type: String,
    /// The schema version.
    pub version: u16,
    /// Events copied (shredded ones included).
    pub events: u64,
}

/// What [`Migration::run`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The new store's directory.
    pub target: PathBuf,
    /// Events written: every event of the source's snapshot, at the same sequences `1..=events`.
    pub events: u64,
    /// Events upcast, per (stored type, version, current type, version), ordered by stored type.
    pub upcast: Vec<UpcastCount>,
    /// Events copied exactly, per type and version, ordered: the types no registered type
    /// upcasts (another type, the current version itself, or a version no upcaster reaches).
    pub copied: Vec<TypeCount>,
    /// Events that a registered type reads as several events ([`Split`](crate::Split)), per
    /// stored type and version, copied exactly (counted in `copied` too): written as their
    /// parts, they would move every later event to another sequence. Readers of the target go on
    /// splitting them, so the frozen types they are read through stay in the application.
    pub split: Vec<TypeCount>,
    /// Events of shredded streams, copied as shredded (counted in `copied` too).
    pub shredded_events: u64,
    /// Streams shredded in the target because they were in the source.
    pub shredded_streams: u64,
    /// Processor checkpoints copied.
    pub processors: u64,
    /// Projection databases copied (with their projector's checkpoint among the processors').
    pub projections: u64,
}

/// What one registered type does to an older (name, version): its events are read through the
/// type's reader and archived as the type.
struct Step {
    /// The current type's name and version, as the target stores them.
    to_name: &'static str,
    to_version: u16,
    to_layout: Fingerprint,
    /// The archive of the current type and the event's metadata, read at `seq` in the source's
    /// snapshot.
    read: ReadUpcast,
}

/// `None` for an event that a split reads as several events.
type ReadUpcast = Box<dyn Fn(&ReadTxn, u64) -> crate::Result<Option<Upcasted>> + Send>;
type Progress = Box<dyn FnMut(&MigrationProgress) -> ControlFlow<()> + Send>;

/// An event read as its current type.
struct Upcasted {
    payload: Vec<u8>,
    metadata: Option<Vec<u8>>,
}

/// A current event type registered with [`Migration::upcast`].
struct Registration {
    name: &'static str,
    version: u16,
    layout: Fingerprint,
    /// The older (name, version)s the type reads, each with its step.
    from: Vec<((&'static str, u16), Step)>,
}

/// Copies a store into a new one with every event of an older version upcast to its current
/// type, keeping everything else: global sequences, stream versions, event ids, commit
/// timestamps, correlation and causation ids, metadata, processor checkpoints and projection
/// databases, and, in an encrypted store, shredded streams (still shredded; every other stream
/// under a key of its own).
///
/// Register each current event type with [`Migration::upcast`]; an event of an older version
/// that a registered type reads (through `#[event(previous = ...)]`, see
/// [`Upcast`](crate::Upcast)) is read as that type by its [`Reader`], and written with the
/// type's name, version and archive; the target records the type's layout. Every other event
/// is copied exactly, its type's layout as the source recorded it. An event of a shredded
/// stream cannot be read, so it is copied as shredded whatever its version.
///
/// The source is only read, in one read transaction: the target holds exactly the events, and
/// the checkpoints, committed before the migration began, while writers may go on (as long as
/// the transaction is open, the source's map cannot grow in this process: an append of this
/// process that needs it to waits, up to `resize_timeout`). The target
/// is written into a directory beside its final one, named `.NAME.migrating` for a target
/// `NAME`, and renamed to `NAME` once complete and synced: stopped at any point, by an error,
/// the progress callback or a killed process, a migration leaves the source as it was and
/// nothing at `NAME` (a killed one leaves `.NAME.migrating`, which the next migration into
/// `NAME` removes).
///
/// ```
/// use varvedb::admin::Migration;
/// use varvedb::{Reader, Storage, StorageConfig, Upcast, Writer};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "OrderPlaced", version = 1)]
/// pub struct OrderPlacedV1 { pub order: u64 }
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, varvedb::Event)]
/// #[event(name = "OrderPlaced", version = 2, previous = OrderPlacedV1)]
/// pub struct OrderPlaced { pub order: u64, pub currency: String }
///
/// impl Upcast<OrderPlacedV1> for OrderPlaced {
///     fn upcast(old: OrderPlacedV1) -> Self {
///         OrderPlaced { order: old.order, currency: "EUR".into() }
///     }
/// }
///
/// # let dir = tempfile::tempdir()?;
/// let source = Storage::open(StorageConfig { path: dir.path().join("v1"), ..Default::default() })?;
/// Writer::<OrderPlacedV1>::new(source.clone()).append(7, 1, OrderPlacedV1 { order: 1 })?;
///
/// let target = StorageConfig { path: dir.path().join("v2"), ..Default::default() };
/// let report = Migration::new(&source, target.clone())
///     .upcast::<OrderPlaced>()
///     .run()?;
/// assert_eq!(report.events, 1);
/// assert_eq!(report.upcast[0].events, 1);
///
/// let migrated = Storage::open(target)?;
/// let txn = migrated.read_txn()?;
/// let event = Reader::<OrderPlaced>::new(migrated.clone()).get(&txn, 1)?.unwrap();
/// assert!(!event.is_upcast());
/// assert_eq!(event.currency, "EUR");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Migration {
    source: Storage,
    target: StorageConfig,
    types: Vec<Registration>,
    progress: Option<Progress>,
    verify: bool,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("source", &self.source.path())
            .field("target", &self.target.path)
            .field(
                "types",
                &self
                    .types
                    .iter()
                    .map(|t| format!("{} v{}", t.name, t.version))
                    .collect::<Vec<_>>(),
            )
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl Migration {
    /// A migration of `source` into a new store opened with `target` (its `path` the new
    /// directory, which must not exist or be empty; its encryption settings the new store's).
    /// Without [`Migration::upcast`], every event is copied exactly.
    pub fn new(source: &Storage, target: StorageConfig) -> Migration {
        Migration {
            source: source.clone(),
            target,
            types: Vec::new(),
            progress: None,
            verify: false,
        }
    }

    /// Registers `E` as the current version of its event type: the events of every older
    /// (name, version) `E` reads are written as `E`.
    pub fn upcast<E>(mut self) -> Migration
    where
        E: Event,
        E::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        let reader = Reader::<E>::new(self.source.clone());
        let from = E::upcasts()
            .into_iter()
            .map(|u| {
                let reader = reader.clone();
                let read: ReadUpcast = Box::new(move |txn: &ReadTxn, seq: u64| {
                    let parts = reader.get_parts(txn, seq)?;
                    match parts.as_slice() {
                        [] => Err(Error::corrupted(
                            seq,
                            "the event vanished from the snapshot",
                        )),
                        [view] => Ok(Some(Upcasted {
                            payload: view.payload_bytes().to_vec(),
                            metadata: view.envelope().metadata.map(<[u8]>::to_vec),
                        })),
                        // Written as its parts, it would move every later event.
                        _ => Ok(None),
                    }
                });
                (
                    (u.name, u.version),
                    Step {
                        to_name: E::NAME,
                        to_version: E::VERSION,
                        to_layout: E::LAYOUT,
                        read,
                    },
                )
            })
            .collect();
        self.types.push(Registration {
            name: E::NAME,
            version: E::VERSION,
            layout: E::LAYOUT,
            from,
        });
        self
    }

    /// Calls `f` every 1,024 events and once at the end of the log, with where the migration
    /// stands; `ControlFlow::Break` stops it ([`MigrateError::Cancelled`]).
    pub fn on_progress(
        mut self,
        f: impl FnMut(&MigrationProgress) -> ControlFlow<()> + Send + 'static,
    ) -> Migration {
        self.progress = Some(Box::new(f));
        self
    }

    /// Runs [`verify`](super::verify) on the finished target before it is renamed into place,
    /// and fails with [`MigrateError::Verify`] (removing it) when it finds a problem.
    pub fn verify(mut self, verify: bool) -> Migration {
        self.verify = verify;
        self
    }

    /// Runs the migration (see [`Migration`]).
    ///
    /// # Errors
    ///
    /// - [`MigrateError::TargetNotEmpty`] when the target directory holds anything, or
    ///   `.NAME.migrating` exists and is not a migration's;
    /// - [`MigrateError::Invalid`] for an encrypted source and a target without encryption, or
    ///   a target without a directory name;
    /// - [`MigrateError::Conflict`] when two registered types upcast the same older type;
    /// - [`MigrateError::Read`] for an event that cannot be read or upcast (among them
    ///   [`Error::LayoutChanged`] for one whose frozen type changed);
    /// - [`MigrateError::Store`] with [`Error::LayoutChanged`] when a registered type is not
    ///   the one the source recorded for its own name and version, before any event is written;
    /// - [`MigrateError::Import`], [`MigrateError::Store`] when writing the target fails,
    ///   [`MigrateError::Cancelled`], [`MigrateError::Verify`].
    ///
    /// Whatever the error, the source is unchanged and the target's final path is left as it
    /// was.
    pub fn run(mut self) -> Result<MigrationReport, MigrateError> {
        let steps = self.steps()?;
        let final_path = self.target.path.clone();
        let partial = self.prepare()?;
        let mut config = self.target.clone();
        config.path = partial.clone();
        let target = match Storage::open(config) {
            Ok(target) => target,
            Err(e) => {
                remove_partial(&partial);
                return Err(e.into());
            }
        };
        let result = self.write(&target, &steps, final_path.clone());
        let canonical = partial.canonicalize().ok();
        drop(target);
        // The store's threads let go of it shortly after the last handle: wait for LMDB to
        // close it before the directory is renamed or removed.
        if let Some(closing) = canonical.and_then(heed::env_closing_event) {
            closing.wait_timeout(CLOSE_WAIT);
        }
        let report = match result {
            Ok(report) => report,
            Err(e) => {
                remove_partial(&partial);
                return Err(e);
            }
        };
        if let Err(e) = install(&partial, &final_path) {
            remove_partial(&partial);
            return Err(e.into());
        }
        Ok(report)
    }

    /// The step for each older (name, version), refusing one claimed twice.
    fn steps(&mut self) -> Result<HashMap<(String, u16), Step>, MigrateError> {
        let mut steps: HashMap<(String, u16), Step> = HashMap::new();
        for registration in std::mem::take(&mut self.types) {
            for ((name, version), step) in registration.from {
                let key = (name.to_string(), version);
                if let Some(first) = steps.get(&key) {
                    return Err(MigrateError::Conflict {
                        event_type: name.to_string(),
                        version,
                        first: format!("{} v{}", first.to_name, first.to_version),
                        second: format!("{} v{}", step.to_name, step.to_version),
                    });
                }
                steps.insert(key, step);
            }
            self.types.push(Registration {
                from: Vec::new(),
                ..registration
            });
        }
        // The current version of a registered type is not upcast by another one.
        for registration in &self.types {
            let own = (registration.name.to_string(), registration.version);
            if let Some(other) = steps.get(&own) {
                return Err(MigrateError::Conflict {
                    event_type: own.0,
                    version: own.1,
                    first: format!("{} v{}", other.to_name, other.to_version),
                    second: format!("{} v{} itself", registration.name, registration.version),
                });
            }
        }
        Ok(steps)
    }

    /// Checks the target and creates its partial directory (removing one a killed migration
    /// left); returns it.
    fn prepare(&self) -> Result<PathBuf, MigrateError> {
        let target = &self.target.path;
        let invalid = |reason: String| MigrateError::Invalid {
            source_path: self.source.path().to_owned(),
            target: target.clone(),
            reason,
        };
        if self.source.is_encrypted() && !self.target.encryption_enabled {
            return Err(invalid(
                "the source is encrypted and the target is not: its events would be written in the clear, and its shredded streams cannot be kept; enable encryption in the target's configuration".into(),
            ));
        }
        let Some(name) = target.file_name() else {
            return Err(invalid("the target path has no directory name".into()));
        };
        match fs::read_dir(target) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(MigrateError::TargetNotEmpty {
                        path: target.clone(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(".migrating");
        let partial = parent.join(partial_name);
        if partial.exists() {
            if !partial.join(MARKER).is_file() {
                return Err(MigrateError::TargetNotEmpty { path: partial });
            }
            fs::remove_dir_all(&partial)?;
        }
        fs::DirBuilder::new().mode(0o700).create(&partial)?;
        let marked = fs::write(
            partial.join(MARKER),
            format!(
                "an unfinished migration of {} into {}; safe to delete\n",
                self.source.path().display(),
                target.display()
            ),
        );
        if let Err(e) = marked {
            remove_partial(&partial);
            return Err(e.into());
        }
        Ok(partial)
    }

    /// Writes everything into `target`, the open partial store.
    fn write(
        &mut self,
        target: &Storage,
        steps: &HashMap<(String, u16), Step>,
        final_path: PathBuf,
    ) -> Result<MigrationReport, MigrateError> {
        let source = &self.source.clone();
        let projections = projection_databases(source)?;
        let txn = source.read_txn()?;
        let raw_txn = txn.raw();
        let dbs = &source.log().dbs;
        for registration in &self.types {
            let name = registration.name.as_bytes();
            if let Some(registered) =
                source
                    .log()
                    .schemas
                    .committed(dbs, raw_txn, name, registration.version)?
            {
                crate::schema::check(
                    registered,
                    name,
                    registration.version,
                    registration.layout,
                    None,
                )?;
            }
        }
        let total = raw::last_seq(source, &txn)?;
        let mut importer = Importer::new(target)?;
        let mut progress = MigrationProgress {
            events: 0,
            total,
            upcast: 0,
        };
        let mut upcast: BTreeMap<(String, u16), u64> = BTreeMap::new();
        let mut copied: BTreeMap<(String, u16), u64> = BTreeMap::new();
        let mut kept_split: BTreeMap<(String, u16), u64> = BTreeMap::new();
        let mut layouts: HashMap<(String, u16), Option<Fingerprint>> = HashMap::new();
        let mut shredded_events = 0u64;
        let mut names = super::names::StreamNames::new(source, &txn);
        for event in raw::log(source, &txn, 1, Direction::Forward)? {
            let event = event.map_err(|error| MigrateError::Read {
                seq: error.seq().unwrap_or(progress.events + 1),
                error,
            })?;
            let env = &event.envelope;
            let seq = env.seq;
            if seq > total {
                break;
            }
            let read_failed = |error: Error| MigrateError::Read { seq, error };
            let mut out = ImportEvent::new(seq, env.stream, env.version, env.event_type);
            out.stream_name = names
                .get(env.stream)
                .map_err(|error| MigrateError::Read { seq, error })?
                .cloned();
            out.prev_seq = env.prev_seq;
            out.timestamp_ns = env.timestamp_ns;
            out.event_id = env.event_id;
            out.correlation_id = env.correlation_id;
            out.causation_id = env.causation_id;
            out.schema_version = env.schema_version;
            let key = (env.event_type.to_string(), env.schema_version);
            let upcast_read = match steps.get(&key) {
                Some(step) => (step.read)(&txn, seq).map(|up| {
                    up.map(|up| {
                        out.event_type = step.to_name.to_string();
                        out.schema_version = step.to_version;
                        out.layout = Some(step.to_layout);
                        out.payload = up.payload;
                        out.metadata = up.metadata;
                    })
                    .is_some()
                }),
                None => Ok(false),
            };
            // Split into several events, it stays as it is stored: its parts would need places
            // of their own in the log.
            let split = matches!(upcast_read, Ok(false)) && steps.contains_key(&key);
            let read = match upcast_read {
                Ok(false) => raw::contents(source, &event).map(|contents| {
                    out.payload = contents.payload().to_vec();
                    out.metadata = contents.metadata().map(<[u8]>::to_vec);
                    false
                }),
                read => read,
            };
            if split {
                *kept_split.entry(key.clone()).or_default() += 1;
            }
            let was_upcast = match read {
                Ok(was_upcast) => was_upcast,
                Err(Error::Shredded { .. }) => {
                    shred(&mut out, &event);
                    shredded_events += 1;
                    false
                }
                Err(error) => return Err(read_failed(error)),
            };
            if was_upcast {
                *upcast.entry(key).or_default() += 1;
                progress.upcast += 1;
            } else {
                if !layouts.contains_key(&key) {
                    let layout =
                        source_layout(source, raw_txn, &key.0, key.1).map_err(read_failed)?;
                    layouts.insert(key.clone(), layout);
                }
                out.layout = layouts[&key];
                *copied.entry(key).or_default() += 1;
            }
            importer.push(out)?;
            progress.events += 1;
            if progress.events.is_multiple_of(PROGRESS_EVERY) {
                self.report(&progress)?;
            }
        }
        let shredded_streams = importer.shredded_streams() as u64;
        importer.finish()?;
        self.report(&progress)?;

        copy_renames(source, raw_txn, target, steps)?;
        let processors = copy_checkpoints(source, raw_txn, target)?;
        let projection_count = projections.len() as u64;
        for (name, db) in projections {
            copy_projection(raw_txn, &name, db, target)?;
        }
        drop(txn);
        target.flush_index()?;
        target.sync()?;
        if self.verify {
            let report = super::verify(target, &mut |_| {})?;
            if let Some(first) = report.problems.first() {
                return Err(MigrateError::Verify {
                    problems: report.problems.len(),
                    first: first.to_string(),
                });
            }
        }
        Ok(MigrationReport {
            target: final_path,
            events: progress.events,
            upcast: upcast
                .into_iter()
                .map(|((from_type, from_version), events)| {
                    let step = &steps[&(from_type.clone(), from_version)];
                    UpcastCount {
                        from_type,
                        from_version,
                        to_type: step.to_name.to_string(),
                        to_version: step.to_version,
                        events,
                    }
                })
                .collect(),
            copied: type_counts(copied),
            split: type_counts(kept_split),
            shredded_events,
            shredded_streams,
            processors,
            projections: projection_count,
        })
    }

    /// Hands `progress` to the callback; its break stops the migration.
    fn report(&mut self, progress: &MigrationProgress) -> Result<(), MigrateError> {
        match self.progress.as_mut().map(|f| f(progress)) {
            Some(ControlFlow::Break(())) => Err(MigrateError::Cancelled {
                events: progress.events,
            }),
            _ => Ok(()),
        }
    }
}

/// Marks `out` as an event of a shredded stream: its lost payload and metadata stand as zero
/// bytes of their lengths, which the target seals under a key it never stores.
/// Counts per (type, version), ordered.
fn type_counts(counts: BTreeMap<(String, u16), u64>) -> Vec<TypeCount> {
    counts
        .into_iter()
        .map(|((event_type, version), events)| TypeCount {
            event_type,
            version,
            events,
        })
        .collect()
}

fn shred(out: &mut ImportEvent, event: &RawEvent<'_>) {
    out.shredded = true;
    out.payload = vec![0; event.envelope.payload_len as usize];
    out.metadata = event.metadata_len().map(|n| vec![0; n as usize]);
}

/// The layout the source recorded for `name` at `version`, `None` when it is not known.
fn source_layout(
    source: &Storage,
    txn: &heed::RoTxn<'_>,
    name: &str,
    version: u16,
) -> crate::Result<Option<Fingerprint>> {
    let log = source.log();
    Ok(
        match log
            .schemas
            .committed(&log.dbs, txn, name.as_bytes(), version)?
        {
            Some(Registered::Layout(layout)) => Some(layout),
            Some(Registered::Unknown | Registered::Renamed) | None => None,
        },
    )
}

/// Records in `target` the renames of event types (`format::schema`): those the source
/// recorded, and those of the registered types whose older versions had another name, so that
/// a build that knows only an older name meets the migrated events as renamed ones instead of
/// passing over them. One transaction; entries the target has already are kept.
fn copy_renames(
    source: &Storage,
    txn: &heed::RoTxn<'_>,
    target: &Storage,
    steps: &HashMap<(String, u16), Step>,
) -> Result<(), MigrateError> {
    use crate::format::schema;
    let dbs = &source.log().dbs;
    let mut renames: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    for entry in dbs.schemas.iter(txn)? {
        let (key, value) = entry?;
        let (name, version) = schema::parse_key(key)?;
        if let Some(new_name) = schema::renamed_to(name, version, value)? {
            renames.insert(key.to_vec(), new_name.to_string());
        }
    }
    for ((old_name, _), step) in steps {
        if old_name != step.to_name {
            renames
                .entry(schema::key(old_name.as_bytes(), step.to_version))
                .or_insert_with(|| step.to_name.to_string());
        }
    }
    if renames.is_empty() {
        return Ok(());
    }
    let target_dbs = target.log().dbs;
    target.env.write(WriteKind::Import, |wtxn| {
        for (key, new_name) in &renames {
            if target_dbs.schemas.get(wtxn, key)?.is_none() {
                target_dbs
                    .schemas
                    .put(wtxn, key, &schema::encode_renamed(new_name))?;
            }
        }
        Ok(Commit::Commit(()))
    })?;
    Ok(())
}

/// Copies every processor checkpoint of the snapshot into `target`, in one transaction.
fn copy_checkpoints(
    source: &Storage,
    txn: &heed::RoTxn<'_>,
    target: &Storage,
) -> Result<u64, MigrateError> {
    let dbs = &source.log().dbs;
    let mut checkpoints = Vec::new();
    for entry in dbs.checkpoints.iter(txn)? {
        let (name, _) = entry?;
        checkpoints.push((name.to_string(), checkpoint::load_in(dbs, txn, name)?));
    }
    if checkpoints.is_empty() {
        return Ok(0);
    }
    let target_dbs = target.log().dbs;
    target.env.write(WriteKind::Checkpoint, |wtxn| {
        for (name, seq) in &checkpoints {
            checkpoint::put_in(&target_dbs, wtxn, name, *seq)?;
        }
        Ok(Commit::Commit(()))
    })?;
    Ok(checkpoints.len() as u64)
}

type RawDb = heed::Database<'static, Bytes, Bytes>;

/// The source's projection databases (`projection/NAME`), by name, opened without writing.
fn projection_databases(source: &Storage) -> Result<Vec<(String, RawDb)>, MigrateError> {
    let env = &source.env.heed;
    let main = env
        .open_databases_and_commit(env.read_txn()?, |opener, rtxn| {
            opener
                .open_database::<Bytes, DecodeIgnore>(rtxn, None)
                .map(heed::CommitOrAbort::<_, ()>::Commit)
        })?
        .unwrap_commit();
    let Some(main) = main else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    {
        let rtxn = env.read_txn()?;
        for entry in main.prefix_iter(&rtxn, PROJECTION_PREFIX)? {
            let (key, ()) = entry?;
            if let Ok(name) = std::str::from_utf8(key) {
                names.push(name.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let db = env
            .open_databases_and_commit(env.read_txn()?, |opener, rtxn| {
                opener
                    .open_database::<Bytes, Bytes>(rtxn, Some(&name))
                    .map(heed::CommitOrAbort::<_, ()>::Commit)
            })?
            .unwrap_commit();
        if let Some(db) = db {
            let projection = name[PROJECTION_PREFIX.len()..].to_string();
            out.push((projection, db));
        }
    }
    Ok(out)
}

/// Copies the projection database `name` as the snapshot holds it into `target`.
fn copy_projection(
    txn: &heed::RoTxn<'_>,
    name: &str,
    db: RawDb,
    target: &Storage,
) -> Result<(), MigrateError> {
    let into = target.projection_database(name)?;
    let mut entries: Vec<(&[u8], &[u8])> = Vec::new();
    for entry in db.iter(txn)? {
        entries.push(entry?);
    }
    target.env.write(WriteKind::Projection, |wtxn| {
        for (key, value) in &entries {
            into.put(wtxn, key, value)?;
        }
        Ok(Commit::Commit(()))
    })?;
    Ok(())
}

/// Renames the finished `partial` to `target` durably: the marker removed and the directory
/// synced first, the parent synced after.
fn install(partial: &Path, target: &Path) -> std::io::Result<()> {
    fs::remove_file(partial.join(MARKER))?;
    File::open(partial)?.sync_all()?;
    fs::rename(partial, target)?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Removes a partial target after a failure; what cannot be removed stays, marked, for the
/// next migration to remove.
fn remove_partial(partial: &Path) {
    if let Err(e) = fs::remove_dir_all(partial) {
        tracing::warn!(path = %partial.display(), error = %e, "removing a failed migration's partial target failed");
    }
}
