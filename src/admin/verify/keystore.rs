//! The keystore of an encrypted store ([`ProblemKind::Keystore`]), and every record's encryption
//! ([`ProblemKind::Record`]): every encrypted record decrypts under its stream's key, every key
//! entry unwraps under the master key in force.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::report::{reason, ProblemKind, Tick, VerifyReport};
use crate::cipher::StreamKey;
use crate::crypto::keystore::{Entry, WrappedEntry, ENTRY_LEN};
use crate::crypto::Crypto;
use crate::error::{Error, Result};
use crate::format::record::{DecodedRecord, Opened};
use crate::types::StreamId;

/// Unwrapped keys kept at most during a check; the cache is emptied when it is full.
const CACHE: usize = 4096;

/// What the keystore snapshot holds for a stream.
#[derive(Clone)]
enum State {
    Key(Arc<StreamKey>),
    Shredded,
    Missing,
    Bad(String),
}

/// The keystore side of a verification, on a keystore snapshot taken right after the log's:
/// keys created after the log snapshot belong to streams without events in it (harmless), and
/// a stream shredded in between reads as shredded (as it does in the store).
pub(super) struct KeyCheck<'s> {
    crypto: Option<&'s Crypto>,
    txn: Option<heed::RoTxn<'s, heed::WithoutTls>>,
    cache: HashMap<StreamId, State>,
    /// Streams whose keystore problem was reported: reported once, not per event.
    reported: HashSet<StreamId>,
}

impl<'s> KeyCheck<'s> {
    pub(super) fn new(crypto: Option<&'s Crypto>) -> Result<KeyCheck<'s>> {
        let txn = match crypto {
            Some(c) => Some(c.keystore().env.read_txn()?),
            None => None,
        };
        Ok(KeyCheck {
            crypto,
            txn,
            cache: HashMap::new(),
            reported: HashSet::new(),
        })
    }

    fn state(&mut self, crypto: &Crypto, stream: StreamId) -> Result<State> {
        if let Some(state) = self.cache.get(&stream) {
            return Ok(state.clone());
        }
        let Some(txn) = &self.txn else {
            return Ok(State::Missing);
        };
        let state = match crypto.keystore().entry(txn, stream) {
            Ok(Entry::Key(e)) => match crypto.unwrap_for_check(stream, &e) {
                Ok(key) => State::Key(key),
                Err(e) => State::Bad(reason(&e)),
            },
            Ok(Entry::Shredded) => State::Shredded,
            Ok(Entry::Missing) => State::Missing,
            Err(e @ Error::Keystore { .. }) => State::Bad(reason(&e)),
            Err(e) => return Err(e),
        };
        if self.cache.len() >= CACHE {
            self.cache.clear();
        }
        self.cache.insert(stream, state.clone());
        Ok(state)
    }

    /// Checks one record whose header is intact: its encryption flag against the store's, and
    /// for an encrypted store that it decrypts (`payload_ok`: its payload checksum holds).
    /// Returns the decrypted record, when it is one.
    pub(super) fn record(
        &mut self,
        report: &mut VerifyReport,
        rec: &DecodedRecord<'_>,
        payload_ok: bool,
    ) -> Result<Option<Opened>> {
        let (seq, stream) = (rec.seq(), rec.stream());
        let crypto = match (rec.is_encrypted(), self.crypto) {
            (false, None) => return Ok(None),
            (true, None) => {
                report.push(
                    ProblemKind::Record,
                    Some(seq),
                    Some(stream),
                    "encrypted record in a store without encryption".into(),
                );
                return Ok(None);
            }
            (false, Some(_)) => {
                report.push(
                    ProblemKind::Record,
                    Some(seq),
                    Some(stream),
                    "plaintext record in an encrypted store, where every record is sealed (a downgrade: it is refused when read)".into(),
                );
                return Ok(None);
            }
            (true, Some(crypto)) => crypto,
        };
        match self.state(crypto, stream)? {
            State::Shredded => report.shredded_events += 1,
            State::Missing => {
                if self.reported.insert(stream) {
                    report.push(
                        ProblemKind::Keystore,
                        Some(seq),
                        Some(stream),
                        "the stream has encrypted events (the first at this sequence) but the keystore holds neither its key nor a tombstone: they cannot be decrypted".into(),
                    );
                }
            }
            State::Bad(why) => {
                if self.reported.insert(stream) {
                    report.push(ProblemKind::Keystore, Some(seq), Some(stream), why);
                }
            }
            State::Key(key) => {
                if rec.key_version() != key.version {
                    if self.reported.insert(stream) {
                        report.push(
                            ProblemKind::Keystore,
                            Some(seq),
                            Some(stream),
                            format!(
                                "the record was sealed under key version {}, the keystore holds version {} of the stream's key",
                                rec.key_version(),
                                key.version
                            ),
                        );
                    }
                    return Ok(None);
                }
                if !payload_ok {
                    // Its checksum failure is reported already.
                    return Ok(None);
                }
                match rec.open(&key, crypto.store_id()) {
                    Ok(opened) => {
                        report.decrypted += 1;
                        return Ok(Some(opened));
                    }
                    Err(Error::Decryption { .. }) => report.push(
                        ProblemKind::Record,
                        Some(seq),
                        Some(stream),
                        "the record fails authentication: its ciphertext or a header field bound to it was changed with the checksums fixed, or it was moved from another place, stream or store".into(),
                    ),
                    Err(e) => report.push(ProblemKind::Record, Some(seq), Some(stream), reason(&e)),
                }
            }
        }
        Ok(None)
    }

    /// Checks every entry of the keystore: each key entry well formed and unwrapping under the
    /// master key in force, each tombstone well formed; counts keys, tombstones and keys of
    /// streams without events in the log (`has_events`).
    pub(super) fn keystore(
        &mut self,
        report: &mut VerifyReport,
        has_events: &dyn Fn(StreamId) -> bool,
        tick: &mut Tick<'_>,
    ) -> Result<()> {
        let (Some(crypto), Some(txn)) = (self.crypto, &self.txn) else {
            return Ok(());
        };
        let ks = crypto.keystore();
        let total = ks.keys.len(txn)? + ks.shredded.len(txn)?;
        let mut done = 0u64;
        tick.now("keystore", 0, total);
        for entry in ks.keys.iter(txn)? {
            let (key, value) = entry?;
            report.keys += 1;
            done += 1;
            tick.every("keystore", done, total);
            let Ok(id) = <[u8; 16]>::try_from(key) else {
                report.push(
                    ProblemKind::Keystore,
                    None,
                    None,
                    format!("a key entry has a stream id of {} bytes, not 16", key.len()),
                );
                continue;
            };
            let stream = StreamId(u128::from_be_bytes(id));
            if !has_events(stream) {
                report.keys_without_events += 1;
            }
            if ks.shredded.get(txn, key)?.is_some() {
                report.push(
                    ProblemKind::Keystore,
                    None,
                    Some(stream),
                    "the stream has both a key and a tombstone; it reads as shredded, but its key was not destroyed: shred it again with a build that deletes the key".into(),
                );
            }
            if self.reported.contains(&stream) {
                continue;
            }
            let Some(e) = WrappedEntry::decode(value) else {
                self.reported.insert(stream);
                report.push(
                    ProblemKind::Keystore,
                    None,
                    Some(stream),
                    format!(
                        "the key entry of the stream is malformed: {} bytes, not {ENTRY_LEN}",
                        value.len()
                    ),
                );
                continue;
            };
            if let Err(e) = crypto.unwrap_for_check(stream, &e) {
                self.reported.insert(stream);
                report.push(ProblemKind::Keystore, None, Some(stream), reason(&e));
            }
        }
        for entry in ks.shredded.iter(txn)? {
            let (key, value) = entry?;
            report.shredded_streams += 1;
            done += 1;
            tick.every("keystore", done, total);
            let stream = <[u8; 16]>::try_from(key)
                .ok()
                .map(|id| StreamId(u128::from_be_bytes(id)));
            if stream.is_none() || value.len() != 12 {
                report.push(
                    ProblemKind::Keystore,
                    None,
                    stream,
                    format!(
                        "a tombstone is malformed: stream id of {} bytes (not 16), value of {} bytes (not 12); the stream still reads as shredded",
                        key.len(),
                        value.len()
                    ),
                );
            }
        }
        tick.now("keystore", done, total);
        Ok(())
    }
}
